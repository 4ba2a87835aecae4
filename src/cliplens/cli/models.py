"""``cliplens models``: list, download and locate models."""

from __future__ import annotations

import typer
from rich.table import Table

import cliplens
from cliplens.cli.common import JsonOpt, add, emit_json, new_app, out

models_app = new_app("List, download and locate models.")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    add(models_app, "list", models_list)
    add(models_app, "pull", models_pull)
    add(models_app, "path", models_path)


def models_list(as_json: bool = JsonOpt) -> None:
    """Aliases (and whether each is available offline) and the models in the Hugging Face cache."""
    entries = cliplens.list_models()
    if as_json:
        emit_json({"models": [e.__dict__ for e in entries]})
        return
    table = Table("name", "points to", "kind", "offline")
    for e in entries:
        table.add_row(e.name, e.target, e.kind, "yes" if e.available else "no")
    out.print(table)


def models_pull(model: str = typer.Argument(..., help="Hub id or alias.")) -> None:
    """Download a model into the Hugging Face cache (and check that it loads) so it works offline later."""
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()  # a download is long: show its bars
    print(cliplens.display_path(cliplens.pull_model(model)))


def models_path(model: str = typer.Argument(..., help="Hub id, alias or folder.")) -> None:
    """Print the local folder of a model (e.g. of demo); never downloads."""
    print(cliplens.display_path(cliplens.resolve_model_dir(model, allow_download=False)))
