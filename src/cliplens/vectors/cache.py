"""Image embeddings kept on disk per model and keyed by each file's content.

``cliplens eval`` and ``cliplens audit`` embed the same images again and again with other prompts,
templates or class sets; the images' vectors do not change, so they are stored under
``<cache>/image-embeddings/<model key>/`` as shards (``shard-*.npy``, memory-mapped on load, and
``shard-*.json`` with the content hash of each row's file). A second run encodes only files it has
not seen, whatever their name or folder. Shards are written atomically; a damaged one is ignored and
its images are encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ImageLoadError
from ..files import atomic_save_npy, atomic_write_json, cache_dir, hash_files
from ..models import Encoder
from ..models.keys import output_key
from .batches import default_workers, iter_encoded_batches

MAX_SHARDS = 16  # more than this and the next write merges them into one


@dataclass
class CachedEmbeddings:
    """Vectors of the images that loaded (rows in input order), which inputs they are, and the failures.

    ``encoded`` counts images the model encoded in this call; ``cached`` those read from the cache.
    """

    vectors: np.ndarray  # float32 (N_ok, D), L2-normalised
    indices: list[int]  # input position of each row
    errors: list[ImageLoadError] = field(default_factory=list)
    encoded: int = 0
    cached: int = 0


def file_key(path: str | os.PathLike) -> str:
    """A content hash of one image file (BLAKE2b, 128 bits); an unreadable file raises ImageLoadError."""
    try:
        return hash_files(path, hashlib.blake2b(digest_size=16))
    except FileNotFoundError:
        raise ImageLoadError(str(path), "no such file") from None
    except OSError as exc:
        raise ImageLoadError(str(path), f"cannot read ({exc.strerror or exc})") from None


class EmbeddingStore:
    """The cached image vectors of one model (its files' content, runtime and precision)."""

    def __init__(self, encoder: Encoder, root: Path | None = None):
        self.dim = encoder.embed_dim
        self.folder = (root or cache_dir() / "image-embeddings") / output_key(encoder)
        self._index: dict[str, tuple[np.ndarray, int]] | None = None

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.json")) if self.folder.is_dir() else []

    def _load(self) -> dict[str, tuple[np.ndarray, int]]:
        if self._index is None:
            index: dict[str, tuple[np.ndarray, int]] = {}
            for meta in self._shards():
                try:
                    keys = json.loads(meta.read_text(encoding="utf-8"))["keys"]
                    vectors = np.load(meta.with_suffix(".npy"), mmap_mode="r")
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # damaged or half-deleted: its images are encoded again
                if vectors.shape != (len(keys), self.dim):
                    continue
                for row, key in enumerate(keys):
                    index[key] = (vectors, row)
            self._index = index
        return self._index

    def __len__(self) -> int:
        return len(self._load())

    def get(self, key: str) -> np.ndarray | None:
        found = self._load().get(key)
        return None if found is None else np.asarray(found[0][found[1]], np.float32)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store new vectors (a read-only or full cache only costs time on the next run)."""
        if not len(keys):
            return
        index = self._load()
        old = self._shards()
        merge = len(old) >= MAX_SHARDS
        if merge:  # fold every shard and the new rows into one
            new = set(keys)
            known = [k for k in index if k not in new]
            keys = [*known, *keys]
            vectors = np.concatenate([np.stack([index[k][0][index[k][1]] for k in known]).astype(np.float32)
                                      if known else np.zeros((0, self.dim), np.float32), vectors])
        name = f"shard-{uuid.uuid4().hex}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(self.folder / f"{name}.npy", np.ascontiguousarray(vectors, np.float32))
            atomic_write_json(self.folder / f"{name}.json", {"keys": list(keys)}, indent=None)  # the shard exists
        except OSError:
            return
        if merge:
            for meta in old:
                for path in (meta, meta.with_suffix(".npy")):
                    path.unlink(missing_ok=True)
        self._index = None


def _keys(paths: Sequence, workers: int) -> list[str | ImageLoadError]:
    def one(path) -> str | ImageLoadError:
        try:
            return file_key(path)
        except ImageLoadError as exc:
            return exc

    if workers <= 1 or len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cliplens-hash") as pool:
        return list(pool.map(one, paths))


def embed_cached(paths: Sequence[str | os.PathLike], encoder: Encoder, *, batch_size: int | None = None,
                 workers: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                 use_cache: bool = True) -> CachedEmbeddings:
    """Embed image files, reading the vectors of files seen before (by content) from the cache.

    Unreadable files are returned in ``errors`` and left out of ``vectors``; ``on_progress(done, total)``
    counts cached images as done at once.
    """
    paths = list(paths)
    total = len(paths)
    workers = workers if workers is not None else default_workers()
    store = EmbeddingStore(encoder) if use_cache else None
    keys = _keys(paths, workers) if use_cache else [None] * total
    found: dict[int, np.ndarray | ImageLoadError] = {}
    todo: list[int] = []
    for i, key in enumerate(keys):
        if isinstance(key, ImageLoadError):
            found[i] = key
            continue
        vector = store.get(key) if store is not None else None
        if vector is None:
            todo.append(i)
        else:
            found[i] = vector
    cached = sum(1 for v in found.values() if not isinstance(v, ImageLoadError))
    done_before = total - len(todo)
    if on_progress is not None:
        on_progress(done_before, total)
    progress = None if on_progress is None else (lambda done, _: on_progress(done_before + done, total))
    new_keys, new_vectors = [], []
    for batch in iter_encoded_batches([paths[i] for i in todo], encoder, batch_size=batch_size, workers=workers,
                                      on_progress=progress):
        for j, vector in batch:
            found[todo[j]] = vector
            if not isinstance(vector, ImageLoadError) and store is not None:
                new_keys.append(keys[todo[j]])
                new_vectors.append(vector)
    if store is not None and new_keys:
        store.add(new_keys, np.stack(new_vectors).astype(np.float32))
    indices = [i for i in range(total) if not isinstance(found[i], ImageLoadError)]
    errors = [found[i] for i in range(total) if isinstance(found[i], ImageLoadError)]
    vectors = (np.stack([found[i] for i in indices]).astype(np.float32) if indices
               else np.zeros((0, encoder.embed_dim), np.float32))
    encoded = sum(1 for i in todo if not isinstance(found[i], ImageLoadError))
    return CachedEmbeddings(vectors, indices, errors, encoded, cached)
