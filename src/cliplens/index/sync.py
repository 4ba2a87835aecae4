"""Keeping the FAISS index beside the database in step with it, without rebuilding.

The saved vector index records the store generation it reflects. Catching up removes every id
changed or deleted since then and adds the changed ones back, which is idempotent, so a crash
between saving the index and its state only repeats work. It is rebuilt from the database when the
collection crosses between exact and approximate search, when the index says a rebuild is due,
or when its files are missing or damaged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import atomic_write_json
from .store import IndexStore
from .vectors import VectorIndex, choose_spec

VECTORS_FILE = "vectors.faiss"
STATE_FILE = "vectors.state.json"
LOCK_FILE = "index.lock"


def writer_lock(store: IndexStore, timeout: float = 0):
    """The lock an indexing run holds (``timeout=0``: fail at once when another run has it)."""
    from filelock import FileLock

    return FileLock(str(store.folder / LOCK_FILE), timeout=timeout)


def _exact(spec: str) -> bool:
    return spec.startswith("Flat")


def _read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def sync_vector_index(store: IndexStore, *, save: bool = True) -> VectorIndex:
    """The store's vectors as a searchable index, caught up with the database (and saved when ``save``)."""
    dim = store.model.dim if store.model else 0
    with store.snapshot():  # one snapshot of the database for everything read below
        generation = store.generation
        count = store.count()
        state = _read_state(store.folder)
        index = None
        if state is not None and state.get("generation", -1) <= generation:
            try:
                index = VectorIndex.load(store.folder / VECTORS_FILE)
            except Exception:  # noqa: BLE001 - a damaged derived file is rebuilt from the database
                index = None
        want = choose_spec(count, dim)
        rebuilt = (index is None or index.dim != dim or _exact(index.spec) != _exact(want) or index.needs_rebuild)
        if rebuilt:
            ids, vectors = store.vectors()
            index = VectorIndex.create(want, dim)
            index.build(vectors, ids)
            changed = True
        else:
            since = int(state["generation"])
            ids, vectors = store.vectors(since=since)
            stale = np.union1d(store.removed_since(since), ids).astype(np.int64)
            changed = bool(len(stale) or len(ids))
            if len(stale):
                index.remove(stale)
            if len(ids):
                index.add(vectors, ids)
    if save and changed:
        index.save(store.folder / VECTORS_FILE)
        atomic_write_json(store.folder / STATE_FILE, {"generation": generation, "spec": index.spec,
                                                      "count": len(index)}, indent=None)
    return index
