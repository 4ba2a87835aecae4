"""The parity contract: what a faster runtime must reproduce of the fp32 reference, and its verdicts.

A command reports one of two kinds of answer, and each has its bar against torch fp32 (the
reference every figure in the README is checked against):

- **probabilities** (classify, captions, calibrate, eval, audit, rank and score figures): every
  probability within :data:`PROBABILITY_TOLERANCE` (0.01) of the reference's, and the same top-1
  label on at least :data:`TOP1_AGREEMENT` (99.5%) of the images;
- **rankings** (index, search, dedupe, bulk embeddings): each query's top 10 shares at least
  :data:`RANKING_RECALL` (98%) of the reference's top 10 (recall@10), for text and image queries.

fp32 runtimes (ONNX Runtime fp32) are held to :data:`FP32_TOLERANCE` (1e-4) instead: they compute
the same function and any larger difference is a bug in the export.

:func:`judge` measures a runtime on probe images against the reference and gives a
:class:`Verdict`, with the runtime's model-only speed on this machine. Verdicts are kept per
checkpoint (by content) and per machine (:func:`~cliplens.models.machine.machine_key`) in the cache;
``auto`` picks, for each kind of answer, the fastest runtime whose verdict on this machine meets
the bar (see :mod:`cliplens.models.runtimes`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..files import atomic_write_json, cache_dir
from ..inputs.demo_data import DEMO_LABELS, generate
from ..scores.probabilities import label_probabilities
from .keys import checkpoint_key

PROBABILITY_TOLERANCE = 0.01
TOP1_AGREEMENT = 0.995
RANKING_RECALL = 0.98
RECALL_K = 10
FP32_TOLERANCE = 1e-4
PURPOSES = ("probabilities", "rankings")

VERDICTS_FORMAT = "cliplens-runtime-verdicts/1"  # bump when the probe or the bars change: old verdicts are redone
PROBE_SEED = 97  # generated scenes no training or calibration run of the demo model has seen
HELD_OUT_SEED = 20261123  # the larger held-out set of ``cliplens bench parity``
PROBE_IMAGES = 200  # one top-1 flip in 200 still meets the 99.5% bar; two do not
PROBE_TEMPLATE = "a photo of a {}."  # how labels are prompted when runtimes are compared
TIMED_IMAGES = 32  # images timed (after one warm-up batch) for a runtime's model-only speed
TIMED_PASSES, TIMED_SECONDS = 5, 1.0  # passes over them, until about a second is spent


@dataclass(frozen=True)
class ProbeOutputs:
    """What one runtime makes of the probe: image and label embeddings, and label probabilities."""

    images: np.ndarray  # (N, D), normalised
    texts: np.ndarray  # (L, D), normalised
    probabilities: np.ndarray  # (N, L), as the model family reads scores
    images_per_s: float | None = None  # model-only speed on this machine, when timed


@dataclass(frozen=True)
class Verdict:
    """One runtime measured against the fp32 reference on the same images and labels."""

    runtime: str  # "onnx int8", "onnx fp32", "torch bf16", "torch fp16"
    reference: str  # "torch fp32"
    machine: str  # where it was measured (CPU model, cores and features, or the GPU)
    images: int
    labels: int
    max_probability_delta: float  # largest |p - p_ref| over every image and label
    top1_agreement: float  # share of images with the reference's top label
    recall_at_10: float  # mean overlap of each query's top 10 with the reference's (text and image queries)
    image_cosine_min: float
    text_cosine_min: float
    images_per_s: float | None  # model-only images/s on this machine (batches of 16)
    probabilities: bool  # meets the probability contract
    rankings: bool  # meets the ranking contract
    source: str  # "probe" (first use on this machine) or "bench parity"

    def meets(self, purpose: str) -> bool:
        """Whether this runtime may give answers of the kind ``purpose`` ("probabilities" or "rankings")."""
        return bool(getattr(self, purpose))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def summary(self) -> str:
        """One line saying how far this runtime strays from the reference."""
        return (f"{self.runtime} moves probabilities by up to {self.max_probability_delta:.4f} from {self.reference} "
                f"(bar {PROBABILITY_TOLERANCE}), keeps the top label on {self.top1_agreement:.1%} of images and "
                f"{self.recall_at_10:.3f} of each top 10 (bar {RANKING_RECALL})")


def probe_set(image_size: int, n: int = PROBE_IMAGES, seed: int = PROBE_SEED) -> tuple[list, list[str]]:
    """``n`` generated one-shape scenes at the model's resolution and the 30 labels that describe them.

    Labels that describe the images matter: against labels that fit nothing, similarities are near
    ties and top-1 flips on noise, which says nothing about the answers a user gets.
    """
    return [sample.image for sample in generate(n, seed=seed, size=image_size)], list(DEMO_LABELS)


def run_probe(encoder, pixels: Sequence, labels: Sequence[str], *, timed: bool = True) -> ProbeOutputs:
    """Embed prepared probe images and label prompts with ``encoder``; time it on the first images."""
    images = encoder.encode_prepared(list(pixels))
    texts = encoder.encode_texts([PROBE_TEMPLATE.replace("{}", label) for label in labels])
    speed = time_images(encoder, pixels) if timed else None
    return ProbeOutputs(images, texts, label_probabilities(images @ texts.T, encoder.info), speed)


def time_images(encoder, pixels: Sequence) -> float:
    """Model-only images/s of ``encoder`` on up to :data:`TIMED_IMAGES` prepared images (batches of 16): the best
    of a few passes when one is quick (a small model's single pass is mostly noise)."""
    batch = list(pixels[:TIMED_IMAGES])
    encoder.encode_prepared(batch[:16])  # first-run costs (session set-up, allocations) are not speed
    best, spent = 0.0, 0.0
    for _ in range(TIMED_PASSES):
        start = time.perf_counter()
        for i in range(0, len(batch), 16):
            encoder.encode_prepared(batch[i : i + 16])
        elapsed = max(time.perf_counter() - start, 1e-9)
        best, spent = max(best, len(batch) / elapsed), spent + elapsed
        if spent >= TIMED_SECONDS:
            break
    return best


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def recall_at_k(candidate: ProbeOutputs, reference: ProbeOutputs, k: int = RECALL_K) -> float:
    """Mean share of each query's top ``k`` images that the reference also ranks in its top ``k``.

    Queries are the label prompts (text search) and every probe image (similar images, duplicates),
    against the probe images; an image is never its own result.
    """
    def scores(outputs: ProbeOutputs) -> np.ndarray:
        image_scores = outputs.images @ outputs.images.T
        np.fill_diagonal(image_scores, -np.inf)
        return np.concatenate([outputs.texts @ outputs.images.T, image_scores])

    k = min(k, len(candidate.images) - 1)
    if k < 1:
        return 1.0
    ours, theirs = _top_k(scores(candidate), k), _top_k(scores(reference), k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))


def judge(runtime: str, candidate: ProbeOutputs, reference: ProbeOutputs, *, machine: str, source: str,
          fp32: bool, reference_name: str = "torch fp32") -> Verdict:
    """Hold ``candidate`` to both contracts against ``reference`` (fp32 runtimes to :data:`FP32_TOLERANCE`)."""
    delta = float(np.max(np.abs(candidate.probabilities - reference.probabilities)))
    agreement = float(np.mean(np.argmax(candidate.probabilities, 1) == np.argmax(reference.probabilities, 1)))
    recall = recall_at_k(candidate, reference)
    tolerance = FP32_TOLERANCE if fp32 else PROBABILITY_TOLERANCE
    probabilities = delta <= tolerance and agreement >= TOP1_AGREEMENT
    rankings = recall >= RANKING_RECALL and (not fp32 or delta <= FP32_TOLERANCE)
    speed = None if candidate.images_per_s is None else round(candidate.images_per_s, 2)
    return Verdict(runtime, reference_name, machine, len(candidate.images), len(candidate.texts), delta, agreement,
                   recall, float(_rowwise_cosine(candidate.images, reference.images).min()),
                   float(_rowwise_cosine(candidate.texts, reference.texts).min()), speed, bool(probabilities),
                   bool(rankings), source)


# --- where verdicts are kept ---------------------------------------------------------------------------

def verdicts_file(model_dir: str | Path) -> Path:
    """Where the verdicts of the checkpoint in ``model_dir`` are kept (by its content, so copies share them)."""
    return cache_dir() / "runtimes" / f"{checkpoint_key(model_dir)}.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == VERDICTS_FORMAT else {}


def read_verdicts(model_dir: str | Path, machine: str) -> dict[str, Verdict]:
    """The verdicts measured for this checkpoint on ``machine``, by runtime ({} when none, or when damaged)."""
    entries = _read(verdicts_file(model_dir)).get("machines", {}).get(machine, {})
    verdicts = {}
    for runtime, data in entries.items() if isinstance(entries, dict) else ():
        try:
            verdicts[runtime] = Verdict.from_dict(data)
        except (KeyError, TypeError):
            continue  # a damaged entry is measured again
    return verdicts


def record_verdicts(model_dir: str | Path, verdicts: Sequence[Verdict]) -> Path:
    """Keep ``verdicts`` (each under its machine), replacing earlier ones for the same runtime and machine."""
    from filelock import FileLock

    path = verdicts_file(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = _read(path) or {"format": VERDICTS_FORMAT, "machines": {}}
        for verdict in verdicts:
            data["machines"].setdefault(verdict.machine, {})[verdict.runtime] = verdict.to_dict()
        atomic_write_json(path, data, indent=1)
    return path
