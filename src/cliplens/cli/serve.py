"""``cliplens serve``: the HTTP API and the web page on uvicorn."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import List, Optional

import typer

import cliplens
from cliplens.cli.common import (BackendOpt, DeviceOpt, ModelOpt, PrecisionOpt, add, at_least, between, err,
                                 load_model_with_status, shown)
from cliplens.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the cliplens app."""
    add(app, "serve", serve)


def serve(host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS",
                                   help="Address to bind (0.0.0.0 for every interface)."),
          port: int = typer.Option(8000, "--port", metavar="N", callback=between(0, 65535),
                                   help="Port (0: any free port)."),
          index: Optional[Path] = typer.Option(None, "--index", metavar="DIR",
                                               help="Photo index to search (from `cliplens index`)."),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CLIPLENS_API_KEY", metavar="KEY",
                                                help="Require this key (Authorization: Bearer KEY or X-API-Key)."),
          max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", metavar="MB", callback=at_least(0.001),
                                              help="Largest request body (413 above)."),
          max_pixels: int = typer.Option(40_000_000, "--max-pixels", metavar="N", callback=at_least(1),
                                         help="Largest image in pixels (422 above)."),
          max_batch: int = typer.Option(32, "--max-batch", metavar="N", callback=at_least(1),
                                        help="Most images merged into one encoder batch."),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", metavar="MS", callback=at_least(0),
                                            help="How long a batch waits for more requests to merge."),
          timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=at_least(0.1),
                                        help="Seconds before a request gets 504."),
          cors_origin: List[str] = typer.Option(None, "--cors-origin", metavar="ORIGIN",
                                                help="Allow browser pages from this origin (repeatable; CORS is off "
                                                     "without it)."),
          allowed_host: List[str] = typer.Option(None, "--allowed-host", metavar="NAME",
                                                 help="Also answer requests for this host name (repeatable; by "
                                                      "default only the address it listens on, and localhost)."),
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt) -> None:
    """Serve the HTTP API and the web page (FastAPI on uvicorn); Ctrl-C lets requests in flight finish."""
    try:
        import uvicorn

        from cliplens.service import ServiceConfig, create_app, open_index
    except ImportError as exc:
        raise UsageError(f"cliplens serve needs the serve extra ({exc.name} is missing): "
                         "pip install 'cliplens[serve]'") from None

    if index is not None and not index.is_dir():
        raise UsageError("no such folder", value=cliplens.display_path(index), parameter="index")
    listener = _bind(host, port)  # a busy port or a bad address stops here, before the model loads
    config = ServiceConfig(model=model, device=device, backend=backend, precision=precision,
                           index=str(index) if index else None, api_key=api_key or None,
                           max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch,
                           max_wait_ms=max_wait_ms, request_timeout=timeout, cors_origins=list(cors_origin or []),
                           host=host, allowed_hosts=list(allowed_host or []))
    try:
        photos = open_index(config) if index is not None else None  # a bad index or model stops here, in one line
        encoder = load_model_with_status(model or (photos.model_name if photos else None), device, backend,
                                         precision)
    except BaseException:
        listener.close()
        raise
    app = create_app(config, encoder=encoder, photos=photos)
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        err.print(f"[yellow]warning[/]: serving on {shown(host)} without an API key: anyone who can reach it can use "
                  "it", highlight=False, markup=True)
    bound_port = listener.getsockname()[1]
    address = f"[{host}]" if ":" in host else host
    key = " with an API key" if config.api_key else ""
    docs = ", docs at /docs" if getattr(app.state, "docs", False) else ""  # the page needs swagger-ui-bundle
    err.print(f"cliplens serving on http://{address}:{bound_port} (API at /v1{docs}){key}", highlight=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30,
                                           limit_concurrency=1000))
    server.run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or a one-line error naming what stopped it (a busy port, say)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UsageError(f"not an address this machine has ({exc.strerror})", value=host, parameter="host") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError("in use by another program; choose another port (0: any free one)", value=str(port),
                             parameter="port") from None
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})", value=str(port),
                         parameter="port") from None
    return listener
