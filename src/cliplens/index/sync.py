"""Keeping the FAISS index beside the database in step with it, without rebuilding.

The vector index is derived data, checked like git checks its objects: the store keeps the generation
the saved files reflect and a checksum of them. Opening checks the files against it; files that do not
match (damaged, overwritten, half-copied) are rebuilt from the database, with a
:class:`IndexRepairNote` saying so. Catching up removes every id changed or deleted since the saved
generation and adds the changed ones back, which is idempotent, so a crash between saving the files and
recording them only repeats work. The index is rebuilt when the collection crosses between exact and
approximate search or when it says a rebuild is due.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..files import hash_files
from .store import IndexStore
from .vectors import VectorIndex, choose_spec

VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "index.lock"


class IndexRepairNote(UserWarning):
    """A damaged or stale vector index was rebuilt from the database (nothing was lost)."""


def writer_lock(store: IndexStore | Path, timeout: float = 0):
    """The lock an indexing run holds on an index (a store or its folder; ``timeout=0``: fail at once when
    another run has it)."""
    from filelock import FileLock

    folder = store.folder if isinstance(store, IndexStore) else Path(store)
    return FileLock(str(folder / LOCK_FILE), timeout=timeout)


def _exact(spec: str) -> bool:
    return spec.startswith("Flat")


def checksum(path: Path) -> str | None:
    """SHA-256 of the vector index's files (the FAISS file and its JSON), or None when one is missing."""
    try:
        return hash_files([path, VectorIndex.meta_path(path)])
    except OSError:
        return None


def _load_checked(store: IndexStore, *, alone: bool) -> tuple[VectorIndex | None, int]:
    """The saved vector index and the generation it reflects, when its files match the checksum the store
    keeps; (None, -1) when there is none or it does not match. ``alone``: no indexing run can be writing
    the files meanwhile, so a mismatch is damage and is noted."""
    path = store.folder / VECTORS_FILE
    recorded, generation = store.meta("vectors_sha256"), int(store.meta("vectors_generation") or -1)
    if not path.exists() or recorded is None:
        return None, -1
    if checksum(path) != recorded:
        if alone:
            warnings.warn(f"{path}: the vector index did not match its checksum (damaged?); it was rebuilt from "
                          "the database", IndexRepairNote, stacklevel=3)
        return None, -1
    try:
        return VectorIndex.load(path), generation
    except Exception:  # noqa: BLE001 - matched its checksum but does not load (another FAISS build?): rebuild
        return None, -1


def sync_vector_index(store: IndexStore, *, save: bool = True) -> VectorIndex:
    """The store's vectors as a searchable index, caught up with the database (and saved, with its checksum
    recorded in the store, when ``save`` and the store may be written). ``save`` also says that the caller
    holds the writer lock, so no one else writes the files meanwhile."""
    dim = store.model.dim if store.model else 0
    with store.snapshot():  # one snapshot of the database for everything read below
        generation = store.generation
        count = store.count()
        index, since = _load_checked(store, alone=save and not store.read_only)
        if index is not None and since > generation:
            index = None  # from a database that has since been replaced
        want = choose_spec(count, dim)
        rebuilt = (index is None or index.dim != dim or _exact(index.spec) != _exact(want) or index.needs_rebuild)
        if rebuilt:
            ids, vectors = store.vectors()
            index = VectorIndex.create(want, dim)
            index.build(vectors, ids)
            changed = True
        else:
            ids, vectors = store.vectors(since=since)
            stale = np.union1d(store.removed_since(since), ids).astype(np.int64)
            changed = bool(len(stale) or len(ids))
            if len(stale):
                index.remove(stale)
            if len(ids):
                index.add(vectors, ids)
    if save and changed and not store.read_only:
        path = store.folder / VECTORS_FILE
        index.save(path)
        store.set_meta({"vectors_generation": str(generation), "vectors_sha256": checksum(path) or ""})
        (store.folder / "vectors.state.json").unlink(missing_ok=True)  # where cliplens 0.1 kept the generation
    return index
