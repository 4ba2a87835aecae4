"""The Encoder interface every runtime implements: batching, checks and normalisation live here."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np
from PIL import Image

from ..images import ImageSource, load_image
from .preprocess import ImagePreprocessor

ScoreKind = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: its name, where it lives and how its scores are read."""

    name: str
    path: str
    family: str  # "clip", "siglip", "siglip2"
    embed_dim: int
    context_length: int
    score_kind: ScoreKind
    logit_scale: float
    logit_bias: float | None
    device: str
    backend: str  # "torch" or "onnx"
    precision: str = "fp32"  # "fp32", "fp16", "bf16" or "int8"


class TextTruncatedWarning(UserWarning):
    """Some texts were longer than the model's context and were cut."""


def warn_truncated(cut: Sequence[str], context_length: int) -> None:
    """One warning for the texts that were cut to the model's context, naming an example."""
    if cut:
        example = cut[0] if len(cut[0]) <= 60 else cut[0][:57] + "..."
        warnings.warn(f"{len(cut)} text(s) longer than the model's {context_length} tokens were truncated, "
                      f"e.g. {example!r}", TextTruncatedWarning, stacklevel=4)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def empty_vectors(dim: int) -> np.ndarray:
    """The (0, dim) float32 result of embedding nothing."""
    return np.zeros((0, dim), np.float32)


class Encoder(ABC):
    """A CLIP-family model: images and texts in, L2-normalised float32 vectors (N, D) out.

    Subclasses implement :meth:`encode_pixel_batch` and :meth:`encode_text_batch`; this base does
    loading, batching and normalisation, so another runtime slots in with two methods.
    """

    info: ModelInfo
    preprocessor: ImagePreprocessor
    image_batch_size = 32
    text_batch_size = 256

    @abstractmethod
    def encode_pixel_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Unnormalised embeddings of one preprocessed batch, float32 (N, 3, H, W) → (N, D)."""

    @abstractmethod
    def encode_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Unnormalised embeddings of one batch of texts (truncated to the context length)."""

    # Convenience accessors, so callers need not reach into ``info``.
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    @property
    def logit_scale(self) -> float:
        return self.info.logit_scale

    @property
    def logit_bias(self) -> float | None:
        return self.info.logit_bias

    @property
    def score_kind(self) -> ScoreKind:
        return self.info.score_kind

    @property
    def draft_size(self) -> int | None:
        """Smallest side a large JPEG may be decoded to (reduced-scale decoding), or None for full decodes."""
        return self.preprocessor.draft_size

    def prepare(self, image: Image.Image) -> Any:
        """Per-image work that can run in decode workers: resize and crop to uint8 (H, W, 3)."""
        return self.preprocessor.resize_crop(image)

    def encode_prepared(self, items: Sequence[Any]) -> np.ndarray:
        """Normalised embeddings of items made by :meth:`prepare`."""
        if not items:
            return empty_vectors(self.embed_dim)
        return self.encode_pixels(self.preprocessor.normalize(np.stack(items)))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised embeddings of preprocessed pixels (N, 3, H, W), in batches."""
        out = [self.encode_pixel_batch(pixels[i : i + self.image_batch_size])
               for i in range(0, len(pixels), self.image_batch_size)]
        return l2_normalize(np.concatenate(out)) if out else empty_vectors(self.embed_dim)

    def encode_images(self, images: Iterable[ImageSource]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of images given as paths, bytes or PIL images.

        Raises :class:`~cliplens.errors.ImageLoadError` on the first bad image; use
        :func:`cliplens.embed_images` to skip and report bad ones instead.
        """
        images = list(images)
        chunks = []
        for i in range(0, len(images), self.image_batch_size):
            batch = images[i : i + self.image_batch_size]
            chunks.append(self.encode_prepared([self.prepare(load_image(im, draft_size=self.draft_size))
                                                for im in batch]))
        return np.concatenate(chunks) if chunks else empty_vectors(self.embed_dim)

    def encode_texts(self, texts: Iterable[str]) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of texts; over-long texts are truncated with a warning."""
        texts = [str(t) for t in texts]
        chunks = [self.encode_text_batch(texts[i : i + self.text_batch_size])
                  for i in range(0, len(texts), self.text_batch_size)]
        return l2_normalize(np.concatenate(chunks)) if chunks else empty_vectors(self.embed_dim)

    def readable(self, texts: Sequence[str]) -> list[bool]:
        """Whether the model's tokenizer knows every word of each text; byte-level tokenizers know all."""
        return [True] * len(texts)

    def close(self) -> None:
        """Release the model's memory; the encoder cannot be used afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.name} ({self.info.family}, {self.info.device})>"
