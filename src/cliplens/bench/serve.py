"""Driving a running ``cliplens serve``: starting one, and sending it requests one at a time or from
many concurrent clients (the ``bench serve`` figures and the service's load test)."""

from __future__ import annotations

import base64
import io
import os
import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CliplensError

SHAPE_LABELS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a purple cross", "an orange heart"]


class ServerError(CliplensError):
    """A service started for benchmarking did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``cliplens serve`` in a child process on a port the system picks (``--port 0``; the port it got is read
    from the line the command prints); ``stop()`` sends SIGTERM (a graceful shutdown) and waits. Its output
    goes to ``log`` when given."""

    def __init__(self, args: Sequence[str] = (), *, env: dict | None = None, log: Path | None = None,
                 ready_timeout: float = 180.0):
        import threading

        command = [sys.executable, "-m", "cliplens", "serve", "--port", "0", *args]
        self.log = log
        self.port = 0
        self.url = ""
        self._bound = threading.Event()
        self._log_file = open(log, "w") if log else None
        self.process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read_output, daemon=True).start()
        self._wait_ready(ready_timeout)

    def _read_output(self) -> None:
        import re

        for line in self.process.stdout:
            if self._log_file is not None:
                self._log_file.write(line)
                self._log_file.flush()
            found = re.search(r"serving on (http://\S+:(\d+))", line)
            if found and not self._bound.is_set():
                self.port = int(found.group(2))
                self.url = f"http://127.0.0.1:{self.port}"
                self._bound.set()

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"cliplens serve exited with {self.process.returncode} before it was ready"
                                  + (f"; see {self.log}" if self.log else ""))
            if self._bound.is_set():
                try:
                    if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"cliplens serve was not ready after {timeout:g} s")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Call:
    """One request to send: method, path, and httpx keyword arguments (files, data, json)."""

    method: str
    path: str
    kind: str
    kwargs: dict = field(default_factory=dict)


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    body: str = ""


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    seconds: float
    concurrency: int

    @property
    def throughput(self) -> float:
        return len(self.outcomes) / self.seconds

    def percentile(self, q: float) -> float:
        times = sorted(o.seconds for o in self.outcomes)
        return times[min(len(times) - 1, int(round(q / 100 * (len(times) - 1))))]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status >= 500]

    def to_dict(self) -> dict:
        return {"requests": len(self.outcomes), "concurrency": self.concurrency, "seconds": round(self.seconds, 3),
                "throughput_rps": round(self.throughput, 2), "p50_ms": round(self.percentile(50) * 1000, 2),
                "p99_ms": round(self.percentile(99) * 1000, 2), "statuses": self.statuses(),
                "server_errors": len(self.server_errors)}


def send(url: str, calls: Sequence[Call], concurrency: int = 1, *, headers: dict | None = None,
         on_done: Callable[[int], None] | None = None, timeout: float = 120.0) -> LoadResult:
    """Send ``calls`` from ``concurrency`` clients (each its own connection), in order per client."""
    import threading

    import httpx

    local = threading.local()
    outcomes: list[Outcome | None] = [None] * len(calls)
    done = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal done
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=timeout, headers=headers or {})
        call = calls[index]
        start = time.perf_counter()
        try:
            response = local.client.request(call.method, call.path, **call.kwargs)
            status, body = response.status_code, response.text if response.status_code >= 400 else ""
        except httpx.HTTPError as exc:
            status, body = 599, f"{type(exc).__name__}: {exc}"
        outcomes[index] = Outcome(call.kind, status, time.perf_counter() - start, body)
        with lock:
            done += 1
            if on_done is not None:
                on_done(done)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(calls))))
    return LoadResult([o for o in outcomes if o is not None], time.perf_counter() - start, concurrency)


@dataclass(frozen=True)
class OfflineResult:
    """Images/s of classifying the requests' images in-process with the same model and runtime."""

    images: int
    seconds: float
    runtime: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    def to_dict(self) -> dict:
        return {"images": self.images, "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 2),
                "runtime": self.runtime}


def offline_classify(model: str, images: Sequence[bytes], count: int, labels: Sequence[str] = SHAPE_LABELS, *,
                     backend: str | None = None, precision: str | None = None) -> OfflineResult:
    """Classify ``count`` of ``images`` (cycled) with ``Classifier.classify_many``, as the service's requests do,
    loading the model as ``cliplens serve`` does (so the runtime is the same); labels embedded before timing."""
    from ..classify import Classifier
    from ..models import load_model

    encoder = load_model(model, backend=backend, precision=precision, cache=False)
    classifier = Classifier(list(labels), encoder)
    batch = [images[i % len(images)] for i in range(count)]
    list(classifier.classify_many(batch[:8]))  # first-call costs
    start = time.perf_counter()
    results = list(classifier.classify_many(batch))
    seconds = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, CliplensError)]
    if failed:
        raise ServerError(f"offline classification failed: {failed[0]}")
    return OfflineResult(count, seconds, encoder.info.runtime)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def demo_payloads(count: int, seed: int = 0) -> list[bytes]:
    """``count`` generated demo scenes as PNG files' bytes (what the demo model knows)."""
    from ..inputs.demo_data import generate

    return [png_bytes(sample.image) for sample in generate(count, seed=seed)]


def classify_calls(images: Sequence[bytes], count: int, labels: Sequence[str] = SHAPE_LABELS) -> list[Call]:
    """``count`` multipart classify requests cycling through ``images``, with one label set."""
    return [Call("POST", "/v1/classify", "classify",
                 {"files": {"image": (f"image-{i}.png", images[i % len(images)], "image/png")},
                  "data": {"labels": list(labels)}}) for i in range(count)]


def mixed_calls(images: Sequence[bytes], count: int, *, seed: int = 0, search: bool = False,
                broken: Sequence[bytes] = ()) -> list[Call]:
    """A shuffled mix of every endpoint, multipart and JSON, with some requests a client gets wrong
    (a broken image, a missing field) that must answer 4xx, never 5xx."""
    rng = random.Random(seed)
    b64 = [base64.b64encode(data).decode() for data in images]

    def pick() -> int:
        return rng.randrange(len(images))

    makers: list[Callable[[], Call]] = [
        lambda: Call("POST", "/v1/classify", "classify",
                     {"files": {"image": ("c.png", images[pick()], "image/png")},
                      "data": {"labels": sorted(rng.sample(SHAPE_LABELS, 4))}}),
        lambda: Call("POST", "/v1/classify", "classify-json",
                     {"json": {"image": b64[pick()], "labels": sorted(rng.sample(SHAPE_LABELS, 3)), "multi_label": rng.random() < .3}}),
        lambda: Call("POST", "/v1/caption", "caption", {"files": {"image": ("c.png", images[pick()], "image/png")}}),
        lambda: Call("POST", "/v1/rank", "rank",
                     {"json": {"prompt": rng.choice(SHAPE_LABELS), "images": [b64[pick()] for _ in range(4)]}}),
        lambda: Call("POST", "/v1/embed", "embed",
                     {"files": [("images", ("e.png", images[pick()], "image/png"))], "data": {"texts": ["a red circle"]}}),
        lambda: Call("GET", "/v1/models", "models"),
        lambda: Call("GET", "/healthz", "healthz"),
        lambda: Call("POST", "/v1/classify", "missing-labels", {"files": {"image": ("m.png", images[pick()], "image/png")}}),
    ]
    if search:
        makers.append(lambda: Call("POST", "/v1/search", "search", {"json": {"query": rng.choice(SHAPE_LABELS), "top": 5}}))
    if broken:
        makers.append(lambda: Call("POST", "/v1/classify", "broken-image",
                                   {"files": {"image": ("b.jpg", rng.choice(list(broken)), "image/jpeg")},
                                    "data": {"labels": ["a", "b"]}}))
    return [rng.choice(makers)() for _ in range(count)]


def scrape_metric(url: str, name: str, headers: dict | None = None) -> float:
    """The sum of a Prometheus metric's samples on the service (e.g. ``cliplens_encoder_batch_images_count``)."""
    import httpx

    total = 0.0
    for line in httpx.get(url + "/metrics", headers=headers or {}, timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total

