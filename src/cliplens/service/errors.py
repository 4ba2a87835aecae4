"""HTTP errors of the service: every error answer is ``{"error": KIND, "message": TEXT}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import IndexDamagedError
from ..errors import CliplensError, ImageLoadError, ModelNotFoundError
from .batching import WorkerStopped

log = logging.getLogger("cliplens.service")

_KINDS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
          415: "unsupported_media_type", 422: "invalid_field", 500: "internal_error", 503: "unavailable",
          504: "timeout"}


class ApiError(Exception):
    """An answer other than success: the HTTP status, a short kind and a one-line message."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class BodyTooLarge(Exception):
    """The request body grew past the upload limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the {limit / 1024 / 1024:g} MB upload limit")


def error_response(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers)


def first_problem(errors: list[dict], skip: tuple[str, ...] = ()) -> str:
    """The first of pydantic's (or FastAPI's) validation errors as ``field: what is wrong``."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in skip) or "request"
    return f"{where}: {first.get('msg', 'invalid')}"


def from_library(exc: CliplensError, where: str | None = None) -> ApiError:
    """The HTTP form of a library error: a bad image is 422, a bad request 400; the server's own index failing
    (damaged, gone, read-only) is 503 with a generic message, its detail (and paths) only in the server's log."""
    if isinstance(exc, ImageLoadError):
        name = where or exc.source
        return ApiError(422, "bad_image", f"{name}: {exc.reason}")
    if isinstance(exc, ModelNotFoundError):
        return ApiError(503, "unavailable", exc.message)
    if isinstance(exc, IndexDamagedError) or exc.parameter == "index":  # the server's, never the client's
        log.error("the photo index failed: %s", exc)
        what = "is damaged (its operator can rebuild it)" if isinstance(exc, IndexDamagedError) else "cannot be used"
        return ApiError(503, "unavailable", f"the photo index {what}; see the server's log")
    return ApiError(400, "bad_request", exc.describe())  # a parameter is named as its field


def install_error_handlers(app: FastAPI) -> None:
    """JSON bodies with a message for every error, including FastAPI's own 404, 405 and 422."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.kind, exc.message)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        return error_response(413, "too_large", str(exc), {"Connection": "close"})

    @app.exception_handler(WorkerStopped)
    async def stopped(request: Request, exc: WorkerStopped):
        return error_response(503, "unavailable", str(exc))

    @app.exception_handler(CliplensError)
    async def library_error(request: Request, exc: CliplensError):
        error = from_library(exc)
        return error_response(error.status, error.kind, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid_field", first_problem(exc.errors(), skip=("body",)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, _KINDS.get(exc.status_code, "error"), str(exc.detail),
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server's log")
