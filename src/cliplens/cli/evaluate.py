"""``cliplens eval`` and ``cliplens audit``: how well a model does on your data, and how it treats groups."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt,
                                 PrecisionOpt, TemplateOpt, TemplatesOpt, WorkersOpt, add, check_output, emit_json, err,
                                 load_model_with_status, out, progress, rate_updater, report_skipped, shown)
from cliplens.cli.classify import one_template_set
from cliplens.errors import UsageError

ReportOpt = typer.Option(..., "--report", "-r", metavar="DIR", help="Folder for report.json, the charts and index.html.")
NoCacheOpt = typer.Option(False, "--no-cache", help="Encode every image again and cache nothing.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the cliplens app."""
    add(app, "eval", eval_command)
    add(app, "audit", audit_command)


def _shots(text: Optional[str]) -> list[int]:
    if not text:
        return []
    try:
        shots = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError("give a number of images per class, e.g. 4 (or several: 1,4,16)",
                         value=str(text), parameter="few_shot") from None
    return sorted(set(shots))


def _f(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def eval_command(dataset: Path = typer.Argument(..., help="A folder with one sub-folder per class, a CSV/JSONL of "
                                                          "path,label, or a CSV/JSONL of path,caption (retrieval)."),
                 report: Path = ReportOpt,
                 labels_file: Optional[Path] = typer.Option(None, "--labels-file", metavar="FILE",
                                                            help="The classes to score, one per line: LABEL, or "
                                                                 "LABEL = display name (what is prompted)."),
                 template: str = TemplateOpt,
                 templates: Optional[List[str]] = typer.Option(None, "--templates", metavar="SET",
                                                               help="Template sets to compare (comma-separated or "
                                                                    "repeated): default (--template), imagenet, "
                                                                    "imagenet-7, none, a template with {} or a file. "
                                                                    "The first is reported in full. Default: "
                                                                    "default,imagenet-7,none."),
                 few_shot: Optional[str] = typer.Option(None, "--few-shot", metavar="K",
                                                        help="K, or K,K,...: a linear probe on K images per class, "
                                                             "tested on the rest, beside zero-shot."),
                 column: Optional[str] = typer.Option(None, "--column", metavar="NAME",
                                                      help="The CSV/JSONL column with the label (default label) or, "
                                                           "for retrieval, the caption (default caption)."),
                 task: str = typer.Option("auto", "--task", metavar="TASK",
                                          help="auto (label column → classification, caption column → retrieval), "
                                               "classification or retrieval."),
                 seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the few-shot draws."),
                 no_cache: bool = NoCacheOpt, overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt,
                 workers: Optional[int] = WorkersOpt, model: Optional[str] = ModelOpt,
                 device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
                 precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Evaluate a model on your data: zero-shot top-1/top-5, per-class accuracy, confusions, calibration and
    template sets, a few-shot linear probe; or retrieval recall@1/5/10 on image–caption pairs."""
    shots = _shots(few_shot)
    data = cliplens.read_eval_dataset(dataset, labels_file=labels_file, column=column, task=task)  # before the model
    if isinstance(data, cliplens.LabelledSet):
        data.check_shots(shots)
        cliplens.parse_template_sets(templates, template=template)
    elif shots:
        raise UsageError("few-shot probes are for classification datasets (path,label), not retrieval ones "
                         "(path,caption)", parameter="few_shot")
    check_output(report, "report", overwrite=overwrite, folder=True)
    encoder = load_model_with_status(model, device, backend, precision)
    _run_and_report(lambda on_progress: cliplens.evaluate(
        data, encoder, templates=templates, template=template, few_shot=shots, seed=seed, batch_size=batch_size,
        workers=workers, use_cache=not no_cache, on_progress=on_progress),
        lambda result: cliplens.write_eval_report(result, report, overwrite=overwrite), report, as_json,
        _print_retrieval if data.task == "retrieval" else _print_classification)


def _run_and_report(run, write, report: Path, as_json: bool, show) -> None:
    """Encode with a progress bar (``run(on_progress)`` gives the result), report skipped images, write the
    report folder, then print report.json (``--json``) or ``show`` it; exit 1 if any image was skipped."""
    with progress("encoding") as bar:
        bar_task = bar.add_task("encoding", total=None, rate="")
        result = run(rate_updater(bar, bar_task, "img"))
    report_skipped(result.errors)
    with err.status("writing the report"):
        index = write(result)
    if as_json:
        emit_json(result.report)
    else:
        show(result.report)
    err.print(f"report → {cliplens.display_path(index)}", highlight=False)
    if result.errors:
        raise typer.Exit(1)


def _print_head(data: dict, what: str) -> None:
    out.print(f"[bold]{shown(data['model'])}[/] on {shown(data['dataset'])}: {data['images']} images{shown(what)} "
              f"({data['images_encoded']} encoded, {data['images_cached']} from the cache)", highlight=False,
              markup=True)


def _print_retrieval(data: dict) -> None:
    _print_head(data, f", {data['texts']} captions")
    table = Table("direction", "R@1", "R@5", "R@10", "median rank")
    for direction, name in (("image_to_text", "image → text"), ("text_to_image", "text → image")):
        row = data[direction]
        table.add_row(name, _f(row["recall@1"]), _f(row["recall@5"]), _f(row["recall@10"]), f"{row['median_rank']:g}")
    out.print(table)


def _print_classification(data: dict) -> None:
    zs = data["zero_shot"]
    _print_head(data, f", {len(data['classes'])} classes (chance {data['chance']:.3f})")
    out.print(f"zero-shot with {shown(repr(zs['templates']))}: top-1 [bold]{zs['top1']:.3f}[/], top-5 "
              f"{_f(zs['top5'])}, mean per-class {zs['mean_per_class_accuracy']:.3f}, expected calibration error "
              f"{zs['ece']:.4f}", highlight=False, markup=True)
    table = Table("template set", "top-1", "top-5", "mean per-class", "ECE", title="template sets")
    for row in data["template_sets"]:
        table.add_row(row["name"], _f(row["top1"]), _f(row["top5"]), _f(row["mean_per_class_accuracy"]),
                      _f(row["ece"], 4))
    out.print(table)
    if data["few_shot"]:
        table = Table("K per class", "train", "test", "linear probe", "zero-shot (same test)", title="few-shot")
        for row in data["few_shot"]:
            table.add_row(str(row["k"]), str(row["train"]), str(row["test"]), _f(row["accuracy"]),
                          _f(row["zero_shot_accuracy"]))
        out.print(table)
    worst = sorted((r for r in zs["per_class"] if r["accuracy"] is not None), key=lambda r: r["accuracy"])[:5]
    out.print("worst classes: " + ", ".join(f"{r['name']} {r['accuracy']:.2f} ({r['images']})" for r in worst),
              highlight=False)
    if zs["most_confused"]:
        top = zs["most_confused"][0]
        images = f"{top['count']} image{'s' if top['count'] > 1 else ''}"
        out.print(f"most confused: {top['true']} → {top['predicted']} ({images}, {top['share']:.0%} of the class)",
                  highlight=False)


def audit_command(images_csv: Path = typer.Argument(..., help="CSV with the image path and one column per attribute."),
                  groups: List[str] = typer.Option(..., "--group", "-g", metavar="COLUMN",
                                                  help="A column to group images by (repeatable; COL1+COL2 for "
                                                       "their intersection)."),
                  classes: Path = typer.Option(..., "--classes", metavar="FILE",
                                               help="Class file: one class per line, '[harmful]' after those whose "
                                                    "prediction would harm, '# name: NAME'."),
                  alt_classes: List[Path] = typer.Option(None, "--alt-classes", metavar="FILE",
                                                         help="Another class set to run on the same images "
                                                              "(repeatable)."),
                  report: Path = ReportOpt, template: str = TemplateOpt, templates: Optional[List[str]] = TemplatesOpt,
                  path_column: str = typer.Option("path", "--path-column", metavar="NAME",
                                                  help="The CSV column with image paths."),
                  bootstrap: int = typer.Option(10_000, "--bootstrap", metavar="N", help="Bootstrap resamples."),
                  confidence: float = typer.Option(0.95, "--confidence", metavar="LEVEL", help="Interval level."),
                  seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the bootstrap."),
                  no_cache: bool = NoCacheOpt, overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt,
                  workers: Optional[int] = WorkersOpt, model: Optional[str] = ModelOpt,
                  device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
                  precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Audit a model for bias: how often each class is predicted for each group, the disparities between
    groups with bootstrap intervals, harmful classes highlighted, and shifts under other class sets."""
    set_name = one_template_set(templates)
    data = cliplens.read_audit_images(images_csv, groups, path_column)  # bad inputs fail before the model loads
    sets = [cliplens.read_class_set(classes)] + [cliplens.read_class_set(p, "alt_classes") for p in alt_classes or []]
    check_output(report, "report", overwrite=overwrite, folder=True)
    encoder = load_model_with_status(model, device, backend, precision)
    _run_and_report(lambda on_progress: cliplens.audit(
        data, encoder, groups=groups, classes=sets[0], alt_classes=sets[1:], template=template, templates=set_name,
        path_column=path_column, bootstrap=bootstrap, confidence=confidence, seed=seed, batch_size=batch_size,
        workers=workers, use_cache=not no_cache, on_progress=on_progress),
        lambda result: cliplens.write_audit_report(result, report, overwrite=overwrite), report, as_json,
        _print_audit)


def _print_audit(data: dict) -> None:
    for line in data["summary"]:
        out.print(f"• {line}", highlight=False)
    for cs in data["class_sets"]:
        for column in cs["by_column"]:
            found = [d for d in column["disparities"] if d["significant"]]
            if not found:
                continue
            table = Table("class", "largest", "smallest", "difference", f"{data['confidence']:.0%} interval",
                          "ratio", title=f"disparities: {cs['name']} by {column['column']}")
            for d in sorted(found, key=lambda d: -d["difference"]):
                name = Text(d["class"], style="red" if d["harmful"] else "")
                table.add_row(name, f"{d['largest']['group']} {d['largest']['rate']:.1%}",
                              f"{d['smallest']['group']} {d['smallest']['rate']:.1%}",
                              f"{d['difference'] * 100:+.1f} pts",
                              f"{d['difference_ci'][0] * 100:+.1f} to {d['difference_ci'][1] * 100:+.1f}",
                              f"{d['ratio']:.2f}")
            out.print(table)
    out.print("[dim]what this audit can and cannot show: see the report[/]", highlight=False, markup=True)
