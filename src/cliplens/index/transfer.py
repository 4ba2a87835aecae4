"""Moving vectors in and out of an index in clip-retrieval's layout (``img_emb/*.npy`` + ``metadata/*.parquet``).

Import lets an index start from embeddings computed elsewhere (clip-retrieval, a cluster, another
cliplens); files that exist at import time get their size and mtime recorded, so a later
``cliplens index`` of their folder encodes only what the import did not cover.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..cache import model_content_hash
from ..embed import ImageEmbeddings, write_image_embeddings
from ..errors import DataError, UsageError
from ..models import Encoder, l2_normalize
from .store import IndexStore, NewRow
from .sync import sync_vector_index

IMPORT_BATCH = 5000


def export_embeddings(store: IndexStore, out: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write every vector of the index with its path, width and height; returns the files written."""
    bound = store.model
    if bound is None:
        raise UsageError(f"{store.folder}: the index is empty, nothing to export")
    rows = {row.id: row for row in store.rows().values() if row.has_vector}
    ids, vectors = store.vectors()
    result = ImageEmbeddings(vectors, [rows[int(i)].path for i in ids],
                             [(rows[int(i)].width or 0, rows[int(i)].height or 0) for i in ids], [], bound.name)
    return write_image_embeddings(result, out, overwrite=overwrite)


def _shards(folder: Path, kind: str, suffix: str) -> list[Path]:
    def number(path: Path) -> int:
        match = re.search(r"(\d+)$", path.stem)
        return int(match.group(1)) if match else 0

    return sorted(folder.glob(f"*{suffix}"), key=number) if folder.is_dir() else []


def import_embeddings(store: IndexStore, source: str | Path, encoder: Encoder) -> int:
    """Add the vectors in ``source`` (clip-retrieval layout) to the index; returns how many were added.

    The vectors must come from ``encoder``'s model: the manifest (``cliplens.json``) is checked when
    present, and the dimension always.
    """
    import pyarrow.parquet as pq

    source = Path(source)
    arrays, metas = _shards(source / "img_emb", "img_emb", ".npy"), _shards(source / "metadata", "metadata", ".parquet")
    if not arrays or len(arrays) != len(metas):
        raise DataError(f"{source}: expected img_emb/img_emb_K.npy with matching metadata/metadata_K.parquet "
                        f"(found {len(arrays)} .npy and {len(metas)} .parquet)")
    manifest = source / "cliplens.json"
    if manifest.exists():
        made_by = json.loads(manifest.read_text()).get("model")
        if made_by and made_by != encoder.name and Path(made_by).name != Path(encoder.name).name:
            raise UsageError(f"{source}: these embeddings were made with {made_by!r}, not {encoder.name!r}; "
                             f"import them with --model {made_by}")
    fingerprint = model_content_hash(encoder.info.path)
    store.check_model(encoder.name, fingerprint, action="import into it")
    if store.model is None:
        store.bind_model(encoder.name, fingerprint, encoder.embed_dim)
    added = 0
    for array_path, meta_path in zip(arrays, metas):
        vectors = np.load(array_path, mmap_mode="r")
        table = pq.read_table(meta_path).to_pydict()
        paths = table.get("image_path") or table.get("path")
        if paths is None:
            raise DataError(f"{meta_path}: no image_path column")
        if len(paths) != len(vectors):
            raise DataError(f"{meta_path}: {len(paths)} rows but {array_path.name} holds {len(vectors)} vectors")
        if vectors.ndim != 2 or vectors.shape[1] != encoder.embed_dim:
            raise DataError(f"{array_path}: vectors of dimension {vectors.shape[-1]}, but {encoder.name} makes "
                            f"{encoder.embed_dim}")
        errors = table.get("error") or [None] * len(paths)
        widths, heights = table.get("width") or [None] * len(paths), table.get("height") or [None] * len(paths)
        rows = []
        for i, path in enumerate(paths):
            vector = np.asarray(vectors[i], np.float32)
            if errors[i] or not np.any(vector):
                continue  # a row clip-retrieval or cliplens kept for a file that failed
            local = Path(path).expanduser()
            stat = local.stat() if local.is_file() else None
            rows.append(NewRow(str(local.resolve()) if stat else str(path), stat.st_size if stat else None,
                               stat.st_mtime_ns if stat else None, None, widths[i], heights[i],
                               vector=l2_normalize(vector[None])[0]))
            if len(rows) >= IMPORT_BATCH:
                store.write_batch(rows)
                added, rows = added + len(rows), []
        if rows:
            store.write_batch(rows)
            added += len(rows)
    sync_vector_index(store)
    return added

