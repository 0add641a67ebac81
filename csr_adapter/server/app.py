"""``create_app``: the FastAPI application behind ``csr-adapter serve``.

Routes: ``POST /embed_sparse`` and ``POST /embed`` (text-embeddings-inference compatible; ``POST /``
is ``/embed``, as in TEI),
``POST /search`` (an ingested collection, through the sparse -> dense fallback policy),
``GET /health``, ``GET /info`` and the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__
from . import errors
from .config import ServeConfig
from .engine import EncodeJob
from .errors import ApiError
from .middleware import BearerAuth, BodyLimit, BodyTimeout, HostCheck
from .schemas import (
    EmbedRequest,
    EmbedSparseRequest,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    SearchRequest,
    SearchResponse,
    SparseValue,
)
from .service import Service

_ERRORS = {status: {"model": ErrorResponse} for status in (408, 413, 421, 422, 503)}


def create_app(
    encoder, collections: Mapping[str, Any] | None = None, config: ServeConfig | None = None, *,
    model_name: str | None = None,
) -> FastAPI:
    """Build the app around a loaded :class:`~csr_adapter.CSREncoder`.

    ``collections`` maps a name to a ``FallbackSearcher`` (or a bare sparse ``Backend``) for ``/search``.
    The micro-batcher starts with the app (ASGI lifespan), so run it under uvicorn or ``TestClient``.
    """
    config = config or ServeConfig()
    service = Service(encoder, collections or {}, config)
    model = model_name or f"csr-adapter/{encoder.config.backbone}"

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.search_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csr-search")
        if config.warmup:  # before serving, outside the batcher and its timeout
            service.engine.process([EncodeJob(["warm-up"], k=encoder.k, dense=True)])
        await service.engine.start()
        try:
            yield
        finally:
            await service.engine.stop()
            service.search_pool.shutdown(wait=True)

    app = FastAPI(title="csr-adapter", version=__version__, lifespan=lifespan,
                  description="Ultra-sparse CSRv2 text embeddings (text-embeddings-inference compatible).")
    app.state.service = service
    errors.install(app)

    @app.post("/embed_sparse", response_model=list[list[SparseValue]], responses=_ERRORS, tags=["embeddings"])
    async def embed_sparse(req: EmbedSparseRequest) -> JSONResponse:
        """k-sparse CSR codes, one ``[{"index", "value"}]`` list per input, in input order."""
        k = service.check_k(req.k) or encoder.k
        result = await service.run(EncodeJob(service.texts(req.inputs, req.prompt_name), k=k))
        return JSONResponse(result.sparse)

    @app.post("/embed", response_model=list[list[float]], responses=_ERRORS, tags=["embeddings"])
    async def embed(req: EmbedRequest) -> JSONResponse:
        """Dense backbone embeddings (``d`` floats per input), in input order."""
        texts = service.texts(req.inputs, req.prompt_name)
        result = await service.run(EncodeJob(texts, dense=True, normalize=req.normalize))
        return JSONResponse(result.dense)

    @app.post("/", response_model=list[list[float]], responses=_ERRORS, tags=["embeddings"])
    async def root(req: EmbedRequest) -> JSONResponse:
        """TEI's default route (``POST /`` = ``/embed``), which ``huggingface_hub.InferenceClient`` calls."""
        return await embed(req)

    @app.post("/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}, **_ERRORS},
              tags=["search"])
    async def search(req: SearchRequest) -> JSONResponse:
        """Top hits for a text query in an ingested collection (sparse first, dense fallback)."""
        return JSONResponse(await service.search(req))

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}}, tags=["service"])
    async def health() -> JSONResponse:
        """200 when the model is loaded and the batcher runs (no auth needed)."""
        if not service.engine.batcher.running:
            raise ApiError(503, "the encoder is not running", "unavailable")
        return JSONResponse({"status": "ok"})

    @app.get("/info", response_model=InfoResponse, tags=["service"])
    async def info() -> JSONResponse:
        """Model (d, h, k), limits, batching counters and served collections."""
        return JSONResponse(service.info(model))

    if config.api_key:
        _document_bearer(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(BodyTimeout, timeout_s=config.body_timeout_s)
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(HostCheck, allowed=config.allowed_hosts)  # outermost: before auth and the body
    return app


def _document_bearer(app: FastAPI) -> None:
    """Declare the Bearer scheme in the OpenAPI schema (every operation but /health)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer"}
        unauthorized = {"description": "Missing or invalid API key",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path == "/health":
                    operation["security"] = []
                else:
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = unauthorized
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
