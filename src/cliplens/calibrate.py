"""Fitting a model's calibration on labelled images: temperature, the none-of-these detector and conformal
scores (see :mod:`cliplens.scores.calibration` for what each is)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import ImageLoadError
from .inputs.datasets import read_labelled_images
from .inputs.wordlists import imagenet_classes
from .models import Encoder, as_encoder
from .scores.calibration import Calibration, fit_calibration
from .text.prompts import DEFAULT_TEMPLATE, label_embeddings, resolve_templates
from .text.reference import shared_vocabulary
from .vectors.batches import embed_images


@dataclass
class CalibrationRun:
    """A fitted calibration and the images that could not be read."""

    calibration: Calibration
    errors: list[ImageLoadError]


def calibrate(dataset: str | Path, model: Encoder | str | None = None, *, template: str | None = None,
              templates: str | Sequence[str] | None = None, device: str | None = None, batch_size: int | None = None,
              workers: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> CalibrationRun:
    """Embed a labelled dataset (ImageFolder or CSV of path,label) and fit a :class:`Calibration` on it."""
    data = read_labelled_images(dataset)
    encoder = as_encoder(model, device)
    prompt_templates = resolve_templates(templates, template if template is not None else DEFAULT_TEMPLATE)
    class_vectors = label_embeddings(encoder, data.classes, prompt_templates)
    embedded = embed_images(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress)
    truth = [data.classes.index(data.labels[i]) for i in embedded.indices]
    vocabulary = shared_vocabulary(tuple(dict.fromkeys([*imagenet_classes(), *data.classes])))
    reference_best, _ = vocabulary.best_for_labels(encoder, embedded.vectors,
                                                   vocabulary.kept_for(encoder, data.classes))
    calibration = fit_calibration(embedded.vectors, truth, class_vectors, reference_best, encoder.logit_scale,
                                  model=encoder.name, templates=prompt_templates, classes=data.classes,
                                  reference=vocabulary.labels, runtime=encoder.info.runtime)
    return CalibrationRun(calibration, embedded.errors)
