"""What an index knows, in SQLite: one row per file (path, size, mtime, content hash, size in pixels,
error) with its vector, and the model that made the vectors.

A video's row holds no vector: each of its scenes has a row of its own (``parent``: the video's id;
``time`` and ``until``: where the scene starts and ends, in seconds), whose path key is made of the
video's id and cannot name a file (it starts with a NUL byte). A scene row carries its video's
metadata, so filters and searches treat scenes like photos; the file-level methods (:meth:`rows`,
moves, removals) deal with the video, and its scenes follow.

The text an OCR engine read in each photo and scene (``cliplens index --ocr``) lives in an SQLite
FTS5 table with a trigram tokenizer, ``file_text`` (rowid: the row's id; an empty text means "read,
nothing found"), made the first time text is stored: an index without it has simply read none.

SQLite is the source of truth; the FAISS index beside it is derived and can always be rebuilt. The
database runs in WAL mode, so searches read while an indexing run writes, and every finished batch
is one transaction: a killed run loses only the batch it was in. Each transaction bumps a
*generation*; a row records the generation that wrote its vector and a deletion is logged with its
generation, so a saved vector index catches up with exactly what changed since it was saved.

File names are stored losslessly, as the bytes the file system gave (a name that is not UTF-8 is
indexed like any other). The schema has a version: an older store is migrated in place when it is
opened for writing, a newer one is refused. A store that can only be read (a read-only mount,
someone else's folder) opens read-only, so it can be searched. A damaged store is reported with the
way out, :meth:`IndexStore.rebuild`, which moves it aside and keeps every row that can still be read.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

import numpy as np

from ..errors import UsageError
from ..files import display_path, writable
from ..inputs.metadata import PhotoMetadata
from ..inputs.ocr import normalised

DB_FILE = "index.sqlite"
SCHEMA_VERSION = 4  # 1: paths as text; 2: paths as the file system's bytes; 3: photo metadata; 4: videos

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    error TEXT,
    vector BLOB,
    gen INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL,
    taken TEXT,
    taken_source TEXT,
    camera_make TEXT,
    camera_model TEXT,
    lat REAL,
    lon REAL,
    orientation INTEGER,
    kind TEXT,
    parent INTEGER,
    time REAL,
    until REAL
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
CREATE INDEX IF NOT EXISTS files_parent ON files (parent);
CREATE INDEX IF NOT EXISTS files_taken ON files (taken);
CREATE INDEX IF NOT EXISTS files_gen ON files (gen);
CREATE TABLE IF NOT EXISTS removed (id INTEGER NOT NULL, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_gen ON removed (gen);
"""

# Each migration brings a store from the version before it to the version it is listed under.
_METADATA = ("taken", "taken_source", "camera_make", "camera_model", "lat", "lon", "orientation")
_MIGRATIONS = {
    2: ["UPDATE files SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'"],
    # the next `cliplens index` run reads the metadata of the rows without it (no re-encoding)
    3: [f"ALTER TABLE files ADD COLUMN {name} {kind}" for name, kind in
        zip(_METADATA, ("TEXT", "TEXT", "TEXT", "TEXT", "REAL", "REAL", "INTEGER"))],
    4: [*(f"ALTER TABLE files ADD COLUMN {name} {kind}" for name, kind in
          (("kind", "TEXT"), ("parent", "INTEGER"), ("time", "REAL"), ("until", "REAL"))),
        "CREATE INDEX IF NOT EXISTS files_parent ON files (parent)",
        # date filters: a range of this index, which holds the ids, so the rows themselves are not read
        "CREATE INDEX IF NOT EXISTS files_taken ON files (taken)"],
}
# what a rebuild keeps of each row (a column the damaged database lacks, from an older schema, is kept empty)
_COLUMNS = ("id", "path", "size", "mtime_ns", "sha256", "width", "height", "error", "vector", "gen", "indexed_at",
            "kind", "parent", "time", "until")
VIDEO = "video"  # the kind of a video's row and of its scenes' rows (photos have none)


def default_index_dir() -> Path:
    """``CLIPLENS_INDEX`` if set, else ``index`` in the user data dir (platformdirs)."""
    env = os.environ.get("CLIPLENS_INDEX")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("cliplens")) / "index"


class ModelMismatchError(UsageError):
    """The index was built with another model than the one asked for."""


class IndexDamagedError(UsageError):
    """The index's database cannot be read; :meth:`IndexStore.rebuild` moves it aside and keeps what it can."""


def _path_key(path: str | os.PathLike) -> bytes:
    """How a path is stored: the file system's bytes."""
    return os.fsencode(path)


def _path(value) -> str:
    """A stored path as Python names files (bytes that are not UTF-8 as lone surrogates)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


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
    has_vector: bool  # for a video: whether its scenes are indexed
    kind: str | None = None


@dataclass
class SceneRow:
    """One scene of a video: where it starts and ends (seconds) and its vector."""

    time: float
    until: float
    vector: np.ndarray


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
    meta: PhotoMetadata | None = None
    scenes: list[SceneRow] | None = None  # a video's scenes (its own row then holds no vector)


@dataclass
class BoundModel:
    name: str
    fingerprint: str
    dim: int


@dataclass
class Recovery:
    """What :meth:`IndexStore.rebuild` did: where the old database went and how many rows it kept."""

    moved_to: Path
    kept: int
    lost: int


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether an SQLite error means the file is damaged (not that it is busy or the query is wrong)."""
    text = str(exc).lower()
    return (type(exc) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text
            or "disk i/o error" in text)


def _named(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """A damaged database as :class:`IndexDamagedError` naming the file and the way out; other errors as they are."""
    if _is_damage(exc):
        return IndexDamagedError(f"the database is damaged ({exc}); rebuild the index from it (the rows that can "
                                 "still be read are kept, the rest is encoded again)", value=display_path(path),
                                 parameter="index", remedy="rebuild")
    return exc


class _Database:
    """An SQLite connection whose errors name the index: damage as :class:`IndexDamagedError`, with the way out."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.connection, self.path = connection, path

    def _damaged(self, exc: sqlite3.DatabaseError) -> Exception:
        return _named(exc, self.path)

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None

    def run(self, sql: str, params: Sequence = ()) -> None:
        try:
            self.connection.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None

    def run_many(self, sql: str, rows: Iterable[Sequence]) -> None:
        try:
            self.connection.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    def close(self) -> None:
        self.connection.close()


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    """A connection to the database at ``path``: read-write, or read-only (immutable when SQLite cannot even
    make the files a reader of a WAL database needs, as on a read-only mount)."""
    if not read_only:
        return sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    uri = "file:" + quote(os.fsencode(path.resolve()))
    try:
        connection = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError:
        return sqlite3.connect(uri + "?immutable=1", uri=True, isolation_level=None, check_same_thread=False)


class IndexStore:
    """The SQLite side of an index in ``folder``.

    ``create`` makes the index when there is none, and needs write access (an indexing run). Without it
    the store opens read-write when the folder allows it, else read-only (``read_only``), so that a
    search works on an index it may not change.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, create: bool = False):
        self.folder = Path(folder).expanduser() if folder is not None else default_index_dir()
        self.db_path = self.folder / DB_FILE
        exists = self.db_path.exists()
        if not exists and not create:
            raise UsageError("no index here; build one with `cliplens index FOLDER`", value=display_path(self.folder),
                             parameter="index")
        if create:
            self._make_folder()
        self.read_only = not writable(self.folder)
        if create and self.read_only:
            raise UsageError("the index folder is read-only: indexing needs write access (searching works)",
                             value=display_path(self.folder), parameter="index")
        try:
            self.db = _Database(_connect(self.db_path, self.read_only), self.db_path)
        except sqlite3.DatabaseError as exc:
            raise _named(exc, self.db_path) from None
        if not self.read_only:
            self.db.run("PRAGMA journal_mode=WAL")
            self.db.run("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives the process dying
        if create and not exists:
            self._create_schema()
        self._check_schema()

    def _make_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make the index folder ({exc.strerror or exc})", value=display_path(self.folder),
                             parameter="index") from None

    def _create_schema(self) -> None:
        try:
            self.db.connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise self.db._damaged(exc) from None
        self.db.run("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self.db.run("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")

    def _check_schema(self) -> None:
        """Refuse a newer schema; bring an older one up to date (when this store may write)."""
        found = self.db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        if not found:
            raise self.db._damaged(sqlite3.DatabaseError("not a cliplens index: it has no meta table"))
        version = int(self._meta("schema") or 1)
        if version > SCHEMA_VERSION:
            raise UsageError(f"made by a newer cliplens (index schema {version}, this one reads up to "
                             f"{SCHEMA_VERSION}); upgrade cliplens to use it", value=display_path(self.folder),
                             parameter="index")
        if version < SCHEMA_VERSION and not self.read_only:
            with self.transaction():
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for sql in _MIGRATIONS.get(step, []):
                        self.db.run(sql)
                self._set_meta("schema", str(SCHEMA_VERSION))

    # --- meta --------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        rows = self.db.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.run("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value))

    def meta(self, key: str) -> str | None:
        """A value the index keeps about itself (as text), or None."""
        return self._meta(key)

    def set_meta(self, values: dict[str, str]) -> None:
        """Keep values about the index (one transaction)."""
        with self.transaction():
            for key, value in values.items():
                self._set_meta(key, value)

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
        self.set_meta({"model": name, "model_fingerprint": fingerprint, "dim": str(dim)})

    @property
    def roots(self) -> list[str]:
        """The folders the index was built from (absolute), most recently added last."""
        return json.loads(self._meta("roots") or "[]")

    def add_roots(self, folders: Iterable[str]) -> None:
        """Remember folders the index is built from (names kept losslessly, as Python holds them)."""
        known = self.roots
        new = [f for f in folders if f not in known]
        if new:
            self.set_meta({"roots": json.dumps(known + new)})

    def check_model(self, name: str, fingerprint: str, *, action: str) -> None:
        """Raise :class:`ModelMismatchError` unless ``fingerprint`` is the index's model (any name for it)."""
        bound = self.model
        if bound is None or bound.fingerprint == fingerprint:
            return
        raise ModelMismatchError(
            f"the index {display_path(self.folder)} holds vectors of model {bound.name!r}; {action} with that model, or rebuild "
            "the index for this one (every image is encoded again)", parameter="model", value=name, remedy="reindex")

    # --- reading -----------------------------------------------------------------------------------

    def rows(self) -> dict[str, FileRow]:
        """Every file the index knows, by path."""
        found = self.db.query("SELECT id, path, size, mtime_ns, sha256, width, height, error, vector IS NOT NULL OR "
                              "(kind = ? AND EXISTS (SELECT 1 FROM files AS s WHERE s.parent = files.id)), kind "
                              "FROM files WHERE parent IS NULL", (VIDEO,))
        return {_path(r[1]): FileRow(r[0], _path(r[1]), *r[2:8], bool(r[8]), r[9]) for r in found}

    def count(self) -> int:
        """Files with a vector."""
        return self.db.query("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL")[0][0]

    def scenes(self, video_id: int) -> list[SceneRow]:
        """The scenes of the video with this id, in order."""
        return [SceneRow(t, u, np.frombuffer(v, np.float32)) for t, u, v in self.db.query(
            "SELECT time, until, vector FROM files WHERE parent = ? AND vector IS NOT NULL ORDER BY time", (video_id,))]

    def moments(self, ids: Iterable[int]) -> dict[int, tuple[float, float]]:
        """Of these ids, the scenes of videos: (start, end) in seconds, by id."""
        return {i: (t, u) for i, t, u in self._by_ids("SELECT id, time, until FROM files WHERE parent IS NOT NULL "
                                                       "AND id IN ({marks})", ids)}

    def parents(self) -> dict[int, int]:
        """Every scene's id and its video's id."""
        return dict(self.db.query("SELECT id, parent FROM files WHERE parent IS NOT NULL"))

    def _by_ids(self, sql: str, ids: Iterable[int]) -> list[tuple]:
        """The rows of ``sql`` (whose ``{marks}`` stands for the ids' placeholders), a chunk of ids at a time
        (SQLite limits bound parameters)."""
        ids = [int(i) for i in ids]
        rows: list[tuple] = []
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            rows += self.db.query(sql.format(marks=",".join("?" * len(chunk))), chunk)
        return rows

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be indexed."""
        return [(_path(p), reason) for p, reason in
                self.db.query("SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path")]

    def vectors(self, ids: Sequence[int] | None = None, *, since: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, vectors float32 (N, D)) of all vectors, of ``ids``, or of those written after generation ``since``."""
        if ids is not None:
            rows = self._by_ids("SELECT id, vector FROM files WHERE id IN ({marks}) AND vector IS NOT NULL", ids)
        elif since is not None:
            rows = self.db.query("SELECT id, vector FROM files WHERE vector IS NOT NULL AND gen > ? ORDER BY id",
                                 (since,))
        else:
            rows = self.db.query("SELECT id, vector FROM files WHERE vector IS NOT NULL ORDER BY id")
        dim = self.model.dim if self.model else 0
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return (np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    def removed_since(self, generation: int) -> np.ndarray:
        """Ids whose vectors were removed or replaced after ``generation``."""
        rows = self.db.query("SELECT DISTINCT id FROM removed WHERE gen > ?", (generation,))
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def id_of(self, path: str | os.PathLike) -> int | None:
        """The id of the indexed file at ``path`` (one with a vector: not a video, whose scenes have them), or None."""
        found = self.db.query("SELECT id FROM files WHERE path = ? AND vector IS NOT NULL", (_path_key(path),))
        return found[0][0] if found else None

    def kind_of(self, path: str | os.PathLike) -> str | None:
        """The kind of the indexed file at ``path`` (None for a photo or a file the index does not hold)."""
        found = self.db.query("SELECT kind FROM files WHERE path = ?", (_path_key(path),))
        return found[0][0] if found else None

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        """The file of each id (a scene's is its video's)."""
        return {i: _path(p) for i, p in self._by_ids(
            "SELECT f.id, coalesce(v.path, f.path) FROM files AS f LEFT JOIN files AS v ON v.id = f.parent "
            "WHERE f.id IN ({marks})", ids)}

    # --- writing -----------------------------------------------------------------------------------

    def transaction(self):
        """A write transaction (``BEGIN IMMEDIATE``): one writer at a time, readers go on."""
        if self.read_only:
            raise UsageError("the index folder is read-only: indexing needs write access (searching works)",
                             value=display_path(self.folder), parameter="index")
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
                key = _path_key(row.path)
                if self.db.query("SELECT id FROM files WHERE path = ? AND id != ?", (key, row_id)):
                    self._remove(row.path, gen)  # the moved file took the place of another: that one's vector goes
                self.db.run("UPDATE files SET path = ?, size = ?, mtime_ns = ?, indexed_at = ? WHERE id = ?",
                            (key, row.size, row.mtime_ns, now, row_id))
                if row.meta is not None:
                    self._set_metadata(row_id, row.meta)
            for row in rows:
                self._write_row(row, gen, now)
            self._set_meta("generation", str(gen))
        return gen

    def _write_row(self, row: NewRow, gen: int, now: float) -> None:
        """Insert a file's row, or replace the row of its path (its old vector, or its old scenes, go)."""
        key = _path_key(row.path)
        old = self.db.query("SELECT id, vector IS NOT NULL FROM files WHERE path = ?", (key,))
        if old:
            if old[0][1]:
                self.db.run("INSERT INTO removed VALUES (?, ?)", (old[0][0], gen))  # its old vector goes
            self._remove_scenes(old[0][0], gen)
            self._forget_text(old[0][0])  # new content: its text is read again
        blob = None if row.vector is None else np.ascontiguousarray(row.vector, np.float32).tobytes()
        kind = VIDEO if row.scenes is not None else None
        values = (row.size, row.mtime_ns, row.sha256, row.width, row.height, row.error, blob, gen, now, kind,
                  *_metadata_values(row.meta or PhotoMetadata()))
        names = ("size", "mtime_ns", "sha256", "width", "height", "error", "vector", "gen", "indexed_at", "kind",
                 *_METADATA)
        self.db.run(f"INSERT INTO files (path, {', '.join(names)}) VALUES (?{', ?' * len(names)}) ON CONFLICT(path) "
                    f"DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in names)}", (key, *values))
        if row.scenes:
            video_id = self.db.query("SELECT id FROM files WHERE path = ?", (key,))[0][0]
            scene_names = ("vector", "gen", "indexed_at", "kind", "parent", "time", "until", *_METADATA)
            self.db.run_many(
                f"INSERT INTO files (path, {', '.join(scene_names)}) VALUES (?{', ?' * len(scene_names)})",
                [(b"\0" + f"{video_id}/{n}".encode(), np.ascontiguousarray(scene.vector, np.float32).tobytes(), gen,
                  now, VIDEO, video_id, scene.time, scene.until, *values[10:]) for n, scene in enumerate(row.scenes)])

    def _remove_scenes(self, video_id: int, gen: int) -> None:
        self.db.run("INSERT INTO removed SELECT id, ? FROM files WHERE parent = ?", (gen, video_id))
        if self._has_texts():
            self.db.run("DELETE FROM file_text WHERE rowid IN (SELECT id FROM files WHERE parent = ?)", (video_id,))
        self.db.run("DELETE FROM files WHERE parent = ?", (video_id,))

    # --- text read in the images -------------------------------------------------------------------

    def _has_texts(self) -> bool:
        return bool(self.db.query("SELECT 1 FROM sqlite_master WHERE name = 'file_text'"))

    def _forget_text(self, row_id: int) -> None:
        if self._has_texts():
            self.db.run("DELETE FROM file_text WHERE rowid = ?", (row_id,))

    def unread_texts(self) -> list[tuple[int, str, float | None]]:
        """(id, path, time) of the rows with a vector whose text was never read (a scene: its video's path and
        start)."""
        unread = "AND f.id NOT IN (SELECT rowid FROM file_text)" if self._has_texts() else ""
        return [(i, _path(p), t) for i, p, t in self.db.query(
            "SELECT f.id, coalesce(v.path, f.path), f.time FROM files AS f LEFT JOIN files AS v ON v.id = f.parent "
            f"WHERE f.vector IS NOT NULL {unread} ORDER BY f.id")]

    def set_texts(self, rows: Sequence[tuple[int, str]]) -> None:
        """The text read in these rows' images ("" for none), in one transaction."""
        if not rows:
            return
        with self.transaction():
            self.db.run("CREATE VIRTUAL TABLE IF NOT EXISTS file_text USING fts5(text, norm, tokenize='trigram')")
            self.db.run_many("DELETE FROM file_text WHERE rowid = ?", [(i,) for i, _ in rows])
            self.db.run_many("INSERT INTO file_text (rowid, text, norm) VALUES (?, ?, ?)",
                             [(i, text, normalised(text)) for i, text in rows])

    def texts(self, ids: Iterable[int]) -> dict[int, str]:
        """The text read in these rows' images, by id (rows never read are left out)."""
        if not self._has_texts():
            return {}
        return dict(self._by_ids("SELECT rowid, text FROM file_text WHERE rowid IN ({marks})", ids))

    def text_candidates(self, needle: str) -> list[tuple[int, str]]:
        """(id, text) of the rows whose text shares a three-letter run with ``needle`` (normalised), the
        candidates an approximate match is judged on; all rows with text when it is shorter than that."""
        if not self._has_texts():
            return []
        if len(needle) < 3:
            return self.db.query("SELECT rowid, text FROM file_text WHERE norm != ''")
        grams = sorted({needle[i : i + 3] for i in range(len(needle) - 2)})
        return self.db.query("SELECT rowid, text FROM file_text WHERE file_text MATCH ?",
                             (" OR ".join(f'norm:"{g}"' for g in grams),))

    def _set_metadata(self, row_id: int, meta: PhotoMetadata) -> None:
        """A row's metadata (a video's scenes get it too)."""
        self.db.run(f"UPDATE files SET {', '.join(f'{name} = ?' for name in _METADATA)} WHERE id = ? OR parent = ?",
                    (*_metadata_values(meta), row_id, row_id))

    def set_metadata(self, rows: Sequence[tuple[int, PhotoMetadata]]) -> None:
        """The metadata of known rows (read again, or for the first time after an upgrade), in one transaction."""
        if rows:
            with self.transaction():
                for row_id, meta in rows:
                    self._set_metadata(row_id, meta)

    def undescribed(self) -> list[tuple[int, str, int | None]]:
        """(id, path, mtime_ns) of the indexed files whose metadata was never read (rows from before schema 3)."""
        return [(i, _path(p), m) for i, p, m in self.db.query(
            "SELECT id, path, mtime_ns FROM files WHERE vector IS NOT NULL AND parent IS NULL AND taken_source IS NULL "
            "AND taken IS NULL")]

    def metadata(self, ids: Iterable[int]) -> dict[int, PhotoMetadata]:
        """The metadata of these rows, by id."""
        return {row[0]: PhotoMetadata(*row[1:]) for row in self._by_ids(
            f"SELECT id, {', '.join(_METADATA)} FROM files WHERE id IN ({{marks}})", ids)}

    def filtered_ids(self, conditions: Sequence[str], params: Sequence, *, described: bool = False,
                     newest_first: bool = False) -> list[tuple]:
        """The ids (as 1-tuples) of the rows that meet every SQL condition (on the metadata columns);
        ``described``: (id, path, taken, lat, lon) tuples, a scene's path its video's; ``newest_first``: in that
        order. With either, only rows with a vector; without, the ids may include rows without one (a video's
        own row, a bad file), which a vector search drops, so that a date range is answered from the date
        index alone (a covering index: the rows are not read)."""
        where = " AND ".join(["vector IS NOT NULL"] * (described or newest_first) + list(conditions)) or "1"
        order = " ORDER BY taken DESC, time, id" if newest_first else ""
        if not described:
            return self.db.query(f"SELECT id FROM files WHERE {where}{order}", params)
        return [(r[0], _path(r[1]), *r[2:]) for r in self.db.query(
            "SELECT id, coalesce((SELECT v.path FROM files AS v WHERE v.id = files.parent), path), taken, lat, lon "
            f"FROM files WHERE {where}{order}", params)]

    def newest_first(self, ids: Iterable[int]) -> np.ndarray:
        """Of these ids, those with a vector, newest first (as filters alone list them)."""
        rows = self._by_ids("SELECT id, coalesce(taken, ''), coalesce(time, 0) FROM files WHERE vector IS NOT NULL "
                            "AND id IN ({marks})", ids)
        rows.sort(key=lambda r: (r[2], r[0]))
        rows.sort(key=lambda r: r[1], reverse=True)
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def touch(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """New (size, mtime) for rows whose content did not change: (id, size, mtime_ns)."""
        if updates:
            with self.transaction():
                self.db.run_many("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?",
                                 [(size, mtime, row_id) for row_id, size, mtime in updates])

    def _remove(self, path: str, gen: int) -> None:
        found = self.db.query("SELECT id FROM files WHERE path = ?", (_path_key(path),))
        if found:
            self.db.run("INSERT INTO removed VALUES (?, ?)", (found[0][0], gen))
            self.db.run("DELETE FROM files WHERE id = ?", (found[0][0],))
            self._remove_scenes(found[0][0], gen)
            self._forget_text(found[0][0])

    def reset(self) -> None:
        """Forget every file and the model (for ``--reindex`` with another model)."""
        with self.transaction():
            gen = self.generation + 1
            self.db.run("INSERT INTO removed SELECT id, ? FROM files", (gen,))
            self.db.run("DELETE FROM files")
            if self._has_texts():
                self.db.run("DELETE FROM file_text")
            for key in ("model", "model_fingerprint", "dim"):
                self.db.run("DELETE FROM meta WHERE key = ?", (key,))
            self._set_meta("generation", str(gen))

    def close(self) -> None:
        self.db.close()

    # --- recovery ----------------------------------------------------------------------------------

    @classmethod
    def rebuild(cls, folder: str | os.PathLike | None = None) -> Recovery:
        """Move the index's database aside (``index.sqlite.damaged-TIME``), start a new one, and copy into it
        every row (and the model binding) that can still be read; the vector index is rebuilt from them."""
        folder = Path(folder).expanduser() if folder is not None else default_index_dir()
        old = folder / DB_FILE
        if not old.exists():
            raise UsageError("no index here to rebuild", value=display_path(folder), parameter="index")
        if not writable(folder):
            raise UsageError("the index folder is read-only: rebuilding needs write access", value=display_path(folder),
                             parameter="index")
        aside = folder / f"{DB_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if (folder / (DB_FILE + suffix)).exists():
                os.replace(folder / (DB_FILE + suffix), Path(str(aside) + suffix))
        for derived in folder.glob("vectors.*"):  # made from the database: rebuilt from the new one
            derived.unlink()
        meta, salvaged, lost = _salvage(aside)
        rows = _bound_rows(meta, salvaged)  # vectors no known model made would be searched as if any had
        lost += len(salvaged) - len(rows)
        store = cls(folder, create=True)
        try:
            with store.transaction():
                if rows:
                    for key in ("model", "model_fingerprint", "dim"):
                        store._set_meta(key, meta[key])
                store.db.run_many(f"INSERT OR IGNORE INTO files ({', '.join(_COLUMNS)}) "
                                  f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                                  [(r[0], _path_key(_path(r[1])), *r[2:9], 1, *r[10:]) for r in rows])
                store._set_meta("generation", "1")
        finally:
            store.close()
        return Recovery(aside, len(rows), lost)


def _metadata_values(meta: PhotoMetadata) -> tuple:
    return (meta.taken, meta.taken_source, meta.camera_make, meta.camera_model, meta.lat, meta.lon,
            meta.orientation)


def _bound_rows(meta: dict[str, str], rows: list[tuple]) -> list[tuple]:
    """The salvaged rows that can be kept: none when the model that made their vectors is not known (its name,
    fingerprint and dimension), else those whose vector (if any) has that dimension."""
    try:
        dim = int(meta.get("dim") or 0)
    except ValueError:
        dim = 0
    if dim <= 0 or not meta.get("model") or not meta.get("model_fingerprint"):
        return []
    kept = [r for r in rows if r[8] is None or len(r[8]) == 4 * dim]
    videos = {r[0] for r in kept if r[11] == VIDEO and r[12] is None}
    return [r for r in kept if r[12] is None or r[12] in videos]  # a scene whose video was lost goes with it


def _salvage(path: Path) -> tuple[dict[str, str], list[tuple], int]:
    """The meta values and file rows that can still be read from a damaged database, and how many rows were
    lost (read id by id past a damaged page; a file that is no database at all gives nothing)."""
    try:
        db = sqlite3.connect("file:" + quote(os.fsencode(path.resolve())) + "?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return {}, [], 0
    meta: dict[str, str] = {}
    rows: list[tuple] = []
    lost = 0
    try:
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            pass
        try:
            ids = [r[0] for r in db.execute("SELECT id FROM files ORDER BY id").fetchall()]
        except sqlite3.DatabaseError:
            ids = []
            try:  # the id index is damaged: walk the ids the table itself can give
                high = db.execute("SELECT max(id) FROM files").fetchone()[0] or 0
                ids = list(range(1, high + 1))
            except sqlite3.DatabaseError:
                pass
        try:  # an older schema's table lacks the newer columns: they are kept empty
            present = {r[1] for r in db.execute("PRAGMA table_info(files)").fetchall()}
        except sqlite3.DatabaseError:
            present = set(_COLUMNS[:11])
        columns = ", ".join(c if c in present else "NULL" for c in _COLUMNS)
        for i in ids:
            try:
                found = db.execute(f"SELECT {columns} FROM files WHERE id = ?", (i,)).fetchone()
            except sqlite3.DatabaseError:
                lost += 1
                continue
            if found is not None:
                rows.append(found)
    finally:
        db.close()
    return meta, rows, lost


class _Transaction:
    """``BEGIN …`` … ``COMMIT`` (or ``ROLLBACK`` on error); inside another transaction it joins that one."""

    def __init__(self, db: _Database, begin: str):
        self.db = db
        self.begin = begin
        self.outer = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.run(self.begin)
            self.outer = True
        return self

    def __exit__(self, kind, value, tb):
        if self.outer:
            self.db.run("ROLLBACK" if kind else "COMMIT")
        return False
