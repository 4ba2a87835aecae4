"""Writing the eval and audit reports: ``report.json``, a per-image CSV, PNG charts and an ``index.html``
that shows them. The page is static (no scripts, no outside resources) and escapes every string that
came from the user's data."""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Iterable, Sequence

from ..audit import AuditResult
from ..errors import printable
from ..evaluate import EvalResult
from ..files import atomic_write, atomic_write_text, check_output_folder
from ..scores.disparity import ANY_HARMFUL
from . import plots

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:24px;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.4em}.meta{color:#666;font-size:.9em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:120px}
.card .v{font-size:1.6em;font-weight:600}.card .k{color:#666;font-size:.85em}
table{border-collapse:collapse;margin:10px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}tr.flag td{background:#fff1f0}
.harmful{color:#b71c1c;font-weight:600}.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:.8em;
background:#fde0dc;color:#b71c1c;margin-left:4px}
.ok{color:#2e7d32}.warn{color:#b71c1c;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee;margin:8px 0}
.summary li,.limits li{margin:6px 0}.limits{background:#f8f8f8;border-left:4px solid #999;padding:8px 16px 8px 32px}
footer{margin-top:3em;color:#888;font-size:.85em}
"""


def _page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) +
            "\n<footer>Made by cliplens. The figures are in report.json.</footer></body></html>\n")


def _num(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _ci(ci: Sequence[float], scale: float = 100.0, digits: int = 1, sign: str = "+") -> str:
    return f"[{ci[0] * scale:{sign}.{digits}f}, {ci[1] * scale:{sign}.{digits}f}]"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Iterable[str] | None = None) -> str:
    """Cells are HTML already (escape user text before); a cell starting with '\\x00' is right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = []
    classes = iter(row_classes) if row_classes is not None else None
    for row in rows:
        cls = next(classes) if classes is not None else ""
        cells = "".join(f"<td class=\"n\">{c[1:]}</td>" if c.startswith("\x00") else f"<td>{c}</td>" for c in row)
        attr = f' class="{cls}"' if cls else ""
        lines.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _n(text: str) -> str:
    return "\x00" + text


def _img(name: str, alt: str) -> str:
    return f"<img src=\"{escape(name)}\" alt=\"{escape(alt)}\">"


def _card(value: str, key: str) -> str:
    return f"<div class=\"card\"><div class=\"v\">{escape(value)}</div><div class=\"k\">{escape(key)}</div></div>"


def _printable(data):
    """JSON-like ``data`` with every string (keys too) printable, changed in place: a label or path that is
    not UTF-8 is written escaped rather than failing the report at the end of a long run."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        items = [(_printable(k), _printable(v)) for k, v in data.items()]
        data.clear()
        data.update(items)
    elif isinstance(data, list):
        data[:] = [_printable(v) for v in data]
    return data


def _prepare(out: Path, overwrite: bool) -> None:
    """Check the folder (a folder that holds files needs ``overwrite``), make it, and remove the files an
    earlier report listed (so no stale chart stays)."""
    check_output_folder(out, parameter="report", overwrite=overwrite)
    out.mkdir(exist_ok=True)
    try:
        old = json.loads((out / "report.json").read_text(encoding="utf-8"))
        names = old.get("files", []) if isinstance(old, dict) and str(old.get("format", "")).startswith("cliplens-") else []
    except (OSError, ValueError):
        names = []
    for name in names:
        target = out / str(name)
        if target.parent == out and target.suffix in (".png", ".csv", ".html"):
            target.unlink(missing_ok=True)


def _write_json(out: Path, report: dict, files: list[str]) -> None:
    report["files"] = ["report.json", *files]
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    with atomic_write(path, newline="") as fh:
        if not rows:
            return
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _skipped(report: dict) -> list[str]:
    if not report["skipped"]:
        return []
    items = "".join(f"<li>{escape(s['path'])}: {escape(s['reason'])}</li>" for s in report["skipped"][:50])
    more = f"<li>… and {len(report['skipped']) - 50} more (see report.json)</li>" if len(report["skipped"]) > 50 else ""
    return [f"<h2>Skipped images ({len(report['skipped'])})</h2><ul>{items}{more}</ul>"]


def _meta(report: dict) -> str:
    encoded = (f"{report['images_encoded']} encoded, {report['images_cached']} from the cache")
    return (f"<p class=\"meta\">Model <b>{escape(report['model'])}</b> ({escape(report['backend'])}, "
            f"{escape(report['precision'])}) · dataset <b>{escape(report['dataset'])}</b> · "
            f"{report['images']} images ({encoded}) · {escape(report['created'])}</p>")


# --- eval -----------------------------------------------------------------------------------------------

def write_eval_report(result: EvalResult, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write report.json, predictions.csv (classification), the charts and index.html into the folder ``out``
    (one that already holds files only with ``overwrite``); return index.html."""
    out = Path(out)
    _prepare(out, overwrite)
    report = _printable(result.report)
    _printable(result.predictions)
    files: list[str] = []
    body = [f"<h1>Evaluation of {escape(report['model'])}</h1>", _meta(report)]
    if report["task"] == "retrieval":
        plots.retrieval(report, out / "retrieval.png")
        files.append("retrieval.png")
        rows = [[escape(direction.replace("_", " ").replace(" to ", " → ")),
                 *(_n(_num(report[direction][f"recall@{k}"])) for k in (1, 5, 10)),
                 _n(_num(report[direction]["median_rank"], 0))] for direction in ("image_to_text", "text_to_image")]
        body += ["<div class=\"cards\">", _card(_num(report["image_to_text"]["recall@1"]), "image → text R@1"),
                 _card(_num(report["text_to_image"]["recall@1"]), "text → image R@1"),
                 _card(str(report["texts"]), "unique captions"), _card(str(report["pairs"]), "pairs"), "</div>",
                 "<h2>Retrieval</h2>",
                 "<p>An image's correct texts are every caption paired with it in the dataset; a caption's correct "
                 "images are every image paired with it (identical captions count as one text).</p>",
                 _table(["direction", "recall@1", "recall@5", "recall@10", "median rank"], rows),
                 _img("retrieval.png", "recall at 1, 5 and 10 in both directions")]
    else:
        body += _eval_classification(report, out, files)
        _write_csv(out / "predictions.csv", result.predictions)
        files.append("predictions.csv")
    body += _skipped(report)
    links = " · ".join(f"<a href=\"{escape(f)}\">{escape(f)}</a>" for f in ["report.json", *files]
                       if not f.endswith(".png"))
    body.append(f"<h2>Files</h2><p>{links}</p>")
    files.append("index.html")
    _write_json(out, report, files)
    return atomic_write_text(out / "index.html", _page(f"cliplens eval: {report['model']}", body))


def _eval_classification(report: dict, out: Path, files: list[str]) -> list[str]:
    zs = report["zero_shot"]
    names = [c["name"] for c in report["classes"]]
    plots.bars_by_template_set(report["template_sets"], out / "templates.png")
    plots.per_class_accuracy(zs["per_class"], report["chance"], out / "per_class.png")
    plots.confusion(zs["confusion"], names, out / "confusion.png")
    plots.reliability(zs["reliability"], zs["ece"], out / "reliability.png")
    files += ["templates.png", "per_class.png", "confusion.png", "reliability.png"]
    cards = [_card(_num(zs["top1"]), "zero-shot top-1"), _card(_num(zs["top5"]), "top-5"),
             _card(_num(zs["mean_per_class_accuracy"]), "mean per-class accuracy"),
             _card(_num(zs["ece"], 4), "expected calibration error"),
             _card(str(len(names)), f"classes (chance {report['chance']:.3f})")]
    if report["few_shot"]:
        best = max(report["few_shot"], key=lambda r: r["k"])
        cards.append(_card(_num(best["accuracy"]), f"{best['k']}-shot linear probe"))
    prompts = zs["prompts"]
    prompt_text = (" (class names verbatim)" if prompts is None else
                   "" if len(prompts) == 1 and prompts[0] == zs["templates"] else
                   f" (prompt {escape(prompts[0])})" if len(prompts) == 1 else f" ({len(prompts)} templates averaged)")
    body = ["<div class=\"cards\">", *cards, "</div>",
            f"<p>Zero-shot figures below use template set <b>{escape(zs['templates'])}</b>{prompt_text}; "
            f"scores are the model's own {escape(report['score'])} over the classes.</p>",
            "<h2>Template sets</h2>",
            _table(["template set", "templates", "top-1", "top-5", "mean per-class", "ECE"],
                   [[escape(r["name"]), _n(str(r["templates"]) if r["templates"] else "verbatim"),
                     _n(_num(r["top1"])), _n(_num(r["top5"])), _n(_num(r["mean_per_class_accuracy"])),
                     _n(_num(r["ece"], 4))] for r in report["template_sets"]]),
            _img("templates.png", "accuracy per template set")]
    if report["few_shot"]:
        plots.few_shot(report["few_shot"], report["chance"], out / "few_shot.png")
        files.append("few_shot.png")
        body += ["<h2>Few-shot linear probe</h2>",
                 "<p>Logistic regression on the image embeddings, trained on K random images per class and tested on "
                 "all the others, beside zero-shot on the same test images (as in the CLIP paper).</p>",
                 _table(["K per class", "train", "test", "linear probe", "zero-shot", "C"],
                        [[_n(str(r["k"])), _n(str(r["train"])), _n(str(r["test"])), _n(_num(r["accuracy"])),
                          _n(_num(r["zero_shot_accuracy"])), _n(f"{r['C']:g}")] for r in report["few_shot"]]),
                 _img("few_shot.png", "few-shot accuracy against K")]
    per_class = sorted(zs["per_class"], key=lambda r: (r["accuracy"] is None, r["accuracy"] or 0, r["name"]))
    label_column = any(r["label"] != r["name"] for r in per_class)
    headers = ["class", *(["label"] if label_column else []), "images", "accuracy", "precision", "predicted"]
    body += ["<h2>Per-class accuracy</h2>", "<p>Worst first. Accuracy: share of the class's images predicted as it; "
             "precision: share of the images predicted as it that are it.</p>",
             _table(headers, [[escape(r["name"]), *([escape(r["label"])] if label_column else []),
                               _n(str(r["images"])), _n(_num(r["accuracy"])), _n(_num(r["precision"])),
                               _n(str(r["predicted"]))] for r in per_class],
                    ("flag" if r["accuracy"] is not None and r["accuracy"] < 0.5 else "" for r in per_class)),
             _img("per_class.png", "per-class accuracy")]
    if zs["most_confused"]:
        body += ["<h2>Most confused</h2>",
                 _table(["true class", "predicted as", "images", "share of the class"],
                        [[escape(r["true"]), escape(r["predicted"]), _n(str(r["count"])), _n(_pct(r["share"]))]
                         for r in zs["most_confused"]])]
    body += ["<h2>Confusion matrix</h2>", _img("confusion.png", "confusion matrix"),
             "<h2>Calibration</h2>",
             f"<p>Expected calibration error {zs['ece']:.4f}: the mean gap between how sure the model is of its top "
             "prediction and how often it is right, over 15 confidence bins weighted by their images. Bars below "
             "the diagonal are over-confident.</p>",
             _img("reliability.png", "reliability diagram")]
    return body


# --- audit ----------------------------------------------------------------------------------------------

def write_audit_report(result: AuditResult, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write report.json, predictions.csv, the charts and index.html into the folder ``out`` (one that already
    holds files only with ``overwrite``); return index.html."""
    out = Path(out)
    _prepare(out, overwrite)
    report = _printable(result.report)
    _printable(result.predictions)
    files: list[str] = []
    level = f"{report['confidence']:.0%}"
    body = [f"<h1>Bias audit of {escape(report['model'])}</h1>", _meta(report),
            "<h2>Summary</h2><ul class=\"summary\">" + "".join(f"<li>{escape(s)}</li>" for s in report["summary"]) +
            "</ul>",
            "<h2>What this audit can and cannot show</h2><ul class=\"limits\">" +
            "".join(f"<li>{escape(s)}</li>" for s in report["limits"]) + "</ul>"]
    for s, cs in enumerate(report["class_sets"]):
        classes = ", ".join(f"<span class=\"harmful\">{escape(c['name'])}</span><span class=\"badge\">harmful</span>"
                            if c["harmful"] else escape(c["name"]) for c in cs["classes"])
        title = "Class set" if s == 0 else "Alternative class set"
        source = f" from {escape(cs['source'])}" if cs["source"] else ""
        body += [f"<h2>{title} “{escape(cs['name'])}”</h2>",
                 f"<p>{len(cs['classes'])} classes{source}: {classes}</p>"]
        for c, column in enumerate(cs["by_column"]):
            body += _audit_column(cs, column, s, c, out, files, level)
    for a, shift in enumerate(report["shifts"], 1):
        body.append(f"<h2>From “{escape(shift['from'])}” to “{escape(shift['to'])}”</h2>"
                    "<p>The same images with the other class set: how each group's rate of each class changes "
                    "(percentage points; classes a set lacks count as 0%). Filled points: the change is beyond "
                    f"chance ({level} simultaneous interval excludes zero).</p>")
        for c, column in enumerate(shift["by_column"]):
            body += _audit_shift(shift, column, a, c, out, files, level)
    body += _skipped(report)
    _write_csv(out / "predictions.csv", result.predictions)
    files.append("predictions.csv")
    body.append("<h2>Files</h2><p><a href=\"report.json\">report.json</a> · "
                "<a href=\"predictions.csv\">predictions.csv</a> (each image's groups and predicted class per set)</p>")
    files.append("index.html")
    _write_json(out, report, files)
    return atomic_write_text(out / "index.html", _page(f"cliplens audit: {report['model']}", body))


def _class_cell(name: str, harmful: bool) -> str:
    return f"<span class=\"harmful\">{escape(name)}</span>" if harmful else escape(name)


def _audit_column(cs: dict, column: dict, s: int, c: int, out: Path, files: list[str], level: str) -> list[str]:
    rates = column["rates"]
    header = [r for r in rates[0]["rates"]]
    body = [f"<h3>By {escape(column['column'])}</h3>"]
    rates_png = f"rates-s{s}-c{c}.png"
    plots.group_rates(rates, f"{cs['name']}: rate of each class by {column['column']}", out / rates_png)
    files.append(rates_png)
    head = "".join(f"<th>{_class_cell(h['class'], h['harmful'])}</th>" for h in header)
    lines = []
    for g in rates:
        cells = "".join(f"<td class=\"n\">{_pct(r['rate'])}</td>" for r in g["rates"])
        lines.append(f"<tr><td>{escape(g['group'])}</td><td class=\"n\">{g['images']}</td>{cells}</tr>")
    body += [f"<p>Share of each group's images given each class ({level} intervals as error bars in the chart).</p>",
             f"<table><thead><tr><th>group</th><th>images</th>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>",
             _img(rates_png, f"class rates by {column['column']}")]
    if not column["disparities"]:
        return body + ["<p>One group only: nothing to compare.</p>"]
    disparities = sorted(column["disparities"], key=lambda d: (not d["significant"], not d["harmful"], -d["difference"]))
    forest_png = f"disparity-s{s}-c{c}.png"
    plots.forest([{**d, "label": d["class"]} for d in disparities], "difference", "difference_ci",
                 "largest minus smallest group rate", f"{cs['name']}: disparity by {column['column']}", out / forest_png)
    files.append(forest_png)
    rows = [[_class_cell(d["class"], d["harmful"]),
             f"{escape(d['largest']['group'])} ({_pct(d['largest']['rate'])})",
             f"{escape(d['smallest']['group'])} ({_pct(d['smallest']['rate'])})",
             _n(f"{d['difference'] * 100:+.1f} {_ci(d['difference_ci'])}"),
             _n(f"{d['ratio']:.2f} {_ci(d['ratio_ci'], 1, 2, '')}"),
             "<span class=\"warn\">disparity</span>" if d["significant"] else "<span class=\"ok\">within chance</span>"]
            for d in disparities]
    body += [f"<p>For each class, the groups with the largest and smallest rate: the difference in percentage points "
             f"and the ratio smallest ÷ largest (1 = equal; the four-fifths rule flags below 0.8), with {level} "
             f"intervals simultaneous over the table's {column['comparisons']} group pairs × classes.</p>",
             _table(["class", "largest", "smallest", "difference (points)", "ratio", ""], rows,
                    ("flag" if d["significant"] else "" for d in disparities)),
             _img(forest_png, f"disparities by {column['column']}")]
    return body


def _audit_shift(shift: dict, column: dict, a: int, c: int, out: Path, files: list[str], level: str) -> list[str]:
    rows = column["rows"]
    ordered = sorted(rows, key=lambda r: (not (r["class"] == ANY_HARMFUL), not r["significant"], -abs(r["shift"])))
    png = f"shift-a{a}-c{c}.png"
    plots.forest([{**r, "label": f"{r['class']} · {r['group']}"} for r in ordered], "shift", "ci",
                 f"change in rate, {shift['from']} → {shift['to']}", f"Shifts by {column['column']}", out / png)
    files.append(png)
    lines = [[_class_cell(r["class"], r["harmful"]) + ("" if r["in_base"] else " <i>(new)</i>")
              + ("" if r["in_alt"] else " <i>(dropped)</i>"), escape(r["group"]), _n(str(r["images"])),
              _n(_pct(r["before"])), _n(_pct(r["after"])), _n(f"{r['shift'] * 100:+.1f} {_ci(r['ci'])}"),
              "<span class=\"warn\">changed</span>" if r["significant"] else ""]
             for r in ordered if r["significant"] or r["harmful"] or not r["in_base"] or not r["in_alt"]]
    body = [f"<h3>By {escape(column['column'])}</h3>"]
    if lines:
        body.append(_table(["class", "group", "images", "before", "after", "change (points)", ""], lines))
    body += [f"<p>Shown: harmful and new or dropped classes, and every change beyond chance ({len(lines)} of "
             f"{len(rows)} rows; all are in report.json).</p>", _img(png, f"rate shifts by {column['column']}")]
    return body
