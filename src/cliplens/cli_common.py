"""What every command shares: consoles, options, error handling, progress bars, model loading and JSON."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

import cliplens
from cliplens.errors import CliplensError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
state = {"debug": False}

ModelOpt = typer.Option(None, "--model", "-m", envvar="CLIPLENS_MODEL",
                        help="Hub id, local folder or alias (demo). Default: openai/clip-vit-base-patch32.")
DeviceOpt = typer.Option(None, "--device", envvar="CLIPLENS_DEVICE", help="cpu, cuda, cuda:1, mps. Default: CUDA if present.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
BackendOpt = typer.Option(None, "--backend", envvar="CLIPLENS_BACKEND",
                          help="torch, onnx or auto (default: ONNX Runtime on a CPU, torch on a GPU).")
PrecisionOpt = typer.Option(None, "--precision", envvar="CLIPLENS_PRECISION",
                            help="fp32, bf16, fp16, int8 or auto (default: int8 on ONNX when it passed parity, fp16 on GPU).")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def command(fn):
    """Run a command with typed errors turned into one-line messages and exit codes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _one_line_warning
        quiet_transformers()
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CliplensError as exc:
            if state["debug"]:
                raise
            err.print(f"[red]error:[/] {exc.message}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks without --debug
            if state["debug"]:
                raise
            text = str(exc).splitlines()[0] if str(exc) else ""
            err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {text} (run with --debug for details)",
                      highlight=False)
            raise typer.Exit(2) from None
    return wrapper


def quiet_transformers() -> None:
    """transformers' own loading bars and notices would clutter stderr; our messages say what matters.

    Done without importing transformers, which commands on the ONNX backend never need.
    """
    import os

    from huggingface_hub.utils import disable_progress_bars

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    disable_progress_bars()  # transformers reads this when it is imported


def load_model_with_status(model: Optional[str], device: Optional[str], backend: Optional[str] = None,
                precision: Optional[str] = None):
    """Load a model, showing the steps of a first ONNX export (which is cached for later runs)."""
    status = None

    def on_status(message: str) -> None:
        nonlocal status
        if status is None:
            status = err.status(message)
            status.start()
        else:
            status.update(message)

    try:
        encoder = cliplens.load_model(model, device=device, backend=backend, precision=precision, on_status=on_status)
    finally:
        if status is not None:
            status.stop()
    if status is not None:
        err.print(f"exported {encoder.name} to ONNX ({encoder.info.precision}); later runs reuse the export",
                  highlight=False)
    return encoder


@contextmanager
def progress(description: str, unit: str = "images") -> Iterator[Progress]:
    """A progress bar on stderr with count, rate and ETA."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=err, transient=False)
    with bar:
        yield bar


def rate_updater(bar: Progress, task, unit: str):
    def update(done: int, total: int, **fields) -> None:
        speed = bar.tasks[task].speed
        rate = f"{speed:.1f} {unit}/s" if speed else ""
        bar.update(task, completed=done, total=total, rate=rate, **fields)
    return update


def emit_json(data) -> None:
    """Pretty JSON on a terminal, one compact line when piped."""
    if sys.stdout.isatty():
        out.print_json(json.dumps(data))
    else:
        print(json.dumps(data))
