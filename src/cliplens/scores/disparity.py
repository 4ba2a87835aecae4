"""Group rates and their disparities, with bootstrap intervals: the statistics of ``cliplens audit``.

Uncertainty comes from a percentile bootstrap that resamples images within each group (seeded). The
intervals of a table are simultaneous (Bonferroni over its group pairs × classes), so a table of many
classes does not raise false alarms by chance; an interval that excludes zero is reported as a disparity.
A class set is anything with ``classes`` (names in order) and ``harmful`` (the names marked harmful).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ANY_HARMFUL = "any harmful class"  # the row that sums every class marked harmful


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples (axis 0)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return float(low), float(high)


def bootstrap_counts(cells: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resamples of one group's images, as counts per outcome cell: resampling n images with
    replacement is a multinomial draw of n over the observed cell shares. (draws, cells) integers."""
    cells = np.asarray(cells, np.int64)
    n = int(cells.sum())
    if n == 0:
        return np.zeros((draws, len(cells)), np.int64)
    return rng.multinomial(n, cells / n, size=draws)


def comparisons(groups: int, rows: int) -> int:
    """How many group pairs × rows a table's simultaneous intervals cover (at least 1)."""
    return max(1, groups * (groups - 1) // 2 * rows)


def group_table(predicted: np.ndarray, group_index: np.ndarray, group_names: Sequence[str], class_set,
                *, draws: int, confidence: float, rng: np.random.Generator) -> dict:
    """Rates of each class per group (with per-rate intervals) and each class's disparity between its
    largest and smallest group rate (difference and ratio, with simultaneous intervals)."""
    classes = list(class_set.classes)
    harmful = [classes.index(c) for c in classes if c in class_set.harmful]
    count, groups = len(classes), len(group_names)
    counts = np.stack([np.bincount(predicted[group_index == g], minlength=count) for g in range(groups)])
    sizes = counts.sum(axis=1)
    rates = counts / np.maximum(sizes, 1)[:, None]
    boot = np.stack([bootstrap_counts(counts[g], draws, rng) / max(sizes[g], 1) for g in range(groups)], axis=1)
    rows = [(c, [i]) for i, c in enumerate(classes)] + ([(ANY_HARMFUL, harmful)] if len(harmful) > 1 else [])
    row_rates = np.stack([rates[:, idx].sum(axis=1) for _, idx in rows], axis=1)  # (G, rows)
    row_boot = np.stack([boot[:, :, idx].sum(axis=2) for _, idx in rows], axis=2)  # (B, G, rows)
    m = comparisons(groups, len(rows))
    level = 1.0 - (1.0 - confidence) / m
    table = []
    for g in range(groups):
        table.append({"group": group_names[g], "images": int(sizes[g]),
                      "rates": [{"class": name, "harmful": name == ANY_HARMFUL or name in class_set.harmful,
                                 "rate": float(row_rates[g, r]),
                                 "ci": list(percentile_interval(row_boot[:, g, r], confidence))}
                                for r, (name, _) in enumerate(rows)]})
    disparities = []
    if groups >= 2:
        for r, (name, _) in enumerate(rows):
            hi, lo = int(np.argmax(row_rates[:, r])), int(np.argmin(row_rates[:, r]))
            if hi == lo:
                lo = (hi + 1) % groups
            difference = row_boot[:, hi, r] - row_boot[:, lo, r]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(row_boot[:, hi, r] > 0, row_boot[:, lo, r] / row_boot[:, hi, r], 1.0)
            diff_ci = percentile_interval(difference, level)
            point_hi, point_lo = float(row_rates[hi, r]), float(row_rates[lo, r])
            disparities.append({
                "class": name, "harmful": name == ANY_HARMFUL or name in class_set.harmful,
                "largest": {"group": group_names[hi], "rate": point_hi},
                "smallest": {"group": group_names[lo], "rate": point_lo},
                "difference": point_hi - point_lo, "difference_ci": list(diff_ci),
                "ratio": point_lo / point_hi if point_hi > 0 else 1.0,
                "ratio_ci": list(percentile_interval(ratio, level)),
                "significant": bool(diff_ci[0] > 0),
            })
    return {"rates": table, "disparities": disparities, "comparisons": m, "interval_level": level}


def shift_table(before: np.ndarray, after: np.ndarray, group_index: np.ndarray, group_names: Sequence[str],
                base, alt, *, draws: int, confidence: float, rng: np.random.Generator) -> dict:
    """How each group's rate of each class (by name, 0 where a set lacks it) and of any harmful class
    changes from ``base`` to ``alt`` on the same images: a paired bootstrap within each group."""
    names = list(dict.fromkeys([*base.classes, *alt.classes]))
    rows = names + ([ANY_HARMFUL] if base.harmful or alt.harmful else [])

    def indicators(predicted: np.ndarray, cs) -> np.ndarray:  # (N, rows) 0/1
        chosen = np.asarray(cs.classes, dtype=object)[predicted]
        columns = [chosen == name for name in names]
        if len(rows) > len(names):
            columns.append(np.isin(chosen, list(cs.harmful)))
        return np.stack(columns, axis=1).astype(np.int8)

    delta = indicators(after, alt) - indicators(before, base)  # (N, rows) in {-1, 0, 1}
    base_ind = indicators(before, base)
    m = max(1, len(group_names) * len(rows))
    level = 1.0 - (1.0 - confidence) / m
    out = []
    for g, group in enumerate(group_names):
        members = group_index == g
        n = int(members.sum())
        # images with the same (before, after) pattern are one cell of the multinomial
        patterns, inverse = np.unique(np.concatenate([base_ind[members], delta[members]], axis=1), axis=0,
                                      return_inverse=True)
        boot = bootstrap_counts(np.bincount(inverse.ravel(), minlength=len(patterns)), draws, rng)
        shift_boot = boot @ patterns[:, len(rows):] / max(n, 1)  # (B, rows)
        before_rate = base_ind[members].mean(axis=0) if n else np.zeros(len(rows))
        shift = delta[members].mean(axis=0) if n else np.zeros(len(rows))
        for r, name in enumerate(rows):
            ci = percentile_interval(shift_boot[:, r], level)
            harmful = name == ANY_HARMFUL or name in base.harmful or name in alt.harmful
            out.append({"group": group, "images": n, "class": name, "harmful": harmful,
                        "in_base": name in base.classes or name == ANY_HARMFUL,
                        "in_alt": name in alt.classes or name == ANY_HARMFUL,
                        "before": float(before_rate[r]), "after": float(before_rate[r] + shift[r]),
                        "shift": float(shift[r]), "ci": list(ci), "significant": bool(ci[0] > 0 or ci[1] < 0)})
    return {"rows": out, "comparisons": m, "interval_level": level}
