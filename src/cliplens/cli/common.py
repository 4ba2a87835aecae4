"""What every command shares: the conventions of the ``cliplens`` command line, kept in one place.

- Options with the same meaning have the same name everywhere (see the option objects below).
- Library errors name their parameter; :func:`command` renders it as the command's own flag or argument.
- Outputs are checked with :func:`check_output` before any work starts; an existing output is replaced
  only with ``--overwrite``.
- Help shows each option's value as a word (``--labels-file FILE``), never as a type tag, and every
  option has a help line (``tests/cli/test_help.py`` walks every command to check).
- ``--json`` prints one JSON object on stdout; results go to stdout, progress and messages to stderr.
- What is printed is text, not markup: ``out`` and ``err`` print strings as they are (a folder named
  ``[old photos]`` stays whole), and a message that colours a word says ``markup=True`` and escapes every
  value in it (:func:`shown`). Paths are printed and written with :func:`cliplens.display_path`, so a name
  that is not UTF-8 comes out escaped (``bad\\xff.png``) and never stops a command at its end.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

import cliplens
from cliplens.errors import CliplensError, UsageError, printable

class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed stdout (``| head``) ends the command quietly with success, as a Unix filter does (rich's
        own reaction exits 1, which reads as a partial failure)."""
        _quiet_stdout()
        raise SystemExit(0)


out = _Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
state = {"debug": False}


# --- help: values as words, no type tags -----------------------------------------------------------------

class _Option(TyperOption):
    """An option whose help shows its value as a word (``N``, ``FILE``) and no type or range tags."""

    def display_type_rich(self, ctx) -> str | None:
        return "" if self.is_flag else self.metavar

    def _get_number_range_help_str(self) -> str | None:
        return None


class _Argument(TyperArgument):
    """An argument named in capitals in help and usage (``IMAGE``, ``LABELS...``), without type tags or braces."""

    def display_type_rich(self, ctx) -> str | None:
        return None

    def _get_number_range_help_str(self) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        return self.metavar if self.required else f"[{self.metavar}]"


def _tidy(params: list) -> None:
    """Give every parameter a value word and plain help (brackets in help are text, not markup)."""
    for param in params:
        if isinstance(param, (_Argument, _Option)):
            continue  # tidied already
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument
            if param.metavar is None:
                param.metavar = (param.name or "").upper() + ("..." if param.nargs != 1 else "")
        elif isinstance(param, TyperOption):
            param.__class__ = _Option
            if param.metavar is None and not param.is_flag:
                param.metavar = (param.name or "").upper()
        else:
            continue
        if param.help:
            param.help = escape(param.help)


class Command(TyperCommand):
    """Every cliplens command: tidy help (see :func:`_tidy`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _tidy(self.params)
        self.help = escape(self.help) if self.help else self.help

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _tidy(params)  # the help option is made on demand
        return params


class Group(TyperGroup):
    """Every cliplens command group: tidy help for its own options."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _tidy(self.params)

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _tidy(params)
        return params


def new_app(help: str) -> typer.Typer:
    """A command group with cliplens's conventions."""
    return typer.Typer(help=help, cls=Group, no_args_is_help=True, pretty_exceptions_enable=False,
                       add_completion=False)


IgnoreTextOpt = typer.Option(False, "--ignore-text",
                             help="Cover the text an OCR engine finds in each image before encoding it (the defence "
                                  "against typographic attacks; pip install 'cliplens[ocr]').")


def add(app: typer.Typer, name: str, fn: Callable) -> None:
    """Register ``fn`` as the command ``name`` of ``app``, with errors handled as :func:`command` does."""
    app.command(name, cls=Command)(command(fn))


# --- shared options -------------------------------------------------------------------------------------

def at_least(low: float) -> Callable:
    """A callback refusing values below ``low`` (typer's own ranges would print a type tag in the help)."""
    def check(value):
        if value is not None and value < low:
            raise typer.BadParameter(f"must be at least {low:g} (got {value:g})")
        return value
    return check


def between(low: float, high: float) -> Callable:
    """A callback refusing values outside [``low``, ``high``]."""
    def check(value):
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"must be between {low:g} and {high:g} (got {value:g})")
        return value
    return check


def above_up_to(low: float, high: float) -> Callable:
    """A callback refusing values outside (``low``, ``high``]: above ``low``, at most ``high``."""
    def check(value):
        if value is not None and not low < value <= high:
            raise typer.BadParameter(f"must be above {low:g} and at most {high:g} (got {value:g})")
        return value
    return check


ModelOpt = typer.Option(None, "--model", "-m", envvar="CLIPLENS_MODEL", metavar="MODEL",
                        help="Hub id, local folder or alias (demo). Default: openai/clip-vit-base-patch32.")
DeviceOpt = typer.Option(None, "--device", envvar="CLIPLENS_DEVICE", metavar="DEVICE",
                         help="cpu, cuda, cuda:1, mps. Default: CUDA if present.")
BackendOpt = typer.Option(None, "--backend", envvar="CLIPLENS_BACKEND", metavar="NAME",
                          help="torch, onnx or auto (default: the fastest runtime on this machine whose answers "
                               "meet the parity contract for this command; see `cliplens bench parity`).")
PrecisionOpt = typer.Option(None, "--precision", envvar="CLIPLENS_PRECISION", metavar="NAME",
                            help="fp32, bf16, fp16, int8 or auto (default: as --backend auto chooses; a reduced "
                                 "precision named here says how far it strays).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of text.")


def api_json_option(endpoint: str, *, many: bool = False, less: str = "") -> typer.Option:
    """``--json`` for a command the HTTP API also answers, whose JSON has the fields of ``endpoint``'s answer
    (``many``: for one image; many images give ``{model, results, errors}``, each result with those fields;
    ``less``: what the HTTP answer has that the command cannot give)."""
    fields = f"the fields of the HTTP API's {endpoint}" + (f" less {less}" if less else "")
    if many:
        text = f"Print one JSON object on stdout: for one image {fields}; for many, {{model, results, errors}}."
    else:
        text = f"Print one JSON object on stdout ({fields})."
    return typer.Option(False, "--json", help=text)


BatchOpt = typer.Option(None, "--batch-size", metavar="N", callback=at_least(1),
                        help="Images per model call (default: the runtime's best).")
WorkersOpt = typer.Option(None, "--workers", metavar="N", callback=at_least(1),
                          help="Threads decoding images ahead of the model (default: cores, at most 4).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace outputs that already exist.")
TopOpt = typer.Option(None, "--top", "-k", metavar="N", callback=at_least(1), help="Keep the best N results.")
LabelsFileOpt = typer.Option(None, "--labels-file", metavar="FILE",
                             help="Labels, one per line ('#' comments and blank lines are skipped).")
TemplateOpt = typer.Option("a photo of a {}.", "--template", metavar="TEXT",
                           help="One prompt with {} for the label; 'none' for labels verbatim.")
TemplatesOpt = typer.Option(None, "--templates", metavar="SET",
                            help="A template set instead: imagenet (80 templates), imagenet-7, none (verbatim), a "
                                 "file of templates, or a template with {}.")


# --- running a command ----------------------------------------------------------------------------------

def parameter_names(fn: Callable) -> dict[str, tuple[str, bool]]:
    """How a command names each of its parameters: options by their long flag, arguments in capitals
    (with True for an argument, whose value alone names it in a message)."""
    from typer.models import ArgumentInfo, OptionInfo

    names = {}
    for name, param in inspect.signature(fn).parameters.items():
        info = param.default
        if isinstance(info, OptionInfo):
            decls = list(info.param_decls or ())
            names[name] = (next((d for d in decls if d.startswith("--")), decls[0] if decls else f"--{name}"), False)
        elif isinstance(info, ArgumentInfo):
            names[name] = (info.metavar or name.upper(), True)
    return names


#: Remedies that another command gives, for the commands that do not have them.
REMEDIES_ELSEWHERE = {"reindex": "cliplens index FOLDER --reindex --model MODEL",
                      "rebuild": "cliplens index FOLDER --rebuild"}


def error_message(exc: CliplensError, names: dict[str, tuple[str, bool]] | None = None) -> str:
    """A library error as one line in a command's own terms (``names``: see :func:`parameter_names`)."""
    parameter = exc.parameter
    name, argument = (names or {}).get(parameter, (None, False)) if parameter else (None, False)
    if name is None and parameter and parameter.isupper():
        name = parameter  # an environment variable names itself
    if name is not None:
        message = exc.describe(name, named=not (argument and exc.value))
    else:
        message = exc.describe(named=False)
    if exc.remedy and exc.remedy in (names or {}):
        message += f" (pass {(names or {})[exc.remedy][0]})"
    elif exc.remedy in REMEDIES_ELSEWHERE:
        message += f" (run {REMEDIES_ELSEWHERE[exc.remedy]})"
    return message


def shown(value) -> str:
    """A path (or any text) ready for a ``markup=True`` message: printable, with its brackets escaped."""
    return escape(printable(os.fspath(value) if isinstance(value, os.PathLike) else str(value)))


def _one_line_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    err.print(f"[yellow]warning:[/] {shown(message)}", highlight=False, markup=True)


def command(fn):
    """Run a command with typed errors turned into one-line messages and exit codes."""
    names = parameter_names(fn)

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
            err.print(f"[red]error:[/] {shown(error_message(exc, names))}", highlight=False, markup=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]", markup=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # stdout closed early (| head): end quietly, as a Unix filter does
            _quiet_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks without --debug
            if state["debug"]:
                raise
            text = str(exc).splitlines()[0] if str(exc) else ""
            err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {shown(text)} (run with --debug for "
                      "details)", highlight=False, markup=True)
            raise typer.Exit(2) from None
    return wrapper


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered does not fail again when Python exits."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def quiet_transformers() -> None:
    """transformers' own loading bars and notices would clutter stderr; our messages say what matters.

    Done without importing transformers, which commands on the ONNX backend never need.
    """
    from huggingface_hub.utils import disable_progress_bars

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    disable_progress_bars()  # transformers reads this when it is imported


def check_output(path: Optional[Path], parameter: str, *, overwrite: bool, folder: bool = False) -> Optional[Path]:
    """Check an output the user named before any work starts (see :func:`cliplens.check_output_file`)."""
    if path is None:
        return None
    check = cliplens.check_output_folder if folder else cliplens.check_output_file
    return check(path, parameter=parameter, overwrite=overwrite)


def find_images(inputs, parameter: str, *, exclude=()) -> tuple[list[Path], list]:
    """The image files under ``inputs`` (files, folders, globs) and the folders that could not be read, which
    are reported like bad files; when nothing at all can be read, the first problem is the error."""
    problems: list = []
    paths = cliplens.expand_paths(inputs, exclude=exclude, problems=problems)
    if not paths:
        if problems:
            raise problems[0]
        shown = ", ".join(cliplens.display_path(i) for i in inputs)
        raise UsageError(f"no images found in {shown}", parameter=parameter)
    report_skipped(problems)
    return paths, problems


def load_model_with_status(model: Optional[str], device: Optional[str], backend: Optional[str] = None,
                           precision: Optional[str] = None, purpose: str = "probabilities"):
    """Load a model for answers of kind ``purpose``, showing the steps of a first ONNX export or runtime check
    (both are cached for later runs)."""
    status = None

    def on_status(message: str) -> None:
        nonlocal status
        if status is None:
            status = err.status(shown(message))  # a status line is markup: a model folder may hold brackets
            status.start()
        else:
            status.update(shown(message))

    try:
        encoder = cliplens.load_model(model, device=device, backend=backend, precision=precision, purpose=purpose,
                                      on_status=on_status)
    finally:
        if status is not None:
            status.stop()
    if status is not None:
        err.print(f"{encoder.name} runs on {encoder.info.runtime} here (set up once on this machine; later runs "
                  "reuse it)", highlight=False)
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


def report_skipped(errors) -> None:
    """One line on stderr per input that could not be used."""
    for error in errors:
        err.print(f"[yellow]skipped[/] {shown(error.source)}: {shown(error.reason)}", highlight=False, markup=True)


def printable_json(data):
    """JSON-like ``data`` with every string printable (a new object): a path or label that is not UTF-8 comes
    out escaped (``bad\\xff.png``) as it is printed everywhere else, never as a lone surrogate."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {printable_json(k): printable_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [printable_json(v) for v in data]
    return data


def emit_json(data: dict) -> None:
    """One JSON object on stdout: pretty on a terminal, one compact line when piped."""
    data = printable_json(data)
    if sys.stdout.isatty():
        out.print_json(json.dumps(data))
    else:
        print(json.dumps(data), flush=True)
