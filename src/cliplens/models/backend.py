"""Which runtimes may run a model: ``--backend torch|onnx|auto`` and ``--precision`` become a plan.

A :class:`RuntimePlan` lists the runtimes (backend and precision) to choose from. When the user
names one, the plan holds just it; under ``auto`` it holds every runtime worth trying on this
device, and :mod:`cliplens.models.runtimes` picks the fastest one whose parity verdict on this
machine meets the contract of the answer asked for (:mod:`cliplens.models.parity`). Planning needs
neither torch nor an export, so a cached ONNX model starts without importing torch.
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
from .machine import has_bf16_units

BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
ONNX_ONLY = ("int8",)
TORCH_ONLY = ("bf16", "fp16")


class BackendNote(UserWarning):
    """``auto`` could not take a runtime and says why (missing package, failed export, failed contract)."""


@dataclass(frozen=True)
class Runtime:
    """One way to run a model: a backend and the precision of its image tower."""

    backend: str  # "torch" or "onnx"
    precision: str  # "fp32", "bf16", "fp16" or "int8"

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def fp32(self) -> bool:
        """Whether it computes in full precision (held to the fp32 tolerance, not the reduced one)."""
        return self.precision == "fp32"


REFERENCE = Runtime("torch", "fp32")


@dataclass(frozen=True)
class RuntimePlan:
    """The runtimes to choose from on ``device``, in the order to prefer when their speed is unknown."""

    device: str
    candidates: tuple[Runtime, ...]
    named: bool  # the user named the precision (and so the runtime): no choice is made for them

    @property
    def choice_needed(self) -> bool:
        return len(self.candidates) > 1


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


def check_names(backend: str, precision: str) -> None:
    """Refuse unknown names and combinations no backend runs."""
    if backend not in BACKENDS:
        raise UsageError(f"choose from {', '.join(BACKENDS)}", value=backend, parameter="backend")
    if precision not in PRECISIONS:
        raise UsageError(f"choose from {', '.join(PRECISIONS)}", value=precision, parameter="precision")
    if backend == "torch" and precision in ONNX_ONLY:
        raise UsageError("runs on ONNX Runtime; use the onnx or auto backend", value=precision, parameter="precision")
    if backend == "onnx" and precision in TORCH_ONLY:
        raise UsageError("runs on the torch backend; ONNX Runtime here runs fp32 and int8", value=precision,
                         parameter="precision")


def plan_runtime(model_dir: Path, device: str | None, backend: str | None, precision: str | None) -> RuntimePlan:
    """Check the names, pick the device and list the runtimes that may run this model there."""
    from .hf import check_device, pick_device
    from .onnx import onnxruntime_available

    backend = backend or default_backend()
    precision = precision or default_precision()
    check_names(backend, precision)
    if device is not None:
        check_device(device)
    if device is None:
        device = "cpu" if backend == "onnx" or not gpu_present() else pick_device(None)
    onnx_reason = _why_not_onnx(model_dir, device, onnxruntime_available())
    if backend == "onnx" and onnx_reason:
        raise UsageError(f"{onnx_reason}{_hint(onnx_reason)}; use the torch backend", value="onnx", parameter="backend")
    if precision != "auto":
        return RuntimePlan(device, (_named(backend, precision, device, onnx_reason),), named=True)
    if backend == "torch":
        return RuntimePlan(device, (Runtime("torch", "fp16" if device.startswith("cuda") else "fp32"),), named=False)
    if backend == "onnx":
        return RuntimePlan(device, (Runtime("onnx", "int8"), Runtime("onnx", "fp32")), named=False)
    if device.startswith("cuda"):
        return RuntimePlan(device, (Runtime("torch", "fp16"), REFERENCE), named=False)
    candidates = []
    if onnx_reason is None:
        candidates += [Runtime("onnx", "int8"), Runtime("onnx", "fp32")]
    elif onnx_reason.startswith("onnxruntime is not installed"):
        warnings.warn(f"{onnx_reason}, so the model runs in torch (pip install 'cliplens[onnx]' runs it 2-4x faster "
                      "on a CPU)", BackendNote, stacklevel=4)
    if device == "cpu" and has_bf16_units():  # never where bf16 is emulated: 0.4x fp32 on AVX2-only CPUs
        candidates.append(Runtime("torch", "bf16"))
    candidates.append(REFERENCE)
    return RuntimePlan(device, tuple(candidates), named=False)


def _why_not_onnx(model_dir: Path, device: str, have_onnx: bool) -> str | None:
    if not have_onnx:
        return "onnxruntime is not installed"
    if device != "cpu" and not device.startswith("cuda"):
        return f"ONNX Runtime here does not run on {device}"
    return needs_torch(model_dir)


def _named(backend: str, precision: str, device: str, onnx_reason: str | None) -> Runtime:
    """The one runtime a named precision means (fp32 under auto: ONNX Runtime on a CPU when it can)."""
    if precision in ONNX_ONLY:
        if onnx_reason:
            raise UsageError(f"runs on ONNX Runtime, but {onnx_reason}{_hint(onnx_reason)}", value=precision,
                             parameter="precision")
        return Runtime("onnx", precision)
    if precision in TORCH_ONLY:
        return Runtime("torch", precision)
    if backend == "auto":
        backend = "onnx" if device == "cpu" and onnx_reason is None else "torch"
    return Runtime(backend, precision)


def _hint(onnx_reason: str) -> str:
    return " (pip install 'cliplens[onnx]')" if onnx_reason.startswith("onnxruntime is not installed") else ""
