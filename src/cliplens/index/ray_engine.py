"""The Ray engine of ``cliplens index``: decoding and encoding as a Ray Data pipeline.

Hashing stays in the calling process, so a file whose content the index already knows never leaves
it. Everything else becomes a Ray Data pipeline: paths → decode and prepare, as ``Encoder.prepare`` does (Ray tasks) → encode
(a fixed pool of actors, each loading the model once) → parquet shards (``path``, ``vector``,
``width``, ``height``, ``error``) under ``shard_dir``, which are then read back and handed to the
indexer in batches. Without an address a small local Ray starts for the run and stops after it;
with one the run joins that cluster, whose workers must be able to import cliplens, load the model
by the name or path given and read the images and ``shard_dir`` at the same paths (a shared
filesystem).

Use it as the indexer's ``encode_batches`` hook::

    encode = functools.partial(ray_batches, model=str(encoder.info.path), shard_dir=index / "shards")
    index_folders(folders, encoder, store, encode_batches=encode)
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from PIL import Image

from ..errors import CliplensError, ImageLoadError, UsageError
from ..inputs.images import load_image
from ..models import ImagePreparer, PrecisionNote, load_model, resolve_model_dir

RAY_MISSING = "the Ray engine needs Ray: pip install 'cliplens[ray]'"
LOCAL_CPUS = 2
LOCAL_OBJECT_STORE = 500 * 1024**2  # bytes, for a Ray started here
ROWS_PER_SHARD = 4096
TASK_CPUS = 0.5  # per decode or write task

StatusFn = Callable[[str], None]


def _shard_schema():
    import pyarrow as pa

    return pa.schema([("path", pa.binary()), ("vector", pa.list_(pa.float32())), ("width", pa.int32()),
                      ("height", pa.int32()), ("error", pa.string())])


# --- the pipeline's stages (run in Ray workers) ------------------------------------------------------


def _path(value) -> str:
    """A path sent through the pipeline as the file system's bytes, as Python names files again."""
    return os.fsdecode(value) if isinstance(value, (bytes, bytearray)) else str(value)


PREPARED = "prepared"  # the column (or column prefix, for items that are dicts of arrays) of prepared images


def _columns(items: list) -> dict[str, np.ndarray]:
    """Prepared items (``Encoder.prepare``'s arrays, or dicts of arrays) as columns of one array per key."""
    if isinstance(items[0], dict):
        return {f"{PREPARED}.{key}": np.stack([np.asarray(item[key]) for item in items]) for key in items[0]}
    return {PREPARED: np.stack([np.asarray(item) for item in items])}


def _item(batch: dict, row: int):
    """Row ``row`` of the prepared columns, as the item ``Encoder.prepare`` made."""
    if PREPARED in batch:
        return batch[PREPARED][row]
    prefix = PREPARED + "."
    return {key[len(prefix):]: batch[key][row] for key in batch if key.startswith(prefix)}


def decode_batch(batch: dict, *, preparer: ImagePreparer) -> dict:
    """Ray task: load and prepare each image exactly as ``Encoder.prepare`` does (the encoder's own
    ``preparer``); a bad one gets its reason in ``error`` and a blank image's item as a placeholder."""
    paths = [_path(p) for p in batch["path"]]
    items, widths, heights = [], np.zeros(len(paths), np.int32), np.zeros(len(paths), np.int32)
    errors = [""] * len(paths)  # "" = decoded
    for i, path in enumerate(paths):
        try:
            image = load_image(path, draft_size=preparer.draft_size)
            items.append(preparer.prepare(image))
            widths[i], heights[i] = image.size
        except ImageLoadError as exc:
            errors[i] = exc.reason or "could not be decoded"
            items.append(None)
    if any(item is None for item in items):
        blank = preparer.prepare(Image.new("RGB", (64, 64), "white"))
        items = [blank if item is None else item for item in items]
    return {"path": np.array([os.fsencode(p) for p in paths], dtype=object), **_columns(items), "width": widths,
            "height": heights,
            "error": np.array(errors, dtype=object)}


class EncodeActor:
    """Ray actor: loads the model once, then turns decoded batches into shard rows."""

    def __init__(self, model: str, backend: str | None = None, precision: str | None = None):
        self.encoder = None
        try:
            with warnings.catch_warnings():  # the driver chose this runtime and said so: once is enough
                warnings.simplefilter("ignore", PrecisionNote)
                self.encoder = load_model(model, backend=backend, precision=precision, purpose="rankings",
                                          cache=False)
        except CliplensError as exc:  # raised from the first batch, where Ray reports it briefly
            self.failure = exc

    def __call__(self, batch: dict):
        import pyarrow as pa

        if self.encoder is None:
            raise self.failure

        errors = [str(e) for e in batch["error"]]
        fresh = [i for i, e in enumerate(errors) if not e]
        vectors: list = [None] * len(errors)
        if fresh:
            encoded = self.encoder.encode_prepared([_item(batch, i) for i in fresh])
            for i, vector in zip(fresh, np.asarray(encoded, np.float32)):
                vectors[i] = vector
        ok = [not e for e in errors]
        return pa.table({
            "path": pa.array([os.fsencode(_path(p)) for p in batch["path"]], pa.binary()),
            "vector": pa.array([None if v is None else v.tolist() for v in vectors], pa.list_(pa.float32())),
            "width": pa.array([int(w) if k else None for w, k in zip(batch["width"], ok)], pa.int32()),
            "height": pa.array([int(h) if k else None for h, k in zip(batch["height"], ok)], pa.int32()),
            "error": pa.array([e or None for e in errors], pa.string()),
        }, schema=_shard_schema())


# --- the hook -----------------------------------------------------------------------------------------


def ray_batches(todo: Sequence, hash_only: Callable, known: dict, by_hash: dict, *, model: str, shard_dir: Path,
                address: str | None = None, batch_size: int = 32, actors: int = 1, backend: str | None = None,
                precision: str | None = None, on_status: StatusFn | None = None, gpus_per_actor: float = 0,
                preparer: ImagePreparer) -> Iterator[tuple[list, list]]:
    """``(files, vectors)`` batches covering ``todo`` once each, for :func:`index_folders`'s ``encode_batches``.

    ``hash_only(i)`` hashes ``todo[i]`` here; a file whose content is known (by path and hash, or by
    hash) or that could not be read is yielded at once with vector None. The rest go through Ray:
    ``actors`` model actors (each with ``gpus_per_actor`` GPUs) load ``model`` (a model folder or an
    alias, loadable in another process) with ``backend`` and ``precision``; their results land as
    parquet shards in a folder of their own under ``shard_dir`` (one per run) and come back from
    there. ``preparer`` is the encoder's own (``Encoder.preparer``), so images are prepared as locally.
    """
    status = on_status or (lambda message: None)
    batch_size = max(1, int(batch_size))
    fresh: list = []
    ready: list = []
    for i in range(len(todo)):
        seen = hash_only(i)
        row = known.get(seen.path)
        if seen.error is not None or (row is not None and row.sha256 == seen.sha256) or seen.sha256 in by_hash:
            ready.append(seen)
            if len(ready) >= batch_size:
                yield ready, [None] * len(ready)
                ready = []
        else:
            fresh.append(seen)
    if ready:
        yield ready, [None] * len(ready)
    if not fresh:
        return
    resolve_model_dir(model, allow_download=False)  # a model the actors cannot load fails here, early
    run_dir = Path(shard_dir).expanduser().resolve() / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    _run_pipeline([seen.path for seen in fresh], run_dir, model=model, preparer=preparer, address=address,
                  batch_size=batch_size, actors=actors, backend=backend, precision=precision,
                  gpus_per_actor=gpus_per_actor, status=status)
    yield from _read_shards(run_dir, fresh, batch_size)


def _run_pipeline(paths: list[str], run_dir: Path, *, model: str, preparer: ImagePreparer,
                  address: str | None, batch_size: int, actors: int, backend: str | None, precision: str | None,
                  gpus_per_actor: float, status: StatusFn) -> None:
    """Decode, encode and write ``paths`` as parquet shards in ``run_dir``, on a Ray it starts or joins."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(RAY_MISSING, parameter="engine") from None
    actors = max(1, int(actors))
    local = address is None and not ray.is_initialized()
    started = not ray.is_initialized()
    if started:
        status(f"joining the Ray cluster at {address}" if address else "starting a local Ray")
        _init_ray(ray, address)
    context = ray.data.DataContext.get_current()
    quiet = {k: False for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(context, k)}
    saved = {k: getattr(context, k) for k in quiet}
    for key, value in quiet.items():
        setattr(context, key, value)
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    data_logger.setLevel(logging.CRITICAL)  # its errors come back as the exception raised here
    try:
        # Decoding and writing share one CPU's worth of tasks; the actors split the rest (at most one CPU
        # each), so they can never take every CPU and starve the tasks that feed them.
        cpus = float(ray.cluster_resources().get("CPU", 1))
        actor_cpus = max(0.25, min(1.0, (cpus - 2 * TASK_CPUS) / actors))
        # On a Ray of our own a dead actor is a crash that a restart would only repeat; letting Ray restart
        # actors also makes its core log an error about their arguments on stderr at every run.
        actor_args = {"max_restarts": 0} if local and _takes_remote_args(ray.data.Dataset.map_batches) else {}
        status(f"encoding {len(paths)} images on Ray with {actors} model actor{'s' if actors != 1 else ''}")
        items = [{"path": os.fsencode(p)} for p in paths]  # a file name's own bytes (Arrow strings are UTF-8)
        blocks = max(1, math.ceil(len(paths) / batch_size))
        if _accepts(ray.data.from_items, "override_num_blocks"):
            dataset = ray.data.from_items(items, override_num_blocks=blocks)
        else:  # Ray before 2.10
            dataset = ray.data.from_items(items, parallelism=blocks)
        dataset = dataset.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                                      fn_kwargs={"preparer": preparer}, num_cpus=TASK_CPUS)
        with warnings.catch_warnings():  # Ray 2.60 deprecates extra remote args such as max_restarts
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(EncodeActor, batch_size=batch_size, batch_format="numpy",
                                          fn_constructor_kwargs={"model": model, "backend": backend,
                                                                 "precision": precision},
                                          compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
                                          num_gpus=gpus_per_actor or None, **actor_args)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_args: dict = {"ray_remote_args": {"num_cpus": TASK_CPUS}}
        if _accepts(dataset.write_parquet, "min_rows_per_file"):
            write_args["min_rows_per_file"] = ROWS_PER_SHARD
        try:
            dataset.write_parquet(str(run_dir), **write_args)
        except ray.exceptions.RayError as exc:
            failure = _pipeline_failure(exc)
            if failure is not None:  # e.g. the model did not load in an actor
                raise failure from exc
            raise
        status(f"wrote parquet shards to {run_dir}")
    finally:
        for key, value in saved.items():
            setattr(context, key, value)
        data_logger.setLevel(saved_level)
        if started:
            ray.shutdown()


def _init_ray(ray, address: str | None) -> None:
    """``ray.init`` quietly: a small local Ray without an address, else a connection to that cluster."""
    local = address is None
    try:
        ray.init(address=address, num_cpus=LOCAL_CPUS if local else None,
                 object_store_memory=LOCAL_OBJECT_STORE if local else None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if local:
            raise
        raise UsageError(f"could not join the Ray cluster ({exc})", value=str(address), parameter="address") from None


def _pipeline_failure(exc: BaseException) -> CliplensError | None:
    """A short cliplens error for a Ray failure whose root is a cliplens error raised in a worker (Ray
    passes it on only as text in its traceback), else None."""
    import re

    found = re.findall(r"cliplens\.errors\.(\w+): ([^\n]+)", str(exc))
    if not found:
        return None
    kind, message = found[0]
    return CliplensError(f"the Ray pipeline failed: {message} ({kind})")


def _takes_remote_args(fn) -> bool:
    """Whether ``fn`` still passes extra keywords on to Ray as remote args (Ray 2.60 deprecates it)."""
    import inspect

    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _read_shards(run_dir: Path, fresh: list, batch_size: int) -> Iterator[tuple[list, list]]:
    """The shards of one run as ``(files, vectors)`` batches; every file sent must come back exactly once."""
    import pyarrow.parquet as pq

    waiting = {seen.path: seen for seen in fresh}
    files = sorted(run_dir.glob("*.parquet"))
    for shard in files:
        for record in pq.ParquetFile(shard).iter_batches(batch_size=batch_size):
            paths = [_path(p) for p in record.column("path").to_pylist()]
            widths = record.column("width").to_pylist()
            heights = record.column("height").to_pylist()
            errors = record.column("error").to_pylist()
            column = record.column("vector")
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            batch, vectors = [], []
            for i, path in enumerate(paths):
                seen = waiting.pop(path, None)
                if seen is None:
                    raise RuntimeError(f"{run_dir}: the Ray pipeline returned {path} twice or unasked")
                if errors[i] is not None:
                    seen.error = ImageLoadError(seen.path, errors[i])
                    vector = None
                else:
                    seen.dims = (widths[i], heights[i])
                    vector = values[offsets[i] : offsets[i + 1]].copy()
                batch.append(seen)
                vectors.append(vector)
            if batch:
                yield batch, vectors
    if waiting:
        raise RuntimeError(f"{run_dir}: the Ray pipeline lost {len(waiting)} of {len(fresh)} images "
                           f"(first: {next(iter(waiting))})")
