"""Parsing a whole, already size-limited request body as a form, in memory.

Starlette's own form parser spools file parts over 1 MB to disk and hops threads per chunk: about
30 ms for one photo-sized upload, all of it on the event loop. The body here is already read (the
upload limit bounds it), so python-multipart's parser runs over it in one pass (under 1 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import ApiError


@dataclass
class Part:
    """One form field: its name, the file name (None for a text field) and its bytes."""

    name: str
    filename: str | None
    data: bytes


@dataclass
class _Building:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    field: bytes = b""
    value: bytes = b""


def parse_form(body: bytes, content_type: str, *, max_parts: int) -> list[Part]:
    """The parts of a ``multipart/form-data`` or ``application/x-www-form-urlencoded`` body, in order."""
    kind, options = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_parts)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "bad_form", f"the form body could not be read: {exc}") from None
        return [Part(name, None, value.encode()) for name, value in pairs]
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_form", "the multipart body has no boundary in its Content-Type")
    parts: list[Part] = []
    current = _Building()

    def begin() -> None:
        nonlocal current
        current = _Building()

    def header_end() -> None:
        current.headers[current.field.lower()] = current.value
        current.field, current.value = b"", b""

    def field_bytes(data: bytes, start: int, end: int) -> None:
        current.field += data[start:end]

    def value_bytes(data: bytes, start: int, end: int) -> None:
        current.value += data[start:end]

    def data_bytes(data: bytes, start: int, end: int) -> None:
        current.chunks.append(data[start:end])

    def end() -> None:
        if len(parts) >= max_parts:
            raise ApiError(413, "too_large", f"more than {max_parts} form fields")
        disposition, params = parse_options_header(current.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise ApiError(400, "bad_form", "a multipart part has no Content-Disposition: form-data; name=...")
        filename = params.get(b"filename")
        parts.append(Part(params[b"name"].decode("utf-8", "replace"),
                          None if filename is None else filename.decode("utf-8", "replace"),
                          b"".join(current.chunks)))

    parser = MultipartParser(boundary, {"on_part_begin": begin, "on_header_field": field_bytes,
                                        "on_header_value": value_bytes, "on_header_end": header_end,
                                        "on_part_data": data_bytes, "on_part_end": end})
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError, or a malformed body
        raise ApiError(400, "bad_form", f"the multipart body could not be read: {exc}") from None
    return parts
