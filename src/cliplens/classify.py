"""Zero-shot classification of an image against candidate labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import UsageError
from .images import ImageSource, source_name
from .models import Encoder, as_encoder
from .scores import cosine, label_probabilities

DEFAULT_TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class LabelScore:
    """One candidate label: its probability in [0, 1] and the raw cosine similarity."""

    label: str
    probability: float
    similarity: float


@dataclass(frozen=True)
class Classification:
    """The labels of one image, best first."""

    image: str
    model: str
    labels: list[LabelScore]

    def to_dict(self) -> dict:
        return asdict(self)


def prompts_for(labels: Sequence[str], template: str | None) -> list[str]:
    """Fill each label into the template (``None`` or ``"{}"`` uses labels verbatim)."""
    if template is None:
        return list(labels)
    if "{}" not in template:
        raise UsageError(f"template {template!r} needs a {{}} where the label goes")
    return [template.replace("{}", label) for label in labels]


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = [str(label).strip() for label in labels]
    if not labels or any(not label for label in labels):
        raise UsageError("give at least one non-empty label")
    if len(set(labels)) != len(labels):
        raise UsageError("labels must be distinct")
    return labels


def classify(image: ImageSource, labels: Sequence[str], model: Encoder | str | None = None, *,
             template: str | None = DEFAULT_TEMPLATE, multi_label: bool = False,
             device: str | None = None) -> Classification:
    """Score one image against candidate labels; labels come back sorted by probability."""
    labels = _check_labels(labels)
    encoder = as_encoder(model, device)
    text = encoder.encode_texts(prompts_for(labels, template))
    vector = encoder.encode_images([image])
    return _result(source_name(image), encoder, labels, vector, text, multi_label)[0]


def _result(name: str, encoder: Encoder, labels: list[str], image_vectors: np.ndarray, text_vectors: np.ndarray,
            multi_label: bool) -> list[Classification]:
    sims = cosine(image_vectors, text_vectors)
    probs = label_probabilities(sims, encoder, multi_label)
    results = []
    for row_sim, row_prob in zip(sims, probs):
        order = np.argsort(-row_prob, kind="stable")
        scores = [LabelScore(labels[j], float(row_prob[j]), float(row_sim[j])) for j in order]
        results.append(Classification(name, encoder.name, scores))
    return results
