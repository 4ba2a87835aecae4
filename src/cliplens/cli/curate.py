"""``cliplens rank`` and ``cliplens score``: CLIP as curator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional

import typer
import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, IgnoreTextOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt,
                                 TopOpt, WorkersOpt, add, api_json_option, check_output, emit_json, err, find_images,
                                 load_model_with_status, out, progress, rate_updater, report_skipped)
from cliplens.errors import UsageError

SCORE_FORMATS = (".csv", ".jsonl")


def register(app: typer.Typer) -> None:
    add(app, "rank", rank)
    add(app, "score", score)


def rank(prompt: str = typer.Argument(..., help="What the images should show."),
         images: List[str] = typer.Argument(..., help="Image files, folders or globs."),
         top: Optional[int] = TopOpt,
         copy_to: Optional[Path] = typer.Option(None, "--copy-to", metavar="DIR",
                                                help="Copy the kept images here as 001_name, 002_name, ..."),
         negative: List[str] = typer.Option(None, "--negative", metavar="TEXT",
                                            help="What they should not show (repeatable)."),
         ignore_text: bool = IgnoreTextOpt,
         overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt,
         model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
         precision: Optional[str] = PrecisionOpt, as_json: bool = api_json_option("POST /v1/rank")) -> None:
    """Rank images by how well they match a prompt (as DALL·E samples were reranked), best first.

    Scores are cosines with the prompt, or margins when negative prompts or re-ranking (models that ship a
    calibration, as demo does) subtract each image's best match to something else."""
    check_output(copy_to, "copy_to", overwrite=overwrite, folder=True)
    paths, unreadable = find_images(images, "images")
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("ranking") as bar:
        task = bar.add_task("ranking", total=len(paths), rate="")
        ranking = cliplens.rank_images(prompt, paths, encoder, negative=negative or (), top=top,
                                       batch_size=batch_size, workers=workers, ignore_text=ignore_text,
                                       on_progress=rate_updater(bar, task, "img"))
    report_skipped(ranking.errors)
    if copy_to is not None:
        copied = cliplens.copy_ranked(ranking, copy_to)
        err.print(f"copied {len(copied)} image(s) → {cliplens.display_path(copy_to)}", highlight=False)
    if as_json:
        emit_json(ranking.to_dict())
    else:
        err.print(f"[dim]score: {'cosine with the prompt' if ranking.score_kind == 'similarity' else 'margin'}[/]",
                  highlight=False, markup=True)
        for number, result in enumerate(ranking.results, 1):
            out.print(f"{number:3d}  {result.score:.4f}  {cliplens.display_path(result.path)}", highlight=False)
    if ranking.errors or unreadable:
        raise typer.Exit(1)


def score(pairs: Path = typer.Argument(..., help="CSV or JSONL with path, caption (and optionally references, "
                                                 "'|'-separated in CSV)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE",
                                                help="Write per-pair scores to FILE.csv or FILE.jsonl."),
          no_prefix: bool = typer.Option(False, "--no-prefix",
                                         help="Embed captions as they are, without CLIPScore's 'A photo depicts ' "
                                              "prefix."),
          ignore_text: bool = IgnoreTextOpt,
          overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt,
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """CLIPScore (w = 2.5) of each image–caption pair and on average; RefCLIPScore with reference captions."""
    if output is not None and output.suffix.lower() not in SCORE_FORMATS:
        raise UsageError("use a .csv or .jsonl file name", value=str(output), parameter="output")
    check_output(output, "output", overwrite=overwrite)
    rows = cliplens.read_pairs(pairs)
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("scoring") as bar:
        task = bar.add_task("scoring", total=len(rows), rate="")
        result = cliplens.clip_scores(rows, encoder, **({"prefix": ""} if no_prefix else {}), batch_size=batch_size,
                                      workers=workers, on_progress=rate_updater(bar, task, "img"),
                                      ignore_text=ignore_text)
    report_skipped(result.errors)
    if output is not None:
        _write_scores(output, result.results)
    if as_json:
        emit_json(result.to_dict())
    else:
        line = f"CLIPScore {result.clip_score:.4f} over {len(result.results)} pairs"
        if result.ref_clip_score is not None:
            line += f", RefCLIPScore {result.ref_clip_score:.4f}"
        out.print(line + f" ({encoder.name})", highlight=False)
    if result.errors:
        raise typer.Exit(1)


def _write_scores(output: Path, results) -> None:
    with cliplens.atomic_write(output, newline="") as fh:
        if output.suffix.lower() == ".jsonl":
            for row in results:
                fh.write(json.dumps(row.to_dict()) + "\n")
        else:
            covered = any(r.text_covered is not None for r in results)
            writer = csv.DictWriter(fh, fieldnames=["path", "caption", "clip_score", "ref_clip_score"]
                                    + (["text_covered", "text_found"] if covered else []))
            writer.writeheader()
            for row in results:
                data = row.to_dict()
                if "text_found" in data:
                    data["text_found"] = " | ".join(data["text_found"])
                writer.writerow(data)
