"""``POST /v1/embeddings``: the OpenAI embeddings API, as the official ``openai`` client speaks it.

``OpenAI(base_url="http://HOST:PORT/v1", api_key=KEY).embeddings.create(model=MODEL, input=[...])`` embeds
texts; images go as ``data:`` URIs with ``extra_body={"modality": "image"}`` (infinity's convention).
``encoding_format`` is ``float`` or ``base64`` (little-endian float32, as OpenAI sends it), ``usage``
counts the model's tokens (images count none), and the model must be the one served. Every error
answers in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the status the
client maps to its usual exceptions (400 BadRequestError, 401 AuthenticationError, 404
NotFoundError, 422 UnprocessableEntityError). Vectors are exactly ``cliplens embed``'s for the same
inputs and runtime: the same encoder embeds them.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal, Optional, Union

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import CliplensError
from .errors import ApiError, first_problem, from_library
from .inputs import Upload

PATH = "/v1/embeddings"
_DATA_URI = re.compile(r"^data:(?P<type>[\w/+.-]*)(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.ASCII)
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "server_error", 504: "server_error"}


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the client may send fields a future OpenAI API adds

    input: Union[str, list[str]] = Field(description="A text, or a list (images: data: URIs with modality image).")
    model: str = Field(description="The served model's name (GET /v1/models).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None
    modality: Literal["text", "image"] = Field("text", description="What the inputs are (infinity's extra field).")


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    """An error as OpenAI's API answers one."""
    return JSONResponse({"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                                   "param": param, "code": code}}, status_code=status)


def openai_error_body(status: int, message: str) -> bytes:
    """The bytes of :func:`openai_error` (for middleware that answers before the route runs)."""
    return openai_error(status, message).body


def image_upload(uri: str, index: int) -> Upload:
    """The image a ``data:`` URI carries (never a URL to fetch: the server reads nothing a client names)."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ApiError(400, "invalid_input", f"input[{index}]: images are data: URIs (data:image/png;base64,...)")
    payload = uri[match.end():]
    try:
        data = base64.b64decode(payload, validate=True) if match.group("b64") else payload.encode()
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_input", f"input[{index}]: the data URI's base64 is not valid") from None
    return Upload(f"input[{index}]", data)


def register(app, engine, max_images: int, max_texts: int) -> None:
    """Add ``POST /v1/embeddings`` to ``app``; ``engine()`` gives the service's engine."""

    @app.post(PATH, include_in_schema=True, summary="Embeddings, as the OpenAI API gives them",
              responses={400: {"description": "OpenAI error body"}, 404: {"description": "Unknown model"}})
    async def embeddings(request: Request):
        """The OpenAI embeddings API: texts, or images as data: URIs with ``"modality": "image"``."""
        try:
            body = EmbeddingsRequest.model_validate(await request.json())
        except ValidationError as exc:
            return openai_error(400, first_problem(exc.errors()), param=str(exc.errors()[0]["loc"][0]))
        except ValueError:
            return openai_error(400, "the body is not JSON")
        served = engine()
        if body.model != served.model_name:
            return openai_error(404, f"The model `{body.model}` does not exist; this service serves "
                                     f"`{served.model_name}`", param="model", code="model_not_found")
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs:
            return openai_error(400, "input: give at least one input", param="input")
        most = max_images if body.modality == "image" else max_texts
        if len(inputs) > most:
            return openai_error(400, f"input: {len(inputs)} inputs; this service takes at most {most}",
                                param="input")
        dim = served.encoder.embed_dim
        if body.dimensions is not None and body.dimensions != dim:
            return openai_error(400, f"dimensions: this model's embeddings have {dim} (it cannot shorten them)",
                                param="dimensions")
        try:
            if body.modality == "image":
                vectors = await served.embed_uploads([image_upload(uri, i) for i, uri in enumerate(inputs)])
                tokens = 0
            else:
                vectors = await served.worker.texts(inputs)
                tokens = int(served.encoder.token_ids(inputs)[1].sum())
        except CliplensError as exc:  # a bad text or image: the library's own message
            error = from_library(exc)
            return openai_error(400 if error.status == 422 else error.status, error.message, param="input",
                                code=error.kind)
        except ApiError as exc:
            return openai_error(400 if exc.status == 422 else exc.status, exc.message, param="input",
                                code=exc.kind)
        vectors = np.asarray(vectors, np.float32)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": served.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
