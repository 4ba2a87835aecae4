"""The training pairs' images: decoded and resized once into memory when they fit, else on demand."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ImageLoadError, UsageError
from ..inputs.images import load_image
from ..inputs.pairs import Pair
from ..models import ImagePreprocessor


class PairImages:
    """Decoded, resized uint8 images for the pairs, kept in memory or decoded on demand."""

    def __init__(self, pairs: list[Pair], preprocessor: ImagePreprocessor, cache: bool,
                 on_load: Callable[[int, int], None] | None):
        self.preprocessor = preprocessor
        self.pairs: list[Pair] = []
        self.errors: dict[str, ImageLoadError] = {}  # by source, so a file failing every epoch is reported once
        self.cached: np.ndarray | None = None
        height, width = preprocessor.output_size
        if cache:
            arrays = []
            for i, pair in enumerate(pairs):
                try:
                    arrays.append(preprocessor.resize_crop(load_image(pair.path)))
                    self.pairs.append(pair)
                except ImageLoadError as exc:
                    self.errors[exc.source] = exc
                if on_load is not None:
                    on_load(i + 1, len(pairs))
            self.cached = np.stack(arrays) if arrays else np.zeros((0, height, width, 3), np.uint8)
        else:
            self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def skipped(self) -> list[ImageLoadError]:
        return list(self.errors.values())

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, list[str]]:
        if self.cached is not None:
            return self.cached[indices], [self.pairs[i].caption for i in indices]
        arrays, captions = [], []
        for i in indices:
            try:
                arrays.append(self.preprocessor.resize_crop(load_image(self.pairs[i].path)))
                captions.append(self.pairs[i].caption)
            except ImageLoadError as exc:
                self.errors[exc.source] = exc
        if not arrays:
            last = next(reversed(self.errors.values()))
            raise UsageError(f"no image in a batch of {len(indices)} could be read, e.g. {last}", parameter="pairs")
        return np.stack(arrays), captions
