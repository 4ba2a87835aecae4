"""Model loading: one factory behind which aliases, hub ids and local folders all resolve."""

from __future__ import annotations

import os
import threading

from .base import Encoder, ModelInfo, l2_normalize
from .hf import TextTruncatedWarning, TransformersEncoder, pick_device
from .preprocess import ImagePreprocessor
from .registry import ALIASES, DEFAULT_MODEL, DEMO_DIR, default_model, list_models, resolve_model_dir

_loaded: dict[tuple[str, str], Encoder] = {}
_lock = threading.Lock()


def load_model(name_or_path: str | os.PathLike | None = None, device: str | None = None, *,
               allow_download: bool = True, cache: bool = True) -> Encoder:
    """Load a CLIP/SigLIP/SigLIP 2 model by hub id, local folder or alias (``demo``); default from CLIPLENS_MODEL.

    Loaded models are kept per (name, device) so repeated API calls do not reload; ``release_models`` frees them.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else default_model()
    key = (name, pick_device(device))
    with _lock:
        if cache and key in _loaded:
            return _loaded[key]
        path = resolve_model_dir(name, allow_download=allow_download)
        encoder = TransformersEncoder(path, name=name, device=key[1])
        if cache:
            _loaded[key] = encoder
        return encoder


def as_encoder(model: Encoder | str | os.PathLike | None, device: str | None = None) -> Encoder:
    """``model`` itself when it is already an Encoder, else the model that name loads."""
    return model if isinstance(model, Encoder) else load_model(model, device=device)


def release_models() -> None:
    """Forget every model ``load_model`` kept, so their memory can be freed."""
    with _lock:
        for encoder in _loaded.values():
            encoder.close()
        _loaded.clear()


__all__ = [
    "ALIASES", "DEFAULT_MODEL", "DEMO_DIR", "Encoder", "as_encoder", "ImagePreprocessor", "ModelInfo", "TextTruncatedWarning",
    "TransformersEncoder", "default_model", "l2_normalize", "list_models", "load_model", "release_models",
    "resolve_model_dir",
]
