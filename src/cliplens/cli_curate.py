"""``cliplens rank`` and ``cliplens score``: CLIP as curator."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cliplens.cli_common import (BackendOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, command, emit_json, err,
                                 load_model_with_status, out, progress, rate_updater)
from cliplens.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("rank")(command(rank))
    app.command("score")(command(score))


def rank(prompt: str = typer.Argument(..., help="What the images should show."),
         images: List[str] = typer.Argument(..., help="Image files, folders or globs."),
         top: Optional[int] = typer.Option(None, "--top", min=1, help="Keep the best N."),
         copy_to: Optional[Path] = typer.Option(None, "--copy-to", help="Copy the kept images here as 001_name, 002_name, ..."),
         negative: List[str] = typer.Option(None, "--negative", help="What they should not show (repeatable)."),
         batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
         workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
         model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
         precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Rank images by how well they match a prompt (as DALL·E samples were reranked), best first."""
    import cliplens
    from cliplens.curate import copy_ranked, rank_images

    paths = cliplens.expand_paths(images)
    if not paths:
        raise UsageError("no images found in " + ", ".join(images))
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("ranking") as bar:
        task = bar.add_task("ranking", total=len(paths), rate="")
        ranking = rank_images(prompt, paths, encoder, negative=negative or (), top=top, batch_size=batch_size,
                              workers=workers, on_progress=rate_updater(bar, task, "img"))
    for error in ranking.errors:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    if copy_to is not None:
        copied = copy_ranked(ranking, copy_to)
        err.print(f"copied {len(copied)} image(s) → {copy_to}", highlight=False)
    if as_json:
        emit_json(ranking.to_dict())
    else:
        for number, result in enumerate(ranking.results, 1):
            out.print(f"{number:3d}  {result.score:.4f}  {result.path}", highlight=False)
    if ranking.errors:
        raise typer.Exit(1)


def score(pairs: Path = typer.Argument(..., help="CSV or JSONL with path, caption (and optionally references, '|'-separated in CSV)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write per-pair scores to FILE.csv or FILE.jsonl."),
          no_prefix: bool = typer.Option(False, "--no-prefix", help="Embed captions as they are, without CLIPScore's 'A photo depicts ' prefix."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
          workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """CLIPScore (w = 2.5) of each image–caption pair and on average; RefCLIPScore with reference captions."""
    import csv
    import json

    from cliplens.curate import CLIPSCORE_PREFIX, clip_scores
    from cliplens.pairs import read_pairs

    rows = read_pairs(pairs)
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("scoring") as bar:
        task = bar.add_task("scoring", total=len(rows), rate="")
        result = clip_scores(rows, encoder, prefix="" if no_prefix else CLIPSCORE_PREFIX, batch_size=batch_size,
                             workers=workers, on_progress=rate_updater(bar, task, "img"))
    for error in result.errors:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    if output is not None:
        if output.suffix.lower() not in (".csv", ".jsonl"):
            raise UsageError(f"--output {output}: use a .csv or .jsonl file name")
        with output.open("w", newline="", encoding="utf-8") as fh:
            if output.suffix.lower() == ".jsonl":
                for row in result.results:
                    fh.write(json.dumps(row.to_dict()) + "\n")
            else:
                writer = csv.DictWriter(fh, fieldnames=["path", "caption", "clip_score", "ref_clip_score"])
                writer.writeheader()
                for row in result.results:
                    writer.writerow(row.to_dict())
    if as_json:
        emit_json(result.to_dict())
    else:
        line = f"CLIPScore {result.clip_score:.4f} over {len(result.results)} pairs"
        if result.ref_clip_score is not None:
            line += f", RefCLIPScore {result.ref_clip_score:.4f}"
        out.print(line + f" ({encoder.name})", highlight=False)
    if result.errors:
        raise typer.Exit(1)
