"""Whether an image comes from outside the world a model was calibrated on: open-set evidence.

The label-side detector (:class:`~cliplens.scores.calibration.FitDetector`) asks whether an offered
label fits as well as the image's best reference caption. When nothing in the vocabulary fits the
image either (a blank, noise, a photo shown to a model of shapes), that margin is small and a label
"fits". Three kinds of evidence that do not rely on the vocabulary covering the image:

- **kNN** (deep nearest neighbours, Sun et al. 2022): the cosine distance from the image to its
  k-th nearest calibration image, against the calibration images' own; far from everything the model
  was calibrated on means out of distribution. A calibration keeps a sample of its images' embeddings.
- **reference**: the image's best cosine with the reference vocabulary (low when nothing describes it).
- **negative labels** (NegLabel, Jiang et al. 2024): captions mined from a large lexicon far from the
  calibration's classes; an image that matches them better than the classes lies elsewhere.

:class:`OpenSetDetector` is a logistic regression over these features, fitted by ``cliplens calibrate``
on the calibration images (in distribution) against generated out-of-distribution images and a user's
own background images, so that its probability means what it says.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .probabilities import sigmoid

KNN_K = 10
SAMPLE_SIZE = 2000  # calibration embeddings kept for the kNN evidence (float16 in the calibration file)
FEATURES = ("knn_distance", "reference_cosine", "negative_margin")


def flat_index(sample: np.ndarray):
    """An exact inner-product FAISS index over the normalised rows of ``sample``."""
    import faiss

    rows = np.ascontiguousarray(sample, np.float32)
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    return index


def knn_distance(image_vectors: np.ndarray, sample, k: int = KNN_K, *, leave_one_out: bool = False) -> np.ndarray:
    """Cosine distance from each image to its ``k``-th nearest row of ``sample`` (an array of normalised rows or
    its :func:`flat_index`); ``leave_one_out``: the images are the sample's own rows, each judged without itself."""
    index = flat_index(sample) if isinstance(sample, np.ndarray) else sample
    queries = np.ascontiguousarray(image_vectors, np.float32)
    k = max(1, min(k, index.ntotal - (1 if leave_one_out else 0)))
    sims, ids = index.search(queries, k + 1 if leave_one_out else k)
    if leave_one_out:  # drop the row itself (or, if ties pushed it out of the list, the farthest neighbour)
        own = ids == np.arange(len(queries))[:, None]
        own[~own.any(axis=1), -1] = True
        sims = sims[~own].reshape(len(queries), k)
    return 1.0 - sims[:, k - 1].astype(np.float64)


def encode_sample(sample: np.ndarray) -> str:
    """A sample of embeddings as base64 float16 (how a calibration file keeps it)."""
    return base64.b64encode(np.ascontiguousarray(sample, np.float16).tobytes()).decode("ascii")


def decode_sample(text: str, dim: int) -> np.ndarray:
    """The embeddings :func:`encode_sample` wrote, as normalised float32 rows."""
    rows = np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32).reshape(-1, dim)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class OpenSetDetector:
    """P(out of distribution) = sigmoid(bias + Σ weight·feature) over :data:`FEATURES`."""

    sample: np.ndarray = field(repr=False)  # (M, D) normalised calibration embeddings
    bias: float
    weights: tuple[float, float, float]
    negatives: list[str] = field(default_factory=list)  # the negative captions mined for the calibration's classes
    k: int = KNN_K

    def features(self, image_vectors: np.ndarray, reference_best: np.ndarray, negative_best: np.ndarray | None,
                 *, leave_one_out: bool = False) -> np.ndarray:
        """(N, 3): kNN distance, best reference cosine, best negative caption's cosine less the reference's."""
        knn = knn_distance(image_vectors, self.index, self.k, leave_one_out=leave_one_out)
        reference = np.asarray(reference_best, np.float64)
        negative = (np.zeros_like(reference) if negative_best is None
                    else np.asarray(negative_best, np.float64) - reference)
        return np.stack([knn, reference, negative], axis=1)

    @cached_property
    def index(self):
        """The FAISS flat index over :attr:`sample`, built on first use."""
        return flat_index(self.sample)

    def probability(self, features: np.ndarray) -> np.ndarray:
        return sigmoid(self.bias + np.asarray(features, np.float64) @ np.asarray(self.weights))

    def to_dict(self) -> dict:
        return {"bias": self.bias, "weights": list(self.weights), "k": self.k, "negatives": list(self.negatives),
                "dim": int(self.sample.shape[1]), "sample": encode_sample(self.sample)}

    @classmethod
    def from_dict(cls, data: dict) -> "OpenSetDetector":
        return cls(decode_sample(data["sample"], int(data["dim"])), float(data["bias"]),
                   tuple(float(w) for w in data["weights"]), list(data.get("negatives", [])), int(data["k"]))


def standardise(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature column (a constant column gets scale 1)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def fit_open_set(inside: np.ndarray, outside: np.ndarray, sample: np.ndarray, *, negatives: list[str],
                 k: int = KNN_K, l2: float = 1e-2) -> OpenSetDetector:
    """Logistic regression of "out of distribution" on the features of ``inside`` (label 0) and ``outside``
    (label 1) images, each class weighted equally; a little L2 keeps it from betting everything on a
    separation the calibration images happen to allow."""
    import torch

    x = np.concatenate([inside, outside])
    mean, scale = standardise(x)
    z = torch.as_tensor((x - mean) / scale, dtype=torch.float64)
    y = torch.as_tensor(np.r_[np.zeros(len(inside)), np.ones(len(outside))], dtype=torch.float64)
    balance = torch.as_tensor(np.r_[np.full(len(inside), 0.5 / len(inside)), np.full(len(outside), 0.5 / len(outside))],
                              dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = w[0] + z @ w[1:]
        loss = (balance * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    raw = w.detach().numpy()
    weights = raw[1:] / scale  # back to the features' own units
    bias = float(raw[0] - (mean / scale) @ raw[1:])
    return OpenSetDetector(np.asarray(sample, np.float32), bias, tuple(float(v) for v in weights), list(negatives), k)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher ``outside`` (ties count half)."""
    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[len(inside):].sum() - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = 0.95) -> float:
    """Share of ``inside`` flagged at the threshold that flags ``tpr`` of ``outside`` (FPR95 at 0.95)."""
    threshold = np.quantile(np.asarray(outside, np.float64), 1.0 - tpr)
    return float((np.asarray(inside, np.float64) >= threshold).mean())
