"""The model work behind each endpoint: decoding uploads, merged encoding, and the library's scoring.

One :class:`Engine` per service holds the model, its :class:`EncoderWorker`, caches of classifiers
(per label set) and captioners (per bank set), and the photo index when one is configured. Decoding
runs in the request's thread pool; every model call runs on the worker thread.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .. import (Captioner, Classifier, CliplensError, Encoder, ImageLoadError, PhotoIndex, SearchFilter,
                builtin_bank_names, cover_image_text, display_path, load_image, load_video_frame, rank_vectors, resolve_templates, template_set_names)
from .batching import EncoderWorker
from .config import ServiceConfig
from .errors import ApiError, from_library
from .inputs import Upload
from .metrics import ServiceMetrics

CLASSIFIERS_KEPT = 64  # label sets whose embeddings stay in memory
MAX_PROMPTS = 4_096  # prompts (labels × templates) a classify request may have encoded
CAPTIONERS_KEPT = 8
NAMED_TEMPLATES = tuple(template_set_names())
THUMBNAIL_SIDE = 256


def public_name(model: str) -> str:
    """A model's name as the service shows it: a local folder by its own name, never where it is."""
    return os.path.basename(model.rstrip("/")) if os.path.isabs(model) else model


class _Cache(OrderedDict):
    """Least-recently-used cache of objects that are costly to build (label embeddings)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_none(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def keep(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class Engine:
    def __init__(self, encoder: Encoder, config: ServiceConfig, metrics: ServiceMetrics,
                 photos: PhotoIndex | None = None):
        self.encoder = encoder
        self.model_name = public_name(encoder.name)  # answers name the model, never the folder it is in
        self.config = config
        self.photos = photos
        self.worker = EncoderWorker(encoder, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                    on_batch=metrics.observe_batch)
        self._classifiers = _Cache(CLASSIFIERS_KEPT)
        self._captioners = _Cache(CAPTIONERS_KEPT)
        self._bank_names = set(builtin_bank_names())
        self._warming: Future | None = None  # the default captioner, being built

    def warm_up(self) -> None:
        """Embed the default caption banks in the background (from the disk cache after the first run)."""
        self._warming = self.worker.submit(lambda: Captioner(self.encoder))

    @property
    def closed(self) -> bool:
        return self.worker.closed

    def close(self, close_photos: bool = True) -> None:
        """Stop the worker (later requests get 503) and, unless another engine still uses it, close the index."""
        self.worker.close()
        if close_photos and self.photos is not None:
            self.photos.close()

    # --- shared steps ---------------------------------------------------------------------------------

    def _prepare(self, upload: Upload, text: str | None = None) -> tuple[Any, list[str]]:
        """The model's input for an upload and, with ``text`` "read" or "cover", the text read in it (covered
        before encoding with "cover")."""
        try:
            image = load_image(upload.data, draft_size=self.encoder.draft_size, pixel_limit=self.config.max_pixels)
            found = []
            if text is not None:
                covered, regions = cover_image_text(image, "ignore_text" if text == "cover" else "read_text")
                image = covered if text == "cover" else image
                found = [r.text for r in regions]
            return self.encoder.prepare(image), found
        except CliplensError as exc:  # a broken image is 422 with its reason, named as the client named it
            raise from_library(exc, upload.name) from None

    async def embed_uploads(self, uploads: Sequence[Upload], texts: list | None = None, *,
                            cover: bool = True) -> np.ndarray:
        """Decode the uploads (in parallel threads), then encode them in a merged batch. Given a list in ``texts``,
        the text in each image is read (and covered first, unless ``cover`` is False), and the texts found are
        appended to it (one list per upload)."""
        mode = None if texts is None else "cover" if cover else "read"
        with self.worker.expecting():  # until queued, so a batch forming now waits for these images
            prepared = await asyncio.gather(*(asyncio.to_thread(self._prepare, u, mode) for u in uploads))
            encoded = self.worker.submit_images([pixels for pixels, _ in prepared])
        if texts is not None:
            texts += [covered for _, covered in prepared]
        return await asyncio.wrap_future(encoded)

    async def _model_call(self, fn: Callable[[], Any]) -> Any:
        try:
            return await self.worker.call(fn)
        except CliplensError as exc:
            raise from_library(exc) from None

    # --- endpoints ------------------------------------------------------------------------------------

    async def classifier(self, labels: Sequence[str], template: str, templates: str | None,
                         multi_label: bool) -> Classifier:
        if len(labels) > self.config.max_labels:
            raise ApiError(422, "invalid_field",
                           f"labels: {len(labels)} labels; this service takes at most {self.config.max_labels}")
        if templates is not None and templates not in NAMED_TEMPLATES:
            raise ApiError(422, "invalid_field", f"templates: {templates!r} is not one of {', '.join(NAMED_TEMPLATES)}")
        key = (tuple(labels), template, templates, multi_label)
        if key not in self._classifiers:  # new labels: their prompts are encoded in this request, so bound them
            try:
                prompts = len(labels) * len(resolve_templates(templates, template) or [None])
            except CliplensError as exc:
                raise from_library(exc) from None
            if prompts > MAX_PROMPTS:
                raise ApiError(422, "invalid_field", f"labels: {len(labels)} labels × {prompts // len(labels)} "
                               f"templates are {prompts} prompts; this service encodes at most {MAX_PROMPTS} at once")
        found = self._classifiers.get_or_none(key)
        if found is None:
            found = self._classifiers.keep(key, await self._model_call(
                lambda: Classifier(labels, self.encoder, template=template, templates=templates,
                                   multi_label=multi_label)))
        return found

    async def classify(self, upload: Upload, labels: Sequence[str], *, template: str, templates: str | None,
                       multi_label: bool, ignore_text: bool = False) -> dict:
        classifier = await self.classifier(labels, template, templates, multi_label)
        texts: list | None = [] if ignore_text else None
        vectors = await self.embed_uploads([upload], texts)
        result = (await self._model_call(lambda: classifier.score_vectors(vectors, [upload.name])))[0]
        extra = {} if texts is None else {"text_covered": len(texts[0]), "text_found": texts[0]}
        return result.to_dict() | {"model": self.model_name} | extra

    async def captioner(self, banks: Sequence[str] | None, keep_typographic: bool) -> Captioner:
        names = [name.strip() for spec in banks or () for name in spec.split(",") if name.strip()]
        unknown = [name for name in names if name not in self._bank_names]
        if unknown:
            raise ApiError(422, "invalid_field", f"banks: unknown bank {unknown[0]!r}; this service has "
                           + ", ".join(sorted(self._bank_names)))
        key = (tuple(names), keep_typographic)
        found = self._captioners.get_or_none(key)
        if found is None and self._warming is not None and key == ((), False):
            warming, self._warming = self._warming, None
            try:
                found = self._captioners.keep(key, await asyncio.wrap_future(warming))
            except CliplensError as exc:
                raise from_library(exc) from None
        if found is None:
            found = self._captioners.keep(key, await self._model_call(
                lambda: Captioner(self.encoder, names or None, keep_typographic=keep_typographic)))
        return found

    async def caption(self, upload: Upload, banks: Sequence[str] | None, keep_typographic: bool,
                      read_text: bool = False, ignore_text: bool = False) -> dict:
        captioner = await self.captioner(banks, keep_typographic)
        texts: list | None = [] if read_text or ignore_text else None
        vectors = await self.embed_uploads([upload], texts, cover=ignore_text)
        caption = await self._model_call(lambda: captioner.caption_vector(
            vectors[0], upload.name, written=None if texts is None else texts[0], covered=ignore_text))
        return caption.to_dict()

    async def rank(self, uploads: Sequence[Upload], prompt: str, negative: Sequence[str], top: int | None,
                   ignore_text: bool = False) -> dict:
        texts: list | None = [] if ignore_text else None
        vectors = await self.embed_uploads(uploads, texts)
        ranking = await self._model_call(lambda: rank_vectors(prompt, vectors, [u.name for u in uploads],
                                                              self.encoder, negative=negative, top=top))
        if texts is not None:
            for result in ranking.results:
                result.text_covered = texts[result.index]
        return ranking.to_dict()

    async def embed(self, uploads: Sequence[Upload], texts: Sequence[str]) -> dict:
        if not uploads and not texts:
            raise ApiError(422, "invalid_field", "give images, texts or both")
        images = await self.embed_uploads(uploads)
        text_vectors = await self.worker.texts(texts) if texts else np.zeros((0, self.encoder.embed_dim))
        return {"model": self.model_name, "dim": self.encoder.embed_dim,
                "images": [{"name": u.name, "embedding": v.tolist()} for u, v in zip(uploads, images)],
                "texts": [{"name": t, "embedding": v.tolist()} for t, v in zip(texts, text_vectors)]}

    async def search(self, query: str | None, upload: Upload | None, top: int, threshold: float | None,
                     min_match: float | None = None, filters: SearchFilter | None = None,
                     like: int | None = None) -> dict:
        photos = self._require_index()
        if not (query and query.strip()) and upload is None and like is None and not (filters and filters.active):
            raise ApiError(422, "invalid_field", "give a query, an image, a file to find more like, filters, or any "
                                                 "of them together")
        query = query if query and query.strip() else None
        image = (await self.embed_uploads([upload]))[0] if upload is not None else None
        shown = " + ".join(filter(None, [f"like #{like}" if like is not None else None, query,
                                         upload.name if upload is not None else None]))
        # every term is text, never a server file
        result = await self._model_call(lambda: photos.search(query, image_vector=image, top=top,
                                                               threshold=threshold, files=False, min_match=min_match,
                                                               filters=filters, like=like))
        data = result.to_dict() | {"query": shown}
        pairs = list(zip(data["results"], result.hits))
        if result.near_miss is not None:
            pairs.append((data["near_miss"], result.near_miss))
        for row, hit in pairs:  # never where the folders are on this server
            row["path"] = display_path(photos.relative_path(hit.path))
            row["thumbnail"] = f"/v1/thumbnails/{row['id']}"
        return data

    def _require_index(self):
        if self.photos is None:
            raise ApiError(404, "no_index", "this service has no photo index; start it with one")
        return self.photos

    def thumbnail(self, file_id: int) -> bytes:
        """A JPEG thumbnail of an indexed file (looked up by id: nothing else on disk is ever served)."""
        photos = self._require_index()
        path = photos.path_of(file_id)
        if path is None:
            raise ApiError(404, "not_found", f"no file with id {file_id} in the index")
        moment = photos.moment_of(file_id)
        try:
            if moment is None:
                image = load_image(path, draft_size=THUMBNAIL_SIDE, pixel_limit=self.config.max_pixels)
            else:  # a video's scene: the frame it starts with
                image = load_video_frame(path, moment, side=THUMBNAIL_SIDE)
        except ImageLoadError as exc:
            raise ApiError(404, "not_found", f"file {file_id} cannot be shown: {exc.reason}") from None
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    def index_info(self) -> dict | None:
        if self.photos is None:
            return None
        return {"files": len(self.photos), "model": public_name(self.photos.model_name)}

