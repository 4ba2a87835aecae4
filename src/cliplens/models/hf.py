"""The transformers (PyTorch) backend: CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP and MetaCLIP 2 checkpoints in
Hugging Face format.

The multilingual families differ only in their text towers: Chinese-CLIP's is a BERT (Chinese vocabulary),
AltCLIP's an XLM-R (its positions start after the padding index, so its context is that much shorter than
its position table) and MetaCLIP 2's a CLIP text tower with a worldwide vocabulary; each reads padded text
with an attention mask, as CLIP does, and SigLIP does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, UsageError
from .base import Encoder, ModelInfo, empty_vectors, l2_normalize, warn_truncated
from .preprocess import ImagePreprocessor
from .registry import read_model_config

SUPPORTED_TYPES = {"clip": "clip", "siglip": "siglip", "siglip2": "siglip2", "chinese_clip": "chinese_clip",
                   "altclip": "altclip", "metaclip_2": "metaclip_2"}
#: families whose text towers read padded text with an attention mask (SigLIP's pad to the full context instead)
MASKED_TEXT = frozenset({"clip", "chinese_clip", "altclip", "metaclip_2"})
PADDED_TO_CONTEXT = frozenset({"siglip", "siglip2"})


DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` when it names a kind of device torch knows, else a :class:`UsageError` saying which do."""
    if not DEVICE.match(device):
        raise UsageError("not a device: use cpu, cuda, cuda:N or mps", value=device, parameter="device")
    return device


def _load_error(exc: Exception, folder: Path, name: str | None) -> ModelLoadError:
    """Why transformers could not load a checkpoint, naming the file that is damaged when it can."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if type(exc).__name__ == "SafetensorError" or "safetensors" in first.lower():
        weights = sorted(folder.glob("*.safetensors"))
        where = str(weights[0]) if len(weights) == 1 else f"the weights in {folder}"
        return ModelLoadError(f"{where}: damaged or truncated ({first}); download or copy the model again",
                              value=str(name or folder), parameter="model")
    return ModelLoadError(f"cannot load it ({type(exc).__name__}: {first}); its files may be damaged: download or "
                          "copy the model again", value=str(name or folder), parameter="model")


def pick_device(device: str | None) -> str:
    """``device`` if given, else CUDA when present, else CPU."""
    import torch

    if device:
        check_device(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("CUDA is not available on this machine", value=str(device), parameter="device")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("Apple MPS is not available on this machine", value="mps", parameter="device")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class NaflexPreparer:
    """SigLIP 2 NaFlex's per-image step: its own PIL processor keeps the aspect ratio and packs the patches."""

    processor: Any  # transformers' Siglip2ImageProcessorPil

    @property
    def draft_size(self) -> int:
        side = int(self.processor.max_num_patches ** 0.5) * self.processor.patch_size
        return 2 * side

    def prepare(self, image) -> dict[str, np.ndarray]:
        return dict(self.processor([image], return_tensors="np"))


def _features(output):
    """transformers 5 returns an output object whose pooler_output is the projected embedding."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


class TransformersEncoder(Encoder):
    """An Encoder over a transformers ``CLIPModel``/``SiglipModel``/``Siglip2Model`` in a local folder."""

    #: Precisions this backend runs, and the torch dtype of each.
    PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

    def __init__(self, path: str | Path, name: str | None = None, device: str | None = None,
                 precision: str = "fp32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        model_type = read_model_config(path).get("model_type", "")
        if model_type not in SUPPORTED_TYPES:
            raise ModelLoadError(f"model type {model_type!r} is not a CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP or "
                                 "MetaCLIP 2 model",
                                 value=str(name or path), parameter="model")
        self.device = pick_device(device)
        if precision not in self.PRECISIONS:
            hint = " (int8 runs on ONNX Runtime: the onnx backend)" if precision == "int8" else ""
            raise UsageError(f"the torch backend runs {', '.join(self.PRECISIONS)}{hint}",
                             value=str(precision), parameter="precision")
        if precision == "fp16" and self.device == "cpu":
            raise UsageError("is for GPUs; on a CPU use bf16, or int8 on the onnx backend", value="fp16",
                             parameter="precision")
        self.precision = precision
        self.dtype = getattr(torch, self.PRECISIONS[precision])
        try:
            model = AutoModel.from_pretrained(path, dtype=torch.float32)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # noqa: BLE001 - damaged files raise many kinds (SafetensorError, OSError, ...)
            raise _load_error(exc, path, name) from None
        self.model = model.to(self.device).eval()  # outside the try: a full GPU is not a damaged file
        self._configure(path, name or str(path), model_type)

    @classmethod
    def wrap(cls, model, tokenizer, preprocessor: ImagePreprocessor, name: str) -> "TransformersEncoder":
        """An fp32 encoder over a model already in memory, such as one being trained: it shares the model's
        weights (and their later updates) and leaves its train/eval mode and device as they are."""
        import torch

        model_type = getattr(model.config, "model_type", "")
        if model_type not in SUPPORTED_TYPES:
            raise UsageError(f"cannot wrap a {model_type!r} model in memory", value=name, parameter="model")
        self = cls.__new__(cls)
        self.device = str(next(model.parameters()).device)
        self.precision, self.dtype = "fp32", torch.float32
        self.model, self.tokenizer = model, tokenizer
        self._configure(None, name, model_type, preprocessor)
        return self

    def _configure(self, path: Path | None, name: str, model_type: str,
                   preprocessor: ImagePreprocessor | None = None) -> None:
        """What both constructors share: the family, context, preprocessing and :class:`ModelInfo`."""
        import torch

        scale = float(self.model.logit_scale.detach().float().exp())  # read in fp32, before any cast
        bias = getattr(self.model, "logit_bias", None)
        bias = float(bias.detach()) if bias is not None else None
        if self.dtype != torch.float32:
            self.model = self.model.to(self.dtype)
        self.family = SUPPORTED_TYPES[model_type]
        config = self.model.config
        self.context_length = int(getattr(config.text_config, "max_position_embeddings", 77))
        if self.family == "altclip":  # RoBERTa-style positions start after the padding index
            self.context_length -= int(getattr(config.text_config, "pad_token_id", 1) or 0) + 1
        limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < self.context_length:
            self.context_length = limit
        self._naflex: NaflexPreparer | None = None
        if self.family == "siglip2" and path is not None:
            from transformers.models.siglip2.image_processing_pil_siglip2 import (
                Siglip2ImageProcessorPil,
            )

            self._naflex = NaflexPreparer(Siglip2ImageProcessorPil.from_pretrained(path))
        self.preprocessor = preprocessor or ImagePreprocessor.from_pretrained(path)
        sigmoid = self.family in PADDED_TO_CONTEXT
        self.info = ModelInfo(
            name=name,
            path=str(path or ""),
            family=self.family,
            embed_dim=int(getattr(config, "projection_dim", None) or getattr(config.text_config, "project_dim", None)
                      or config.text_config.hidden_size),
            context_length=self.context_length,
            score_kind="sigmoid" if sigmoid else "softmax",
            logit_scale=scale,
            logit_bias=bias,
            device=self.device,
            backend="torch",
            precision=self.precision,
        )

    @property
    def preparer(self):
        return self._naflex or self.preprocessor

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None if self._naflex is not None else super().input_size

    @property
    def differentiable(self) -> bool:
        return self.model is not None

    def image_features(self, pixels):
        if self.model is None:
            raise UsageError(f"{self.name} has been closed", parameter="model")
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.dtype))).float()

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

        tensors = {k: self._to_device(torch.as_tensor(np.asarray(v))) for k, v in inputs.items()}
        tensors = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        with torch.inference_mode():
            return _features(self.model.get_image_features(**tensors)).float().cpu().numpy()

    def _to_device(self, tensor):
        """Host → device; on a GPU through pinned memory, so the copy overlaps with the model's work."""
        if self.device.startswith("cuda"):
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def readable(self, texts: Sequence[str]) -> list[bool]:
        """Whether the tokenizer knows every word of each text (no unknown token)."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return [True] * len(texts)
        return [unk not in ids for ids in self.tokenizer(list(texts))["input_ids"]]

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokenize(texts)
        ids = tokens["input_ids"].numpy().astype(np.int64)
        mask = tokens["attention_mask"].numpy().astype(np.int64) if "attention_mask" in tokens else np.ones_like(ids)
        return ids, mask

    def tokenize(self, texts: Sequence[str]):
        """Token ids and mask as torch tensors, as the model was trained (SigLIP pads to its full context)."""
        lengths = [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]
        warn_truncated([text for text, n in zip(texts, lengths) if n > self.context_length], self.context_length)
        padding = "max_length" if self.family in PADDED_TO_CONTEXT else True
        return self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.context_length,
                              return_tensors="pt")

    def encode_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenize(texts)
        inputs = {"input_ids": tokens["input_ids"].to(self.device)}
        if self.family in MASKED_TEXT and "attention_mask" in tokens:
            inputs["attention_mask"] = tokens["attention_mask"].to(self.device)
        with torch.inference_mode():
            return _features(self.model.get_text_features(**inputs)).float().cpu().numpy()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self.tokenizer = None
