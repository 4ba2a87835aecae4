"""Held-out zero-shot accuracy while fine-tuning: what the model learns (the new domain) and what it keeps.

Each evaluation set is a labelled dataset (a folder per class, or a CSV/JSONL of ``path,label``, as
:func:`cliplens.evaluate` reads them). Its images are decoded and resized once; each evaluation embeds them
with the model as it stands and scores the class names with the default prompt, so a figure here is the
top-1 that ``evaluate(DATASET, checkpoint, templates="default")`` gives the saved checkpoint in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, ImageLoadError, UsageError
from ..files import display_path
from ..inputs.datasets import read_labelled_images
from ..inputs.demo_data import DEMO_LABELS, generate
from ..inputs.images import load_image
from ..models import ImagePreprocessor, TransformersEncoder
from ..text.prompts import DEFAULT_TEMPLATE, label_embeddings

#: The demo model's own keep set when none is given: its shapes, generated (seed apart from training data's).
DEMO_KEEP_IMAGES = 300
DEMO_KEEP_SEED = 20261202


@dataclass
class HeldOutSet:
    """Images (decoded and resized, uint8 (N, H, W, 3)) with the index of their class among ``classes``."""

    role: str  # "new" or "keep"
    source: str
    pixels: np.ndarray
    truth: np.ndarray
    classes: list[str]
    skipped: list[ImageLoadError] = field(default_factory=list)
    generated: dict | None = None  # how a generated set was made: {"images": N, "seed": S}

    def describe(self) -> dict:
        described = {"source": self.source, "images": int(len(self.truth)), "classes": len(self.classes),
                     "skipped": [{"path": e.source, "reason": e.reason} for e in self.skipped]}
        return {**described, "generated": self.generated} if self.generated else described


def read_held_out(source: str | Path, preprocessor: ImagePreprocessor, role: str) -> HeldOutSet:
    """Read a labelled dataset for held-out evaluation; unreadable images are skipped and reported."""
    parameter = f"eval_{role}"
    try:
        data = read_labelled_images(source)
    except UsageError as exc:
        raise UsageError(exc.message, value=exc.value, parameter=parameter) from None
    except DataError as exc:
        raise DataError(exc.message, value=exc.value, parameter=parameter) from None
    classes = sorted(data.classes)
    index = {c: i for i, c in enumerate(classes)}
    arrays, truth, skipped = [], [], []
    for path, label in zip(data.paths, data.labels):
        try:
            arrays.append(preprocessor.resize_crop(load_image(path)))
            truth.append(index[label])
        except ImageLoadError as exc:
            skipped.append(exc)
    if not arrays:
        raise DataError(f"none of its {len(data.paths)} images could be read (first: {skipped[0]})",
                        value=display_path(source), parameter=parameter)
    return HeldOutSet(role, display_path(source), np.stack(arrays), np.array(truth), classes, skipped)


def demo_keep_set(preprocessor: ImagePreprocessor, n: int = DEMO_KEEP_IMAGES) -> HeldOutSet:
    """The demo model's own domain (coloured circles, squares, triangles, stars and crosses), generated."""
    height, _ = preprocessor.output_size
    classes = sorted(DEMO_LABELS)
    index = {c: i for i, c in enumerate(classes)}
    samples = list(generate(n, seed=DEMO_KEEP_SEED, size=height))
    pixels = np.stack([preprocessor.resize_crop(s.image) for s in samples])
    return HeldOutSet("keep", "the demo model's own shapes, generated", pixels,
                      np.array([index[s.scene.label] for s in samples]), classes,
                      generated={"images": n, "seed": DEMO_KEEP_SEED})


def zero_shot_top1(encoder: TransformersEncoder, held: HeldOutSet, batch_size: int = 64) -> float:
    """Zero-shot top-1 of the model on the set, with the default prompt (the model is put in eval mode)."""
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        vectors = np.concatenate([
            encoder.encode_pixels(encoder.preprocessor.normalize(held.pixels[i : i + batch_size]))
            for i in range(0, len(held.pixels), batch_size)])
        classes = label_embeddings(encoder, held.classes, [DEFAULT_TEMPLATE])
    finally:
        model.train(was_training)
    return float((np.argmax(vectors @ classes.T, axis=1) == held.truth).mean())
