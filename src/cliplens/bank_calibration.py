"""Fitting a bank's threshold on labelled images, for one model.

A bank's labels are judged by the calibrated probability that they fit (see :mod:`cliplens.caption`).
How high that probability runs depends on the bank's prompts as well as the model: attribute
prompts ("red circles", "on a white background") score below the object captions of the reference
vocabulary even when right. ``calibrate_bank`` embeds images labelled with the bank's labels (or
with labels outside it: then nothing should be kept) and picks the threshold that maximises F1 of
the labels a caption would keep (its top-k among those clearing the threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .banks import LabelBank
from .errors import DataError, ImageLoadError
from .models import Encoder, as_encoder

JUDGED = 64  # labels judged per image (the most similar); the rest have no chance of being kept


@dataclass(frozen=True)
class BankFit:
    """A bank with its fitted threshold, and how its kept labels fare on the calibration images."""

    bank: LabelBank
    images: int
    in_bank: int  # images whose label is one of the bank's
    precision: float
    recall: float
    f1: float
    errors: tuple[ImageLoadError, ...] = ()

    def to_dict(self) -> dict:
        return {"bank": self.bank.name, "threshold": self.bank.threshold, "images": self.images,
                "in_bank": self.in_bank, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "errors": len(self.errors)}


def _kept_outcomes(judged: list[list[tuple[float, bool]]], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, top_k) probabilities of each image's best labels, and whether each is the true label."""
    probs = np.full((len(judged), top_k), -1.0)
    right = np.zeros((len(judged), top_k), dtype=bool)
    for i, labels in enumerate(judged):
        for j, (p, ok) in enumerate(labels[:top_k]):
            probs[i, j], right[i, j] = p, ok
    return probs, right


def fit_threshold(probs: np.ndarray, right: np.ndarray, in_bank: int) -> tuple[float, float, float, float]:
    """The threshold maximising F1 of the kept labels; returns (threshold, precision, recall, f1)."""
    candidates = np.unique(probs[probs >= 0])
    if len(candidates) > 512:
        candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, 512)))
    best = (0.5, 0.0, 0.0, 0.0)
    for t in candidates:
        kept = probs >= t
        tp = int((kept & right).sum())
        fp = int((kept & ~right).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / in_bank if in_bank else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if f1 > best[3]:
            best = (float(t), precision, recall, f1)
    return best


def calibrate_bank(bank: LabelBank, dataset: str | Path, model: Encoder | str | None = None, *,
                   column: str = "label", label_format: str = "{}", device: str | None = None,
                   batch_size: int | None = None, workers: int | None = None,
                   on_progress: Callable[[int, int], None] | None = None) -> BankFit:
    """Fit ``bank``'s threshold on a labelled dataset (ImageFolder, or CSV/JSONL with a ``column`` of labels).

    ``label_format`` turns a dataset label into a bank label (``"a {}"`` maps "circle" to "a circle").
    """
    from .caption import Captioner
    from .datasets import read_labelled_images
    from .embed import embed_images

    if "{}" not in label_format:
        raise DataError(f"--label-format {label_format!r} needs a {{}} where the dataset's label goes")
    encoder = as_encoder(model, device)
    data = read_labelled_images(dataset, label_column=column)
    captioner = Captioner(encoder, [bank])
    embedded = embed_images(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress)
    label_of = dict(zip((str(p) for p in data.paths), data.labels))
    judged, in_bank = [], 0
    for name, vector in zip(embedded.sources, embedded.vectors):
        truth = label_format.replace("{}", label_of[name])
        in_bank += truth in bank.labels
        judged.append([(c.score, c.label == truth) for c in captioner.judge(vector, bank.name, JUDGED)])
    if not in_bank:
        raise DataError(f"{dataset}: no image is labelled with one of bank {bank.name!r}'s labels "
                        f"(column {column!r}, label format {label_format!r}); check both")
    threshold, precision, recall, f1 = fit_threshold(*_kept_outcomes(judged, bank.top_k), in_bank)
    return BankFit(replace(bank, threshold=math.floor(threshold * 1e4) / 1e4), len(judged), in_bank, precision, recall, f1,
                   tuple(embedded.errors))
