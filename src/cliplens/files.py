"""Files: where cliplens keeps derived data, content hashes, atomic writes and output checks.

Every file cliplens writes goes through :func:`atomic_write` (or :func:`atomic_path` and
:func:`atomic_folder` for libraries that write by name): the data goes to a temporary file with a
unique name in the same folder, which is then renamed over the target, so a reader never sees half a
file and two writers never share a temporary file. Outputs the user names are checked with
:func:`check_output_file` and :func:`check_output_folder` before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import OutputError, printable

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where cliplens keeps derived data (reference embeddings, ONNX exports); ``CLIPLENS_CACHE_DIR`` overrides it."""
    env = os.environ.get("CLIPLENS_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cliplens"))


def display_path(path: str | os.PathLike) -> str:
    """A path as it is printed and written in CSV and JSON: valid UTF-8, its undecodable bytes as ``\\xNN``."""
    return printable(os.fspath(path))


# --- atomic writes --------------------------------------------------------------------------------------

def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write by name; renamed over ``path`` when the block succeeds,
    removed when it fails."""
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it appears whole or not at all (``mode`` "w" or "wb")."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        binary = mode == "wb"
        with open(tmp, "xb" if binary else "x", encoding=None if binary else encoding,
                  newline=None if binary else newline) as fh:
            yield fh


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    """Write JSON atomically (with a final newline)."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    """Save a numpy array as ``.npy`` atomically."""
    import numpy as np

    with atomic_write(path, "wb") as fh:
        np.save(fh, array)
    return Path(path)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block succeeds it replaces ``path`` (an old
    folder there is removed first), when it fails it is removed."""
    path = Path(path)
    tmp = _temporary_name(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- content hashes -------------------------------------------------------------------------------------

def hash_files(paths: str | os.PathLike | Iterable[str | os.PathLike], hasher=None) -> str:
    """The hex digest of a file's bytes (or of several files' bytes one after the other), read in chunks:
    SHA-256, or the ``hashlib`` object ``hasher``."""
    h = hasher if hasher is not None else hashlib.sha256()
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, remembered per (path, size, mtime) so a large checkpoint is read once."""
    stat = path.stat()
    memo = cache_dir() / "hashes" / (hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:32] + ".json")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hash_files(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(memo, {"stamp": stamp, "sha256": digest}, indent=None)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


# --- outputs --------------------------------------------------------------------------------------------

def _write_test(folder: str | os.PathLike) -> OSError | None:
    """Create and remove a file in ``folder``: the only test that holds for root, read-only mounts and ACLs
    (permission bits say nothing to root). The error, or None when it worked."""
    probe = _temporary_name(Path(folder) / "cliplens-write-test")
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        return exc
    return None


def writable(folder: str | os.PathLike) -> bool:
    """Whether files can be made in ``folder``."""
    return _write_test(folder) is None


def _probe_writable(folder: Path, parameter: str, shown: Path) -> None:
    failure = _write_test(folder)
    if failure is not None:
        raise OutputError(f"cannot write in {display_path(folder)} ({failure.strerror or failure})", value=display_path(shown),
                          parameter=parameter)


def check_output_file(path: str | os.PathLike, *, parameter: str, overwrite: bool = False) -> Path:
    """Check, before any work, that a file can be written at ``path``: its folder exists and is writable,
    it is not a folder, and it does not exist yet unless ``overwrite``. Folders are never created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError("is a folder; give a file name", value=display_path(path), parameter=parameter)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder {display_path(parent)} does not exist", value=display_path(path), parameter=parameter)
    if path.exists() and not overwrite:
        raise OutputError("already exists and overwriting it was not asked for", value=display_path(path), parameter=parameter,
                          exists=True)
    _probe_writable(parent, parameter, path)
    return path


def _holds_files(folder: Path, parameter: str) -> bool:
    """Whether ``folder`` holds anything; a folder that cannot be listed is an output that cannot be used."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError as exc:
        raise OutputError(f"cannot list it ({exc.strerror or exc})", value=display_path(folder),
                          parameter=parameter) from None


def check_output_folder(path: str | os.PathLike, *, parameter: str, overwrite: bool = False) -> Path:
    """Check, before any work, that ``path`` can be a folder of outputs: it is a folder or can be made in an
    existing folder, it holds no files yet unless ``overwrite``, and it is writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError("is a file; give a folder", value=display_path(path), parameter=parameter)
    if path.is_dir():
        if not overwrite and _holds_files(path, parameter):
            raise OutputError("already holds files and overwriting them was not asked for",
                              value=display_path(path), parameter=parameter, exists=True)
        _probe_writable(path, parameter, path)
        return path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder {display_path(parent)} does not exist", value=display_path(path), parameter=parameter)
    _probe_writable(parent, parameter, path)
    return path
