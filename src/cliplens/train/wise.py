"""Weight-space ensembling of the zero-shot and fine-tuned weights (WiSE-FT, Wortsman et al. 2022).

``θ(α) = (1 − α)·θ₀ + α·θ₁``: α = 0 is the model the fine-tune started from, α = 1 the fine-tuned one.
θ₀ is the original model with the fine-tune's vocabulary (a new word's row is the ``<unk>`` row the
original read it as, see :mod:`.vocab`), so every point of the line is a model that reads the same
tokens, and α = 0 answers exactly as the original did. ``auto`` walks α over a grid on the two
held-out sets and takes the largest new-domain accuracy whose keep-set accuracy stays within a bound of
the original's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..errors import UsageError

GRID = tuple(round(i / 10, 2) for i in range(11))
REFINE = 0.05
DEFAULT_BOUND = 2.0  # percentage points of keep-set top-1 the user accepts losing


@dataclass(frozen=True)
class WisePoint:
    """Held-out zero-shot top-1 of the model at one α."""

    alpha: float
    new: float
    keep: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def parse_alpha(value: str | float | None) -> float | str | None:
    """``auto``, a number in [0, 1], or None."""
    if value is None or value == "auto":
        return value
    try:
        alpha = float(value)
    except ValueError:
        raise UsageError("give a number from 0 (the original) to 1 (the fine-tuned weights), or auto",
                         value=str(value), parameter="wise") from None
    if not 0.0 <= alpha <= 1.0:
        raise UsageError("must be from 0 (the original) to 1 (the fine-tuned weights)", value=str(value),
                         parameter="wise")
    return alpha


def interpolate(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The weights at ``alpha`` between two state dicts of one architecture (integer buffers are the tuned ones)."""
    if start.keys() != tuned.keys():
        missing = sorted(set(start) ^ set(tuned))[:3]
        raise UsageError(f"the two checkpoints are not one architecture (they differ in {', '.join(missing)})",
                         parameter="wise")
    mixed = {}
    for key, value in tuned.items():
        if start[key].shape != value.shape:
            raise UsageError(f"the two checkpoints differ in the shape of {key} ({tuple(start[key].shape)} and "
                             f"{tuple(value.shape)})", parameter="wise")
        mixed[key] = torch.lerp(start[key], value, alpha) if value.is_floating_point() else value
    return mixed


def choose(points: list[WisePoint], original_keep: float | None, bound: float) -> WisePoint:
    """The point with the best new-domain top-1 whose keep-set top-1 is within ``bound`` points of the
    original's (ties: the better keep, then the smaller α); without a keep set, the best new-domain top-1."""
    allowed = [p for p in points
               if original_keep is None or p.keep is None or (original_keep - p.keep) * 100 <= bound + 1e-9]
    return max(allowed or points, key=lambda p: (p.new, p.keep or 0.0, -p.alpha))


def search_alpha(evaluate: Callable[[float], WisePoint], original_keep: float | None, bound: float = DEFAULT_BOUND,
                 grid: tuple[float, ...] = GRID) -> tuple[WisePoint, list[WisePoint]]:
    """Evaluate the grid, then the two half-steps around its best point; the chosen point and the curve."""
    if bound < 0:
        raise UsageError(f"must be at least 0 points (got {bound})", parameter="wise_bound")
    seen = {a: evaluate(a) for a in grid}
    best = choose(list(seen.values()), original_keep, bound)
    for alpha in (best.alpha - REFINE, best.alpha + REFINE):
        alpha = round(alpha, 4)
        if 0.0 < alpha < 1.0 and alpha not in seen:
            seen[alpha] = evaluate(alpha)
    curve = [seen[a] for a in sorted(seen)]
    return choose(curve, original_keep, bound), curve
