"""Embedding many images or texts, and writing them in the layout clip-retrieval users know.

``DIR/img_emb/img_emb_0.npy`` + ``DIR/metadata/metadata_0.parquet`` (and ``text_emb`` likewise).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .errors import ImageLoadError, UsageError
from .images import ImageSource, load_image, source_name
from .models import Encoder, as_encoder
from .models.base import empty_vectors

ProgressFn = Callable[[int, int], None]
T = TypeVar("T")


@dataclass
class ImageEmbeddings:
    """Vectors for the images that loaded, in input order, and the errors of those that did not."""

    vectors: np.ndarray  # float32 (N_ok, D), L2-normalised
    sources: list[str]
    sizes: list[tuple[int, int]]
    errors: list[ImageLoadError] = field(default_factory=list)
    model: str = ""


def _decode(source: ImageSource, encoder: Encoder) -> tuple[object, tuple[int, int]] | ImageLoadError:
    try:
        image = load_image(source, draft_size=encoder.draft_size)
        return encoder.prepare(image), image.size
    except ImageLoadError as exc:
        return exc


def prefetch_batches(count: int, job: Callable[[int], T], batch_size: int, workers: int) -> Iterator[list[T]]:
    """``job(0) … job(count - 1)`` in worker threads, yielded in order in batches, two batches ahead of the
    consumer (so decoding overlaps with the model's work on the batch before)."""
    if workers <= 1:
        for start in range(0, count, batch_size):
            yield [job(i) for i in range(start, min(start + batch_size, count))]
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cliplens-decode") as pool:
        pending = []
        lookahead = 2  # batches decoding while the model runs
        for start in range(0, count, batch_size):
            pending.append([pool.submit(job, i) for i in range(start, min(start + batch_size, count))])
            if len(pending) > lookahead:
                yield [f.result() for f in pending.pop(0)]
        for futures in pending:
            yield [f.result() for f in futures]


def iter_image_batches(sources: Sequence[ImageSource], encoder: Encoder, batch_size: int, workers: int
                       ) -> Iterator[list[tuple[int, object, tuple[int, int] | None]]]:
    """Decode images in worker threads ahead of the model, yielding batches of (index, pixels|error, size)."""
    def job(i: int):
        result = _decode(sources[i], encoder)
        return (i, result, None) if isinstance(result, ImageLoadError) else (i, result[0], result[1])

    return prefetch_batches(len(sources), job, batch_size, workers)


def iter_encoded_batches(images: Sequence[ImageSource], encoder: Encoder, *, batch_size: int | None = None,
                         workers: int | None = None, on_progress: ProgressFn | None = None
                         ) -> Iterator[list[tuple[int, np.ndarray | ImageLoadError]]]:
    """Batches of (index, L2-normalised vector or the image's :class:`ImageLoadError`), in input order."""
    batch_size = batch_size or encoder.image_batch_size
    workers = workers if workers is not None else default_workers()
    done = 0
    for batch in iter_image_batches(images, encoder, batch_size, workers):
        ok = [(i, pixels) for i, pixels, _ in batch if not isinstance(pixels, ImageLoadError)]
        vectors = iter(encoder.encode_prepared([p for _, p in ok]) if ok else [])
        yield [(i, pixels if isinstance(pixels, ImageLoadError) else next(vectors)) for i, pixels, _ in batch]
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(images))


def default_workers() -> int:
    """Decode threads: as many as cores, up to 4."""
    return min(4, os.cpu_count() or 1)


def embed_images(images: Iterable[ImageSource], model: Encoder | str | None = None, *, device: str | None = None,
                 batch_size: int | None = None, workers: int | None = None, skip_errors: bool = True,
                 on_progress: ProgressFn | None = None) -> ImageEmbeddings:
    """Embed images (paths, bytes or PIL images); bad ones are reported in ``errors`` and skipped.

    With ``skip_errors=False`` the first bad image raises its :class:`ImageLoadError`.
    """
    encoder = as_encoder(model, device)
    sources = list(images)
    batch_size = batch_size or encoder.image_batch_size
    workers = workers if workers is not None else default_workers()
    vectors, names, sizes, errors = [], [], [], []
    done = 0
    for batch in iter_image_batches(sources, encoder, batch_size, workers):
        ok = []
        for i, pixels, size in batch:
            if isinstance(pixels, ImageLoadError):
                if not skip_errors:
                    raise pixels
                errors.append(pixels)
            else:
                ok.append(pixels)
                names.append(source_name(sources[i]))
                sizes.append(size)
        if ok:
            vectors.append(encoder.encode_prepared(ok))
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(sources))
    array = np.concatenate(vectors) if vectors else empty_vectors(encoder.embed_dim)
    return ImageEmbeddings(array, names, sizes, errors, encoder.name)


def embed_texts(texts: Iterable[str], model: Encoder | str | None = None, *, device: str | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings (N, D) of texts."""
    return as_encoder(model, device).encode_texts(list(texts))


# --- clip-retrieval style output -------------------------------------------------------------------

def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array)
    tmp.replace(path)


def _atomic_save_parquet(path: Path, columns: dict[str, list]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)


def _prepare_out(out: Path, kind: str, overwrite: bool) -> None:
    existing = [p for p in (out / f"{kind}_emb", out / "metadata") if p.exists() and any(p.iterdir())]
    if existing and not overwrite:
        raise UsageError(f"{out}: already holds embeddings ({existing[0].name}/); pass --overwrite to replace them")
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
        npy = out / "img_emb" / f"img_emb_{shard}.npy"
        _atomic_save_npy(npy, vectors[start : start + shard_size].astype(dtype))
        meta = out / "metadata" / f"metadata_{shard}.parquet"
        _atomic_save_parquet(meta, {
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
    npy = out / "text_emb" / "text_emb_0.npy"
    _atomic_save_npy(npy, vectors.astype(dtype))
    meta = out / "metadata" / "metadata_0.parquet"
    _atomic_save_parquet(meta, {"caption": list(texts)})
    _write_manifest(out, "text", model, vectors.shape[1], dtype, len(texts), 0)
    return [npy, meta]


def _write_manifest(out: Path, kind: str, model: str, dim: int, dtype: str, count: int, failed: int) -> None:
    manifest = {"kind": kind, "model": model, "dim": dim, "dtype": dtype, "count": count, "failed": failed}
    tmp = out / "cliplens.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "cliplens.json")
