"""Calibration for honest zero-shot answers: temperature, "none of these" and conformal prediction sets.

``cliplens calibrate`` embeds a labelled dataset once and fits, for one model and prompt set:

* a **temperature** for the softmax over labels (reported with the expected calibration error, ECE,
  before and after);
* the **fit detector**: the probability that a label fits the image at all, a logistic function of
  the label's logit and its margin below the image's best reference caption (see
  :mod:`cliplens.text.reference`). It is fitted on each image twice, offered a few random classes: once
  with its true class among them (a label fits) and once without (none fits). "None of these" is
  one minus the detector's probability for the best label;
* the **conformal scores** ``1 - p(true class)``, whose quantile turns a requested coverage into a
  prediction set (split conformal prediction).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, UsageError
from ..files import atomic_write_json
from .open_set import OpenSetDetector
from .probabilities import sigmoid, softmax

CALIBRATION_FILE = "cliplens_calibration.json"  # beside a model's weights, it is used by default
FORMAT = "cliplens-calibration/1"
REPORTED_COVERAGES = (0.8, 0.9, 0.95)


@dataclass(frozen=True)
class FitDetector:
    """P(label fits) = sigmoid(bias + label_weight·L + margin_weight·(L − R)).

    L is the label's logit (logit scale × cosine), R the logit of the image's best reference
    caption. The defaults, used for models without a calibration, say a label fits when it scores
    within 3 logits of the best reference caption; they are a starting point, not a measurement.
    """

    bias: float = 3.0
    label_weight: float = 0.0
    margin_weight: float = 1.0

    def log_odds(self, label_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
        """The detector's log-odds that each label fits."""
        label_logits = np.asarray(label_logits, np.float64)
        reference = np.asarray(reference_logits, np.float64)
        if label_logits.ndim == 2 and reference.ndim == 1:
            reference = reference[:, None]
        return self.bias + self.label_weight * label_logits + self.margin_weight * (label_logits - reference)

    def probability(self, label_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.log_odds(label_logits, reference_logits))


@dataclass
class Calibration:
    """Everything ``cliplens calibrate`` fits for one model and prompt set; saved as JSON."""

    model: str
    templates: list[str] | None
    classes: list[str]
    reference: list[str]
    temperature: float = 1.0
    detector: FitDetector = field(default_factory=FitDetector)
    scores: list[float] = field(default_factory=list)  # conformal scores 1 - p(true), ascending
    report: dict = field(default_factory=dict)
    source: str = ""  # the file it was read from
    runtime: str = ""  # the runtime it was fitted with ("torch fp32", "onnx int8"); "" when not recorded
    open_set: OpenSetDetector | None = None  # image-side evidence that an image lies outside the classes' world

    def quantile(self, coverage: float) -> float:
        """The split-conformal threshold on ``1 - p`` for a prediction set with this coverage."""
        if not 0.0 < coverage < 1.0:
            raise UsageError(f"{coverage} is not a level between 0 and 1 (e.g. 0.9)", parameter="coverage")
        n = len(self.scores)
        if n == 0:
            raise UsageError(f"{self.source or 'this calibration'} holds no conformal scores", parameter="calibration")
        rank = math.ceil((n + 1) * coverage)
        return 1.0 if rank > n else float(self.scores[rank - 1])

    def to_dict(self) -> dict:
        data = asdict(replace(self, open_set=None))
        data.pop("source")
        data["open_set"] = self.open_set.to_dict() if self.open_set is not None else None
        return {"format": FORMAT, **data}

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically); its folder must exist."""
        return atomic_write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        if not path.is_file():
            raise UsageError("no such file (make one with `cliplens calibrate`)", value=str(path), parameter="calibration")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a calibration file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{path}: not a cliplens calibration file (expected format {FORMAT!r})")
        try:
            return cls(model=data["model"], templates=data["templates"], classes=list(data["classes"]),
                       reference=list(data["reference"]), temperature=float(data["temperature"]),
                       detector=FitDetector(**data["detector"]), scores=[float(s) for s in data["scores"]],
                       report=dict(data.get("report", {})), source=str(path), runtime=str(data.get("runtime", "")),
                       open_set=OpenSetDetector.from_dict(data["open_set"]) if data.get("open_set") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: malformed calibration file ({type(exc).__name__}: {exc})") from None


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 prediction: mean |accuracy - confidence| over equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def _minimise(params, loss_fn) -> None:
    import torch

    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)``."""
    import torch

    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(truth, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _minimise([log_t], lambda: torch.nn.functional.cross_entropy(x / log_t.exp(), y))
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def fit_detector(label_logits: np.ndarray, reference_logits: np.ndarray, fits: np.ndarray) -> FitDetector:
    """Logistic regression of "a label fits" on the label's logit and its margin to the reference."""
    import torch

    label = torch.as_tensor(label_logits, dtype=torch.float64)
    margin = label - torch.as_tensor(reference_logits, dtype=torch.float64)
    y = torch.as_tensor(fits, dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def loss():
        z = w[0] + w[1] * label + w[2] * margin
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-4 * (w[1:] ** 2).sum()

    _minimise([w], loss)
    bias, label_weight, margin_weight = (float(v) for v in w.detach())
    return FitDetector(bias=bias, label_weight=label_weight, margin_weight=margin_weight)


def fit_platt(log_odds: np.ndarray, margins: np.ndarray, fits: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of P(fits) = sigmoid(a + b · log_odds + c · margin), by maximum likelihood (Platt scaling
    of the detector, with the label's similarity margin over the rest of its bank as a second input)."""
    import torch

    z = torch.as_tensor(np.clip(log_odds, -50, 50), dtype=torch.float64)
    m = torch.as_tensor(margins, dtype=torch.float64)
    y = torch.as_tensor(fits, dtype=torch.float64)
    w = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    _minimise([w], lambda: torch.nn.functional.binary_cross_entropy_with_logits(w[0] + w[1] * z + w[2] * m, y))
    a, b, c = (float(v) for v in w.detach())
    return a, b, c


def _offered_sets(logits: np.ndarray, truth: np.ndarray, rng: np.random.Generator,
                  max_labels: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The best offered class of each image among a few offered labels, with and without its true class.

    Each image is offered 2–10 random classes (as people offer a handful of candidate labels) once
    with its true class among them (a label fits) and once without (none fits).
    """
    n, k = logits.shape
    best_in, best_out = np.empty(n, dtype=int), np.empty(n, dtype=int)
    for i in range(n):
        others = np.delete(np.arange(k), truth[i])
        size = int(rng.integers(min(2, len(others)), min(max_labels, len(others)) + 1))
        offered = np.r_[truth[i], rng.choice(others, size - 1, replace=False)]
        best_in[i] = offered[logits[i, offered].argmax()]
        offered = rng.choice(others, size, replace=False)
        best_out[i] = offered[logits[i, offered].argmax()]
    return best_in, best_out


def fit_calibration(image_vectors: np.ndarray, truth: Sequence[int], class_vectors: np.ndarray,
                    reference_best: np.ndarray, logit_scale: float, *, model: str, templates: list[str] | None,
                    classes: list[str], reference: list[str], runtime: str = "", seed: int = 0) -> Calibration:
    """Fit temperature, fit detector and conformal scores from embedded, labelled images."""
    truth = np.asarray(truth)
    if len(classes) < 2:
        raise UsageError("calibration needs at least two classes", parameter="dataset")
    if len(truth) < 20:
        raise UsageError(f"calibration needs at least 20 images (got {len(truth)}); a few hundred give stable "
                         "figures", parameter="dataset")
    logits = logit_scale * (np.asarray(image_vectors, np.float32) @ np.asarray(class_vectors, np.float32).T)
    rows = np.arange(len(truth))
    before = softmax(logits)
    temperature = fit_temperature(logits, truth)
    after = softmax(logits / temperature)

    reference_logits = logit_scale * np.broadcast_to(np.asarray(reference_best, np.float64).reshape(len(truth), -1),
                                                     logits.shape)
    picks = _offered_sets(logits, truth, np.random.default_rng(seed))
    (l_in, r_in), (l_out, r_out) = ((logits[rows, p], reference_logits[rows, p]) for p in picks)
    detector = fit_detector(np.concatenate([l_in, l_out]), np.concatenate([r_in, r_out]),
                            np.concatenate([np.ones(len(truth)), np.zeros(len(truth))]))
    none_in = 1 - detector.probability(l_in, r_in)
    none_out = 1 - detector.probability(l_out, r_out)

    scores = np.sort(1.0 - after[rows, truth]).tolist()
    calibration = Calibration(model=model, templates=templates, classes=list(classes), reference=list(reference),
                              temperature=temperature, detector=detector, scores=scores, runtime=runtime)
    sets = {}
    for coverage in REPORTED_COVERAGES:
        q = calibration.quantile(coverage)
        sets[str(coverage)] = {"quantile": q, "mean_set_size": float((after >= 1 - q).sum(axis=1).mean())}
    calibration.report = {
        "images": int(len(truth)), "classes": len(classes),
        "accuracy": float((logits.argmax(axis=1) == truth).mean()),
        "temperature": temperature,
        "ece_before": expected_calibration_error(before, truth),
        "ece_after": expected_calibration_error(after, truth),
        "none_of_these": {"flagged_in_domain": float((none_in >= 0.5).mean()),
                          "flagged_out_of_domain": float((none_out >= 0.5).mean())},
        "conformal": sets,
    }
    return calibration


class CalibrationNote(UserWarning):
    """A calibration is applied to answers from another runtime than the one it was fitted with."""


_noted: set[tuple[str, str]] = set()


def _full_precision(runtime: str) -> bool:
    return runtime.endswith(" fp32")


def note_runtime(calibration: Calibration, runtime: str) -> None:
    """Warn once when ``calibration`` was fitted with a runtime whose answers may differ from ``runtime``'s.

    fp32 runtimes give the same answers (within 1e-4), so only a reduced precision on either side is noted.
    """
    fitted = calibration.runtime
    if not fitted or fitted == runtime or (_full_precision(fitted) and _full_precision(runtime)):
        return
    key = (calibration.source or calibration.model, runtime)
    if key in _noted:
        return
    _noted.add(key)
    where = calibration.source or "this calibration"
    warnings.warn(f"{where} was fitted with {fitted} and is applied to {runtime}, whose probabilities may differ; "
                  "fit it again with this runtime for exact figures", CalibrationNote, stacklevel=3)


def default_calibration(model_path: str | Path) -> Calibration | None:
    """The calibration shipped beside a model's weights (as the demo model has), if any."""
    path = Path(model_path) / CALIBRATION_FILE
    return Calibration.load(path) if path.is_file() else None


def resolve_calibration(calibration: Calibration | str | os.PathLike | bool | None, encoder) -> Calibration | None:
    """The calibration to use: False none, None the one shipped beside the model, else this one (a file or
    object), which must have been fitted for this model."""
    if calibration is False:
        return None
    if calibration is None:
        calibration = default_calibration(encoder.info.path)
        if calibration is not None:
            note_runtime(calibration, encoder.info.runtime)
        return calibration
    if not isinstance(calibration, Calibration):
        calibration = Calibration.load(calibration)
    if calibration.model != encoder.name and Path(calibration.model).resolve() != Path(encoder.info.path).resolve():
        raise UsageError(f"{calibration.source or 'this calibration'} was fitted for model {calibration.model!r}, "
                         f"but this run uses {encoder.name!r}; calibrate this model with `cliplens calibrate`",
                         parameter="calibration")
    note_runtime(calibration, encoder.info.runtime)
    return calibration
