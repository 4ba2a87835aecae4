"""``cliplens caption`` and ``cliplens banks``: captions for language models from label banks."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cliplens.cli_common import (BackendOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, command, emit_json, err,
                                 load_model_with_status, out, progress, rate_updater)
from cliplens.errors import UsageError

banks_app = typer.Typer(help="List, show, embed and calibrate label banks.", no_args_is_help=True)

BanksOpt = typer.Option(None, "--banks", "-b",
                        help="Banks: built-in names, NAME=FILE, bank files or folders, comma-separated or repeated "
                             "(default: the model's default banks).")


def register(app: typer.Typer) -> None:
    app.command("caption")(command(caption))
    app.add_typer(banks_app, name="banks")
    banks_app.command("list")(command(banks_list))
    banks_app.command("show")(command(banks_show))
    banks_app.command("build")(command(banks_build))
    banks_app.command("calibrate")(command(banks_calibrate))


def _captioner(model, device, backend, precision, banks, keep_typographic: bool = False):
    """Load the model and embed its banks, with a progress bar only when texts must be encoded."""
    from cliplens.caption import Captioner

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

        captioner = Captioner(encoder, banks, keep_typographic=keep_typographic, on_progress=on_progress)
    for name, labels in captioner.unreadable.items():
        err.print(f"[yellow]note:[/] {encoder.name} cannot read {len(labels)} label(s) of bank {name!r} "
                  f"(e.g. {labels[0]!r}); they are left out", highlight=False)
    return captioner


def _one_bank(spec: str):
    from cliplens.banks import resolve_banks

    found = resolve_banks([spec])
    if len(found) != 1:
        raise UsageError(f"{spec}: names {len(found)} banks; give one")
    return found[0]


def caption(images: List[str] = typer.Argument(..., help="Image files, folders or globs."),
            banks: List[str] = BanksOpt,
            fmt: str = typer.Option("llm", "--format", "-f", help="llm ([Image Attached: ...]), text or json (JSONL)."),
            refine: bool = typer.Option(False, "--refine", help="Swap labels greedily to raise the whole caption's similarity."),
            refine_seconds: float = typer.Option(2.0, "--refine-seconds", min=0.0, help="Time budget of --refine per image."),
            keep_typographic: bool = typer.Option(False, "--keep-typographic",
                                                  help="Keep labels that look read from text in the image (still marked)."),
            batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
            workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
            model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
            precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Describe images for a chatbot: the best fitting labels of each bank, composed into sentences."""
    import cliplens
    from cliplens.caption import FORMATS

    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    paths = cliplens.expand_paths(images)
    if not paths:
        raise UsageError("no images found in " + ", ".join(images))
    captioner = _captioner(model, device, backend, precision, banks, keep_typographic)
    failed = 0
    show_names = len(paths) > 1 and fmt != "json"
    with progress("captioning") as bar:
        task = bar.add_task("captioning", total=len(paths), rate="", visible=len(paths) > 1)
        results = captioner.caption_many(paths, refine=refine, refine_seconds=refine_seconds, batch_size=batch_size,
                                         workers=workers, on_progress=rate_updater(bar, task, "img"))
        for result in results:
            if isinstance(result, cliplens.ImageLoadError):
                failed += 1
                err.print(f"[yellow]skipped[/] {result.source}: {result.reason}", highlight=False)
                continue
            text = result.formatted(fmt)
            print(f"{result.image}\t{text}" if show_names else text, flush=True)
    if failed:
        raise typer.Exit(1)


def banks_list(model: Optional[str] = typer.Option(None, "--model", "-m", help="Mark this model's default banks."),
               as_json: bool = JsonOpt) -> None:
    """The built-in banks: labels, template, top-k and threshold."""
    from cliplens.banks import builtin_bank, builtin_bank_names, default_bank_names
    from cliplens.models import resolve_model_dir

    defaults = set(default_bank_names(resolve_model_dir(model) if model else None))
    banks = [builtin_bank(name) for name in builtin_bank_names()]
    if as_json:
        emit_json([{"name": b.name, "labels": len(b.labels), "template": b.template, "top_k": b.top_k,
                    "threshold": b.threshold, "default": b.name in defaults, "description": b.description}
                   for b in banks])
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
        state = f"encoded {row['encoded']} texts" if row["encoded"] else "cached"
        err.print(f"{row['bank']}: {row['labels']} labels, {state}", highlight=False)


def banks_calibrate(bank: str = typer.Argument(..., help="A built-in name, NAME=FILE or a bank file."),
                    dataset: Path = typer.Argument(..., help="Labelled images: a folder of class folders or a CSV/JSONL."),
                    column: str = typer.Option("label", "--column", help="The CSV/JSONL column holding the label."),
                    label_format: str = typer.Option("{}", "--label-format",
                                                     help="Turns a dataset label into a bank label, e.g. 'a {}'."),
                    out_file: Optional[Path] = typer.Option(None, "--out", "-o",
                                                            help="Write the bank, with its fitted threshold, here."),
                    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
                    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
                    model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
                    backend: Optional[str] = BackendOpt, precision: Optional[str] = PrecisionOpt,
                    as_json: bool = JsonOpt) -> None:
    """Fit a bank's threshold for a model on labelled images (F1 of the labels a caption keeps).

    Prints the bank with its new threshold (or writes it to --out)."""
    from cliplens.bank_calibration import calibrate_bank

    found = _one_bank(bank)
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("embedding") as bar:
        task = bar.add_task("embedding", total=None, rate="")
        fit = calibrate_bank(found, dataset, encoder, column=column, label_format=label_format,
                             batch_size=batch_size, workers=workers, on_progress=rate_updater(bar, task, "img"))
    for error in fit.errors:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(fit.bank.to_text(), encoding="utf-8")
    summary = {**fit.to_dict(), "out": str(out_file) if out_file else None}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"{found.name}: threshold {fit.bank.threshold:g} on {fit.images} images ({fit.in_bank} with a "
                  f"bank label): precision {fit.precision:.3f}, recall {fit.recall:.3f}, F1 {fit.f1:.3f}"
                  + (f" → {out_file}" if out_file else ""), highlight=False)
        if out_file is None:
            print(fit.bank.to_text(), end="")
