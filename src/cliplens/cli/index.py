"""``cliplens index``, ``cliplens search`` and ``cliplens dedupe``: photo search over an index."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

import cliplens
from cliplens.cli.common import (BackendOpt, BatchOpt, DeviceOpt, JsonOpt, OverwriteOpt, PrecisionOpt, TopOpt,
                                 WorkersOpt, above_up_to, add, api_json_option, between, check_output, emit_json,
                                 err, out, progress, rate_updater, report_skipped, shown)
from cliplens.errors import UsageError

IndexOpt = typer.Option(None, "--index", envvar="CLIPLENS_INDEX", metavar="DIR",
                        help="Index folder (default: the user data dir, e.g. ~/.local/share/cliplens/index).")
IndexModelOpt = typer.Option(None, "--model", "-m", metavar="MODEL",
                             help="Model (default: the one the index was built with; a new index takes "
                                  "openai/clip-vit-base-patch32).")
ENGINES = ("local", "ray")


def register(app: typer.Typer) -> None:
    add(app, "index", index)
    add(app, "search", search)
    add(app, "dedupe", dedupe)


def index(folders: List[Path] = typer.Argument(None, help="Folders of images, RAW files and videos to index (walked "
                                                          "recursively)."),
          index: Optional[Path] = IndexOpt,
          exclude: List[str] = typer.Option(None, "--exclude", metavar="GLOB",
                                            help="Glob of paths to leave out (repeatable)."),
          reindex: bool = typer.Option(False, "--reindex",
                                       help="Drop the vectors of another model and encode everything again."),
          rebuild: bool = typer.Option(False, "--rebuild",
                                       help="Move a damaged database aside and start again from the rows that can "
                                            "still be read (the rest is encoded again)."),
          errors: bool = typer.Option(False, "--errors", help="List the files that could not be indexed, and why."),
          ocr: bool = typer.Option(False, "--ocr", help="Also read the text in each photo and video scene (once; "
                                                        "for search --contains-text; pip install 'cliplens[ocr]')."),
          export: Optional[Path] = typer.Option(None, "--export", metavar="DIR",
                                                help="Write the index's vectors to DIR in clip-retrieval's layout."),
          import_dir: Optional[Path] = typer.Option(None, "--import", metavar="DIR",
                                                    help="Add vectors from DIR (clip-retrieval layout: img_emb/*.npy "
                                                         "+ metadata/*.parquet)."),
          overwrite: bool = OverwriteOpt,
          engine: str = typer.Option("local", "--engine", metavar="NAME",
                                     help="local, or ray (a Ray Data pipeline; pip install 'cliplens[ray]')."),
          address: Optional[str] = typer.Option(None, "--address", metavar="ADDRESS",
                                                help="With the ray engine: the cluster to join (default: start a "
                                                     "local Ray)."),
          batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt,
          model: Optional[str] = IndexModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Build or update a photo index: only new and changed files are encoded, every batch is saved as it ends.

    Photos (JPEG, PNG, WebP, TIFF, GIF, BMP; HEIC/AVIF with the heif extra), camera RAW files (the raw extra) and
    videos (the video extra: one vector per scene) are indexed."""
    if engine not in ENGINES:
        raise UsageError("choose local or ray", value=str(engine), parameter="engine")
    if errors:
        listed = cliplens.index_errors(index)
        if as_json:
            emit_json({"errors": [{"path": cliplens.display_path(p), "reason": r} for p, r in listed]})
        else:
            for path, reason in listed:
                out.print(f"{cliplens.display_path(path)}: {reason}", highlight=False)
            err.print(f"{len(listed)} file(s) could not be indexed", highlight=False)
        return
    if export is not None:
        check_output(export, "export", overwrite=overwrite, folder=True)
        files = cliplens.export_index(index, export, overwrite=overwrite)
        summary = {"out": cliplens.display_path(export), "files": [cliplens.display_path(f) for f in files]}
        if as_json:
            emit_json(summary)
        else:
            err.print(f"exported the index's vectors → {summary['out']}", highlight=False)
        return
    imported = None
    if import_dir is not None:
        with err.status(f"importing vectors from {shown(import_dir)}"):  # a status line is markup
            imported = cliplens.import_index(index, import_dir, model)
        if not as_json:
            err.print(f"imported {imported} vectors from {cliplens.display_path(import_dir)}", highlight=False)
        if not folders:
            if as_json:
                emit_json({"imported": imported})
            return
    if not folders:
        raise UsageError("give folders to index (or list errors, export or import vectors)", parameter="folders")
    with progress("indexing") as bar:
        task = bar.add_task("indexing", total=None, rate="")
        run = cliplens.update_index(folders, index, model, exclude=exclude or (), reindex=reindex,
                                    batch_size=batch_size, workers=workers, device=device, backend=backend,
                                    precision=precision, on_progress=rate_updater(bar, task, "img"),
                                    on_status=lambda m: err.print(m, highlight=False), engine=engine, address=address,
                                    rebuild=rebuild, ocr=ocr)
    if run.recovered is not None:
        err.print(f"rebuilt the index: kept {run.recovered.kept} rows, lost {run.recovered.lost}; the old database is "
                  f"{cliplens.display_path(run.recovered.moved_to)}", highlight=False)
    report_skipped(run.errors)
    if as_json:  # one object: the run, and what an --import before it added
        emit_json(run.to_dict() | ({"imported": imported} if imported is not None else {}))
    else:
        err.print(f"{run.files} files: {run.encoded} encoded, {run.unchanged} unchanged, {run.reused} reused by "
                  f"content, {run.moved} moved, {run.removed} removed, {run.failed} failed"
                  f"{f', text read in {run.texts_read}' if ocr else ''} ({run.seconds:.1f} s) → {run.index}",
                  highlight=False)
    if run.failed:
        raise typer.Exit(1)


def search(query: Optional[str] = typer.Argument(None, help='Text, or arithmetic on terms: \'"horse" + "stripes" - '
                                                              '"brown"\'. A term may be an image file.'),
           image: Optional[Path] = typer.Option(None, "--image", metavar="FILE", help="Search by an example image."),
           like: Optional[Path] = typer.Option(None, "--like", metavar="FILE",
                                               help="More like this indexed file (its stored vector: not read or "
                                                    "encoded again; the file itself is left out)."),
           add_terms: List[str] = typer.Option(None, "--add", metavar="TERM",
                                               help="A term to add to the query (repeatable)."),
           subtract: List[str] = typer.Option(None, "--subtract", metavar="TERM",
                                              help="A term to subtract (repeatable)."),
           top: int = typer.Option(10, "--top", "-k", metavar="N", callback=TopOpt.callback,
                                   help="How many results (at most)."),
           threshold: Optional[float] = typer.Option(None, "--threshold", metavar="SCORE",
                                                     help="Only results whose score is at least this."),
           min_match: Optional[float] = typer.Option(
               None, "--min-match", metavar="P", callback=between(0, 1),
               help="Only images that show the query with at least this probability (a query of one text); "
                    "a query nothing shows then has no results."),
           after: Optional[str] = typer.Option(None, "--after", metavar="DATE",
                                               help="Only photos taken in or after DATE (YYYY, YYYY-MM or YYYY-MM-DD)."),
           before: Optional[str] = typer.Option(None, "--before", metavar="DATE",
                                                help="Only photos taken in or before DATE (YYYY, YYYY-MM or YYYY-MM-DD)."),
           camera: Optional[str] = typer.Option(None, "--camera", metavar="TEXT",
                                                help="Only photos from a camera whose make or model holds TEXT."),
           near: Optional[str] = typer.Option(None, "--near", metavar="LAT,LON",
                                              help="Only photos taken near this place (decimal degrees)."),
           within_km: Optional[float] = typer.Option(None, "--within", metavar="KM",
                                                     help="How near, with --near (default 1 km)."),
           path: Optional[str] = typer.Option(None, "--path", metavar="GLOB",
                                              help='Only files whose path matches GLOB ("*/2019/*").'),
           kind: Optional[str] = typer.Option(None, "--kind", metavar="KIND",
                                              help="Only photos, or only videos' scenes: photo or video."),
           contains_text: Optional[str] = typer.Option(
               None, "--contains-text", metavar="WORDS",
               help="Only photos whose text (read by `index --ocr`) contains WORDS: any case, spaces and a misread "
                    "letter in six forgiven."),
           index: Optional[Path] = IndexOpt, model: Optional[str] = IndexModelOpt,
           device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
           precision: Optional[str] = PrecisionOpt,
           as_json: bool = api_json_option("POST /v1/search", less="the thumbnail URLs")) -> None:
    """Search the index in words, by example image, or both; best matches first.

    Scores are cosines with the query, or, re-ranked (models that ship a calibration, as demo does), the
    margin by which the query beats the image's own best description. For a query of one text each result
    also has a match: the probability that the image shows it (the detector behind classify's "none of
    these")."""
    filters = cliplens.SearchFilter(after, before, camera, cliplens.parse_position(near) if near else None,
                                    within_km, path, kind, contains_text)
    if query is None and image is None and like is None and not add_terms and not filters.active:
        raise UsageError("give a text query, an example image, a file to find more like, terms to add, or filters",
                         parameter="query")
    photos = cliplens.PhotoIndex(index, model, device=device, backend=backend, precision=precision)
    try:
        result = photos.search(query, image=image, add=add_terms or (), subtract=subtract or (), top=top,
                               threshold=threshold, min_match=min_match, filters=filters, like=like)
    finally:
        photos.close()
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.hits:
        err.print("no results" + (f" scoring at least {threshold}" if threshold is not None else ""), highlight=False)
        if min_match is not None:
            miss = result.near_miss
            closest = f"; the closest: {miss.shown}, match {miss.match:.2f}" if miss else ""
            err.print(f'no image shows "{result.query}" with a match of at least {min_match:g}{closest}',
                      highlight=False)
    elif result.score_kind != "none":
        kind = "cosine with the query" if result.score_kind == "similarity" else \
            "margin over each image’s best reference caption"
        err.print(f"[dim]score: {kind}[/]", highlight=False, markup=True)
    for rank, hit in enumerate(result.hits, 1):
        match = f"  match {hit.match:4.0%}" if hit.match is not None else ""
        score = f"  {hit.score:.3f}" if result.score_kind != "none" else ""
        taken = f"  {hit.meta.taken[:16].replace('T', ' ')}" if filters.active and hit.meta and hit.meta.taken else ""
        text = f"  “{' '.join(hit.text.split())}”" if hit.text else ""
        out.print(f"{rank:3d}{score}{match}{taken}  {hit.shown}{text}", highlight=False)


def dedupe(threshold: float = typer.Option(0.95, "--threshold", metavar="COSINE", callback=above_up_to(0, 1),
                                           help="Cosine similarity from which two images count as near-duplicates."),
           index: Optional[Path] = IndexOpt, as_json: bool = JsonOpt) -> None:
    """Groups of near-duplicate images in the index (resized, re-encoded, lightly edited copies)."""
    photos = cliplens.PhotoIndex(index)
    try:
        with err.status("comparing every image with its nearest neighbours"):
            groups = photos.dedupe(threshold)
        count = len(photos)
    finally:
        photos.close()
    if as_json:
        emit_json({"threshold": threshold, "groups": [g.to_dict() for g in groups]})
        return
    for number, group in enumerate(groups, 1):
        out.print(f"group {number} ({len(group.paths)} files, each pair's similarity ≥ {group.score:.3f})",
                  highlight=False)
        for member in group.shown:
            out.print(f"  {member}", highlight=False)
    err.print(f"{len(groups)} group(s) of near-duplicates among {count} images (threshold {threshold})",
              highlight=False)
