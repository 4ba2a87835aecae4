"""The machine a benchmark ran on and the parity contracts its figures are read against."""

from __future__ import annotations

from pathlib import Path

from cliplens.models.machine import cpu_features, describe_cpu, machine_key
from cliplens.models.parity import (
    FP32_TOLERANCE,
    PROBABILITY_TOLERANCE,
    RANKING_RECALL,
    TOP1_AGREEMENT,
    Verdict,
    read_verdicts,
)

__all__ = ["contracts", "cpu_features", "describe_cpu", "has_avx512", "recorded_verdict"]


def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (the speed targets differ between AVX-512 and AVX2-only machines)."""
    return "avx512f" in cpu_features()


def recorded_verdict(folder: Path, runtime: str) -> Verdict | None:
    """The verdict measured on this machine for ``runtime`` of the model in ``folder``, if there is one."""
    return read_verdicts(folder, machine_key()).get(runtime)


def contracts() -> dict:
    """The bars each kind of answer is held to against torch fp32."""
    return {"probabilities": {"max_probability_delta": PROBABILITY_TOLERANCE, "fp32_max_probability_delta":
                              FP32_TOLERANCE, "top1_agreement": TOP1_AGREEMENT},
            "rankings": {"recall_at_10": RANKING_RECALL}}
