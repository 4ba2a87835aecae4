"""The FastAPI application: routes of the HTTP API and the web page.

Routes stay thin: they read the request (:mod:`.inputs`), hand the work to the :class:`Engine`, and
answer with the same fields as the commands' ``--json`` output.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Path, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import Encoder, PhotoIndex, SearchFilter, __version__, load_model, parse_position
from . import schemas
from .config import ServiceConfig
from .engine import Engine
from .errors import ApiError, install_error_handlers
from . import openai_api
from .inputs import read_body
from .metrics import ServiceMetrics
from .middleware import (OPEN_PATHS, ApiKeyMiddleware, HostMiddleware, MetricsMiddleware, TimeoutMiddleware,
                         UploadLimitMiddleware)

log = logging.getLogger("cliplens.service")

DESCRIPTION = """CLIP-family image–text models over HTTP: zero-shot classification that can say "none of
these", captions for chatbots, ranking images for a prompt, embeddings and photo search.

Images go as multipart uploads (a file field `image`, or several `images`; lists as repeated
fields) or as JSON with base64 images. Errors are `{"error": KIND, "message": TEXT}`."""


def _body_doc(params: type, json_model: type, files: dict[str, bool]) -> dict:
    """The OpenAPI requestBody of an endpoint that reads JSON or a multipart form."""
    form = params.model_json_schema()
    form.pop("title", None)
    form.pop("additionalProperties", None)
    binary = {"type": "string", "format": "binary"}
    for name, many in files.items():
        form.setdefault("properties", {})[name] = {"type": "array", "items": binary} if many else binary
    json_schema = json_model.model_json_schema()
    json_schema.pop("title", None)
    required = [name for name in json_schema.get("required", []) if name in files]
    if required:
        form["required"] = sorted(set(form.get("required", [])) | set(required))
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form},
        "application/json": {"schema": json_schema}}}}


ERRORS = {status: {"model": schemas.ErrorBody, "description": text} for status, text in {
    400: "Bad request", 401: "No or wrong API key", 413: "Upload too large", 415: "Unsupported content type",
    422: "Invalid field or broken image", 504: "Timed out"}.items()}


def create_app(config: ServiceConfig | None = None, *, encoder: Encoder | None = None, photos=None) -> FastAPI:
    """The service as an ASGI app. At startup it opens the index (unless ``photos``, an open
    :class:`~cliplens.index.PhotoIndex`, is given) and loads the model (unless ``encoder`` is given)."""
    config = config or ServiceConfig()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal photos
        model = config.model
        if photos is None and config.index is not None:
            photos = open_index(config)
        if photos is not None:
            model = model or photos.model_name
        loaded = encoder or load_model(model, device=config.device, backend=config.backend,
                                       precision=config.precision)
        if photos is not None:
            photos.use_encoder(loaded)  # one copy of the model in memory
        engine = Engine(loaded, config, metrics, photos)
        metrics.set_model(engine.model_name)
        # the lifespan may run twice at once (two servers on one app, test harnesses): the index is shared and
        # closed with the last one, and an engine that ends hands the app back to the one it replaced
        replaced = state.get("engine")
        state["running"] = state.get("running", 0) + 1
        state["engine"] = app.state.engine = engine
        engine.warm_up()
        log.info("serving %s", loaded.name)
        yield
        state["running"] -= 1
        if state.get("engine") is engine and replaced is not None and not replaced.closed:
            state["engine"] = app.state.engine = replaced
        last = state["running"] == 0
        engine.close(close_photos=last)
        if last:
            photos = None  # a later start opens the index again

    app = FastAPI(title="cliplens", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    metrics = ServiceMetrics()
    install_error_handlers(app)

    def engine() -> Engine:
        return state["engine"]

    max_images = config.max_images

    @app.post("/v1/classify", response_model=schemas.ClassificationOut, responses=ERRORS,
              openapi_extra=_body_doc(schemas.ClassifyParams, schemas.ClassifyJson, {"image": False}))
    async def classify(request: Request):
        """Zero-shot classification of one image: labels best first, and the probability that none fits."""
        params, uploads = await read_body(request, schemas.ClassifyParams, schemas.ClassifyJson,
                                          image_fields=("image",), max_images=1)
        upload = _one(uploads, "image")
        return await engine().classify(upload, params.labels, template=params.template,
                                       templates=params.templates, multi_label=params.multi_label,
                                       ignore_text=params.ignore_text)

    @app.post("/v1/caption", response_model=schemas.CaptionOut, responses=ERRORS,
              openapi_extra=_body_doc(schemas.CaptionParams, schemas.CaptionJson, {"image": False}))
    async def caption(request: Request):
        """A caption for a chatbot from label banks, and the labels behind it per bank."""
        params, uploads = await read_body(request, schemas.CaptionParams, schemas.CaptionJson,
                                          image_fields=("image",), max_images=1)
        return await engine().caption(_one(uploads, "image"), params.banks, params.keep_typographic,
                                      params.read_text, params.ignore_text)

    @app.post("/v1/rank", response_model=schemas.RankingOut, responses=ERRORS,
              openapi_extra=_body_doc(schemas.RankParams, schemas.RankJson, {"images": True}))
    async def rank(request: Request):
        """Images ordered by how well they match the prompt (less their best match to a negative)."""
        params, uploads = await read_body(request, schemas.RankParams, schemas.RankJson,
                                          image_fields=("images",), max_images=max_images)
        if not uploads["images"]:
            raise ApiError(422, "invalid_field", "images: give at least one image")
        return await engine().rank(uploads["images"], params.prompt, params.negative, params.top, params.ignore_text)

    @app.post("/v1/embed", response_model=schemas.EmbeddingsOut, responses=ERRORS,
              openapi_extra=_body_doc(schemas.EmbedParams, schemas.EmbedJson, {"images": True}))
    async def embed(request: Request):
        """L2-normalised embeddings of images and/or texts, in one space."""
        params, uploads = await read_body(request, schemas.EmbedParams, schemas.EmbedJson,
                                          image_fields=("images",), max_images=max_images)
        return await engine().embed(uploads["images"], params.texts)

    @app.post("/v1/search", response_model=schemas.SearchOut, responses={**ERRORS, 404: ERRORS[400] | {
              "description": "No index configured"}},
              openapi_extra=_body_doc(schemas.SearchParams, schemas.SearchJson, {"image": False}))
    async def search(request: Request):
        """Search the configured photo index in words, by an example image, or both."""
        params, uploads = await read_body(request, schemas.SearchParams, schemas.SearchJson,
                                          image_fields=("image",), max_images=1)
        upload = uploads["image"][0] if uploads["image"] else None
        filters = SearchFilter(params.after, params.before, params.camera,
                               parse_position(params.near) if params.near else None, params.within_km,
                               kind=params.kind, text=params.contains_text)
        return await engine().search(params.query, upload, params.top, params.threshold, params.min_match, filters,
                                     params.like)

    openai_api.register(app, engine, max_images, schemas.MAX_TEXTS)

    @app.get("/v1/thumbnails/{file_id}", responses={200: {"content": {"image/jpeg": {}}},
                                                     404: ERRORS[400] | {"description": "No such file"}})
    async def thumbnail(file_id: int = Path(ge=0, le=2**63 - 1, description="The id in a search result's thumbnail URL.")):
        """A JPEG thumbnail of an indexed file, by the id search results give (no other file is served)."""
        data = await asyncio.to_thread(engine().thumbnail, file_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/models", response_model=schemas.ModelsOut)
    async def models():
        """The model this service runs (and its index, if any)."""
        info = engine().encoder.info
        return {"models": [{"id": engine().model_name, "family": info.family, "embed_dim": info.embed_dim,
                            "context_length": info.context_length, "score_kind": info.score_kind,
                            "backend": info.backend, "precision": info.precision, "device": info.device}],
                "index": engine().index_info()}

    @app.get("/healthz", response_model=schemas.HealthOut)
    async def healthz():
        """Liveness: open even when an API key is set."""
        return {"status": "ok", "model": engine().model_name}

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus():
        """Prometheus metrics: requests by route and status, latency, in-flight, merged batch sizes."""
        return Response(metrics.render(), media_type=metrics.content_type)

    web = resources.files("cliplens.service").joinpath("web")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(web.joinpath("index.html")))

    app.mount("/static", StaticFiles(directory=str(web)), name="static")
    _add_docs(app, config)

    app.add_middleware(TimeoutMiddleware, seconds=config.request_timeout)
    app.add_middleware(UploadLimitMiddleware, limit=config.max_upload_bytes)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=config.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(HostMiddleware, hosts=config.accepted_hosts())  # outermost: before anything else runs
    app.state.config = config
    app.state.metrics = metrics
    return app


def _add_docs(app: FastAPI, config: ServiceConfig) -> None:
    """``/docs``: Swagger UI from files served here (it works offline), over an OpenAPI document that declares
    the API key when the service has one."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the serve extra brings it; without it the page is left out, the document stays
        swagger_ui_path = None
    app.state.docs = swagger_ui_path is not None  # what ``cliplens serve`` says it serves
    if swagger_ui_path is not None:
        app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="cliplens API",
                                       swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs/assets/swagger-ui.css",
                                       swagger_favicon_url="/docs/assets/favicon-32x32.png")

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if config.api_key:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
                schema["security"] = [{"bearer": []}, {"apiKey": []}]
                for path, operations in schema["paths"].items():
                    if path in OPEN_PATHS:
                        for operation in operations.values():
                            operation["security"] = []  # open without a key
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def open_index(config: ServiceConfig) -> PhotoIndex:
    """The configured photo index, checked against the configured model."""
    return PhotoIndex(config.index, config.model, device=config.device, backend=config.backend,
                      precision=config.precision)


def _one(uploads: dict, field: str):
    found = uploads[field]
    if not found:
        raise ApiError(422, "invalid_field", f"{field}: give an image (a file field '{field}', or base64 in JSON)")
    return found[0]
