"""The Encoder interface every runtime implements: batching, checks and normalisation live here."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..inputs.images import ImageSource, load_image
from .preprocess import ImagePreparer, ImagePreprocessor

ScoreKind = Literal["softmax", "sigmoid"]
StatusFn = Callable[[str], None]  # hears each step of slow one-off work (an ONNX export)


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: its name, where it lives and how its scores are read."""

    name: str
    path: str
    family: str  # "clip", "siglip", "siglip2", "chinese_clip", "altclip", "metaclip_2"
    embed_dim: int
    context_length: int
    score_kind: ScoreKind
    logit_scale: float
    logit_bias: float | None
    device: str
    backend: str  # "torch" or "onnx"
    precision: str = "fp32"  # "fp32", "fp16", "bf16" or "int8" (of the image tower)
    text_precision: str = ""  # the text tower's, when it differs ("" = the same)

    def __post_init__(self):
        if not self.text_precision:
            object.__setattr__(self, "text_precision", self.precision)

    @property
    def runtime(self) -> str:
        """Backend and precision, as verdicts and calibrations name them ("onnx int8")."""
        return f"{self.backend} {self.precision}"


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

    Subclasses implement :meth:`encode_pixel_batch`, :meth:`encode_text_batch` and :meth:`token_ids`; this
    base does loading, batching and normalisation, so another runtime slots in with three methods.

    What an encoder can do is said by its properties, so callers never look inside it:
    :attr:`preparer` (the per-image step that decode workers and Ray tasks run), :attr:`input_size`
    (fixed, or None), :attr:`differentiable` (gradients flow through :meth:`image_features`).
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
    def preparer(self) -> ImagePreparer:
        """The per-image work done before the model (resize and crop), as a small picklable object that
        decode threads and other processes (Ray tasks) run exactly as :meth:`prepare` does."""
        return self.preprocessor

    @property
    def draft_size(self) -> int | None:
        """Smallest side a large JPEG may be decoded to (reduced-scale decoding), or None for full decodes."""
        return self.preparer.draft_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) every image is brought to, or None when images keep their own size or aspect."""
        try:
            return self.preprocessor.output_size
        except ValueError:
            return None

    @property
    def differentiable(self) -> bool:
        """Whether gradients flow through :meth:`image_features` (torch), as CLIP-guided synthesis needs."""
        return False

    def image_features(self, pixels):
        """Unnormalised image embeddings of a preprocessed torch batch (N, 3, H, W), differentiable in ``pixels``."""
        raise UsageError(f"{self.name} runs on {self.info.backend}, which gives no gradients; load it with the "
                         "torch backend", parameter="backend")

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (int64, (N, L)) as the model reads ``texts``, padded as it was trained."""
        raise NotImplementedError

    def prepare(self, image: Image.Image) -> Any:
        """Per-image work that can run in decode workers (see :attr:`preparer`)."""
        return self.preparer.prepare(image)

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
