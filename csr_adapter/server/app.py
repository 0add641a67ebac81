"""``create_app``: the FastAPI application behind ``csr-adapter serve``.

Routes: ``POST /embed_sparse`` and ``POST /embed`` (text-embeddings-inference compatible; ``POST /``
is ``/embed``, as in TEI), ``POST /v1/embeddings`` (OpenAI compatible: the dense backbone embedding),
``POST /search`` (an ingested collection, through the sparse -> dense fallback policy),
``GET /health``, ``GET /info`` (TEI's shape), ``GET /metrics`` (Prometheus) and the OpenAPI schema at
``/openapi.json`` (docs at ``/docs``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from . import errors
from .config import ServeConfig
from .engine import EncodeJob
from .errors import ApiError
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .middleware import BearerAuth, BodyLimit, BodyTimeout, HostCheck
from .schemas import (
    EmbedRequest,
    EmbedSparseRequest,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    OpenAIEmbeddingsRequest,
    OpenAIEmbeddingsResponse,
    OpenAIErrorResponse,
    SearchRequest,
    SearchResponse,
    SparseValue,
)
from .service import Service

# TEI's statuses: 400 empty, 413 too many/too long inputs, 422 malformed, 429 overloaded
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 408, 413, 421, 422, 429, 503)}
_OPENAI_ERRORS = {status: {"model": OpenAIErrorResponse} for status in (400, 408, 413, 421, 422, 429, 503)}


def create_app(
    encoder, collections: Mapping[str, Any] | None = None, config: ServeConfig | None = None, *,
    model_name: str | None = None,
) -> FastAPI:
    """Build the app around a loaded :class:`~csr_adapter.CSREncoder`.

    ``collections`` maps a name to a ``Searcher`` (or a bare sparse ``Backend``) for ``/search``.
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
                  description="Ultra-sparse CSRv2 text embeddings (text-embeddings-inference and OpenAI compatible).")
    app.state.service = service
    errors.install(app)

    @app.post("/embed_sparse", response_model=list[list[SparseValue]], responses=_ERRORS, tags=["embeddings"])
    async def embed_sparse(req: EmbedSparseRequest) -> JSONResponse:
        """k-sparse CSR codes, one ``[{"index", "value"}]`` list per input, in input order.

        ``role: "query"`` codes the inputs as search queries (the model's wider ``query_k``)."""
        k = service.check_k(req.k) or encoder.k
        job = EncodeJob(service.texts(req.inputs, req.prompt_name), k=k, role=req.role,
                        **service.truncation(req.truncate, req.truncation_direction))
        return JSONResponse((await service.run(job)).sparse)

    @app.post("/embed", response_model=list[list[float]], responses=_ERRORS, tags=["embeddings"])
    async def embed(req: EmbedRequest) -> JSONResponse:
        """Dense backbone embeddings (``d`` floats per input), in input order."""
        texts = service.texts(req.inputs, req.prompt_name)
        service.check_dimensions(req.dimensions)
        job = EncodeJob(texts, dense=True, normalize=req.normalize,
                        **service.truncation(req.truncate, req.truncation_direction))
        return JSONResponse((await service.run(job)).dense)

    @app.post("/", response_model=list[list[float]], responses=_ERRORS, tags=["embeddings"])
    async def root(req: EmbedRequest) -> JSONResponse:
        """TEI's default route (``POST /`` = ``/embed``), which ``huggingface_hub.InferenceClient`` calls."""
        return await embed(req)

    @app.post("/v1/embeddings", response_model=OpenAIEmbeddingsResponse, responses=_OPENAI_ERRORS,
              tags=["embeddings"])
    async def openai_embeddings(req: OpenAIEmbeddingsRequest) -> JSONResponse:
        """OpenAI-compatible embeddings: the dense backbone embedding (unit length), not the sparse code."""
        texts = service.texts(req.input)
        service.check_dimensions(req.dimensions)
        job = EncodeJob(texts, dense=True, normalize=True, raw=True, count_tokens=True,
                        **service.truncation(None, "right"))
        result = await service.run(job)
        vectors = np.asarray(result.dense, dtype="<f4")
        if req.encoding_format == "base64":
            rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
        else:
            rows = vectors.tolist()
        tokens = sum(result.tokens or ())
        return JSONResponse({
            "object": "list", "model": req.model or model,
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}, **_ERRORS},
              tags=["search"])
    async def search(req: SearchRequest) -> JSONResponse:
        """Top hits for a text query in an ingested collection (sparse first, dense fallback)."""
        return JSONResponse(await service.search(req))

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}}, tags=["service"])
    async def health() -> JSONResponse:
        """200 when the model is loaded and the batcher runs (no auth needed)."""
        if not service.engine.batcher.running:
            raise ApiError(503, "unhealthy: the encoder is not running", "Unhealthy")
        return JSONResponse({"status": "ok"})

    @app.get("/info", response_model=InfoResponse, tags=["service"])
    async def info() -> JSONResponse:
        """TEI's model info (model_id, max_input_length, max_client_batch_size, auto_truncate, ...);
        csr-adapter's own (d, h, k, query_k, limits, batching counters, collections) under ``csr_adapter``."""
        return JSONResponse(service.info(model))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_route() -> PlainTextResponse:
        """Prometheus text format: requests by route and status, latency, batch sizes, queue depth."""
        stats = service.engine.batcher.stats
        text = metrics.render(stats.sizes, service.engine.batcher.queued, stats.rejected, stats.timeouts)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    metrics = Metrics(route.path for route in app.routes)
    app.state.metrics = metrics
    if config.api_key:
        _document_bearer(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(BodyTimeout, timeout_s=config.body_timeout_s)
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(HostCheck, allowed=config.allowed_hosts)  # before auth and the body
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every answer, 421 and 401 too
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
