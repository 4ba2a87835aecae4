"""``cliplens bench open-set``: how well "none of these" separates the labels' world from everything else.

In distribution: one-shape scenes from the demo-data generator (seeds no training or calibration run
used), each offered 12 labels: once with its own label among them, once without. Out of distribution:
images the command generates, of the kinds the calibration is fitted against (blanks, noise,
textures, collages; other seeds) and of kinds it never saw (photo-like scenes, gradients). The
figures are the open-set literature's: AUROC and FPR at 95% TPR of the "none of these" probability
between in-distribution images offered their own label and out-of-distribution ones, with the rates
flagged at the default threshold (0.5), for the whole detector and for each part of its evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..classify import NONE_THRESHOLD, Classifier, none_of_these
from ..inputs.demo_data import DEMO_LABELS, generate
from ..inputs.open_world import KINDS, open_world_images
from ..models import load_model
from ..scores.open_set import auroc, fpr_at_tpr, knn_distance
from .data import photo

INSIDE_SEED = 20261202
OUTSIDE_SEED = 4711
OFFERED = 12
HELD_OUT_KINDS = ("photo", "gradient")


@dataclass
class OpenSetResult:
    model: str
    inside: int
    outside: dict[str, int]
    auroc: float
    fpr95: float
    flagged_inside_right_label: float
    flagged_inside_wrong_labels: float
    flagged_outside: float
    flagged_outside_by_kind: dict[str, float]
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)
    classify_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "inside": self.inside, "outside": self.outside, "auroc": round(self.auroc, 4),
                "fpr95": round(self.fpr95, 4), "threshold": NONE_THRESHOLD,
                "flagged_inside_right_label": round(self.flagged_inside_right_label, 4),
                "flagged_inside_wrong_labels": round(self.flagged_inside_wrong_labels, 4),
                "flagged_outside": round(self.flagged_outside, 4),
                "flagged_outside_by_kind": {k: round(v, 4) for k, v in self.flagged_outside_by_kind.items()},
                "evidence": self.evidence, "classify_ms": self.classify_ms}


def _gradient(rng: np.random.Generator, size: int):
    from PIL import Image

    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[:, None, None]
    return Image.fromarray((start + (end - start) * np.broadcast_to(ramp, (size, size, 1))).astype(np.uint8))


def outside_images(per_kind: int, seed: int = OUTSIDE_SEED) -> list[tuple[str, object]]:
    """Out-of-distribution images: the calibration's kinds with other seeds, and two kinds it never saw."""
    images = list(open_world_images(per_kind * len(KINDS), seed=seed, size=128))
    rng = np.random.default_rng(seed)
    images += [("photo", photo(seed + i, (320, 240))) for i in range(per_kind)]
    images += [("gradient", _gradient(rng, 128)) for _ in range(per_kind)]
    return images


def _offer(truth: int, rng: np.random.Generator, with_truth: bool, k: int) -> np.ndarray:
    others = rng.choice(np.delete(np.arange(k), truth), OFFERED - int(with_truth), replace=False)
    return np.r_[truth, others] if with_truth else others


def open_set_benchmark(model: str = "demo", *, inside: int = 600, per_kind: int = 100, seed: int = 0,
                       on_status=None) -> OpenSetResult:
    status = on_status or (lambda message: None)
    encoder = load_model(model)
    labels = list(DEMO_LABELS)
    classifier = Classifier(labels, encoder)
    if not classifier.open_set.available:
        status(f"{model} has no calibration with image-side evidence: only the label side is measured")
    status(f"embedding {inside} in-distribution scenes")
    samples = list(generate(inside, seed=INSIDE_SEED + seed))
    truth = np.array([labels.index(f"{s.scene.colour} {s.scene.shape}") for s in samples])
    inside_vectors = encoder.encode_images([s.image for s in samples])
    status(f"embedding {per_kind} images of each of {len(KINDS) + len(HELD_OUT_KINDS)} out-of-distribution kinds")
    outside = outside_images(per_kind, OUTSIDE_SEED + seed)
    outside_vectors = encoder.encode_images([image for _, image in outside])
    kinds = np.array([kind for kind, _ in outside], dtype=object)

    rng = np.random.default_rng(seed)
    _, fit_in, out_in, _ = classifier.evidence(inside_vectors)
    _, fit_out, out_out, _ = classifier.evidence(outside_vectors)
    right = [_offer(t, rng, True, len(labels)) for t in truth]
    wrong = [_offer(t, rng, False, len(labels)) for t in truth]
    random_sets = [rng.choice(len(labels), OFFERED, replace=False) for _ in outside]
    no_fit_right = np.array([1 - fit_in[i, offered].max() for i, offered in enumerate(right)])
    no_fit_wrong = np.array([1 - fit_in[i, offered].max() for i, offered in enumerate(wrong)])
    no_fit_out = np.array([1 - fit_out[i, offered].max() for i, offered in enumerate(random_sets)])
    none_right, none_wrong = none_of_these(no_fit_right, out_in), none_of_these(no_fit_wrong, out_in)
    none_out = none_of_these(no_fit_out, out_out)

    evidence = {"combined": _separation(none_right, none_out),
                "no_label_fits (label side only)": _separation(no_fit_right, no_fit_out)}
    if out_in is not None:
        detector = classifier.open_set.detector
        evidence["out_of_distribution (image side)"] = _separation(out_in, out_out)
        evidence["knn_distance alone"] = _separation(knn_distance(inside_vectors, detector.sample),
                                                     knn_distance(outside_vectors, detector.sample))
    by_kind = {str(kind): float((none_out[kinds == kind] >= NONE_THRESHOLD).mean()) for kind in dict.fromkeys(kinds)}
    return OpenSetResult(model, inside, {k: int((kinds == k).sum()) for k in by_kind}, auroc(none_right, none_out),
                         fpr_at_tpr(none_right, none_out), float((none_right >= NONE_THRESHOLD).mean()),
                         float((none_wrong >= NONE_THRESHOLD).mean()), float((none_out >= NONE_THRESHOLD).mean()),
                         by_kind, evidence, _classify_cost(encoder, inside_vectors[:200]))


def _separation(inside: np.ndarray, outside: np.ndarray) -> dict[str, float]:
    return {"auroc": round(auroc(inside, outside), 4), "fpr95": round(fpr_at_tpr(inside, outside), 4)}


def _classify_cost(encoder, vectors: np.ndarray) -> dict[str, float]:
    """Milliseconds per image of scoring embedded images against 12 labels, with and without the open-set
    evidence (the image is already embedded: this is what the detector adds to a classification)."""
    labels = list(DEMO_LABELS)[:OFFERED]
    with_evidence = Classifier(labels, encoder)
    calibration = with_evidence.calibration
    without = Classifier(labels, encoder, calibration=replace(calibration, open_set=None) if calibration else False)
    names = [""] * len(vectors)
    timings = {}
    for name, classifier in (("with_open_set", with_evidence), ("label_side_only", without)):
        classifier.score_vectors(vectors[:4], names[:4])
        start = time.perf_counter()
        for row in range(len(vectors)):  # one image at a time, as `cliplens classify IMAGE` does
            classifier.score_vectors(vectors[row : row + 1], names[:1])
        timings[name] = round((time.perf_counter() - start) * 1000 / len(vectors), 3)
    timings["added"] = round(timings["with_open_set"] - timings["label_side_only"], 3)
    return timings
