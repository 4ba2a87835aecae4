"""What a warm ``caption`` call costs beyond encoding the image, with banks of many labels."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..text.banks import GENERAL_BANKS, LabelBank, builtin_bank
from ..models import Encoder


@dataclass(frozen=True)
class CaptionTiming:
    """Medians over ``runs`` warm calls, in milliseconds."""

    labels: int
    banks: int
    runs: int
    texts_encoded: int  # bank texts encoded to build the captioner (0 when they were cached)
    encode_ms: float  # encoder.encode_images([image])
    caption_ms: float  # captioner.caption(image): encoding plus everything else
    scoring_ms: float  # captioner.caption_vector(vector): everything but encoding

    @property
    def overhead_ms(self) -> float:
        return self.caption_ms - self.encode_ms


def bench_banks(encoder: Encoder, total: int) -> list[LabelBank]:
    """The general built-in banks, plus generated labels ("goldfish and tabby cat") that this model can
    read, so that ``total`` labels in all are scored (a word-level tokenizer leaves out words it lacks)."""
    from ..inputs.wordlists import imagenet_classes

    banks = [builtin_bank(name) for name in GENERAL_BANKS]
    readable = sum(sum(encoder.readable(list(b.labels))) for b in banks)
    missing = total - readable
    if missing > 0:
        classes = list(imagenet_classes())
        pairs = (f"{a} and {b}" for i, a in enumerate(classes) for b in classes[i + 1:])
        extra: list[str] = []
        while len(extra) < missing:
            batch = [next(pairs) for _ in range(missing - len(extra))]
            extra += [label for label, ok in zip(batch, encoder.readable(batch)) if ok]
        banks.append(LabelBank("bench_pairs", tuple(extra), template="Image with {} in it.", top_k=3))
    return banks


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_caption(encoder: Encoder, image: Path, *, labels: int = 10_000, runs: int = 20,
                 on_progress: Callable[[str, int, int], None] | None = None) -> CaptionTiming:
    """Build a captioner over ``labels`` labels (embedded once, then cached), warm it, and time it."""
    from ..caption import Captioner

    captioner = Captioner(encoder, bench_banks(encoder, labels), on_progress=on_progress)
    vector = encoder.encode_images([image])[0]
    captioner.caption(image)  # warm: first calls fill caches and start threads
    encode = _median_ms(lambda: encoder.encode_images([image]), runs)
    full = _median_ms(lambda: captioner.caption(image), runs)
    scoring = _median_ms(lambda: captioner.caption_vector(vector), runs)
    return CaptionTiming(sum(len(v.labels) for v in captioner.vectors), len(captioner.banks), runs,
                         captioner.texts_encoded, encode, full, scoring)
