"""What an index knows, in SQLite: one row per file (path, size, mtime, content hash, size in pixels,
error) with its vector, and the model that made the vectors.

SQLite is the source of truth; the FAISS index beside it is derived and can always be rebuilt. The
database runs in WAL mode, so searches read while an indexing run writes, and every finished batch
is one transaction: a killed run loses only the batch it was in. Each transaction bumps a
*generation*; a row records the generation that wrote its vector and a deletion is logged with its
generation, so a saved vector index catches up with exactly what changed since it was saved.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import UsageError

DB_FILE = "index.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    error TEXT,
    vector BLOB,
    gen INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
CREATE INDEX IF NOT EXISTS files_gen ON files (gen);
CREATE TABLE IF NOT EXISTS removed (id INTEGER NOT NULL, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_gen ON removed (gen);
"""


def default_index_dir() -> Path:
    """``CLIPLENS_INDEX`` if set, else ``index`` in the user data dir (platformdirs)."""
    env = os.environ.get("CLIPLENS_INDEX")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("cliplens")) / "index"


class ModelMismatchError(UsageError):
    """The index was built with another model than the one asked for."""


@dataclass
class FileRow:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    width: int | None
    height: int | None
    error: str | None
    has_vector: bool


@dataclass
class NewRow:
    """A file to write in a batch: a vector, or an error, or (for an unchanged file) neither."""

    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    vector: np.ndarray | None = None


@dataclass
class BoundModel:
    name: str
    fingerprint: str
    dim: int


class IndexStore:
    """The SQLite side of an index in ``folder`` (created on first write)."""

    def __init__(self, folder: str | os.PathLike | None = None, *, create: bool = False):
        self.folder = Path(folder).expanduser() if folder is not None else default_index_dir()
        self.db_path = self.folder / DB_FILE
        if not self.db_path.exists():
            if not create:
                raise UsageError("no index here; build one with `cliplens index DIR`",
                                 value=str(self.folder), parameter="index")
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives the process dying
            if create:
                self.db.executescript(_SCHEMA)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"not a readable cliplens index ({exc})", value=str(self.db_path), parameter="index") from None

    # --- meta --------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    @property
    def model(self) -> BoundModel | None:
        """The model whose vectors the index holds (None while it is empty and unbound)."""
        name = self._meta("model")
        if name is None:
            return None
        return BoundModel(name, self._meta("model_fingerprint") or "", int(self._meta("dim") or 0))

    def bind_model(self, name: str, fingerprint: str, dim: int) -> None:
        with self.transaction():
            self._set_meta("model", name)
            self._set_meta("model_fingerprint", fingerprint)
            self._set_meta("dim", str(dim))

    def check_model(self, name: str, fingerprint: str, *, action: str) -> None:
        """Raise :class:`ModelMismatchError` unless ``fingerprint`` is the index's model (any name for it)."""
        bound = self.model
        if bound is None or bound.fingerprint == fingerprint:
            return
        raise ModelMismatchError(
            f"the index {self.folder} holds vectors of model {bound.name!r}; {action} with that model, or rebuild "
            "the index for this one (every image is encoded again)", parameter="model", value=name, remedy="reindex")

    # --- reading -----------------------------------------------------------------------------------

    def rows(self) -> dict[str, FileRow]:
        """Every file the index knows, by path."""
        cursor = self.db.execute("SELECT id, path, size, mtime_ns, sha256, width, height, error, "
                                 "vector IS NOT NULL FROM files")
        return {r[1]: FileRow(*r[:8], bool(r[8])) for r in cursor}

    def count(self) -> int:
        """Files with a vector."""
        return self.db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0]

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be indexed."""
        return list(self.db.execute("SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path"))

    def vectors(self, ids: Sequence[int] | None = None, *, since: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, vectors float32 (N, D)) of all vectors, of ``ids``, or of those written after generation ``since``."""
        if ids is not None:
            ids = [int(i) for i in ids]
            rows: list = []
            for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                rows += self.db.execute(f"SELECT id, vector FROM files WHERE id IN ({marks}) AND vector IS NOT NULL",
                                        chunk).fetchall()
        elif since is not None:
            rows = self.db.execute("SELECT id, vector FROM files WHERE vector IS NOT NULL AND gen > ? ORDER BY id",
                                   (since,)).fetchall()
        else:
            rows = self.db.execute("SELECT id, vector FROM files WHERE vector IS NOT NULL ORDER BY id").fetchall()
        dim = self.model.dim if self.model else 0
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return (np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    def removed_since(self, generation: int) -> np.ndarray:
        """Ids whose vectors were removed or replaced after ``generation``."""
        rows = self.db.execute("SELECT DISTINCT id FROM removed WHERE gen > ?", (generation,)).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        ids = [int(i) for i in ids]
        found: dict[int, str] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT id, path FROM files WHERE id IN ({marks})", chunk).fetchall())
        return found

    # --- writing -----------------------------------------------------------------------------------

    def transaction(self):
        """A write transaction (``BEGIN IMMEDIATE``): one writer at a time, readers go on."""
        return _Transaction(self.db, "BEGIN IMMEDIATE")

    def snapshot(self):
        """A read transaction: every read inside sees the database as of its first read (WAL)."""
        return _Transaction(self.db, "BEGIN DEFERRED")

    def write_batch(self, rows: Sequence[NewRow], *, moves: Sequence[tuple[int, NewRow]] = (),
                    removals: Sequence[str] = ()) -> int:
        """Write one batch in one transaction, as a new generation; returns that generation.

        ``rows`` are inserted or replace the row of their path (a changed file); ``moves`` give a known
        row (id) its new path and stat; ``removals`` are paths that left.
        """
        with self.transaction():
            gen = self.generation + 1
            now = time.time()
            for path in removals:
                self._remove(path, gen)
            for row_id, row in moves:
                replaced = self.db.execute("SELECT id FROM files WHERE path = ? AND id != ?", (row.path, row_id)).fetchone()
                if replaced is not None:  # the moved file took the place of another: that one's vector goes
                    self._remove(row.path, gen)
                self.db.execute("UPDATE files SET path = ?, size = ?, mtime_ns = ?, indexed_at = ? WHERE id = ?",
                                (row.path, row.size, row.mtime_ns, now, row_id))
            for row in rows:
                blob = None if row.vector is None else np.ascontiguousarray(row.vector, np.float32).tobytes()
                old = self.db.execute("SELECT id, vector IS NOT NULL FROM files WHERE path = ?", (row.path,)).fetchone()
                if old is not None and old[1]:
                    self.db.execute("INSERT INTO removed VALUES (?, ?)", (old[0], gen))  # its old vector goes
                self.db.execute(
                    "INSERT INTO files (path, size, mtime_ns, sha256, width, height, error, vector, gen, indexed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                    "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, width = excluded.width, "
                    "height = excluded.height, error = excluded.error, vector = excluded.vector, gen = excluded.gen, "
                    "indexed_at = excluded.indexed_at",
                    (row.path, row.size, row.mtime_ns, row.sha256, row.width, row.height, row.error, blob, gen, now))
            self._set_meta("generation", str(gen))
        return gen

    def touch(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """New (size, mtime) for rows whose content did not change: (id, size, mtime_ns)."""
        if updates:
            with self.transaction():
                self.db.executemany("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?",
                                    [(size, mtime, row_id) for row_id, size, mtime in updates])

    def _remove(self, path: str, gen: int) -> None:
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is not None:
            self.db.execute("INSERT INTO removed VALUES (?, ?)", (row[0], gen))
            self.db.execute("DELETE FROM files WHERE id = ?", (row[0],))

    def reset(self) -> None:
        """Forget every file and the model (for ``--reindex`` with another model)."""
        with self.transaction():
            gen = self.generation + 1
            self.db.execute("INSERT INTO removed SELECT id, ? FROM files", (gen,))
            self.db.execute("DELETE FROM files")
            for key in ("model", "model_fingerprint", "dim"):
                self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
            self._set_meta("generation", str(gen))

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """``BEGIN …`` … ``COMMIT`` (or ``ROLLBACK`` on error); inside another transaction it joins that one."""

    def __init__(self, db: sqlite3.Connection, begin: str):
        self.db = db
        self.begin = begin
        self.outer = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.execute(self.begin)
            self.outer = True
        return self

    def __exit__(self, kind, value, tb):
        if self.outer:
            self.db.execute("ROLLBACK" if kind else "COMMIT")
        return False
