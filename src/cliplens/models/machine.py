"""What this machine computes with: the CPU's vector units and a key naming the machine.

Runtimes are judged per machine: int8 and bf16 kernels differ between CPUs with and without
AVX-512 VNNI/BF16 or AMX (so do their results, slightly, and their speed), so a verdict measured
on one machine is not reused on another. :func:`machine_key` names the machine a verdict was
measured on; :func:`has_bf16_units` says whether bf16 runs in hardware or is emulated.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

#: The CPU features that change which runtime is fastest or what its kernels compute.
RELEVANT_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                     "amx_bf16", "amx_int8", "asimd", "bf16", "i8mm", "sve")
BF16_UNITS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16 or AMX; Arm's BF16 extension


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what the platform reports)."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """Which of :data:`RELEVANT_FEATURES` this CPU has (flags on x86, Features on Arm)."""
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    return tuple(feature for feature in RELEVANT_FEATURES if feature in flags)


def cpu_cores() -> int:
    """How many cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def has_bf16_units() -> bool:
    """Whether bf16 arithmetic runs in hardware here (torch emulates it, slowly, elsewhere)."""
    return any(feature in cpu_features() for feature in BF16_UNITS)


def describe_cpu() -> str:
    """One line naming the CPU, its cores and its relevant vector units, for benchmark output."""
    features = " ".join(cpu_features()) or "no AVX2/AVX-512 flags seen"
    return f"{cpu_name()}, {cpu_cores()} cores ({features})"


def machine_key(device: str = "cpu") -> str:
    """Names the machine a runtime verdict was measured on: the CPU (model, cores, features), or the GPU."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return f"{torch.cuda.get_device_name(index)} (cuda)"
    return f"{cpu_name()} x{cpu_cores()} [{' '.join(cpu_features())}]"
