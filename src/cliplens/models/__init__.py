"""Model loading: one factory behind which aliases, hub ids and local folders all resolve."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

from ..errors import UsageError
from .adapters import adapter_base, is_adapter, merge_adapter
from .backend import (
    BACKENDS,
    PRECISIONS,
    REFERENCE,
    BackendNote,
    Runtime,
    default_backend,
    default_precision,
    plan_runtime,
)
from .base import (
    Encoder,
    ModelInfo,
    StatusFn,
    TextTruncatedWarning,
    empty_vectors,
    l2_normalize,
)
from .hf import TransformersEncoder, pick_device
from .parity import PURPOSES
from .preprocess import ImagePreparer, ImagePreprocessor
from .registry import (
    ALIASES,
    DEFAULT_MODEL,
    DEMO_DIR,
    ModelEntry,
    default_model,
    download,
    list_models,
    resolve_model_dir,
)
from .runtimes import PrecisionNote

_loaded: dict[tuple, Encoder] = {}  # (model folder, device, runtime) → the encoder
_chosen: dict[tuple, tuple] = {}  # (name, device, backend, precision, purpose) → the key in _loaded
_lock = threading.Lock()


def load_model(name_or_path: str | os.PathLike | None = None, device: str | None = None, *,
               backend: str | None = None, precision: str | None = None, purpose: str = "probabilities",
               allow_download: bool = True, cache: bool = True, on_status: StatusFn | None = None) -> Encoder:
    """Load a CLIP/SigLIP/SigLIP 2 model by hub id, local folder or alias (``demo``); default from CLIPLENS_MODEL.

    ``backend`` is ``torch``, ``onnx`` or ``auto`` (default, or CLIPLENS_BACKEND); ``precision`` is
    ``fp32``, ``bf16``, ``fp16``, ``int8`` or ``auto`` (default, or CLIPLENS_PRECISION). Under ``auto``
    the runtime is the fastest one on this machine whose answers meet the parity contract of
    ``purpose``: ``"probabilities"`` (classification, captions, scores: every probability within
    0.01 of fp32) or ``"rankings"`` (indexing, search, duplicates: recall@10 ≥ 0.98 against fp32);
    see :mod:`cliplens.models.parity`. The first use of a model on a machine measures the candidates
    once (and the first ONNX use exports the model to the cache); ``on_status`` hears each step. A
    named reduced precision (``int8``, ``bf16``) warns once with how far it strays (:class:`PrecisionNote`).

    Loaded models are kept per runtime so repeated API calls do not reload; ``release_models`` frees them.
    """
    from .runtimes import choose

    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    name = os.fspath(name_or_path) if name_or_path is not None else default_model()
    request = (name, device, backend or default_backend(), precision or default_precision(), purpose)
    with _lock:
        if cache and request in _chosen and _chosen[request] in _loaded:
            return _loaded[_chosen[request]]
        path = resolve_model_dir(name, allow_download=allow_download)
        plan = plan_runtime(path, device, request[2], request[3])
        opened: dict[Runtime, Encoder] = {}
        runtime = choose(path, name, plan, purpose, opened=opened, on_status=on_status)
        key = (str(path), name, plan.device, runtime)
        encoder = _loaded.get(key) if cache else None
        if encoder is None:
            encoder = opened.get(runtime) or _open(path, name, runtime, plan, on_status)
        for other, unused in opened.items():
            if other != runtime:
                unused.close()
        if cache:
            _loaded[key] = encoder
            _chosen[request] = key
        return encoder


def _open(path, name: str, runtime: Runtime, plan, on_status: StatusFn | None) -> Encoder:
    """Open the chosen runtime; an ONNX export that fails under ``auto`` falls back to torch with a note."""
    from .onnx_layout import ExportError
    from .runtimes import open_runtime

    try:
        return open_runtime(path, name, runtime, plan.device, on_status=on_status)
    except ExportError as exc:
        if plan.named or runtime.backend != "onnx" or REFERENCE not in plan.candidates:
            raise
        warnings.warn(f"{exc.message}; running it in torch", BackendNote, stacklevel=3)
        return open_runtime(path, name, REFERENCE, plan.device)


def as_encoder(model: Encoder | str | os.PathLike | None, device: str | None = None, *,
               purpose: str = "probabilities") -> Encoder:
    """``model`` itself when it is already an Encoder, else the model that name loads for ``purpose``."""
    return model if isinstance(model, Encoder) else load_model(model, device=device, purpose=purpose)


def pull_model(name: str) -> Path:
    """Download a hub model (or an alias's) into the Hugging Face cache and check that it loads; its folder."""
    target = ALIASES.get(name, name)
    path = Path(target) if Path(target).is_dir() else download(target)
    load_model(str(path), device="cpu", backend="torch", precision="fp32", cache=False).close()  # proves it loads
    return path


def merge_lora(adapter: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a LoRA adapter folder (``cliplens train --lora``) merged into its base model as a plain Hugging
    Face checkpoint in ``out``, with the adapter's tokenizer, preprocessor config and calibration."""
    folder = Path(adapter).expanduser()
    if not is_adapter(folder):
        raise UsageError("not a LoRA adapter folder (it needs adapter_config.json and no config.json)",
                         value=str(adapter), parameter="adapter")
    return merge_adapter(folder, resolve_model_dir(adapter_base(folder)), out)


def release_models() -> None:
    """Forget every model ``load_model`` kept, so their memory can be freed."""
    with _lock:
        for encoder in _loaded.values():
            encoder.close()
        _loaded.clear()
        _chosen.clear()


__all__ = [
    "ALIASES",
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEMO_DIR",
    "PRECISIONS",
    "PURPOSES",
    "BackendNote",
    "Encoder",
    "ImagePreparer",
    "ImagePreprocessor",
    "ModelEntry",
    "ModelInfo",
    "PrecisionNote",
    "StatusFn",
    "TextTruncatedWarning",
    "TransformersEncoder",
    "as_encoder",
    "default_model",
    "empty_vectors",
    "l2_normalize",
    "list_models",
    "load_model",
    "merge_lora",
    "pick_device",
    "pull_model",
    "release_models",
    "resolve_model_dir",
]
