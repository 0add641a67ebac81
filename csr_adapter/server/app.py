"""``create_app``: the FastAPI application behind ``csr-adapter serve``.

Routes: ``POST /embed_sparse`` and ``POST /embed`` (text-embeddings-inference compatible; ``POST /``
is ``/embed``, as in TEI),
``POST /search`` (an ingested collection, through the sparse -> dense fallback policy),
``GET /health``, ``GET /info`` and the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .. import __version__
from ..errors import CSRAdapterError
from . import errors
from .batching import BatchTimeout, Overloaded, Unavailable
from .config import ServeConfig
from .engine import EncodeEngine, EncodeJob, EncodeResult
from .errors import ApiError
from .middleware import BearerAuth, BodyLimit
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

_ERRORS = {status: {"model": ErrorResponse} for status in (413, 422, 503)}


def as_searcher(encoder, backend):
    """A :class:`~csr_adapter.integrations.fallback.FallbackSearcher` as is; a bare backend = sparse only."""
    if hasattr(backend, "answer_encoded"):
        return backend
    from ..integrations.fallback import FallbackSearcher

    return FallbackSearcher(encoder, sparse=backend)


class _Service:
    """What the routes share: the engine, the collections and the limits."""

    def __init__(self, encoder, collections: Mapping[str, Any], config: ServeConfig) -> None:
        self.encoder = encoder
        self.config = config
        self.collections = {name: as_searcher(encoder, b) for name, b in collections.items()}
        self.engine = EncodeEngine(
            encoder, max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue, timeout_s=config.timeout_s, encode_batch_size=config.encode_batch_size,
        )
        self.search_pool: ThreadPoolExecutor | None = None

    def texts(self, inputs: str | list[str], prompt_name: str | None) -> list[str]:
        """Check a request's inputs against the limits; return them with the prompt prefix applied."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ApiError(422, "inputs must not be empty", "empty")
        if len(texts) > self.config.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs; at most {self.config.max_inputs} per request")
        for i, text in enumerate(texts):
            if len(text) > self.config.max_chars:
                raise ApiError(413, f"inputs[{i}] has {len(text)} characters; at most {self.config.max_chars}")
            if not text.strip():
                raise ApiError(422, f"inputs[{i}] is empty", "empty")
        prefix = {"query": self.encoder.config.query_prefix,
                  "document": self.encoder.config.document_prefix}.get(prompt_name or "", "")
        return [prefix + t for t in texts] if prefix else texts

    def check_k(self, k: int | None) -> int | None:
        if k is not None and k > self.encoder.h:
            raise ApiError(422, f"k={k} exceeds the model's h={self.encoder.h}")
        return k

    async def run(self, job: EncodeJob) -> EncodeResult:
        try:
            return await self.engine.run(job)
        except Overloaded as exc:
            raise ApiError(503, str(exc), "overloaded", {"Retry-After": "1"}) from None
        except BatchTimeout as exc:
            raise ApiError(503, str(exc), "timeout", {"Retry-After": "1"}) from None
        except Unavailable as exc:
            raise ApiError(503, str(exc), "unavailable", {"Retry-After": "1"}) from None

    async def search(self, req: SearchRequest) -> dict[str, Any]:
        if not self.collections:
            raise ApiError(503, "no collection is served: start with --collection NAME", "no_collection")
        name = req.collection or next(iter(self.collections))
        searcher = self.collections.get(name)
        if searcher is None:
            raise ApiError(404, f"unknown collection {name!r}; served: {sorted(self.collections)}")
        if not req.query.strip():
            raise ApiError(422, "query is empty", "empty")
        if len(req.query) > self.config.max_chars:
            raise ApiError(413, f"query has {len(req.query)} characters; at most {self.config.max_chars}")
        if req.top_k > self.config.max_top_k:
            raise ApiError(422, f"top_k={req.top_k} exceeds the limit {self.config.max_top_k}")
        k = self.check_k(req.k) or getattr(searcher, "k", None) or self.encoder.k
        sparse = getattr(searcher, "sparse", None) is not None
        job = EncodeJob([self.encoder.config.query_prefix + req.query], k=k if sparse else None, dense=True,
                        normalize=False, raw=True)
        result = await self.run(job)
        code = result.sparse[0] if result.sparse else None
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(
                self.search_pool, searcher.answer_encoded, code, result.dense[0], req.top_k, req.filter),
                self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, f"collection {name!r} did not answer within {self.config.timeout_s:g}s", "timeout",
                           {"Retry-After": "1"}) from None
        except (TypeError, ValueError) as exc:  # bad filter, k mismatch: the caller's input
            raise ApiError(422, f"search rejected: {exc}") from None
        except CSRAdapterError as exc:  # backend unreachable, closed, corrupt
            raise ApiError(503, f"collection {name!r} unavailable: {exc}", "backend_unavailable") from None
        except Exception as exc:  # a client library's own error (connection lost, ...): retryable, logged
            errors.log.exception("search on %r failed", name)
            raise ApiError(503, f"collection {name!r} unavailable ({type(exc).__name__})",
                           "backend_unavailable") from None
        return {"collection": name, "reason": answer.reason, "hits": [h.to_dict() for h in answer.hits]}

    def info(self, model: str) -> dict[str, Any]:
        enc = self.encoder
        return {"model": model, "model_id": enc.model_id, "backbone": enc.config.backbone, "d": enc.d, "h": enc.h,
                "k": enc.k, "max_seq_length": enc.backbone.max_seq_length, "device": str(enc.device),
                "collections": list(self.collections), "limits": self.config.limits(),
                "batching": {"max_batch_size": self.config.max_batch_size, "max_wait_ms": self.config.max_wait_ms,
                             "max_queue": self.config.max_queue, **self.engine.batcher.stats.to_dict()},
                "version": __version__}


def create_app(
    encoder, collections: Mapping[str, Any] | None = None, config: ServeConfig | None = None, *,
    model_name: str | None = None,
) -> FastAPI:
    """Build the app around a loaded :class:`~csr_adapter.CSREncoder`.

    ``collections`` maps a name to a ``FallbackSearcher`` (or a bare sparse ``Backend``) for ``/search``.
    The micro-batcher starts with the app (ASGI lifespan), so run it under uvicorn or ``TestClient``.
    """
    config = config or ServeConfig()
    service = _Service(encoder, collections or {}, config)
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
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
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
