"""Image preprocessing read from a checkpoint's ``preprocessor_config.json``, done with Pillow and numpy.

Follows what transformers' CLIP and SigLIP image processors do (resize, centre crop, rescale,
normalise) so that cliplens needs neither torchvision nor the processors' fast paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ImagePreparer(Protocol):
    """The per-image step before a model: what :meth:`prepare` returns, :meth:`Encoder.encode_prepared` takes."""

    @property
    def draft_size(self) -> int | None: ...

    def prepare(self, image: Image.Image) -> Any: ...


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize (shortest edge, or to a fixed height × width), centre crop, rescale and normalise."""

    shortest_edge: int | None = 224
    resize_to: tuple[int, int] | None = None  # (height, width) when the model resizes without keeping aspect
    crop: tuple[int, int] | None = (224, 224)
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    do_normalize: bool = True

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ImagePreprocessor":
        """Build from the dict in a ``preprocessor_config.json`` (CLIP or SigLIP style)."""
        size = config.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        shortest = resize_to = None
        if config.get("do_resize", True):
            if "shortest_edge" in size:
                shortest = int(size["shortest_edge"])
            elif "height" in size and "width" in size:
                resize_to = (int(size["height"]), int(size["width"]))
        crop = None
        if config.get("do_center_crop", False):
            crop_size = config.get("crop_size") or {}
            if isinstance(crop_size, int):
                crop_size = {"height": crop_size, "width": crop_size}
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        return cls(
            shortest_edge=shortest,
            resize_to=resize_to,
            crop=crop,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
            mean=tuple(config.get("image_mean", OPENAI_MEAN)),  # type: ignore[arg-type]
            std=tuple(config.get("image_std", OPENAI_STD)),  # type: ignore[arg-type]
            do_normalize=bool(config.get("do_normalize", True)),
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ImagePreprocessor":
        """Read ``preprocessor_config.json`` (or ``processor_config.json``) from a model directory."""
        directory = Path(directory)
        for name in ("preprocessor_config.json", "processor_config.json"):
            path = directory / name
            if path.exists():
                config = json.loads(path.read_text())
                return cls.from_config(config.get("image_processor", config))
        return cls()

    def to_config(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` dict transformers' CLIPImageProcessor reads."""
        config: dict[str, Any] = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": self.shortest_edge is not None or self.resize_to is not None,
            "resample": int(self.resample),
            "do_center_crop": self.crop is not None,
            "do_rescale": self.rescale_factor != 1.0,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
        }
        if self.shortest_edge is not None:
            config["size"] = {"shortest_edge": self.shortest_edge}
        elif self.resize_to is not None:
            config["size"] = {"height": self.resize_to[0], "width": self.resize_to[1]}
        if self.crop is not None:
            config["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        return config

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the tensors this preprocessor produces."""
        if self.crop is not None:
            return self.crop
        if self.resize_to is not None:
            return self.resize_to
        raise ValueError("a shortest-edge resize without a crop has no fixed output size")

    @property
    def draft_size(self) -> int:
        """The smallest side a JPEG may be decoded to without hurting the result (twice the target)."""
        target = self.shortest_edge or max(self.resize_to or self.output_size)
        return 2 * target

    def resize_crop(self, image: Image.Image) -> np.ndarray:
        """Resize and crop one RGB image; returns uint8 (H, W, 3)."""
        if self.shortest_edge is not None:
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(self.shortest_edge * long / short)
            size = (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)
            if size != image.size:
                image = image.resize(size, resample=self.resample)
        elif self.resize_to is not None:
            size = (self.resize_to[1], self.resize_to[0])
            if size != image.size:
                image = image.resize(size, resample=self.resample)
        arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if self.crop is not None:
            arr = _center_crop(arr, *self.crop)
        return arr

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The per-image step (:class:`ImagePreparer`): resize and crop to uint8 (H, W, 3)."""
        return self.resize_crop(image)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) → float32 (N, 3, H, W), rescaled and normalised."""
        x = pixels.astype(np.float32) * np.float32(self.rescale_factor)
        if self.do_normalize:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def normalize_tensor(self, images):
        """Torch images (N, 3, H, W) in [0, 1] normalised as :meth:`normalize` does, on their device and
        differentiable (for what follows gradients to the pixels: ``dream``, adversarial training)."""
        if not self.do_normalize:
            return images
        import torch

        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess RGB images into one float32 batch (N, 3, H, W)."""
        return self.normalize(np.stack([self.resize_crop(im) for im in images]))


def _center_crop(arr: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Centre crop as transformers does it, padding with zeros when the image is smaller."""
    height, width = arr.shape[:2]
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), dtype=arr.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = arr
        arr, height, width = padded, padded.shape[0], padded.shape[1]
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    return arr[top : top + crop_h, left : left + crop_w]
