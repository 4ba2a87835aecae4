"""``cliplens index``, ``cliplens search`` and ``cliplens dedupe``: photo search over an index."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cliplens.cli_common import (BackendOpt, DeviceOpt, JsonOpt, PrecisionOpt, command, emit_json, err,
                                 load_model_with_status, out, progress, rate_updater)
from cliplens.errors import UsageError

IndexOpt = typer.Option(None, "--index", envvar="CLIPLENS_INDEX",
                        help="Index folder (default: the user data dir, e.g. ~/.local/share/cliplens/index).")
IndexModelOpt = typer.Option(None, "--model", "-m",
                             help="Model (default: the one the index was built with; a new index takes openai/clip-vit-base-patch32).")


def register(app: typer.Typer) -> None:
    app.command("index")(command(index))
    app.command("search")(command(search))
    app.command("dedupe")(command(dedupe))


def index(folders: List[Path] = typer.Argument(None, help="Folders of images to index (walked recursively)."),
          index_dir: Optional[Path] = IndexOpt,
          exclude: List[str] = typer.Option(None, "--exclude", help="Glob of paths to leave out (repeatable)."),
          reindex: bool = typer.Option(False, "--reindex", help="Drop the vectors of another model and encode everything again."),
          errors: bool = typer.Option(False, "--errors", help="List the files that could not be indexed, and why."),
          export: Optional[Path] = typer.Option(None, "--export", help="Write the index's vectors to DIR in clip-retrieval's layout."),
          import_dir: Optional[Path] = typer.Option(None, "--import", help="Add vectors from DIR (clip-retrieval layout: img_emb/*.npy + metadata/*.parquet)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="With --export: replace what DIR holds."),
          engine: str = typer.Option("local", "--engine", help="local, or ray (a Ray Data pipeline; pip install 'cliplens[ray]')."),
          address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: the cluster to join (default: start a local Ray)."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
          workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
          model: Optional[str] = IndexModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Build or update a photo index: only new and changed files are encoded, every batch is saved as it ends."""
    from cliplens.index import IndexStore, update_index
    from cliplens.index.transfer import export_embeddings, import_embeddings

    if engine not in ("local", "ray"):
        raise UsageError(f"--engine {engine}: choose local or ray")
    if errors or export is not None:
        store = IndexStore(index_dir)
        if errors:
            listed = store.errors()
            if as_json:
                emit_json({"index": str(store.folder), "errors": [{"path": p, "reason": r} for p, r in listed]})
            else:
                for path, reason in listed:
                    out.print(f"{path}: {reason}", highlight=False)
                err.print(f"{len(listed)} file(s) could not be indexed", highlight=False)
            return
        files = export_embeddings(store, export, overwrite=overwrite)
        summary = {"index": str(store.folder), "out": str(export), "vectors": store.count(), "files": [str(f) for f in files]}
        emit_json(summary) if as_json else err.print(f"exported {summary['vectors']} vectors → {export}", highlight=False)
        return
    if import_dir is not None:
        store = IndexStore(index_dir, create=True)
        name = model or (store.model.name if store.model else None)
        encoder = load_model_with_status(name, device, backend, precision)
        with err.status(f"importing vectors from {import_dir}"):
            added = import_embeddings(store, import_dir, encoder)
        summary = {"index": str(store.folder), "model": encoder.name, "imported": added, "vectors": store.count()}
        emit_json(summary) if as_json else err.print(f"imported {added} vectors from {import_dir} → {store.folder}",
                                                      highlight=False)
        if not folders:
            return
    if not folders:
        raise UsageError("give folders to index (or --errors, --export DIR, --import DIR)")
    with progress("indexing") as bar:
        task = bar.add_task("indexing", total=None, rate="")
        run = update_index(folders, index_dir, model, exclude=exclude or (), reindex=reindex, batch_size=batch_size,
                           workers=workers, device=device, backend=backend, precision=precision,
                           on_progress=rate_updater(bar, task, "img"), on_status=lambda m: err.print(m, highlight=False),
                           engine=engine, address=address)
    for error in run.errors:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    if as_json:
        emit_json(run.to_dict())
    else:
        err.print(f"{run.files} files: {run.encoded} encoded, {run.unchanged} unchanged, {run.reused} reused by "
                  f"content, {run.moved} moved, {run.removed} removed, {run.failed} failed ({run.seconds:.1f} s) "
                  f"→ {run.index}", highlight=False)
    if run.failed:
        raise typer.Exit(1)


def search(query: Optional[str] = typer.Argument(None, help='Text, or arithmetic on terms: \'"horse" + "stripes" - "brown"\'. A term may be an image file.'),
           image: Optional[Path] = typer.Option(None, "--image", help="Search by an example image."),
           add: List[str] = typer.Option(None, "--add", help="A term to add to the query (repeatable)."),
           subtract: List[str] = typer.Option(None, "--subtract", help="A term to subtract (repeatable)."),
           k: int = typer.Option(10, "-k", min=1, help="How many results."),
           threshold: Optional[float] = typer.Option(None, "--threshold", help="Only results scoring at least this (cosine)."),
           index_dir: Optional[Path] = IndexOpt, model: Optional[str] = IndexModelOpt,
           device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
           precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Search the index in words, by example image, or both; best matches first."""
    from cliplens.index import PhotoIndex

    if query is None and image is None and not add:
        raise UsageError("give a text query, --image PATH, or --add TERM")
    photos = PhotoIndex(index_dir, model, device=device, backend=backend, precision=precision)
    result = photos.search(query, image=image, add=add or (), subtract=subtract or (), k=k, threshold=threshold)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.hits:
        err.print("no results" + (f" scoring at least {threshold}" if threshold is not None else ""), highlight=False)
    for rank, hit in enumerate(result.hits, 1):
        out.print(f"{rank:3d}  {hit.score:.3f}  {hit.path}", highlight=False)


def dedupe(threshold: float = typer.Option(0.95, "--threshold", help="Cosine similarity from which two images count as near-duplicates."),
           index_dir: Optional[Path] = IndexOpt, as_json: bool = JsonOpt) -> None:
    """Groups of near-duplicate images in the index (resized, re-encoded, lightly edited copies)."""
    from cliplens.index import PhotoIndex

    photos = PhotoIndex(index_dir)
    with err.status("comparing every image with its nearest neighbours"):
        groups = photos.dedupe(threshold)
    if as_json:
        emit_json({"threshold": threshold, "groups": [g.to_dict() for g in groups]})
        return
    for number, group in enumerate(groups, 1):
        out.print(f"group {number} ({len(group.paths)} files, similarity ≥ {group.score:.3f})", highlight=False)
        for path in group.paths:
            out.print(f"  {path}", highlight=False)
    err.print(f"{len(groups)} group(s) of near-duplicates among {len(photos)} images (threshold {threshold})",
              highlight=False)
