"""The ``cliplens`` command: thin Typer commands over the public Python API, one module per command group.

Results go to stdout, progress and messages to stderr. Exit codes: 0 success, 1 partial (some
inputs failed and were reported), 2 usage or fatal error. The conventions every command follows are
in :mod:`cliplens.cli.common`.
"""

from __future__ import annotations

import typer

import cliplens
from cliplens.cli import (agents, bench, caption, classify, curate, dream, embed, evaluate, index, models, serve,
                          training)
from cliplens.cli.common import new_app, state

app = new_app("CLIP-family image–text models: classify, caption, search, rank, evaluate, train and more.")
for module in (classify, caption, index, curate, embed, evaluate, dream, serve, agents, training, models, bench):
    module.register(app)


@app.callback(invoke_without_command=True)
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
         version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """cliplens: CLIP-family image–text models for classification, captions, search, ranking and evaluation."""
    state["debug"] = debug
    if version:
        print(cliplens.__version__)
        raise typer.Exit()


def run() -> None:
    """Console-script entry point."""
    app()
