"""Embedding many images or texts in batches, with images decoded in worker threads ahead of the model."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from queue import Full, Queue
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

from ..errors import ImageLoadError
from ..inputs.images import ImageSource, load_image, source_name
from ..models import Encoder, as_encoder, empty_vectors

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
    indices: list[int] = field(default_factory=list)  # each row's position among the images given


#: a change made to each picture after it is decoded and before it is encoded, given the image's source
#: (``--ignore-text`` covers the text it finds: :class:`cliplens.inputs.ocr.TextCover`)
ImageTransform = Callable[[ImageSource, Image.Image], Image.Image]


def _decode(source: ImageSource, encoder: Encoder, transform: ImageTransform | None = None
            ) -> tuple[object, tuple[int, int]] | ImageLoadError:
    try:
        image = load_image(source, draft_size=encoder.draft_size)
        size = image.size
        if transform is not None:
            image = transform(source, image)
        return encoder.prepare(image), size
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


def prefetch_iter(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` produced in a background thread, up to ``depth`` ahead of the consumer (a video decodes while
    the model encodes its last samples); an error raised producing them is raised to the consumer."""
    queue: Queue = Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put((item, None), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((end, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            queue.put((end, exc))

    worker = threading.Thread(target=produce, name="cliplens-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:  # the consumer stopped early (an error, an interrupt): let the producer finish
        stop.set()
        worker.join(timeout=5)


def iter_image_batches(sources: Sequence[ImageSource], encoder: Encoder, batch_size: int, workers: int,
                       transform: ImageTransform | None = None
                       ) -> Iterator[list[tuple[int, object, tuple[int, int] | None]]]:
    """Decode images in worker threads ahead of the model, yielding batches of (index, pixels|error, size)."""
    def job(i: int):
        result = _decode(sources[i], encoder, transform)
        return (i, result, None) if isinstance(result, ImageLoadError) else (i, result[0], result[1])

    return prefetch_batches(len(sources), job, batch_size, workers)


def iter_encoded_batches(images: Sequence[ImageSource], encoder: Encoder, *, batch_size: int | None = None,
                         workers: int | None = None, on_progress: ProgressFn | None = None,
                         transform: ImageTransform | None = None
                         ) -> Iterator[list[tuple[int, np.ndarray | ImageLoadError]]]:
    """Batches of (index, L2-normalised vector or the image's :class:`ImageLoadError`), in input order."""
    batch_size = batch_size or encoder.image_batch_size
    workers = workers if workers is not None else default_workers()
    done = 0
    for batch in iter_image_batches(images, encoder, batch_size, workers, transform):
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
                 on_progress: ProgressFn | None = None, transform: ImageTransform | None = None) -> ImageEmbeddings:
    """Embed images (paths, bytes or PIL images); bad ones are reported in ``errors`` and skipped.

    With ``skip_errors=False`` the first bad image raises its :class:`ImageLoadError`. ``transform`` changes
    each decoded picture before it is encoded (see :data:`ImageTransform`).
    """
    encoder = as_encoder(model, device, purpose="rankings")
    sources = list(images)
    batch_size = batch_size or encoder.image_batch_size
    workers = workers if workers is not None else default_workers()
    vectors, names, sizes, errors, indices = [], [], [], [], []
    done = 0
    for batch in iter_image_batches(sources, encoder, batch_size, workers, transform):
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
                indices.append(i)
        if ok:
            vectors.append(encoder.encode_prepared(ok))
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(sources))
    array = np.concatenate(vectors) if vectors else empty_vectors(encoder.embed_dim)
    return ImageEmbeddings(array, names, sizes, errors, encoder.name, indices)


def embed_texts(texts: Iterable[str], model: Encoder | str | None = None, *, device: str | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings (N, D) of texts."""
    return as_encoder(model, device, purpose="rankings").encode_texts(list(texts))
