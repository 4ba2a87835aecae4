"""Model loading: one factory behind which aliases, hub ids and local folders all resolve."""

from __future__ import annotations

import os
import threading
import warnings

from pathlib import Path

from .backend import BACKENDS, PRECISIONS, BackendNote, RuntimeChoice, choose_runtime, default_backend, default_precision
from .base import Encoder, ModelInfo, StatusFn, TextTruncatedWarning, empty_vectors, l2_normalize
from .hf import TransformersEncoder, pick_device
from .preprocess import ImagePreparer, ImagePreprocessor
from .registry import ALIASES, DEFAULT_MODEL, DEMO_DIR, ModelEntry, default_model, download, list_models, resolve_model_dir

_loaded: dict[tuple, Encoder] = {}
_lock = threading.Lock()


def load_model(name_or_path: str | os.PathLike | None = None, device: str | None = None, *,
               backend: str | None = None, precision: str | None = None, allow_download: bool = True,
               cache: bool = True, on_status: StatusFn | None = None) -> Encoder:
    """Load a CLIP/SigLIP/SigLIP 2 model by hub id, local folder or alias (``demo``); default from CLIPLENS_MODEL.

    ``backend`` is ``torch``, ``onnx`` or ``auto`` (default, or CLIPLENS_BACKEND): ONNX Runtime on a
    CPU, torch on a GPU. ``precision`` is ``fp32``, ``bf16``, ``fp16``, ``int8`` or ``auto`` (default,
    or CLIPLENS_PRECISION): int8 on ONNX when it passed its parity check for this model, fp16 on a GPU,
    else fp32. The first ONNX use of a model exports it to the cache (``on_status`` hears each step).
    Loaded models are kept per (name, device, backend, precision) so repeated API calls do not reload;
    ``release_models`` frees them.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else default_model()
    key = (name, device, backend or default_backend(), precision or default_precision())
    with _lock:
        if cache and key in _loaded:
            return _loaded[key]
        path = resolve_model_dir(name, allow_download=allow_download)
        choice = choose_runtime(path, device, key[2], key[3])
        if choice.backend == "onnx":
            encoder = _load_onnx(path, name, choice, auto=key[2] == "auto", on_status=on_status)
        else:
            encoder = TransformersEncoder(path, name=name, device=choice.device, precision=choice.precision)
        if cache:
            _loaded[key] = encoder
        return encoder


def _load_onnx(path, name: str, choice: RuntimeChoice, *, auto: bool, on_status: StatusFn | None) -> Encoder:
    """The ONNX encoder for ``choice``; under ``auto``, torch when the export fails or does not match it."""
    from .export import ensure_export
    from .onnx import OnnxEncoder
    from .onnx_layout import ExportError
    from .parity import parity_passed

    wanted = "int8" if choice.precision == "auto" else choice.precision
    try:
        folder = ensure_export(path, name, wanted, on_status=on_status)
    except ExportError as exc:
        if not auto:
            raise
        warnings.warn(f"{exc.message}; running it in torch", BackendNote, stacklevel=3)
        return TransformersEncoder(path, name=name, device=choice.device)
    precision = wanted
    if choice.precision == "auto" and not parity_passed(folder, "int8"):
        precision = "fp32"
    if not parity_passed(folder, precision):
        if auto:
            warnings.warn(f"{name}: the ONNX {precision} export did not pass its parity check; running it in torch",
                          BackendNote, stacklevel=3)
            return TransformersEncoder(path, name=name, device=choice.device)
        warnings.warn(f"{name}: the ONNX {precision} export did not pass its parity check (see `cliplens bench "
                      "parity`); its answers may differ from torch", BackendNote, stacklevel=3)
    return OnnxEncoder(folder, name=name, precision=precision, device=choice.device, model_path=path)


def as_encoder(model: Encoder | str | os.PathLike | None, device: str | None = None) -> Encoder:
    """``model`` itself when it is already an Encoder, else the model that name loads."""
    return model if isinstance(model, Encoder) else load_model(model, device=device)


def pull_model(name: str) -> Path:
    """Download a hub model (or an alias's) into the Hugging Face cache and check that it loads; its folder."""
    target = ALIASES.get(name, name)
    path = Path(target) if Path(target).is_dir() else download(target)
    load_model(str(path), device="cpu", backend="torch", cache=False).close()  # proves it loads
    return path


def release_models() -> None:
    """Forget every model ``load_model`` kept, so their memory can be freed."""
    with _lock:
        for encoder in _loaded.values():
            encoder.close()
        _loaded.clear()


__all__ = [
    "ALIASES", "BACKENDS", "DEFAULT_MODEL", "DEMO_DIR", "PRECISIONS", "BackendNote", "Encoder", "ImagePreparer",
    "ImagePreprocessor", "ModelEntry", "ModelInfo", "StatusFn", "TextTruncatedWarning", "TransformersEncoder",
    "as_encoder", "default_model", "empty_vectors", "l2_normalize", "list_models", "load_model", "pick_device",
    "pull_model", "release_models", "resolve_model_dir",
]
