"""``cliplens mcp``: cliplens as tools for agents, over the Model Context Protocol (the official ``mcp`` SDK).

Tools: ``classify`` (image, labels; none-of-these included), ``caption`` (image; the chat line
included, ``[Image Attached: …]``), ``search`` (a query and the index's filters), ``rank`` (prompt,
images) and ``embed`` (texts and/or images). Each returns, as structured content, exactly what the
CLI's ``--json`` prints for the same call. Over stdio an image is a file path on this machine; over
HTTP it is base64 data (a ``data:`` URI or bare base64), and a path is refused, so an HTTP client
never makes the server read a file it names. Search results name files relative to the indexed
folders. A failure comes back as a tool error with the one-line message; the server goes on.
The model loads once, when the server starts.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Optional

import cliplens
from cliplens import CliplensError

_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w-]+=[^;,]*)*;base64,", re.ASCII)
CLASSIFIERS_KEPT = 16


class ToolInputError(ValueError):
    """An argument a tool cannot use (the message is the tool error's)."""


def _image(value: str, *, files: bool) -> Any:
    """A tool's image argument as a source :func:`cliplens.load_image` reads: a path (stdio) or bytes."""
    if not isinstance(value, str) or not value:
        raise ToolInputError("an image is a file path (stdio) or base64 data (HTTP)")
    match = _DATA_URI.match(value)
    if match is None and files:
        return value
    try:
        return base64.b64decode(value[match.end():] if match else value, validate=True)
    except (binascii.Error, ValueError):
        raise ToolInputError("over HTTP an image is base64 data (or a data: URI), not a path on the server") from None


class AgentTools:
    """What the tools do, with one model loaded once (and an index, if given)."""

    def __init__(self, model: str | None = None, index: str | None = None, *, files: bool = True,
                 backend: str | None = None, precision: str | None = None):
        self.encoder = cliplens.load_model(model, backend=backend, precision=precision)
        self.files = files
        self.photos = cliplens.PhotoIndex(index, self.encoder) if index is not None else None
        self._classifiers: dict[tuple, cliplens.Classifier] = {}
        self._captioner: cliplens.Captioner | None = None

    def _classifier(self, labels: tuple[str, ...], ignore_text: bool) -> cliplens.Classifier:
        key = (labels, ignore_text)
        if key not in self._classifiers:
            if len(self._classifiers) >= CLASSIFIERS_KEPT:
                self._classifiers.pop(next(iter(self._classifiers)))
            self._classifiers[key] = cliplens.Classifier(list(labels), self.encoder, ignore_text=ignore_text)
        return self._classifiers[key]

    def classify(self, image: str, labels: list[str], ignore_text: bool = False) -> dict:
        result = self._classifier(tuple(labels), ignore_text).classify(_image(image, files=self.files))
        return result.to_dict() | {"image": image if self.files else "image"}

    def caption(self, image: str) -> dict:
        if self._captioner is None:
            self._captioner = cliplens.Captioner(self.encoder)
        result = self._captioner.caption(_image(image, files=self.files))
        return result.to_dict() | {"image": image if self.files else "image"}

    def rank(self, prompt: str, images: list[str]) -> dict:
        sources = [_image(i, files=self.files) for i in images]
        ranking = cliplens.rank_vectors(prompt, self.encoder.encode_images(sources),
                                        images if self.files else [f"image {n}" for n in range(len(images))],
                                        self.encoder)
        return ranking.to_dict()

    def embed(self, texts: list[str], images: list[str]) -> dict:
        if not texts and not images:
            raise ToolInputError("give texts, images or both")
        image_vectors = self.encoder.encode_images([_image(i, files=self.files) for i in images]) if images else []
        text_vectors = self.encoder.encode_texts(texts) if texts else []
        return {"model": self.encoder.name, "dim": self.encoder.embed_dim,
                "images": [{"name": n if self.files else f"image {k}", "embedding": v.tolist()}
                           for k, (n, v) in enumerate(zip(images, image_vectors))],
                "texts": [{"name": t, "embedding": v.tolist()} for t, v in zip(texts, text_vectors)]}

    def search(self, query: Optional[str] = None, top: int = 10, min_match: Optional[float] = None,
               after: Optional[str] = None, before: Optional[str] = None, camera: Optional[str] = None,
               near: Optional[str] = None, within_km: Optional[float] = None, kind: Optional[str] = None,
               contains_text: Optional[str] = None) -> dict:
        if self.photos is None:
            raise ToolInputError("this server has no photo index: start it with `cliplens mcp --index PATH`")
        filters = cliplens.SearchFilter(after, before, camera, cliplens.parse_position(near) if near else None,
                                        within_km, None, kind, contains_text)
        if not query and not filters.active:
            raise ToolInputError("give a query, filters, or both")
        result = self.photos.search(query or None, top=top, min_match=min_match, filters=filters, files=False)
        data = result.to_dict()
        for row, hit in zip(data["results"], result.hits):
            row["path"] = self.photos.relative_path(hit.path)
        if result.near_miss is not None:
            data["near_miss"]["path"] = self.photos.relative_path(result.near_miss.path)
        return data

    def close(self) -> None:
        if self.photos is not None:
            self.photos.close()


def build_server(tools: AgentTools):
    """The MCP server (``mcp.server.mcpserver.MCPServer``) with cliplens's tools."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    where = "file paths on the server's machine" if tools.files else "base64 data (or data: URIs)"
    server = MCPServer("cliplens", log_level="WARNING", instructions=(
        f"CLIP image–text tools on the model {tools.encoder.name}. Images are {where}. classify says when none "
        "of the labels fits (none_of_these); caption gives a line to paste into a chat; search looks through the "
        "server's photo index, if it has one."), version=cliplens.__version__)

    def run(fn, *args, **kwargs) -> dict:
        try:
            return fn(*args, **kwargs)
        except (CliplensError, ToolInputError) as exc:
            raise ToolError(str(exc).splitlines()[0]) from None

    @server.tool(description="Zero-shot classification of an image among labels: each label's probability and "
                             "the probability that none of them fits. ignore_text covers text in the image first.")
    def classify(image: str, labels: list[str], ignore_text: bool = False) -> dict[str, Any]:
        return run(tools.classify, image, labels, ignore_text)

    @server.tool(description="Describe an image from label banks; 'llm' is the line to paste into a chat "
                             "([Image Attached: ...]).")
    def caption(image: str) -> dict[str, Any]:
        return run(tools.caption, image)

    @server.tool(description="Order images by how well they match a prompt, best first.")
    def rank(prompt: str, images: list[str]) -> dict[str, Any]:
        return run(tools.rank, prompt, images)

    @server.tool(description="L2-normalised CLIP embeddings of texts and/or images, in one space.")
    def embed(texts: list[str] = [], images: list[str] = []) -> dict[str, Any]:  # noqa: B006 - schema defaults
        return run(tools.embed, list(texts), list(images))

    @server.tool(description="Search the server's photo index in words and/or by filters: after/before "
                             "(YYYY[-MM[-DD]]), camera, near ('LAT,LON') with within_km, kind (photo or video), "
                             "contains_text (words written in the photo), min_match (0-1: only photos that show "
                             "the query).")
    def search(query: Optional[str] = None, top: int = 10, min_match: Optional[float] = None,
               after: Optional[str] = None, before: Optional[str] = None, camera: Optional[str] = None,
               near: Optional[str] = None, within_km: Optional[float] = None, kind: Optional[str] = None,
               contains_text: Optional[str] = None) -> dict[str, Any]:
        return run(tools.search, query, top, min_match, after, before, camera, near, within_km, kind, contains_text)

    return server


def http_app(server, *, api_key: str | None, max_body_bytes: int, host: str = "127.0.0.1"):
    """The server over streamable HTTP at ``/mcp``, behind the service's API key and upload limit."""
    from .middleware import ApiKeyMiddleware, UploadLimitMiddleware

    app = server.streamable_http_app(max_request_body_size=max_body_bytes, host=host)
    app.add_middleware(UploadLimitMiddleware, limit=max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, key=api_key)
    return app
