"""Which runtime a benchmark times: the one ``auto`` picks on this machine for a trained checkpoint.

Speed does not depend on the weights, but a parity verdict does: the benchmarks' ViT-B/32 has random
weights, whose similarities are near ties, so its own verdicts say nothing about a trained model
(a random model's int8 top 10 reshuffles on noise). For it, a runtime's verdict comes from the trained
demo model (a CLIP ViT like it, measured on this machine) and its speed from the ViT-B/32 itself;
the fastest runtime meeting the contract is what ``auto`` would run for a trained checkpoint here.
For any other model its own verdicts decide, as ``auto`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..models import DEMO_DIR, load_model
from ..models.backend import Runtime, plan_runtime
from ..models.machine import machine_key
from ..models.parity import Verdict, read_verdicts
from ..models.runtimes import fastest, measure


@dataclass(frozen=True)
class TimedRuntime:
    """The runtime a benchmark times, and why."""

    runtime: Runtime
    verdict: Verdict  # the verdict that let it be chosen (the demo model's, for random weights)
    verdicts_from: str  # "demo" or the model's own name
    reason: str

    def to_dict(self) -> dict:
        return {"backend": self.runtime.backend, "precision": self.runtime.precision, "verdicts_from": self.verdicts_from,
                "reason": self.reason, "max_probability_delta": round(self.verdict.max_probability_delta, 6),
                "top1_agreement": round(self.verdict.top1_agreement, 4),
                "recall_at_10_vs_fp32": round(self.verdict.recall_at_10, 4)}


def _verdicts(folder: Path, name: str, candidates, on_status) -> dict[Runtime, Verdict]:
    recorded = read_verdicts(folder, machine_key())
    have = {r: recorded[r.name] for r in candidates if r.name in recorded}
    missing = [r for r in candidates if r not in have]
    if missing:
        opened: dict = {}
        try:
            have.update(measure(folder, name, missing, "cpu", opened=opened, on_status=on_status))
        finally:
            for encoder in opened.values():
                encoder.close()
    return have


def timed_runtime(folder: Path, name: str, purpose: str, *, random_weights: bool, on_status=None) -> TimedRuntime:
    """The runtime ``auto`` picks for ``purpose`` on this machine (for random weights: for a trained CLIP)."""
    candidates = plan_runtime(folder, "cpu", "auto", "auto").candidates
    speeds = _verdicts(folder, name, candidates, on_status)  # the model's own: its speed, and its verdicts
    if not random_weights:
        chosen = fastest(speeds, candidates, purpose)
        verdict = speeds[chosen]
        return TimedRuntime(chosen, verdict, name, f"the fastest runtime meeting the {purpose} contract for {name} "
                                                    f"on this machine")
    trained = _verdicts(DEMO_DIR, "demo", candidates, on_status)
    judged = {r: Verdict(**{**trained[r].to_dict(), "images_per_s": speeds[r].images_per_s})
              for r in candidates if r in trained and r in speeds}
    chosen = fastest(judged, candidates, purpose)
    failed = [f"{r.name} ({_shortfall(trained[r], purpose)})" for r in candidates
              if r in trained and not trained[r].meets(purpose)
              and (speeds[r].images_per_s or 0) > (speeds[chosen].images_per_s or 0)]
    reason = (f"the fastest runtime on this machine whose answers on the trained demo model meet the {purpose} "
              "contract (random weights give near-tie similarities, so their own verdicts say nothing)")
    if failed:
        reason += "; faster but failing it there: " + ", ".join(failed)
    return TimedRuntime(chosen, trained[chosen], "demo", reason)


def _shortfall(verdict: Verdict, purpose: str) -> str:
    if purpose == "rankings":
        return f"recall@10 {verdict.recall_at_10:.3f}"
    return f"max probability change {verdict.max_probability_delta:.3f}, top-1 agreement {verdict.top1_agreement:.3f}"


def load_timed(folder: Path, timed: TimedRuntime):
    """Load the model in the timed runtime (named, without the one-line note a named int8 gives)."""
    import warnings

    from ..models import PrecisionNote

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionNote)
        return load_model(str(folder), device="cpu", backend=timed.runtime.backend,
                          precision=timed.runtime.precision, cache=False)
