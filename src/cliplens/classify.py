"""Zero-shot classification that can answer "none of these".

A :class:`Classifier` embeds its labels (and the reference vocabulary) once, then scores any number
of images: probabilities over the labels (softmax for CLIP, per-label sigmoid for SigLIP), the raw
cosine of each label, a calibrated probability that no label fits, and with a calibration and a
coverage level, a conformal prediction set.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import ImageLoadError, UsageError
from .inputs.images import ImageSource, load_image, source_name
from .inputs.ocr import TextRegion, text_cover
from .inputs.wordlists import imagenet_classes
from .models import Encoder, as_encoder
from .scores.calibration import Calibration, FitDetector, resolve_calibration
from .scores.probabilities import cosine, label_probabilities, sigmoid, softmax
from .text.prompts import (DEFAULT_TEMPLATE, LabelWarning, clean_labels, label_embeddings, resolve_templates,
                           warn_unreadable)
from .text.open_set import OpenSetEvidence
from .text.reference import shared_vocabulary
from .vectors.batches import iter_encoded_batches

NONE_THRESHOLD = 0.5  # at or above this, "none of these" is the answer shown
# --multi-label on CLIP: a label this many logits below the best one is as likely present as not.
MULTI_LABEL_MARGIN = 2.0


@dataclass(frozen=True)
class LabelScore:
    """One candidate label: its probability in [0, 1] and the raw cosine similarity."""

    label: str
    probability: float
    similarity: float


@dataclass(frozen=True)
class Classification:
    """The labels of one image, best first, and the probability that none of them fits.

    ``none_of_these`` combines two parts: ``no_label_fits`` (the best label scores well below the image's
    best reference caption) and ``out_of_distribution`` (the image lies outside the world the model was
    calibrated on: far from every calibration image, matched by negative captions; None without a
    calibration that holds this evidence). ``looks_like`` is the reference caption the image matches
    best (shown when no label fits); ``prediction_set`` is the conformal set when a coverage level was
    asked for.
    """

    image: str
    model: str
    labels: list[LabelScore]
    none_of_these: float
    prediction_set: list[str] | None = None
    looks_like: str | None = None
    no_label_fits: float | None = None
    out_of_distribution: float | None = None
    text_covered: list[TextRegion] | None = None  # with ignore_text: the text regions covered before encoding

    @property
    def top(self) -> LabelScore:
        return self.labels[0]

    @property
    def is_none_of_these(self) -> bool:
        return self.none_of_these >= NONE_THRESHOLD

    def _repr_html_(self) -> str:
        """Sorted bars, and the none-of-these line (how a notebook shows a classification)."""
        from html import escape

        bars = "".join(
            f'<tr><td style="text-align:left">{escape(s.label)}</td><td style="width:240px"><div style="background:'
            f'#4a7ebb;height:12px;width:{100 * s.probability:.1f}%"></div></td><td>{100 * s.probability:.1f}%</td></tr>'
            for s in self.labels)
        none = (f"<b>none of these: {100 * self.none_of_these:.1f}%</b>" if self.is_none_of_these
                else f"none of these: {100 * self.none_of_these:.1f}%")
        looks = f" (it looks more like: {escape(self.looks_like)})" if self.is_none_of_these and self.looks_like else ""
        return (f'<div class="cliplens-classification"><div>{escape(self.image)} · {escape(self.model)}</div>'
                f"<table>{bars}</table><div>{none}{looks}</div></div>")

    def to_dict(self) -> dict:
        """The JSON form (``--json`` and the HTTP API): image, model, labels (label, probability, similarity),
        none_of_these with its parts (no_label_fits, out_of_distribution), looks_like (and prediction_set when
        a coverage was asked for)."""
        data = {"image": self.image, "model": self.model,
                "labels": [{"label": s.label, "probability": s.probability, "similarity": s.similarity}
                           for s in self.labels],
                "none_of_these": self.none_of_these,
                "no_label_fits": self.none_of_these if self.no_label_fits is None else self.no_label_fits,
                "out_of_distribution": self.out_of_distribution, "looks_like": self.looks_like}
        if self.prediction_set is not None:
            data["prediction_set"] = list(self.prediction_set)
        if self.text_covered is not None:
            data["text_covered"] = len(self.text_covered)
            data["text_found"] = [r.text for r in self.text_covered]
        return data


def none_of_these(no_label_fits: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    """None of the labels is the answer when no label fits or the image lies outside the calibrated world."""
    return no_label_fits if outside is None else 1.0 - (1.0 - outside) * (1.0 - no_label_fits)


class Classifier:
    """Zero-shot classification against a fixed label set; label embeddings are computed once.

    ``calibration``: a :class:`Calibration` or a file from ``cliplens calibrate`` (its temperature
    then rescales the probabilities, and ``coverage``, e.g. 0.9, adds conformal prediction sets);
    ``None`` uses the calibration shipped beside the model, if any, for "none of these" only, so the
    probabilities stay the model's own (as transformers' pipeline gives them); ``False`` uses none.
    ``ignore_text`` covers the text an OCR engine finds in each image before it is encoded (the ``ocr``
    extra), the defence against typographic attacks; results then say what was covered.
    """

    def __init__(self, labels: Sequence[str], model: Encoder | str | None = None, *,
                 template: str | None = DEFAULT_TEMPLATE, templates: str | Sequence[str] | None = None,
                 multi_label: bool = False, calibration: Calibration | str | os.PathLike | bool | None = None,
                 coverage: float | None = None, device: str | None = None, ignore_text: bool = False):
        self.labels = clean_labels(labels)
        self.text_cover = text_cover() if ignore_text else None
        self.templates = resolve_templates(templates, template)
        self.encoder = as_encoder(model, device)
        self.calibration = resolve_calibration(calibration, self.encoder)
        explicit = self.calibration is not None and calibration is not None
        self.multi_label = multi_label
        self.coverage = coverage
        self.quantile = None
        if coverage is not None:
            if not explicit:
                raise UsageError("a prediction set needs a calibration fitted on labelled images (one made by "
                                 "`cliplens calibrate`)", parameter="coverage")
            self.quantile = self.calibration.quantile(coverage)
            if sorted(self.labels) != sorted(self.calibration.classes):
                warnings.warn(f"{self.calibration.source or 'calibration'}: its coverage guarantee holds for its "
                              f"{len(self.calibration.classes)} classes; these labels differ", LabelWarning, stacklevel=2)
        if len(self.labels) == 1 and self.encoder.score_kind == "softmax":
            warnings.warn(f"only one label ({self.labels[0]!r}): a softmax over one label is always 100%, so its "
                          "probability here is whether it fits the image at all (the none-of-these detector)",
                          LabelWarning, stacklevel=2)
        self.detector = self.calibration.detector if self.calibration else FitDetector()
        self.temperature = self.calibration.temperature if explicit else 1.0
        reference = self.calibration.reference if self.calibration else imagenet_classes()
        self.reference = shared_vocabulary(tuple(reference))
        self.reference_kept = self.reference.kept_for(self.encoder, self.labels)
        warn_unreadable(self.encoder, self.labels)
        self.text_vectors = label_embeddings(self.encoder, self.labels, self.templates)
        self.open_set = OpenSetEvidence(self.encoder, self.calibration, self.reference)

    def _probabilities(self, sims: np.ndarray, logits: np.ndarray, fit: np.ndarray) -> np.ndarray:
        if self.encoder.score_kind == "softmax":
            if len(self.labels) == 1:
                return fit  # does this label fit at all?
            if self.multi_label:  # independent per label: is it about as good as the best one?
                return sigmoid(MULTI_LABEL_MARGIN - (logits.max(axis=1, keepdims=True) - logits))
        return label_probabilities(sims, self.encoder, self.temperature)

    def evidence(self, image_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
        """What "none of these" is made of, for embedded images: the cosines (N, K), each label's probability
        of fitting (N, K), each image's probability of lying outside the calibrated world (N,) or None
        without that evidence, and the reference caption each image looks like."""
        sims = cosine(image_vectors, self.text_vectors)
        logits = sims.astype(np.float64) * self.encoder.logit_scale
        reference_best, looks_like = self.reference.best_for_labels(self.encoder, image_vectors,
                                                                      self.reference_kept)
        fit = self.detector.probability(logits, reference_best.astype(np.float64) * self.encoder.logit_scale)
        return sims, fit, self.open_set.probability(image_vectors), looks_like

    def score_vectors(self, image_vectors: np.ndarray, names: Sequence[str]) -> list[Classification]:
        """Classifications of already-embedded images (rows of L2-normalised vectors)."""
        sims, fit, outside, looks_like = self.evidence(image_vectors)
        logits = sims.astype(np.float64) * self.encoder.logit_scale
        probs = self._probabilities(sims, logits, fit)
        no_fit = 1.0 - fit.max(axis=1)
        none = none_of_these(no_fit, outside)
        conformal = softmax(logits / self.temperature) if self.quantile is not None else None
        results = []
        for i, name in enumerate(names):
            order = np.argsort(-probs[i], kind="stable")
            scores = [LabelScore(self.labels[j], float(probs[i, j]), float(sims[i, j])) for j in order]
            prediction_set = None
            if conformal is not None:
                prediction_set = [self.labels[j] for j in np.argsort(-conformal[i], kind="stable")
                                  if conformal[i, j] >= 1.0 - self.quantile]
            results.append(Classification(name, self.encoder.name, scores, float(none[i]), prediction_set,
                                          looks_like[i], float(no_fit[i]),
                                          None if outside is None else float(outside[i])))
        return results

    def classify(self, image: ImageSource) -> Classification:
        """Classify one image (path, bytes or PIL image); a bad image raises :class:`ImageLoadError`."""
        source = image
        if self.text_cover is not None:
            image = self.text_cover(source, load_image(image, draft_size=self.encoder.draft_size))
        return self._with_text(self.score_vectors(self.encoder.encode_images([image]), [source_name(source)]),
                               [source])[0]

    def _with_text(self, results: list[Classification], sources: Sequence[ImageSource]) -> list[Classification]:
        """With ``ignore_text``: each result with the text regions covered in its image."""
        if self.text_cover is None:
            return results
        return [replace(r, text_covered=self.text_cover.covered(s)) for r, s in zip(results, sources)]

    def classify_many(self, images: Sequence[ImageSource], *, batch_size: int | None = None, workers: int | None = None,
                      on_progress: Callable[[int, int], None] | None = None
                      ) -> Iterator[Classification | ImageLoadError]:
        """Classify images in input order, yielding a result or the :class:`ImageLoadError` of each."""
        images = list(images)
        for batch in iter_encoded_batches(images, self.encoder, batch_size=batch_size, workers=workers,
                                          on_progress=on_progress, transform=self.text_cover):
            ok = [(i, vector) for i, vector in batch if not isinstance(vector, ImageLoadError)]
            scored = iter(self._with_text(self.score_vectors(np.stack([v for _, v in ok]),
                                                             [source_name(images[i]) for i, _ in ok]),
                                          [images[i] for i, _ in ok]) if ok else [])
            for _, vector in batch:
                yield vector if isinstance(vector, ImageLoadError) else next(scored)


def classify(image: ImageSource, labels: Sequence[str], model: Encoder | str | None = None, *,
             template: str | None = DEFAULT_TEMPLATE, templates: str | Sequence[str] | None = None,
             multi_label: bool = False, calibration: Calibration | str | os.PathLike | bool | None = None,
             coverage: float | None = None, device: str | None = None, ignore_text: bool = False) -> Classification:
    """Score one image against candidate labels; labels come back sorted by probability.

    See :class:`Classifier` for the options; use it directly to classify many images with one label set.
    """
    classifier = Classifier(labels, model, template=template, templates=templates, multi_label=multi_label,
                            calibration=calibration, coverage=coverage, device=device, ignore_text=ignore_text)
    return classifier.classify(image)
