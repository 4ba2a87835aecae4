"""``cliplens caption`` and ``cliplens banks``: captions for language models from label banks."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, IgnoreTextOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt,
                                 WorkersOpt, add, api_json_option, at_least, check_output, emit_json, err, find_images,
                                 load_model_with_status, new_app, out, printable_json, progress, rate_updater,
                                 report_skipped, shown)
from cliplens.errors import UsageError

FORMATS = ("llm", "text", "json", "jsonl")
banks_app = new_app("List, show, embed and calibrate label banks.")

BanksOpt = typer.Option(None, "--banks", "-b", metavar="BANKS",
                        help="Banks: built-in names, NAME=FILE, bank files or folders, comma-separated or repeated "
                             "(default: the model's default banks).")


def register(app: typer.Typer) -> None:
    add(app, "caption", caption)
    app.add_typer(banks_app, name="banks")
    add(banks_app, "list", banks_list)
    add(banks_app, "show", banks_show)
    add(banks_app, "build", banks_build)
    add(banks_app, "calibrate", banks_calibrate)


def _captioner(model, device, backend, precision, banks, keep_typographic: bool = False, read_text: bool = False,
               ignore_text: bool = False):
    """Load the model and embed its banks, with a progress bar only when texts must be encoded."""
    encoder = load_model_with_status(model, device, backend, precision)
    with ExitStack() as stack:
        bar, tasks = None, {}

        def on_progress(name: str, done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(progress("embedding banks"))
            if name not in tasks:
                tasks[name] = bar.add_task(f"bank {name}", total=total, rate="")
            bar.update(tasks[name], completed=done, total=total)

        captioner = cliplens.Captioner(encoder, banks, keep_typographic=keep_typographic, on_progress=on_progress,
                                       read_text=read_text, ignore_text=ignore_text)
    for name, labels in captioner.unreadable.items():
        err.print(f"[yellow]note:[/] {shown(encoder.name)} cannot read {len(labels)} label(s) of bank "
                  f"{shown(repr(name))} (e.g. {shown(repr(labels[0]))}); they are left out", highlight=False,
                  markup=True)
    return captioner


def _one_bank(spec: str):
    found = cliplens.resolve_banks([spec])
    if len(found) != 1:
        raise UsageError(f"names {len(found)} banks; give one", value=str(spec), parameter="bank")
    return found[0]


def caption(images: List[str] = typer.Argument(..., help="Image files, folders or globs."),
            banks: List[str] = BanksOpt,
            fmt: str = typer.Option("llm", "--format", "-f", metavar="FORMAT",
                                    help="llm ([Image Attached: ...]), text, json (one JSON object) or jsonl (one "
                                         "object per image, as they are captioned)."),
            refine: bool = typer.Option(False, "--refine",
                                        help="Swap labels greedily to raise the whole caption's similarity."),
            refine_seconds: float = typer.Option(2.0, "--refine-seconds", metavar="SECONDS", callback=at_least(0),
                                                 help="Time budget of --refine per image."),
            keep_typographic: bool = typer.Option(False, "--keep-typographic",
                                                  help="Keep labels that look read from text in the image (still "
                                                       "marked)."),
            read_text: bool = typer.Option(False, "--read-text",
                                           help="Read the text in each image with an OCR engine: a label written "
                                                "there is a typographic suspect (pip install 'cliplens[ocr]')."),
            ignore_text: bool = IgnoreTextOpt,
            batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt,
            model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
            precision: Optional[str] = PrecisionOpt,
            as_json: bool = api_json_option("POST /v1/caption", many=True)) -> None:
    """Describe images for a chatbot: the best fitting labels of each bank, composed into sentences."""
    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise UsageError(f"use one of {', '.join(FORMATS)}", value=str(fmt), parameter="fmt")
    paths, unreadable = find_images(images, "images")
    single = len(images) == 1 and len(paths) == 1 and Path(images[0]).is_file()
    captioner = _captioner(model, device, backend, precision, banks, keep_typographic, read_text, ignore_text)
    captions, errors = [], list(unreadable)
    show_names = len(paths) > 1 and fmt in ("llm", "text")
    with progress("captioning") as bar:
        task = bar.add_task("captioning", total=len(paths), rate="", visible=len(paths) > 1)
        results = captioner.caption_many(paths, refine=refine, refine_seconds=refine_seconds, batch_size=batch_size,
                                         workers=workers, on_progress=rate_updater(bar, task, "img"))
        for result in results:
            if isinstance(result, cliplens.ImageLoadError):
                errors.append(result)
                report_skipped([result])
                if fmt == "jsonl":  # a row for it, as classify's jsonl has: every image is accounted for
                    print(json.dumps({"image": result.source, "error": result.reason}, ensure_ascii=False), flush=True)
            elif fmt == "json":
                captions.append(result)
            elif fmt == "jsonl":
                print(json.dumps(printable_json(result.to_dict()), ensure_ascii=False), flush=True)
            else:
                text = result.llm() if fmt == "llm" else result.caption
                print(f"{result.image}\t{text}" if show_names else text, flush=True)  # image: printable
    if fmt == "json":
        if single and captions:
            emit_json(captions[0].to_dict())
        else:
            emit_json({"model": captioner.encoder.name, "results": [c.to_dict() for c in captions],
                       "errors": [{"path": e.source, "reason": e.reason} for e in errors]})
    if errors:
        raise typer.Exit(1)


def banks_list(model: Optional[str] = typer.Option(None, "--model", "-m", metavar="MODEL",
                                                   help="Mark this model's default banks."),
               as_json: bool = JsonOpt) -> None:
    """The built-in banks: labels, template, top-k and threshold."""
    defaults = set(cliplens.default_bank_names(cliplens.resolve_model_dir(model) if model else None))
    banks = cliplens.resolve_banks(cliplens.builtin_bank_names())
    if as_json:
        emit_json({"banks": [{"name": b.name, "labels": len(b.labels), "template": b.template, "top_k": b.top_k,
                              "threshold": b.threshold, "default": b.name in defaults, "description": b.description}
                             for b in banks]})
        return
    table = Table("name", "labels", "top-k", "threshold", "default", "template")
    for b in banks:
        table.add_row(b.name, str(len(b.labels)), str(b.top_k), f"{b.threshold:g}", "yes" if b.name in defaults else "",
                      b.template)
    out.print(table)


def banks_show(bank: str = typer.Argument(..., help="A built-in name, NAME=FILE or a bank file."),
               as_json: bool = JsonOpt) -> None:
    """A bank's header and labels, as a bank file (or JSON)."""
    found = _one_bank(bank)
    if as_json:
        emit_json({"name": found.name, "description": found.description, "template": found.template,
                   "prompts": list(found.scored_prompts), "top_k": found.top_k, "threshold": found.threshold,
                   "labels": list(found.labels), "source": found.source})
    else:
        print(found.to_text(), end="")


def banks_build(banks: List[str] = BanksOpt, model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
                backend: Optional[str] = BackendOpt, precision: Optional[str] = PrecisionOpt,
                as_json: bool = JsonOpt) -> None:
    """Embed banks for a model now (they are cached on disk, so captions later encode no text)."""
    captioner = _captioner(model, device, backend, precision, banks)
    rows = [{"bank": v.bank.name, "labels": len(v.labels), "encoded": v.encoded, "unreadable": len(v.unreadable)}
            for v in captioner.vectors]
    if as_json:
        emit_json({"model": captioner.encoder.name, "texts_encoded": captioner.texts_encoded, "banks": rows})
        return
    for row in rows:
        done = f"encoded {row['encoded']} texts" if row["encoded"] else "cached"
        err.print(f"{row['bank']}: {row['labels']} labels, {done}", highlight=False)


def banks_calibrate(bank: str = typer.Argument(..., help="A built-in name, NAME=FILE or a bank file."),
                    dataset: Path = typer.Argument(..., help="Labelled images: a folder of class folders or a "
                                                             "CSV/JSONL."),
                    column: str = typer.Option("label", "--column", metavar="NAME",
                                               help="The CSV/JSONL column holding the label."),
                    label_format: str = typer.Option("{}", "--label-format", metavar="TEXT",
                                                     help="Turns a dataset label into a bank label, e.g. 'a {}'."),
                    out_file: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                                            help="Write the bank, with its fitted calibration, here."),
                    overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt,
                    workers: Optional[int] = WorkersOpt, model: Optional[str] = ModelOpt,
                    device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
                    precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Fit a bank's calibration for a model on labelled images (F1 of the labels a caption keeps).

    Prints the bank with its fitted calibration (or writes it to --out)."""
    check_output(out_file, "out_file", overwrite=overwrite)
    found = _one_bank(bank)
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("embedding") as bar:
        task = bar.add_task("embedding", total=None, rate="")
        fit = cliplens.calibrate_bank(found, dataset, encoder, column=column, label_format=label_format,
                                      batch_size=batch_size, workers=workers,
                                      on_progress=rate_updater(bar, task, "img"))
    report_skipped(fit.errors)
    if out_file is not None:
        with cliplens.atomic_write(out_file) as fh:
            fh.write(fit.bank.to_text())
    summary = {**fit.to_dict(), "out": cliplens.display_path(out_file) if out_file else None}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"{found.name}: threshold {fit.bank.threshold:g} on {fit.images} images ({fit.in_bank} with a "
                  f"bank label): precision {fit.precision:.3f}, recall {fit.recall:.3f}, F1 {fit.f1:.3f}"
                  + (f" → {cliplens.display_path(out_file)}" if out_file else ""), highlight=False)
        if out_file is None:
            print(fit.bank.to_text(), end="")
