"""Which runtime and precision run a model: ``--backend torch|onnx|auto`` and ``--precision``.

``auto`` takes ONNX Runtime on a CPU (int8 when that precision passed its parity check for this
model, else fp32) and torch on a GPU (fp16). Choosing needs neither torch nor an export to be
loaded, so a cached ONNX model starts without importing torch.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
ONNX_ONLY = ("int8",)
TORCH_ONLY = ("bf16", "fp16")


class BackendNote(UserWarning):
    """``auto`` could not take the fastest runtime and says why (missing package, failed parity)."""


@dataclass(frozen=True)
class RuntimeChoice:
    backend: str  # "torch" or "onnx"
    precision: str  # "auto" is resolved later for ONNX, once the export's parity verdicts are known
    device: str


def default_backend() -> str:
    return os.environ.get("CLIPLENS_BACKEND") or "auto"


def default_precision() -> str:
    return os.environ.get("CLIPLENS_PRECISION") or "auto"


def gpu_present() -> bool:
    """Whether this machine may have a CUDA GPU, checked without importing torch on Linux."""
    if sys.platform.startswith("linux"):
        return bool(glob.glob("/dev/nvidia[0-9]*"))
    return sys.platform == "win32"  # no cheap check there: let torch look


def needs_torch(model_dir: Path) -> str | None:
    """Why a checkpoint can only run in torch (None when ONNX can run it)."""
    try:
        processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    except (OSError, ValueError):
        return None
    if "max_num_patches" in processor:
        return "SigLIP 2 NaFlex checkpoints have no ONNX export yet"
    return None


def choose_runtime(model_dir: Path, device: str | None, backend: str | None, precision: str | None) -> RuntimeChoice:
    """Check the names and pick the backend, device and (for torch) precision."""
    from .hf import check_device, pick_device
    from .onnx import onnxruntime_available

    backend = backend or default_backend()
    precision = precision or default_precision()
    if backend not in BACKENDS:
        raise UsageError(f"choose from {', '.join(BACKENDS)}", value=backend, parameter="backend")
    if precision not in PRECISIONS:
        raise UsageError(f"choose from {', '.join(PRECISIONS)}", value=precision, parameter="precision")
    if backend == "torch" and precision in ONNX_ONLY:
        raise UsageError("runs on ONNX Runtime; use the onnx or auto backend", value=precision, parameter="precision")
    if backend == "onnx" and precision in TORCH_ONLY:
        raise UsageError("runs on the torch backend; ONNX Runtime here runs fp32 and int8", value=precision,
                         parameter="precision")
    if device is not None:
        check_device(device)
    if device is None and backend == "onnx":
        device = "cpu"
    if device is None:
        device = pick_device(None) if gpu_present() else "cpu"
    if backend == "auto":
        backend = _auto_backend(model_dir, device, precision, onnxruntime_available())
    if backend == "onnx" and not onnxruntime_available():
        raise UsageError("needs onnxruntime: pip install 'cliplens[onnx]'", value="onnx", parameter="backend")
    if backend == "onnx" and (reason := needs_torch(model_dir)):
        raise UsageError(f"{reason}; use the torch backend", value="onnx", parameter="backend")
    if backend == "torch" and precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    return RuntimeChoice(backend, precision, device)


def _auto_backend(model_dir: Path, device: str, precision: str, have_onnx: bool) -> str:
    if precision in TORCH_ONLY or device != "cpu":
        return "torch"
    if needs_torch(model_dir):
        return "torch" if precision not in ONNX_ONLY else "onnx"  # an explicit int8 is refused with the reason
    if not have_onnx:
        if precision in ONNX_ONLY:
            return "onnx"  # refused with the install hint
        warnings.warn("onnxruntime is not installed, so the model runs in torch (pip install 'cliplens[onnx]' "
                      "runs it 2-4x faster on a CPU)", BackendNote, stacklevel=4)
        return "torch"
    return "onnx"
