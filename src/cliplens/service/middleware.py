"""ASGI middleware of the service: request metrics, the API key, the upload limit and request timeouts.

Written against plain ASGI (not BaseHTTPMiddleware) so they stream and cancel correctly.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from .errors import BodyTooLarge
from .openai_api import PATH as OPENAI_PATH, openai_error_body
from .metrics import ServiceMetrics

OPEN_PATHS = ("/healthz", "/", "/openapi.json", "/docs", "/favicon.ico")  # no key needed (the page asks for it)
OPEN_PREFIXES = ("/static/", "/docs/")
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this much more is read and dropped before the 413


async def send_error(send, status: int, kind: str, message: str, headers: list | None = None,
                     body: bytes | None = None) -> None:
    body = body if body is not None else json.dumps({"error": kind, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def route_label(path: str) -> str:
    """The metric label of a path: the route, without ids, and one label for everything unknown."""
    if path.startswith("/v1/thumbnails/"):
        return "/v1/thumbnails"
    if path.startswith("/static/"):
        return "/static"
    if path in ("/", "/healthz", "/metrics", "/openapi.json", "/docs") or path.startswith("/v1/"):
        return path if path.count("/") <= 2 else "other"
    return "other"


class MetricsMiddleware:
    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        start = time.perf_counter()

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(route_label(scope["path"]), status, time.perf_counter() - start)


class ApiKeyMiddleware:
    """Requests need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, except the open paths."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    def _sent_key(self, scope) -> bytes | None:
        headers = dict(scope.get("headers") or [])
        if b"x-api-key" in headers:
            return headers[b"x-api-key"].strip()
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" else None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") == "OPTIONS" or path in OPEN_PATHS
                or path.startswith(OPEN_PREFIXES)):
            return await self.app(scope, receive, send)
        sent = self._sent_key(scope)
        if sent is None or not secrets.compare_digest(sent, self.key):
            message = "this service needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            if sent is not None:
                message = "the API key sent is not this service's key"
            openai = openai_error_body(401, message) if path == OPENAI_PATH else None  # the shape its clients read
            return await send_error(send, 401, "unauthorized", message, [(b"www-authenticate", b"Bearer")], openai)
        await self.app(scope, receive, send)


async def _drain(receive, message: dict | None, bound: int) -> None:
    """Read and drop the rest of a request body, up to ``bound`` bytes, so that a client that sends its whole
    body before it reads the answer (as Python's urllib does) gets to read the 413 (nginx's lingering close)."""
    dropped = 0
    while message is None or (message["type"] == "http.request" and message.get("more_body", False)):
        message = await receive()
        dropped += len(message.get("body", b""))
        if dropped > bound:
            return


class UploadLimitMiddleware:
    """Bodies over the limit answer 413: from Content-Length before anything runs, or as soon as a streamed
    body passes it. The rest of the body is read and dropped first (up to a bound), unless the client asked
    with ``Expect: 100-continue`` and so has not sent it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if headers.get(b"expect", b"").lower() != b"100-continue" and int(length) <= self.limit + DRAIN_LIMIT:
                await _drain(receive, None, int(length))
            return await send_error(send, 413, "too_large", str(BodyTooLarge(self.limit)), [(b"connection", b"close")])
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    await _drain(receive, message, DRAIN_LIMIT)
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


class HostMiddleware:
    """Requests whose ``Host`` this service does not answer to get 421 (see
    :class:`~cliplens.service.config.HostRule`): no page elsewhere reads the index through a rebound name."""

    def __init__(self, app, hosts):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if not self.hosts.accepts(host):
            return await send_error(send, 421, "misdirected", f"this service does not answer to host {host!r}; "
                                    "add that name to the hosts it is allowed to answer to")
        await self.app(scope, receive, send)


class TimeoutMiddleware:
    """A request that has not started its answer after ``seconds`` gets 504 (its model work, already
    queued, still runs; the client is not kept waiting)."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, sending))
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if done or started:
            return await task
        task.cancel()
        try:
            await task
        except BaseException:  # the cancelled request's own error, if any, is not the answer
            pass
        await send_error(send, 504, "timeout", f"the request took longer than the service's {self.seconds:g} s limit")
