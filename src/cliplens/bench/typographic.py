"""Typographic attacks and the ``--ignore-text`` defence, measured on the demo domain.

Attacked images are demo scenes with a sign naming a shape or a colour (``demo-data --words``: the
word often contradicts the picture); clean images are scenes of the same distribution without a
sign. Each set is classified among the 30 demo labels as it is and with its text covered first
(:class:`cliplens.inputs.ocr.TextCover`). "The word wins" counts attacked images whose sign
contradicts the picture and whose top label is the one the word would make true.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..classify import Classifier
from ..inputs.demo_data import DEMO_LABELS, generate, hijacked_label
from ..models import Encoder

ProgressFn = Callable[[int, int], None]


@dataclass
class TypographicBench:
    images: int  # per set
    clean_top1: float
    clean_ignore_text_top1: float
    attacked_top1: float
    attacked_ignore_text_top1: float
    contradicting: int  # attacked images whose word contradicts the picture
    word_wins: float  # of those, the share whose top label is the word's
    word_wins_ignore_text: float
    attacked_with_text_found: float  # attacked images where the OCR found and covered text
    clean_with_text_found: float  # clean images where it covered something (false alarms)
    ocr_ms_per_image: float  # what covering text adds to classifying an image (reading it, painting over it)

    def to_dict(self) -> dict:
        return asdict(self)


def typographic_benchmark(encoder: Encoder, *, images: int = 300, seed: int = 0, size: int = 224,
                          on_progress: ProgressFn | None = None) -> TypographicBench:
    attacked = list(generate(images, seed=seed, size=size, words=1.0))
    clean = list(generate(images, seed=seed + 1, size=size, words=0.0))
    plain = Classifier(DEMO_LABELS, encoder)
    covered = Classifier(DEMO_LABELS, encoder, ignore_text=True)
    done, total = 0, 4 * images + 8

    def top(classifier: Classifier, samples) -> tuple[list[str], list[int], float]:
        nonlocal done
        labels, found = [], []
        start = time.perf_counter()
        for result in classifier.classify_many([s.image for s in samples]):
            labels.append(result.top.label)
            found.append(len(result.text_covered or []))
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        return labels, found, time.perf_counter() - start

    top(plain, clean[:8])  # warm up: the model's first batches are slower
    clean_plain, _, clean_plain_s = top(plain, clean)
    clean_covered, clean_found, clean_covered_s = top(covered, clean)
    attacked_plain, _, attacked_plain_s = top(plain, attacked)
    attacked_covered, attacked_found, attacked_covered_s = top(covered, attacked)
    ocr_seconds = (clean_covered_s - clean_plain_s) + (attacked_covered_s - attacked_plain_s)
    truth_clean = [s.scene.label for s in clean]
    truth = [s.scene.label for s in attacked]
    word = [hijacked_label(s.scene) for s in attacked]
    against = [i for i in range(images) if word[i] != truth[i]]

    def share(hits) -> float:
        hits = list(hits)
        return float(np.mean(hits)) if hits else 0.0

    return TypographicBench(
        images=images,
        clean_top1=share(a == b for a, b in zip(clean_plain, truth_clean)),
        clean_ignore_text_top1=share(a == b for a, b in zip(clean_covered, truth_clean)),
        attacked_top1=share(a == b for a, b in zip(attacked_plain, truth)),
        attacked_ignore_text_top1=share(a == b for a, b in zip(attacked_covered, truth)),
        contradicting=len(against),
        word_wins=share(attacked_plain[i] == word[i] for i in against),
        word_wins_ignore_text=share(attacked_covered[i] == word[i] for i in against),
        attacked_with_text_found=share(n > 0 for n in attacked_found),
        clean_with_text_found=share(n > 0 for n in clean_found),
        ocr_ms_per_image=1000 * max(0.0, ocr_seconds) / (2 * images),
    )
