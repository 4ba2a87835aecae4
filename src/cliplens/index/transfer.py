"""Moving vectors in and out of an index in clip-retrieval's layout (``img_emb/*.npy`` + ``metadata/*.parquet``).

Import lets an index start from embeddings computed elsewhere (clip-retrieval, a cluster, another
cliplens); files that exist at import time get their size and mtime recorded, so a later
``cliplens index`` of their folder encodes only what the import did not cover.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from ..files import display_path
from ..models import Encoder, l2_normalize
from ..models.keys import checkpoint_key
from ..vectors.batches import ImageEmbeddings
from ..vectors.layout import read_image_embeddings, read_manifest_model, write_image_embeddings
from .store import IndexStore, NewRow
from .sync import sync_vector_index

IMPORT_BATCH = 5000


def export_embeddings(store: IndexStore, out: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write every vector of the index with its path, width and height; returns the files written. A video's
    scene is named by its video and a media fragment of its start, ``clip.mp4#t=83``."""
    bound = store.model
    if bound is None:
        raise UsageError("the index is empty, nothing to export", value=display_path(store.folder), parameter="index")
    rows = store.rows()
    ids, vectors = store.vectors()
    paths, moments = store.paths(ids), store.moments(ids)
    files = [rows[paths[int(i)]] for i in ids]  # a video's scene: its video's row
    names = [paths[int(i)] + (f"#t={moments[int(i)][0]:g}" if int(i) in moments else "")  # a media fragment
             for i in ids]
    result = ImageEmbeddings(vectors, names, [(f.width or 0, f.height or 0) for f in files], [], bound.name)
    return write_image_embeddings(result, out, overwrite=overwrite)


def import_embeddings(store: IndexStore, source: str | Path, encoder: Encoder) -> int:
    """Add the vectors in ``source`` (clip-retrieval layout) to the index; returns how many were added.

    The vectors must come from ``encoder``'s model: the manifest (``cliplens.json``) is checked when
    present, and the dimension always.
    """
    source = Path(source)
    made_by = read_manifest_model(source)
    if made_by and made_by != encoder.name and Path(made_by).name != Path(encoder.name).name:
        raise UsageError(f"these embeddings were made with {made_by!r}, not {encoder.name!r}; import "
                         f"them with that model", value=display_path(source), parameter="model")
    shards = read_image_embeddings(source)
    fingerprint = checkpoint_key(encoder.info.path)
    store.check_model(encoder.name, fingerprint, action="import into it")
    if store.model is None:
        store.bind_model(encoder.name, fingerprint, encoder.embed_dim)
    added = 0
    for shard in shards:
        if shard.vectors.shape[1] != encoder.embed_dim:
            raise DataError(f"{source}: vectors of dimension {shard.vectors.shape[1]}, but {encoder.name} makes "
                            f"{encoder.embed_dim}")
        rows = []
        for i, path in enumerate(shard.paths):
            vector = np.asarray(shard.vectors[i], np.float32)
            if shard.errors[i] or not np.any(vector):
                continue  # a row clip-retrieval or cliplens kept for a file that failed
            local = Path(path).expanduser()
            stat = _stat(local)
            rows.append(NewRow(str(local.resolve()) if stat else str(path), stat.st_size if stat else None,
                               stat.st_mtime_ns if stat else None, None, shard.widths[i], shard.heights[i],
                               vector=l2_normalize(vector[None])[0]))
            if len(rows) >= IMPORT_BATCH:
                store.write_batch(rows)
                added, rows = added + len(rows), []
        if rows:
            store.write_batch(rows)
            added += len(rows)
    sync_vector_index(store)
    return added


def _stat(path: Path):
    """The stat of a local file, or None when there is none (never here, or gone since)."""
    try:
        return path.stat() if path.is_file() else None
    except OSError:
        return None
