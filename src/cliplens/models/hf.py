"""The transformers (PyTorch) backend: CLIP, SigLIP and SigLIP 2 checkpoints in Hugging Face format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelLoadError, UsageError
from .base import Encoder, ModelInfo, empty_vectors, l2_normalize
from .preprocess import ImagePreprocessor

SUPPORTED_TYPES = {"clip": "clip", "siglip": "siglip", "siglip2": "siglip2"}


class TextTruncatedWarning(UserWarning):
    """Some texts were longer than the model's context and were cut."""


def pick_device(device: str | None) -> str:
    """``device`` if given, else CUDA when present, else CPU."""
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: Apple MPS is not available on this machine")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _features(output):
    """transformers 5 returns an output object whose pooler_output is the projected embedding."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class TransformersEncoder(Encoder):
    """An Encoder over a transformers ``CLIPModel``/``SiglipModel``/``Siglip2Model`` in a local folder."""

    def __init__(self, path: str | Path, name: str | None = None, device: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        config_file = path / "config.json"
        if not config_file.exists():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        model_type = json.loads(config_file.read_text()).get("model_type", "")
        if model_type not in SUPPORTED_TYPES:
            raise ModelLoadError(f"{name or path}: model type {model_type!r} is not a CLIP, SigLIP or SigLIP 2 model")
        self.device = pick_device(device)
        try:
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{name or path}: cannot load ({str(exc).splitlines()[0]})") from None
        self.family = SUPPORTED_TYPES[model_type]
        config = self.model.config
        self.context_length = int(getattr(config.text_config, "max_position_embeddings", 77))
        self._naflex = None
        if self.family == "siglip2":
            from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

            self._naflex = Siglip2ImageProcessorPil.from_pretrained(path)
        self.preprocessor = ImagePreprocessor.from_pretrained(path)
        sigmoid = self.family in ("siglip", "siglip2")
        bias = getattr(self.model, "logit_bias", None)
        self.info = ModelInfo(
            name=name or str(path),
            path=str(path),
            family=self.family,
            embed_dim=int(getattr(config, "projection_dim", None) or config.text_config.hidden_size),
            context_length=self.context_length,
            score_kind="sigmoid" if sigmoid else "softmax",
            logit_scale=float(self.model.logit_scale.detach().exp()),
            logit_bias=float(bias.detach()) if bias is not None else None,
            device=self.device,
            backend="torch",
        )

    @property
    def draft_size(self) -> int | None:
        if self._naflex is None:
            return super().draft_size
        side = int(self._naflex.max_num_patches ** 0.5) * self._naflex.patch_size
        return 2 * side

    def prepare(self, image):
        if self._naflex is None:
            return super().prepare(image)
        # NaFlex keeps the aspect ratio and packs patches itself; its own PIL processor does exactly that.
        return self._naflex([image], return_tensors="np")

    def encode_prepared(self, items):
        if self._naflex is None:
            return super().encode_prepared(items)
        if not items:
            return empty_vectors(self.embed_dim)
        batch = {key: np.concatenate([item[key] for item in items]) for key in items[0].keys()}
        return l2_normalize(self._run_image(batch))

    def encode_pixel_batch(self, pixels: np.ndarray) -> np.ndarray:
        return self._run_image({"pixel_values": pixels})

    def _run_image(self, inputs: dict) -> np.ndarray:
        import torch

        tensors = {k: torch.as_tensor(np.asarray(v)).to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            return _features(self.model.get_image_features(**tensors)).float().cpu().numpy()

    def readable(self, texts: Sequence[str]) -> list[bool]:
        """Whether the tokenizer knows every word of each text (no unknown token)."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return [True] * len(texts)
        return [unk not in ids for ids in self.tokenizer(list(texts))["input_ids"]]

    def tokenize(self, texts: Sequence[str]):
        """Token ids and mask as the model was trained (SigLIP pads to its full context)."""
        lengths = [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]
        cut = [text for text, n in zip(texts, lengths) if n > self.context_length]
        if cut:
            example = cut[0] if len(cut[0]) <= 60 else cut[0][:57] + "..."
            warnings.warn(f"{len(cut)} text(s) longer than the model's {self.context_length} tokens were truncated, "
                          f"e.g. {example!r}", TextTruncatedWarning, stacklevel=3)
        padding = "max_length" if self.family in ("siglip", "siglip2") else True
        return self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.context_length,
                              return_tensors="pt")

    def encode_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenize(texts)
        inputs = {"input_ids": tokens["input_ids"].to(self.device)}
        if self.family == "clip" and "attention_mask" in tokens:
            inputs["attention_mask"] = tokens["attention_mask"].to(self.device)
        with torch.inference_mode():
            return _features(self.model.get_text_features(**inputs)).float().cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self.tokenizer = None
