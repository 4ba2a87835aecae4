"""``cliplens classify`` and ``cliplens calibrate``: zero-shot classification that can say "none of these"."""

from __future__ import annotations

import glob
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import typer
import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, IgnoreTextOpt, JsonOpt, LabelsFileOpt, ModelOpt,
                                 OverwriteOpt,
                                 PrecisionOpt, TemplateOpt, TemplatesOpt, WorkersOpt, add, api_json_option,
                                 check_output, emit_json, err, find_images, load_model_with_status, out, progress,
                                 rate_updater, report_skipped, shown)
from cliplens.cli.outputs import FORMATS, ResultWriter, format_for
from cliplens.errors import UsageError


def register(app: typer.Typer) -> None:
    add(app, "classify", classify)
    add(app, "calibrate", calibrate)


def one_template_set(templates: Optional[List[str]]) -> Optional[str]:
    """The one template set a command that scores with one set was given (eval compares several)."""
    specs = [part.strip() for spec in templates or [] for part in spec.split(",") if part.strip()]
    if len(specs) > 1:
        raise UsageError("this command uses one template set (eval compares several)",
                         value=str(', '.join(specs)), parameter="templates")
    return specs[0] if specs else None


def classify(image: str = typer.Argument(..., help="Image file, or a folder or quoted glob for many images."),
             labels: List[str] = typer.Argument(None, help="Candidate labels (or --labels-file)."),
             labels_file: Optional[Path] = LabelsFileOpt, template: str = TemplateOpt,
             templates: Optional[List[str]] = TemplatesOpt,
             multi_label: bool = typer.Option(False, "--multi-label",
                                              help="Independent probability per label (several may fit)."),
             calibration: Optional[Path] = typer.Option(None, "--calibration", metavar="FILE",
                                                        help="File from `cliplens calibrate` (default: the one "
                                                             "shipped with the model, if any)."),
             coverage: Optional[float] = typer.Option(None, "--coverage", metavar="LEVEL",
                                                      help="Add a conformal prediction set with this coverage, e.g. "
                                                           "0.9 (needs a calibration)."),
             output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE",
                                                   help="Many images: write one row per image to FILE.csv or "
                                                        "FILE.jsonl (it appears, whole, when the run ends)."),
             fmt: Optional[str] = typer.Option(None, "--format", metavar="FORMAT",
                                               help="Many images: print csv or jsonl rows on stdout."),
             ignore_text: bool = IgnoreTextOpt,
             overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt,
             workers: Optional[int] = WorkersOpt, model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
             backend: Optional[str] = BackendOpt, precision: Optional[str] = PrecisionOpt,
             as_json: bool = api_json_option("POST /v1/classify", many=True)) -> None:
    """Zero-shot classification: how well each label matches, and whether none of them does."""
    label_list = list(labels or [])
    if labels_file is not None:
        label_list += cliplens.read_labels_file(labels_file)
    if not label_list:
        raise UsageError("give labels after the image, or a labels file", parameter="labels")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError("use csv or jsonl", value=str(fmt), parameter="fmt")
    if output is not None:
        format_for(output)
    check_output(output, "output", overwrite=overwrite)
    set_name = one_template_set(templates)
    many = Path(image).is_dir() or glob.has_magic(image) or output is not None or fmt is not None
    sources, unreadable = find_images([image], "image") if many else ([image], [])
    encoder = load_model_with_status(model, device, backend, precision)
    classifier = cliplens.Classifier(label_list, encoder, template=template, templates=set_name,
                                     multi_label=multi_label, calibration=calibration, coverage=coverage,
                                     ignore_text=ignore_text)
    if many:
        _classify_many(classifier, sources, unreadable, output, fmt, as_json, batch_size, workers)
        return
    result = classifier.classify(image)
    if as_json:
        emit_json(result.to_dict())
        return
    _print_classification(result, coverage)


def _parts(result) -> str:
    if result.out_of_distribution is None:
        return ""
    return (f" (no label fits {result.no_label_fits * 100:.1f}%, outside the labels' world "
            f"{result.out_of_distribution * 100:.1f}%)")


def _why_none(result) -> str:
    """Which part of "none of these" spoke: the image is from elsewhere, or no offered label fits it."""
    if result.out_of_distribution is not None and result.out_of_distribution >= result.no_label_fits:
        return f"that no label fits: the image looks outside the labels' world{_parts(result)}"
    return f"that no label fits{_parts(result)}"


def _print_classification(result, coverage: Optional[float]) -> None:
    if result.is_none_of_these:
        hint = f" (it looks more like: {shown(result.looks_like)})" if result.looks_like else ""
        out.print(f"[yellow]none of these[/]: {result.none_of_these * 100:.1f}% {_why_none(result)}{hint}",
                  highlight=False, markup=True)
    width = max(len(s.label) for s in result.labels)
    for s in result.labels:
        bar = "█" * round(s.probability * 30)
        out.print(f"{shown(f'{s.label:<{width}}')}  {s.probability * 100:5.1f}%  [cyan]{bar:<30}[/]  "
                  f"(cos {s.similarity:.3f})", highlight=False, markup=True)
    if not result.is_none_of_these:
        out.print(f"[dim]none of these: {result.none_of_these * 100:.1f}%{_parts(result)}[/]", highlight=False,
                  markup=True)
    if result.prediction_set is not None:
        members = ", ".join(result.prediction_set) or "(empty)"
        out.print(f"prediction set at {coverage:.0%} coverage: {members}", highlight=False)


def _classify_many(classifier, sources: list, unreadable: list, output: Optional[Path], fmt: Optional[str],
                   as_json: bool, batch_size: Optional[int], workers: Optional[int]) -> None:
    fmt = format_for(output) if output is not None else fmt
    results, errors = [], list(unreadable)
    with ExitStack() as files:
        # the file is written under a temporary name and appears whole when the run ends (an interrupted run
        # leaves none), as every file cliplens writes
        stream = files.enter_context(cliplens.atomic_write(output, newline="")) if output is not None else sys.stdout
        writer = ResultWriter(stream, fmt, classifier.labels, classifier.coverage is not None) if fmt else None
        with progress("classifying") as bar:
            task = bar.add_task("classifying", total=len(sources), rate="")
            for item in classifier.classify_many(sources, batch_size=batch_size, workers=workers,
                                                 on_progress=rate_updater(bar, task, "img")):
                failed = isinstance(item, cliplens.ImageLoadError)
                if failed:
                    errors.append(item)
                    report_skipped([item])
                if writer is not None:
                    writer.write(item)
                elif as_json:
                    if not failed:
                        results.append(item)
                elif not failed:
                    answer = (f"none of these ({item.none_of_these:.0%})" if item.is_none_of_these
                              else f"{item.top.label} ({item.top.probability:.0%})")
                    out.print(f"{item.image}\t{answer}", highlight=False)
    if as_json and writer is None:
        emit_json({"model": classifier.encoder.name, "results": [r.to_dict() for r in results],
                   "errors": [{"path": e.source, "reason": e.reason} for e in errors]})
    done = f" → {cliplens.display_path(output)}" if output is not None else ""
    failed = len(errors) - len(unreadable)
    folders = f", {len(unreadable)} folder(s) unreadable" if unreadable else ""
    err.print(f"classified {len(sources) - failed} image(s), {failed} failed{folders}{done}", highlight=False)
    if errors:
        raise typer.Exit(1)


def _open_set_line(figures: dict | None) -> str:
    if not figures:
        return "no image-side detector (nothing outside to learn from)\n"
    outside = figures["flagged_out_of_distribution"]
    return (f"outside the labels' world: flags {figures['flagged_in_distribution']:.1%} of the dataset's images and "
            f"{outside:.1%} of {figures['out_of_distribution_images']} outside images "
            f"({figures['background_images']} yours; in-sample, `cliplens bench open-set` measures held out)\n")


def calibrate(dataset: Path = typer.Argument(..., help="Folder with one sub-folder per class, or a CSV/JSONL of "
                                                       "path,label."),
              out_file: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                                            help="Calibration file to write (JSON)."),
              template: str = TemplateOpt, templates: Optional[List[str]] = TemplatesOpt,
              background: Optional[Path] = typer.Option(
                  None, "--background", metavar="DIR",
                  help="Your own images that none of the labels should claim (screenshots, blank frames, other "
                       "domains): the open-set detector learns them as outside, with generated ones."),
              world: Optional[Path] = typer.Option(
                  None, "--world", metavar="DIR",
                  help="Unlabelled images that belong inside the labels' world though no single label names them "
                       "(several objects at once, unusual views): the open-set detector learns them as inside."),
              overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt,
              workers: Optional[int] = WorkersOpt, model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
              backend: Optional[str] = BackendOpt, precision: Optional[str] = PrecisionOpt,
              as_json: bool = JsonOpt) -> None:
    """Fit temperature, the none-of-these detectors and conformal scores for a model on labelled images.

    "None of these" has two parts: the label side (does any offered label fit, judged against a reference
    vocabulary) and the image side (is the image from the labels' world at all, judged against the dataset's
    own images, generated blanks, noise, textures and collages, and --background).
    """
    check_output(out_file, "out_file", overwrite=overwrite)
    set_name = one_template_set(templates)
    encoder = load_model_with_status(model, device, backend, precision, purpose="probabilities")
    with progress("embedding") as bar:
        task = bar.add_task("embedding", total=None, rate="")
        fitted = cliplens.calibrate(dataset, encoder, template=template, templates=set_name, batch_size=batch_size,
                                    workers=workers, background=background, world=world,
                                    on_progress=rate_updater(bar, task, "img"))
    report_skipped(fitted.errors)
    path = fitted.calibration.save(out_file)
    report = fitted.calibration.report
    if as_json:
        emit_json({"out": cliplens.display_path(path), "model": encoder.name, "skipped": len(fitted.errors), **report})
    else:
        none, q90 = report["none_of_these"], report["conformal"]["0.9"]
        err.print(f"calibrated {encoder.name} on {report['images']} images of {report['classes']} classes "
                  f"(zero-shot top-1 {report['accuracy']:.3f})\n"
                  f"temperature {report['temperature']:.3f}: expected calibration error "
                  f"{report['ece_before']:.4f} → {report['ece_after']:.4f}\n"
                  f"none of these flags {none['flagged_in_domain']:.1%} of images when their class is offered and "
                  f"{none['flagged_out_of_domain']:.1%} when it is not\n"
                  f"{_open_set_line(report.get('open_set'))}"
                  f"90% conformal sets: threshold {q90['quantile']:.4f}, mean size {q90['mean_set_size']:.2f}\n"
                  f"→ {cliplens.display_path(path)}", highlight=False)
    if fitted.errors:
        raise typer.Exit(1)

