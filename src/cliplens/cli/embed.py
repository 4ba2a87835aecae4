"""``cliplens embed``: images or texts into vectors, in clip-retrieval's npy + parquet layout."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt,
                                 WorkersOpt, add, check_output, emit_json, find_images, err, load_model_with_status, progress,
                                 rate_updater, report_skipped)
from cliplens.errors import DataError, UsageError

DTYPES = ("float32", "float16")


def register(app: typer.Typer) -> None:
    add(app, "embed", embed)


def embed(paths: List[str] = typer.Argument(None, help="Image files, folders or globs."),
          out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                                       help="Output folder (clip-retrieval layout: img_emb/, text_emb/, metadata/)."),
          text: List[str] = typer.Option(None, "--text", "-t", metavar="TEXT", help="A text to embed (repeatable)."),
          text_file: Optional[Path] = typer.Option(None, "--text-file", metavar="FILE",
                                                   help="Texts to embed, one per line."),
          dtype: str = typer.Option("float32", "--dtype", metavar="TYPE", help="float32 or float16."),
          exclude: List[str] = typer.Option(None, "--exclude", metavar="GLOB",
                                            help="Glob of paths to leave out (repeatable)."),
          overwrite: bool = OverwriteOpt, batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt,
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Embed images or texts into DIR/img_emb/*.npy (or text_emb/) with metadata/*.parquet."""
    if dtype not in DTYPES:
        raise UsageError("use float32 or float16", value=str(dtype), parameter="dtype")
    texts = list(text or []) + (_read_texts(text_file) if text_file is not None else [])
    if bool(texts) == bool(paths):
        raise UsageError("give image paths, or texts with --text or --text-file (one kind per run)")
    check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    sources, unreadable = find_images(paths, "paths", exclude=exclude or ()) if paths else ([], [])
    encoder = load_model_with_status(model, device, backend, precision, purpose="rankings")
    if texts:
        vectors = cliplens.embed_texts(texts, encoder)
        files = cliplens.write_text_embeddings(texts, vectors, out_dir, model=encoder.name, dtype=dtype,
                                               overwrite=overwrite)
        summary = {"kind": "text", "model": encoder.name, "count": len(texts), "failed": 0, "dim": encoder.embed_dim,
                   "out": cliplens.display_path(out_dir), "files": [cliplens.display_path(f) for f in files]}
    else:
        with progress("embedding") as bar:
            task = bar.add_task("embedding", total=len(sources), rate="")
            result = cliplens.embed_images(sources, encoder, batch_size=batch_size, workers=workers,
                                           on_progress=rate_updater(bar, task, "img"))
        files = cliplens.write_image_embeddings(result, out_dir, dtype=dtype, overwrite=overwrite)
        report_skipped(result.errors)
        errors = unreadable + result.errors
        summary = {"kind": "image", "model": encoder.name, "count": len(result.sources), "failed": len(errors),
                   "dim": encoder.embed_dim, "out": cliplens.display_path(out_dir), "files": [cliplens.display_path(f) for f in files],
                   "errors": [{"path": e.source, "reason": e.reason} for e in errors]}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"embedded {summary['count']} {summary['kind']}(s), {summary['failed']} failed → {summary['out']}",
                  highlight=False)
    if summary["failed"]:
        raise typer.Exit(1)


def _read_texts(path: Path) -> list[str]:
    """Every non-blank line of a UTF-8 text file."""
    if not path.is_file():
        raise UsageError("no such file", value=cliplens.display_path(path), parameter="text_file")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
