"""PNG charts for the eval and audit reports, drawn with matplotlib's Agg canvas (no pyplot, no display,
no global backend switch, so it is safe inside other programs)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..files import atomic_path

DPI = 110
BLUE, ORANGE, GREY, RED, GREEN = "#3366aa", "#ee8833", "#999999", "#cc2222", "#339955"
GROUP_COLOURS = ("#3366aa", "#ee8833", "#339955", "#aa44aa", "#cc9922", "#22aaaa", "#995533", "#666666")
MAX_ROWS = 40  # more rows than this and a chart shows the most telling ones


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("reports need matplotlib: pip install 'cliplens[eval]'", parameter="report") from None
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _finish(figure, ax, path: Path, xlabel: str, ylabel: str, title: str, legend: str = "lower right") -> Path:
    """Label a chart of rates (0 to 1), add its legend and save it."""
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend, fontsize=8)
    return _save(figure, path)


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def bars_by_template_set(rows: Sequence[dict], path: Path) -> Path:
    """Top-1 (and top-5) per template set."""
    names = [_short(r["name"], 40) for r in rows]
    y = np.arange(len(rows))
    figure = _figure(7.5, 1.2 + 0.45 * len(rows))
    ax = figure.add_subplot()
    has_top5 = any(r["top5"] is not None for r in rows)
    height = 0.38 if has_top5 else 0.6
    ax.barh(y - (height / 2 if has_top5 else 0), [r["top1"] for r in rows], height, color=BLUE, label="top-1")
    if has_top5:
        ax.barh(y + height / 2, [r["top5"] or 0 for r in rows], height, color=ORANGE, label="top-5")
    for i, r in enumerate(rows):
        ax.text(r["top1"] + 0.01, i - (height / 2 if has_top5 else 0), f"{r['top1']:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("zero-shot accuracy")
    ax.set_title("Template sets compared")
    if has_top5:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _save(figure, path)


def per_class_accuracy(rows: Sequence[dict], chance: float, path: Path) -> Path:
    """Accuracy of each class with images, worst first (the worst MAX_ROWS when there are more)."""
    rows = sorted((r for r in rows if r["accuracy"] is not None), key=lambda r: (r["accuracy"], r["name"]))
    shown = rows[:MAX_ROWS]
    figure = _figure(7.5, 1.2 + 0.28 * len(shown))
    ax = figure.add_subplot()
    y = np.arange(len(shown))
    ax.barh(y, [r["accuracy"] for r in shown], 0.7, color=[RED if r["accuracy"] < 0.5 else BLUE for r in shown])
    ax.axvline(chance, color=GREY, linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_yticks(y, [f"{_short(r['name'])} ({r['images']})" for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (images in brackets)")
    more = f" — the {len(shown)} worst of {len(rows)}" if len(rows) > len(shown) else ""
    ax.set_title("Per-class accuracy" + more)
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], path: Path) -> Path:
    """The row-normalised confusion matrix (the MAX_ROWS most confused classes when there are more)."""
    matrix = np.asarray(matrix, dtype=float)
    keep = np.arange(len(names))
    if len(names) > MAX_ROWS:
        errors = matrix.sum(axis=1) - np.diag(matrix) + matrix.sum(axis=0) - np.diag(matrix)
        keep = np.sort(np.argsort(-errors, kind="stable")[:MAX_ROWS])
    sub = matrix[np.ix_(keep, keep)]
    shares = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    size = min(11.0, 3.0 + 0.22 * len(keep))
    figure = _figure(size + 1.2, size)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    labels = [_short(names[i], 24) for i in keep]
    ax.set_xticks(range(len(keep)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(keep)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(keep) <= 12:
        for i in range(len(keep)):
            for j in range(len(keep)):
                if sub[i, j]:
                    ax.text(j, i, int(sub[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    more = f" ({len(keep)} most confused of {len(names)} classes)" if len(keep) < len(names) else ""
    ax.set_title("Confusion matrix" + more)
    return _save(figure, path)


def reliability(bins: Sequence[dict], ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and the image counts."""
    figure = _figure(6.0, 6.0)
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    width = bins[0]["high"] - bins[0]["low"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    filled = [(c, b) for c, b in zip(centres, bins) if b["count"]]
    top.bar([c for c, _ in filled], [b["accuracy"] for _, b in filled], width * 0.95, color=BLUE, label="accuracy")
    top.bar([c for c, _ in filled], [abs(b["confidence"] - b["accuracy"]) for _, b in filled], width * 0.95,
            bottom=[min(b["confidence"], b["accuracy"]) for _, b in filled], fill=False, edgecolor=RED, hatch="///",
            linewidth=0.8, label="gap to the bin's mean confidence")
    top.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (expected calibration error {ece:.4f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["count"] for b in bins], width * 0.95, color=GREY)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence of the top prediction")
    bottom.set_ylabel("images")
    return _save(figure, path)


def few_shot(rows: Sequence[dict], chance: float, path: Path) -> Path:
    """Linear-probe accuracy against shots per class, beside zero-shot on the same test images."""
    figure = _figure(6.5, 4.0)
    ax = figure.add_subplot()
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["accuracy"] for r in rows], marker="o", color=BLUE, label="linear probe (few-shot)")
    ax.plot(ks, [r["zero_shot_accuracy"] for r in rows], marker="s", color=ORANGE, linestyle="--",
            label="zero-shot, same test images")
    ax.axhline(chance, color=GREY, linestyle=":", linewidth=1, label=f"chance ({chance:.2f})")
    if len(ks) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    return _finish(figure, ax, path, "training images per class (K)", "accuracy", "Few-shot linear probe vs zero-shot")


def retrieval(report: dict, path: Path) -> Path:
    """Recall@k in both directions."""
    figure = _figure(6.5, 3.8)
    ax = figure.add_subplot()
    keys = [k for k in report["image_to_text"] if k.startswith("recall@")]
    x = np.arange(len(keys))
    for offset, (direction, colour, label) in zip((-0.2, 0.2), (("image_to_text", BLUE, "image → text"),
                                                                  ("text_to_image", ORANGE, "text → image"))):
        values = [report[direction][k] for k in keys]
        ax.bar(x + offset, values, 0.38, color=colour, label=label)
        for xi, v in zip(x, values):
            ax.text(xi + offset, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(x, keys)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("recall")
    ax.set_title(f"Retrieval: {report['images']} images, {report['texts']} captions")
    ax.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def group_rates(table: Sequence[dict], title: str, path: Path) -> Path:
    """Rate of each class per group, with per-rate intervals; harmful classes' labels in red."""
    classes = [r["class"] for r in table[0]["rates"]]
    harmful = [r["harmful"] for r in table[0]["rates"]]
    groups = len(table)
    width = 0.8 / groups
    figure = _figure(min(14.0, 3.0 + 0.35 * len(classes) * max(1, groups / 2)), 4.6)
    ax = figure.add_subplot()
    x = np.arange(len(classes))
    for g, row in enumerate(table):
        rates = np.array([r["rate"] for r in row["rates"]])
        low = rates - np.array([r["ci"][0] for r in row["rates"]])
        high = np.array([r["ci"][1] for r in row["rates"]]) - rates
        ax.bar(x - 0.4 + width * (g + 0.5), rates, width, yerr=[np.maximum(low, 0), np.maximum(high, 0)],
               capsize=2, error_kw={"linewidth": 0.8}, color=GROUP_COLOURS[g % len(GROUP_COLOURS)],
               label=f"{_short(row['group'], 24)} ({row['images']})")
    ax.set_xticks(x, [_short(c, 28) for c in classes], rotation=30 if len(classes) > 4 else 0, ha="right"
                  if len(classes) > 4 else "center", fontsize=8)
    for tick, bad in zip(ax.get_xticklabels(), harmful):
        if bad:
            tick.set_color(RED)
            tick.set_fontweight("bold")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the group's images")
    ax.set_title(_short(title, 90))
    ax.legend(fontsize=8, loc="upper right", ncols=min(groups, 4))
    return _save(figure, path)


def forest(rows: Sequence[dict], value: str, interval: str, label: str, title: str, path: Path) -> Path:
    """Estimates with intervals (differences or shifts) as a forest plot: filled when the interval
    excludes zero, red labels for harmful classes."""
    shown = list(rows)[:MAX_ROWS]
    figure = _figure(7.5, 1.4 + 0.3 * len(shown))
    ax = figure.add_subplot()
    y = np.arange(len(shown))
    for i, row in enumerate(shown):
        low, high = row[interval]
        colour = RED if row["harmful"] else BLUE
        ax.plot([low, high], [i, i], color=colour, linewidth=1.5)
        ax.plot([row[value]], [i], marker="o", color=colour, markerfacecolor=colour if row["significant"] else "white")
    ax.axvline(0, color=GREY, linewidth=1)
    ax.set_yticks(y, [_short(r["label"], 44) for r in shown], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), shown):
        if row["harmful"]:
            tick.set_color(RED)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(_short(title, 90) + (f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""))
    return _save(figure, path)


def training_curves(rows: Sequence[dict], original: dict | None, path: Path) -> Path:
    """Held-out zero-shot top-1 on the new domain and on the keep set at each evaluated step."""
    figure = _figure(7.0, 3.6)
    ax = figure.add_subplot()
    steps = [r["step"] for r in rows]
    for role, colour, label in (("new", BLUE, "new domain"), ("keep", ORANGE, "keep set")):
        values = [r.get(role) for r in rows]
        if any(v is not None for v in values):
            ax.plot(steps, values, marker="o", color=colour, label=label)
    if original and original.get("keep") is not None:
        ax.axhline(original["keep"], color=GREY, linestyle="--", linewidth=1, label="keep set before training")
    return _finish(figure, ax, path, "step", "zero-shot top-1", "What the fine-tune learns and what it keeps")


def wise_curve(points: Sequence[dict], chosen: float, original_keep: float | None, bound: float, path: Path) -> Path:
    """Top-1 on both held-out sets along the interpolation from the original (α 0) to the fine-tuned (α 1)."""
    figure = _figure(7.0, 3.6)
    ax = figure.add_subplot()
    alphas = [p["alpha"] for p in points]
    ax.plot(alphas, [p["new"] for p in points], marker="o", color=BLUE, label="new domain")
    if any(p.get("keep") is not None for p in points):
        ax.plot(alphas, [p["keep"] for p in points], marker="o", color=ORANGE, label="keep set")
    if original_keep is not None:
        ax.axhline(original_keep - bound / 100, color=RED, linestyle=":", linewidth=1,
                   label=f"keep-set bound ({bound:g} points)")
    ax.axvline(chosen, color=GREEN, linewidth=1.5, label=f"chosen α = {chosen:g}")
    ax.set_xlim(-0.02, 1.02)
    return _finish(figure, ax, path, "α (0: original weights, 1: fine-tuned weights)", "zero-shot top-1",
                   "Weight-space ensembling", legend="best")
