"""The fine-tuning report: ``train_report.html`` beside ``train_report.json`` in the checkpoint folder, with
the held-out curves (what the model learns, what it keeps) and the weight-space ensembling curve."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from ..files import atomic_write_text
from . import plots
from .html import _card, _img, _n, _page, _pct, _printable, _table

HTML_FILE = "train_report.html"
JSON_FILE = "train_report.json"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def write_train_report(report: dict, out: str | Path) -> Path:
    """Write a fine-tune's report (``TrainResult.report``) into the checkpoint folder ``out``:
    ``train_report.json``, the charts and ``train_report.html``; return the page."""
    out = Path(out)
    report = _printable(json.loads(json.dumps(report)))
    atomic_write_text(out / JSON_FILE, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    rows = report.get("evaluations", [])
    original, final = report.get("original"), report.get("final")
    body = [f"<h1>Fine-tuning {escape(str(report.get('model') or 'from scratch'))}</h1>",
            f"<p class=\"meta\">{escape(report['method'])} · {report['steps']} steps of {report['batch_size']} pairs "
            f"from <b>{escape(report['pairs'])}</b> · lr {report['lr']:g} · seed {report['seed']} · "
            f"{escape(report['created'])}</p>"]
    cards = []
    for role, name in (("new", "new domain"), ("keep", "keep set")):
        if original and original.get(role) is not None and final and final.get(role) is not None:
            cards.append(_card(f"{_pct(original[role])} → {_pct(final[role])}", f"{name} top-1"))
    cards.append(_card(f"{report.get('trained_parameters', 0):,}", "trained parameters"))
    cards.append(_card(_size(report.get("checkpoint_bytes")), "checkpoint weights"))
    body += ["<div class=\"cards\">", *cards, "</div>"]
    evals = report["eval"]
    sets = []
    for role in ("new", "keep"):
        held = evals.get(role)
        if held:
            sets.append(f"<li><b>{role}</b>: {escape(held['source'])} ({held['images']} images, {held['classes']} "
                        f"classes{', %d skipped' % len(held['skipped']) if held['skipped'] else ''})</li>")
    if evals.get("keep_note") and not evals.get("keep"):
        sets.append(f"<li><b>keep</b>: {escape(evals['keep_note'])}</li>")
    body += ["<h2>Held-out sets</h2>", f"<ul>{''.join(sets)}</ul>" if sets else "<p>None were given.</p>",
             "<p>Zero-shot top-1 with the prompt “a photo of a {}.”: what evaluating the saved checkpoint with the "
             "default template (in fp32) gives.</p>"]
    files = []
    if rows:
        plots.training_curves(rows, original, out / "train_curves.png")
        files.append("train_curves.png")
        body += [_img("train_curves.png", "held-out top-1 at each evaluated step"),
                 _table(["step", "new domain", "keep set"],
                        [[_n(str(r["step"])), _n(_pct(r.get("new"))), _n(_pct(r.get("keep")))] for r in rows])]
    if report.get("new_words"):
        body.append(f"<p>Words new to the model ({len(report['new_words'])}): "
                    f"{escape(', '.join(report['new_words'][:60]))}{' …' if len(report['new_words']) > 60 else ''}</p>")
    wise = report.get("wise")
    if wise:
        body.append("<h2>Weight-space ensembling</h2>")
        text = (f"α = {wise['alpha']:g}" + (" chosen on the held-out sets: the best new-domain top-1 whose keep-set "
                                            f"top-1 stays within {wise['bound_points']:g} points of the original's"
                                            if wise["auto"] else " as asked"))
        body.append(f"<p>{escape(text)}. The fine-tuned weights (α = 1) are in "
                    f"<code>{escape(wise['fine_tuned'])}</code>.</p>")
        if wise.get("curve"):
            plots.wise_curve(wise["curve"], wise["alpha"], (original or {}).get("keep"), wise["bound_points"],
                             out / "wise_curve.png")
            files.append("wise_curve.png")
            body += [_img("wise_curve.png", "held-out top-1 along the interpolation"),
                     _table(["α", "new domain", "keep set"],
                            [[_n(f"{p['alpha']:g}"), _n(_pct(p["new"])), _n(_pct(p.get("keep")))]
                             for p in wise["curve"]])]
    calibration = report.get("calibration")
    if calibration:
        body += ["<h2>Calibration</h2>", f"<p>{escape(calibration['note'])}</p>"]
    return atomic_write_text(out / HTML_FILE, _page(f"cliplens train: {report.get('model')}", body))
