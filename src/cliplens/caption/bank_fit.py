"""Calibrating a bank for one model on labelled images.

A bank's labels are judged by the none-of-these detector (see :mod:`cliplens.caption.captioner`), whose
log-odds compare a label with the image's best reference caption. How high they run depends on the
bank's prompts as well as the model: attribute prompts ("red circles", "on a white background")
score below the reference vocabulary's object captions even when right. ``calibrate_bank`` embeds
images labelled with the bank's labels (or with labels outside it, where nothing should be kept),
fits Platt scaling per bank of the detector's log-odds and the label's similarity margin over the
rest of its bank (``P(fits) = sigmoid(a + b · log-odds + c · margin)``), on each image judged twice:
with the bank as it is, and with the image's true label taken out (where nothing fits),
and reports precision, recall and F1 of the labels a caption would then keep (its top-k among
those clearing the bank's threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, ImageLoadError, UsageError
from ..inputs.datasets import read_labelled_images
from ..models import Encoder, as_encoder
from ..scores.calibration import fit_platt
from ..scores.probabilities import sigmoid
from ..text.banks import LabelBank
from ..vectors.batches import embed_images
from .captioner import Captioner, bank_margins

JUDGED = 64  # labels judged per image (the most similar); the rest have no chance of being kept


@dataclass(frozen=True)
class BankFit:
    """A bank with its fitted calibration, and how its kept labels fare on the calibration images."""

    bank: LabelBank
    images: int
    in_bank: int  # images whose label is one of the bank's
    precision: float
    recall: float
    f1: float
    errors: tuple[ImageLoadError, ...] = ()

    def to_dict(self) -> dict:
        return {"bank": self.bank.name, "calibration": list(self.bank.calibration), "threshold": self.bank.threshold,
                "images": self.images, "in_bank": self.in_bank, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "errors": len(self.errors)}


def kept_quality(judged: list[list[tuple[float, bool]]], bank: LabelBank, in_bank: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of the labels a caption keeps: per image, the top-k (probability,
    is-right) pairs, best first, that clear the bank's threshold."""
    kept = [ok for labels in judged for p, ok in labels[: bank.top_k] if p >= bank.threshold]
    tp = sum(kept)
    precision = tp / len(kept) if kept else 0.0
    recall = tp / in_bank if in_bank else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def calibrate_bank(bank: LabelBank, dataset: str | Path, model: Encoder | str | None = None, *,
                   column: str = "label", label_format: str = "{}", device: str | None = None,
                   batch_size: int | None = None, workers: int | None = None,
                   on_progress: Callable[[int, int], None] | None = None) -> BankFit:
    """Fit ``bank``'s calibration on a labelled dataset (ImageFolder, or CSV/JSONL with a ``column`` of labels).

    ``label_format`` turns a dataset label into a bank label (``"a {}"`` maps "circle" to "a circle").
    """
    if "{}" not in label_format:
        raise UsageError(f"{label_format!r} needs a {{}} where the dataset's label goes", parameter="label_format")
    encoder = as_encoder(model, device)
    data = read_labelled_images(dataset, label_column=column)
    raw = replace(bank, calibration=(0.0, 1.0, 0.0))
    captioner = Captioner(encoder, [raw])
    embedded = embed_images(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress)
    images, rows, in_bank = [], [], 0  # rows: (log-odds, margin, fits) of every judged label
    for i, vector in zip(embedded.indices, embedded.vectors):
        truth = label_format.replace("{}", data.labels[i])
        in_bank += truth in bank.labels
        judged = captioner.judge(vector, raw.name, JUDGED)
        right = np.array([c.label == truth for c in judged])
        z = np.array([c.log_odds for c in judged])
        sims = np.array([c.similarity for c in judged])
        images.append((z, bank_margins(sims), right))
        rows.append(np.c_[z, bank_margins(sims), right])
        if right.any() and len(judged) > 1:  # the same bank without the true label: then nothing fits
            keep = ~right
            rows.append(np.c_[z[keep], bank_margins(sims[keep]), np.zeros(keep.sum())])
    if not in_bank:
        raise DataError(f"{dataset}: no image is labelled with one of bank {bank.name!r}'s labels "
                        f"(column {column!r}, label format {label_format!r}); check both")
    table = np.concatenate(rows)
    fitted = replace(bank, calibration=tuple(round(v, 6) for v in fit_platt(table[:, 0], table[:, 1], table[:, 2])))
    a, b, c = fitted.calibration
    judged = []
    for z, margins, right in images:
        p = sigmoid(a + b * z + c * margins)
        judged.append([(float(p[i]), bool(right[i])) for i in np.argsort(-p, kind="stable")])
    precision, recall, f1 = kept_quality(judged, fitted, in_bank)
    return BankFit(fitted, len(embedded.vectors), in_bank, precision, recall, f1, tuple(embedded.errors))
