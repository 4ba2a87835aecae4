"""Embeddings on disk in the layout clip-retrieval users know, written and read.

``DIR/img_emb/img_emb_K.npy`` + ``DIR/metadata/metadata_K.parquet`` (``text_emb`` likewise), rows of
the two lining up one to one, and ``DIR/cliplens.json`` saying which model made them. Every file is
written atomically.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError
from ..files import atomic_path, atomic_save_npy, atomic_write_json, check_output_folder
from .batches import ImageEmbeddings

MANIFEST = "cliplens.json"


def _save_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # opened by Python: Arrow takes names as UTF-8 only
        pq.write_table(pa.table(columns), fh)


def _prepare_out(out: Path, kind: str, overwrite: bool) -> None:
    """Check ``out`` (before anything is written) and empty the folders this kind of output fills."""
    check_output_folder(out, parameter="out", overwrite=overwrite)
    for sub in (f"{kind}_emb", "metadata"):
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*"):
            if old.is_file():
                old.unlink()


def write_image_embeddings(result: ImageEmbeddings, out: str | Path, *, dtype: str = "float32",
                           overwrite: bool = False, shard_size: int = 1_000_000) -> list[Path]:
    """Write ``img_emb/img_emb_K.npy`` and ``metadata/metadata_K.parquet``; return the files written.

    Rows line up one to one. Images that failed get an all-zero vector and their reason in ``error``.
    """
    out = Path(out)
    _prepare_out(out, "img", overwrite)
    dim = result.vectors.shape[1] if result.vectors.ndim == 2 else 0
    rows = [(name, size, None) for name, size in zip(result.sources, result.sizes)]
    rows += [(err.source, None, err.reason) for err in result.errors]
    vectors = np.concatenate([result.vectors, np.zeros((len(result.errors), dim), np.float32)])
    written = []
    for shard, start in enumerate(range(0, max(len(rows), 1), shard_size)):
        part = rows[start : start + shard_size]
        npy = atomic_save_npy(out / "img_emb" / f"img_emb_{shard}.npy", vectors[start : start + shard_size].astype(dtype))
        meta = out / "metadata" / f"metadata_{shard}.parquet"
        _save_parquet(meta, {
            "image_path": [r[0] for r in part],
            "width": [r[1][0] if r[1] else None for r in part],
            "height": [r[1][1] if r[1] else None for r in part],
            "error": [r[2] for r in part],
        })
        written += [npy, meta]
    _write_manifest(out, "img", result.model, dim, dtype, len(result.sources), len(result.errors))
    return written


def write_text_embeddings(texts: Sequence[str], vectors: np.ndarray, out: str | Path, *, model: str,
                          dtype: str = "float32", overwrite: bool = False) -> list[Path]:
    """Write ``text_emb/text_emb_0.npy`` and ``metadata/metadata_0.parquet`` (column ``caption``)."""
    out = Path(out)
    _prepare_out(out, "text", overwrite)
    npy = atomic_save_npy(out / "text_emb" / "text_emb_0.npy", vectors.astype(dtype))
    meta = out / "metadata" / "metadata_0.parquet"
    _save_parquet(meta, {"caption": list(texts)})
    _write_manifest(out, "text", model, vectors.shape[1], dtype, len(texts), 0)
    return [npy, meta]


def _write_manifest(out: Path, kind: str, model: str, dim: int, dtype: str, count: int, failed: int) -> None:
    atomic_write_json(out / MANIFEST, {"kind": kind, "model": model, "dim": dim, "dtype": dtype, "count": count,
                                       "failed": failed})


# --- reading ----------------------------------------------------------------------------------------------

@dataclass
class ImageShard:
    """One shard of image embeddings as read: vectors (memory-mapped) with their rows' metadata."""

    vectors: np.ndarray
    paths: list[str]
    widths: list[int | None]
    heights: list[int | None]
    errors: list[str | None]


def _shards(folder: Path, suffix: str) -> list[Path]:
    def number(path: Path) -> int:
        match = re.search(r"(\d+)$", path.stem)
        return int(match.group(1)) if match else 0

    return sorted(folder.glob(f"*{suffix}"), key=number) if folder.is_dir() else []


def read_manifest_model(source: str | Path) -> str | None:
    """The model that made the embeddings in ``source``, as its manifest records it (None without one)."""
    manifest = Path(source) / MANIFEST
    if not manifest.exists():
        return None
    try:
        return json.loads(manifest.read_text()).get("model")
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{manifest}: not a readable manifest ({exc})") from None


def read_image_embeddings(source: str | Path) -> Iterator[ImageShard]:
    """The image shards in ``source`` (clip-retrieval layout), one at a time, each checked for consistency.

    The listing is checked at once (a folder without matching shards raises before anything is read)."""
    source = Path(source)
    arrays, metas = _shards(source / "img_emb", ".npy"), _shards(source / "metadata", ".parquet")
    if not arrays or len(arrays) != len(metas):
        raise DataError(f"{source}: expected img_emb/img_emb_K.npy with matching metadata/metadata_K.parquet "
                        f"(found {len(arrays)} .npy and {len(metas)} .parquet)")
    return _read_shards(zip(arrays, metas))


def _read_shards(pairs) -> Iterator[ImageShard]:
    import pyarrow.parquet as pq

    for array_path, meta_path in pairs:
        vectors = np.load(array_path, mmap_mode="r")
        with open(meta_path, "rb") as fh:  # opened by Python, as written
            table = pq.read_table(fh).to_pydict()
        paths = table.get("image_path") or table.get("path")
        if paths is None:
            raise DataError(f"{meta_path}: no image_path column")
        if len(paths) != len(vectors):
            raise DataError(f"{meta_path}: {len(paths)} rows but {array_path.name} holds {len(vectors)} vectors")
        if vectors.ndim != 2:
            raise DataError(f"{array_path}: expected a 2-D array of vectors, got shape {vectors.shape}")
        empty = [None] * len(paths)
        yield ImageShard(vectors, list(paths), table.get("width") or empty, table.get("height") or empty,
                         table.get("error") or empty)
