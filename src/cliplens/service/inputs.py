"""Reading a request's fields and images, from a multipart form or a JSON body with base64 images.

Both forms are validated by the same pydantic model, so a field means the same thing either way;
every problem becomes an :class:`ApiError` with a one-line message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Type

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .errors import ApiError, first_problem
from .forms import parse_form

MAX_FORM_FIELDS = 2000


@dataclass
class Upload:
    """One image as sent: a name to echo in the results, and the file's bytes."""

    name: str
    data: bytes


def _validated(model: Type[BaseModel], data: dict) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_field", first_problem(exc.errors())) from None


def _default_name(field: str, index: int) -> str:
    """The name of an image sent without one: ``image``, or ``images-0``, ``images-1``, ..."""
    return field if field == "image" else f"{field}-{index}"


def decode_base64(text: str, field: str) -> bytes:
    """The bytes of a base64 string or a ``data:...;base64,`` URL."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_field", f"{field}: not valid base64") from None


async def read_body(request: Request, params: Type[BaseModel], json_model: Type[BaseModel], *,
                    image_fields: tuple[str, ...], max_images: int) -> tuple[BaseModel, dict[str, list[Upload]]]:
    """The request's fields (validated by ``params``) and its images by field name.

    JSON bodies are validated by ``json_model``, whose image fields hold base64 (one string, or a list,
    with an optional ``names`` list); multipart forms carry them as files.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "bad_json", "the body is not JSON this service reads: nested too deeply") from None
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_field", "body: must be a JSON object")
        body = _validated(json_model, data)
        names = getattr(body, "names", None)
        uploads: dict[str, list[Upload]] = {}
        for field in image_fields:
            value = getattr(body, field, None)
            values = [] if value is None else [value] if isinstance(value, str) else list(value)
            if names is not None and len(names) != len(values):
                raise ApiError(422, "invalid_field", f"names: {len(names)} name(s) for {len(values)} image(s)")
            uploads[field] = [Upload(names[i] if names else _default_name(field, i),
                                     decode_base64(v, field if field == "image" else f"{field}[{i}]"))
                              for i, v in enumerate(values)]
        _check_count(uploads, max_images)
        return body, uploads  # json_model extends params: its fields are all there
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        parts = parse_form(await request.body(), request.headers["content-type"], max_parts=MAX_FORM_FIELDS)
        uploads, data = {field: [] for field in image_fields}, {}
        list_fields = {name for name, info in params.model_fields.items() if _is_list(info.annotation)}
        for part in parts:
            if part.name in image_fields:
                if part.filename is None:
                    raise ApiError(422, "invalid_field", f"{part.name}: must be a file upload")
                named = part.filename or _default_name(part.name, len(uploads[part.name]))
                uploads[part.name].append(Upload(named, part.data))
                continue
            if part.filename is not None:
                raise ApiError(422, "invalid_field", f"{part.name}: must be a text field, not a file")
            try:
                value = part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "invalid_field", f"{part.name}: not UTF-8 text") from None
            if part.name in list_fields:
                data.setdefault(part.name, []).append(value)
            else:
                data[part.name] = value
        _check_count(uploads, max_images)
        return _validated(params, data), uploads
    raise ApiError(415, "unsupported_media_type",
                   f"send multipart/form-data or application/json, not {kind or 'a body without a content type'}")


def _is_list(annotation) -> bool:
    return "list" in str(annotation).lower()


def _check_count(uploads: dict[str, list[Upload]], limit: int) -> None:
    count = sum(len(v) for v in uploads.values())
    if count > limit:
        raise ApiError(413, "too_many_images", f"{count} images in one request; this service takes at most {limit}")
