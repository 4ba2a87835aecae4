"""Photo search that scales: an incremental, crash-safe index of image vectors (SQLite + FAISS)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import UsageError
from ..files import display_path
from ..models import Encoder, load_model
from .filters import SearchFilter, parse_position
from .indexer import IndexRun, index_folders
from .photos import DuplicateGroup, PhotoIndex, QueryTerm, SearchHit, SearchResult, parse_query
from .store import DB_FILE, IndexDamagedError, IndexStore, ModelMismatchError, Recovery, default_index_dir
from .sync import writer_lock
from .transfer import export_embeddings, import_embeddings


def update_index(folders: Sequence[str | os.PathLike], index: str | Path | None = None, model: str | None = None, *,
                 exclude: Iterable[str] = (), reindex: bool = False, batch_size: int | None = None,
                 workers: int | None = None, device: str | None = None, backend: str | None = None,
                 precision: str | None = None, on_progress=None, on_status=None, engine: str = "local",
                 address: str | None = None, rebuild: bool = False, ocr: bool = False) -> IndexRun:
    """Build or update the index at ``index`` (default: CLIPLENS_INDEX or the user data dir) from ``folders``.

    Without ``model`` the index keeps the model it was built with (a new index takes the default model).
    Another model is refused unless ``reindex``, which drops the old vectors and encodes everything again.
    ``rebuild`` first moves a (damaged) database aside and starts a new one from the rows that can still be
    read (see :meth:`IndexStore.rebuild`); what was lost is encoded again.
    ``engine="ray"`` decodes and encodes in a Ray Data pipeline (local, or the cluster at ``address``).
    ``ocr`` also reads the text in every photo and video scene that has none read yet (the ``ocr`` extra), for
    ``search --contains-text``.
    """
    from filelock import Timeout

    if engine not in ("local", "ray"):
        raise UsageError("choose local or ray", value=str(engine), parameter="engine")
    folder = Path(index).expanduser() if index is not None else default_index_dir()
    recovery = None
    if rebuild and (folder / DB_FILE).exists():
        with _locked(folder):
            recovery = IndexStore.rebuild(folder)
    store = IndexStore(folder, create=True)
    lock = writer_lock(store)
    try:
        lock.acquire()
    except Timeout:
        store.close()
        raise _busy(folder) from None
    try:
        name = model or (store.model.name if store.model else None)
        encoder = load_model(name, device=device, backend=backend, precision=precision, purpose="rankings",
                             on_status=on_status)
        encode_batches = None
        if engine == "ray":
            from functools import partial

            from .ray_engine import ray_batches

            shards = store.folder / "shards"
            shutil.rmtree(shards, ignore_errors=True)  # the last run's shards only, once they are in the index
            cpu = encoder.info.device == "cpu"  # CPU workers run what the driver runs, so vectors agree
            encode_batches = partial(ray_batches, model=str(encoder.info.path), shard_dir=shards, address=address,
                                     batch_size=batch_size or 32, backend=encoder.info.backend if cpu else backend,
                                     precision=encoder.info.precision if cpu else precision, on_status=on_status,
                                     preparer=encoder.preparer)
        run = index_folders(folders, encoder, store, exclude=exclude, reindex=reindex, batch_size=batch_size,
                            workers=workers, on_progress=on_progress, encode_batches=encode_batches, ocr=ocr)
        run.recovered = recovery
        return run
    finally:
        lock.release()
        store.close()


def _busy(folder: Path) -> UsageError:
    return UsageError("another `cliplens index` run is updating this index; wait for it to finish (searching "
                      "works meanwhile)", value=display_path(folder), parameter="index")


@contextmanager
def _locked(folder: Path):
    """The writer lock of the index in ``folder``, for work done before its store can be opened."""
    from filelock import Timeout

    lock = writer_lock(folder)
    try:
        lock.acquire()
    except Timeout:
        raise _busy(folder) from None
    try:
        yield
    finally:
        lock.release()


def search(query: str | None = None, index: str | Path | None = None, *, image: str | Path | None = None,
           add: Sequence[str] = (), subtract: Sequence[str] = (), top: int = 10, threshold: float | None = None,
           min_match: float | None = None, filters: SearchFilter | None = None, model: str | None = None
           ) -> SearchResult:
    """One search of the index (open a :class:`PhotoIndex` to run many; see :meth:`PhotoIndex.search`)."""
    photos = PhotoIndex(index, model)
    try:
        return photos.search(query, image=image, add=add, subtract=subtract, top=top, threshold=threshold,
                             min_match=min_match, filters=filters)
    finally:
        photos.close()


def index_errors(index: str | Path | None = None) -> list[tuple[str, str]]:
    """(path, reason) of every file the index could not take."""
    store = IndexStore(index)
    try:
        return store.errors()
    finally:
        store.close()


def export_index(index: str | Path | None, out: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the index's vectors to ``out`` in clip-retrieval's layout; returns the files written."""
    store = IndexStore(index)
    try:
        return export_embeddings(store, out, overwrite=overwrite)
    finally:
        store.close()


def import_index(index: str | Path | None, source: str | Path, model: Encoder | str | None = None) -> int:
    """Add the vectors in ``source`` (clip-retrieval layout, made by ``model``; by default the index's own or the
    default model) to the index, creating it if needed; returns how many were added."""
    store = IndexStore(index, create=True)
    try:
        encoder = model if isinstance(model, Encoder) else load_model(
            model or (store.model.name if store.model else None), purpose="rankings")
        return import_embeddings(store, source, encoder)
    finally:
        store.close()


__all__ = [
    "DuplicateGroup", "IndexDamagedError", "IndexRun", "IndexStore", "ModelMismatchError", "Recovery", "PhotoIndex", "QueryTerm", "SearchHit",
    "SearchFilter", "SearchResult", "default_index_dir", "export_index", "import_index", "index_errors",
    "index_folders", "parse_position", "parse_query", "search", "update_index",
]
