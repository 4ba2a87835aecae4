"""Fitting a model's calibration on labelled images: temperature, the none-of-these detector, conformal
scores and the open-set detector (see :mod:`cliplens.scores.calibration` and :mod:`cliplens.scores.open_set`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import ImageLoadError, UsageError
from .inputs.datasets import LabelledImages, read_labelled_images
from .inputs.images import expand_paths
from .inputs.open_world import open_world_images
from .inputs.wordlists import imagenet_classes
from .models import Encoder, as_encoder
from .scores.calibration import Calibration, fit_calibration
from .scores.open_set import FEATURES, SAMPLE_SIZE, OpenSetDetector, auroc, fit_open_set
from .text.negatives import mine_negatives
from .text.open_set import OpenSetEvidence
from .text.prompts import DEFAULT_TEMPLATE, label_embeddings, resolve_templates
from .text.reference import shared_vocabulary
from .vectors.batches import embed_images


@dataclass
class CalibrationRun:
    """A fitted calibration and the images that could not be read."""

    calibration: Calibration
    errors: list[ImageLoadError]


OPEN_WORLD_IMAGES = 1000  # generated out-of-distribution images the open-set detector is fitted against
OPEN_WORLD_SEED = 20261201


def calibrate(dataset: str | Path | Sequence[str | Path], model: Encoder | str | None = None, *, template: str | None = None,
              templates: str | Sequence[str] | None = None, device: str | None = None, batch_size: int | None = None,
              workers: int | None = None, background: str | Path | None = None, world: str | Path | None = None,
              open_world: int = OPEN_WORLD_IMAGES, seed: int = 0,
              on_progress: Callable[[int, int], None] | None = None) -> CalibrationRun:
    """Embed a labelled dataset (ImageFolder or CSV of path,label) and fit a :class:`Calibration` on it.

    Besides temperature, the label-side detector and conformal scores, it fits the open-set detector:
    the dataset's images (in distribution, a sample of which the calibration keeps) against ``open_world``
    generated blanks, noise, textures and collages and the images in ``background`` (a folder of the
    user's own "none of these" images), all out of distribution. ``world``: a folder of unlabelled images
    that also belong inside (scenes the labels do not name one by one, such as several objects at once).
    Several datasets are fitted as one (a fine-tuned model's new domain and what it keeps).
    """
    data = _read_datasets(dataset)
    encoder = as_encoder(model, device)
    prompt_templates = resolve_templates(templates, template if template is not None else DEFAULT_TEMPLATE)
    background_paths = _folder_images(background, "background")
    world_paths = _folder_images(world, "world")
    class_vectors = label_embeddings(encoder, data.classes, prompt_templates)
    outside_images = [image for _, image in open_world_images(open_world, seed=OPEN_WORLD_SEED + seed,
                                                              size=max(encoder.input_size or (224, 224)))]
    total = len(data.paths) + len(world_paths) + len(background_paths) + len(outside_images)

    def progress(offset: int):
        return None if on_progress is None else (lambda done, _: on_progress(offset + done, total))

    embedded = embed_images(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=progress(0))
    truth = [data.classes.index(data.labels[i]) for i in embedded.indices]
    vocabulary = shared_vocabulary(tuple(dict.fromkeys([*imagenet_classes(), *data.classes])))
    reference_best, _ = vocabulary.best_for_labels(encoder, embedded.vectors,
                                                   vocabulary.kept_for(encoder, data.classes))
    calibration = fit_calibration(embedded.vectors, truth, class_vectors, reference_best, encoder.logit_scale,
                                  model=encoder.name, templates=prompt_templates, classes=data.classes,
                                  reference=vocabulary.labels, runtime=encoder.info.runtime)
    extra = embed_images(world_paths, encoder, batch_size=batch_size, workers=workers,
                         on_progress=progress(len(data.paths)))
    outside = embed_images([*background_paths, *outside_images], encoder, batch_size=batch_size, workers=workers,
                           on_progress=progress(len(data.paths) + len(world_paths)))
    errors = embedded.errors + extra.errors + outside.errors
    inside = np.concatenate([embedded.vectors, extra.vectors]) if len(extra.vectors) else embedded.vectors
    _fit_open_set(calibration, encoder, inside, outside.vectors, len(outside.indices) - len(outside_images),
                  len(extra.vectors), seed)
    return CalibrationRun(calibration, errors)


def _read_datasets(dataset: str | Path | Sequence[str | Path]) -> LabelledImages:
    sources = [dataset] if isinstance(dataset, (str, Path)) else list(dataset)
    if not sources:
        raise UsageError("give at least one labelled dataset", parameter="dataset")
    parts = [read_labelled_images(source) for source in sources]
    return LabelledImages([p for part in parts for p in part.paths], [label for part in parts for label in part.labels],
                          list(dict.fromkeys(c for part in parts for c in part.classes)))


def _folder_images(folder: str | Path | None, parameter: str) -> list[Path]:
    if folder is None:
        return []
    if not Path(folder).is_dir():
        raise UsageError("no such folder of images", value=str(folder), parameter=parameter)
    paths = expand_paths([folder])
    if not paths:
        raise UsageError("no images found in this folder", value=str(folder), parameter=parameter)
    return paths


def _fit_open_set(calibration: Calibration, encoder: Encoder, inside: np.ndarray, outside: np.ndarray,
                  backgrounds: int, world: int, seed: int) -> None:
    """Fit the open-set detector and add its in-sample figures to the calibration's report."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(inside))
    held_out = len(inside) > SAMPLE_SIZE + 200  # enough images to judge some against a sample they are not in
    sample_rows = order[:SAMPLE_SIZE] if held_out else order
    judged_rows = order[SAMPLE_SIZE:] if held_out else order
    negatives = mine_negatives(encoder, calibration.classes)
    calibration.open_set = OpenSetDetector(inside[sample_rows], 0.0, (0.0, 0.0, 0.0), negatives)
    evidence = OpenSetEvidence(encoder, calibration)
    if held_out:
        inside_features = evidence.features(inside[judged_rows])
    else:  # every image is in the sample: each is judged against the others
        inside_features = evidence.features(inside[sample_rows], leave_one_out=True)
    outside_features = evidence.features(outside)
    calibration.open_set = fit_open_set(inside_features, outside_features, inside[sample_rows], negatives=negatives)
    p_in = calibration.open_set.probability(inside_features)
    p_out = calibration.open_set.probability(outside_features)
    calibration.report["open_set"] = {
        "sample": int(len(sample_rows)), "negatives": len(negatives), "out_of_distribution_images": int(len(outside)),
        "background_images": int(backgrounds), "world_images": int(world), "features": list(FEATURES),
        "flagged_in_distribution": float((p_in >= 0.5).mean()),
        "flagged_out_of_distribution": float((p_out >= 0.5).mean()) if len(p_out) else None,
        "auroc_in_sample": auroc(p_in, p_out) if len(p_out) else None,
    }
