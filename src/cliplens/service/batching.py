"""Dynamic batching: concurrent requests' images merged into one encoder batch.

One worker thread runs every model call, so the model is never used by two threads at once. Image
jobs that queued up while the worker was busy are merged into one batch of at most ``max_batch``
images, encoded together, and split back to their requests; while other requests are still
decoding their images, the batch waits up to ``max_wait`` for them (a lone request never waits).
Other jobs (texts, building a classifier's label embeddings, searching the index) run alone, in order.
Once the worker has stopped, a job is refused at once (:class:`WorkerStopped`) rather than left waiting
for a thread that will never take it.
"""

from __future__ import annotations

import asyncio
import queue
from collections import deque
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import Encoder


@dataclass
class _ImageJob:
    items: Sequence[Any]  # from encoder.prepare
    future: Future = field(default_factory=Future)


@dataclass
class _CallJob:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


class WorkerStopped(RuntimeError):
    """The worker has stopped (the service is shutting down): the job will not run."""

    def __init__(self):
        super().__init__("the model worker has stopped (the service is shutting down)")


class EncoderWorker:
    """Runs model work on one thread; ``await images(items)`` is merged with other requests' images.

    ``on_batch(images, seconds)`` is called after each merged image batch (for metrics).
    """

    def __init__(self, encoder: Encoder, *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._pending: deque = deque()  # jobs taken from the queue while gathering a batch, to run next
        self._coming = 0  # requests decoding images they will queue soon
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cliplens-encoder", daemon=True)
        self._thread.start()

    @contextmanager
    def expecting(self):
        """Mark a request whose images are being decoded: batches wait (up to max_wait) to take them too."""
        with self._lock:
            self._coming += 1
        try:
            yield
        finally:
            with self._lock:
                self._coming -= 1

    def submit_images(self, items: Sequence[Any]) -> Future:
        """Queue prepared images; the future gives their normalised embeddings."""
        if not items:
            future: Future = Future()
            future.set_result(np.zeros((0, self.encoder.embed_dim), np.float32))
            return future
        return self._put(_ImageJob(list(items)))

    async def images(self, items: Sequence[Any]) -> np.ndarray:
        """Normalised embeddings of prepared images, encoded in a batch shared with other requests."""
        return await asyncio.wrap_future(self.submit_images(items))

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn()`` to run on the worker thread, after the jobs queued before it."""
        return self._put(_CallJob(fn))

    def _put(self, job) -> Future:
        """Queue ``job``; raises :class:`WorkerStopped` once the worker is closed or its thread has ended."""
        with self._lock:  # close() takes the lock too: no job slips in behind the stop
            if self._closed or not self._thread.is_alive():
                raise WorkerStopped()
            self._queue.put(job)
        return job.future

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the worker thread (after the jobs queued before it) and return its result."""
        return await asyncio.wrap_future(self.submit(fn))

    async def texts(self, texts: Sequence[str]) -> np.ndarray:
        return await self.call(lambda: self.encoder.encode_texts(list(texts)))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (jobs are refused from then on)."""
        return self._closed

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop the thread; later jobs are refused (:class:`WorkerStopped`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    # --- the worker thread ----------------------------------------------------------------------------

    def _next(self):
        return self._pending.popleft() if self._pending else self._queue.get()

    def _run(self) -> None:
        while True:
            job = self._next()
            if job is _STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # its request gave up waiting (timed out): nothing to compute
            if isinstance(job, _CallJob):
                _settle(job.future, job.fn)
                continue
            self._run_images(self._gather(job))

    def _gather(self, first: _ImageJob) -> list[_ImageJob]:
        """The first job and the image jobs queued behind it, up to max_batch images.

        Other jobs met on the way (scoring, texts) are set aside to run right after this batch, in their
        order: no request's own jobs depend on another's images, and this keeps one request's scoring from
        splitting the others' batch. While other requests are still decoding their images, it waits for
        them up to max_wait; a lone request does not wait.
        """
        jobs, count = [first], len(first.items)
        later: list = []
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch:
            try:
                job = self._queue.get_nowait() if not self._queue.empty() else self._queue.get(timeout=0.0005)
            except queue.Empty:
                if self._coming > 0 and time.perf_counter() < deadline:
                    continue
                break
            if isinstance(job, _CallJob):
                later.append(job)
                continue
            if job is _STOP or count + len(job.items) > self.max_batch:
                later.append(job)  # starts the next round
                break
            if job.future.set_running_or_notify_cancel():
                jobs.append(job)
                count += len(job.items)
        self._pending.extend(later)
        return jobs

    def _run_images(self, jobs: list[_ImageJob]) -> None:
        items = [item for job in jobs for item in job.items]
        start = time.perf_counter()
        try:
            vectors = self.encoder.encode_prepared(items)
        except BaseException as exc:  # every waiting request gets the error, the worker lives on
            for job in jobs:
                job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - start)
        offset = 0
        for job in jobs:
            job.future.set_result(vectors[offset:offset + len(job.items)])
            offset += len(job.items)


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:
        future.set_exception(exc)
