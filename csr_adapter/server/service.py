"""The request logic behind the routes: input limits, the encoding engine, and collection search."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import __version__
from ..defaults import check_k
from ..errors import CSRAdapterError
from ..filters import public_path, with_absolute_paths
from ..retrieval import Query
from ..text import blank
from .batching import BatchTimeout, Overloaded, Unavailable
from .config import ServeConfig
from .engine import EncodeEngine, EncodeJob, EncodeResult, TooLong
from .errors import ApiError, log
from .schemas import SearchRequest


def as_searcher(encoder, backend):
    """A :class:`~csr_adapter.retrieval.Searcher` as is; a bare backend = sparse only."""
    from ..retrieval import Searcher

    if isinstance(backend, Searcher):
        return backend
    return Searcher(encoder, sparse=backend)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (engine errors can span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Service:
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
        self.source_root = os.path.abspath(config.source_root or os.getcwd())

    def texts(self, inputs: str | list[str], prompt_name: str | None = None) -> list[str]:
        """Check a request's inputs against the limits; return them with the prompt prefix applied.

        As TEI: an empty batch or text is 400 ``Empty``, too many inputs 413 ``Validation``."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ApiError(400, "`inputs` cannot be empty", "Empty")
        if len(texts) > self.config.max_inputs:
            raise ApiError(413, f"batch size {len(texts)} > maximum allowed batch size {self.config.max_inputs}")
        for i, text in enumerate(texts):
            if len(text) > self.config.max_chars:
                raise ApiError(413, f"inputs[{i}] has {len(text)} characters; at most {self.config.max_chars}")
            if blank(text):
                raise ApiError(400, f"inputs[{i}] is empty", "Empty")
        prefix = {"query": self.encoder.config.query_prefix,
                  "document": self.encoder.config.document_prefix}.get(prompt_name or "", "")
        return [prefix + t for t in texts] if prefix else texts

    def truncation(self, truncate: bool | None, direction: str) -> dict[str, Any]:
        """``EncodeJob`` fields for a request's ``truncate`` (omitted: the server's ``auto_truncate``)."""
        return {"truncate": self.config.auto_truncate if truncate is None else truncate,
                "truncation_side": direction.lower()}

    def check_dimensions(self, dimensions: int | None) -> None:
        d = self.encoder.d
        if dimensions is not None and dimensions != d:
            raise ApiError(422, f"dimensions={dimensions} is not supported: the backbone "
                                f"({self.encoder.config.backbone}) is not Matryoshka-trained, so a cut vector is not "
                                f"a valid embedding; omit dimensions or pass {d}", "Validation")

    def check_k(self, k: int | None) -> int | None:
        try:
            return None if k is None else check_k(k, self.encoder.h)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None

    async def run(self, job: EncodeJob) -> EncodeResult:
        try:
            result = await self.engine.run(job)
        except Overloaded as exc:
            raise ApiError(429, f"Model is overloaded: {exc}", "Overloaded", {"Retry-After": "1"}) from None
        except BatchTimeout as exc:
            raise ApiError(429, f"Model is overloaded: {exc}", "Overloaded", {"Retry-After": "1"}) from None
        except Unavailable as exc:
            raise ApiError(503, str(exc), "Unhealthy", {"Retry-After": "1"}) from None
        except UnicodeError as exc:  # the tokenizer rejected this request's text (its batch-mates were re-run)
            raise ApiError(422, f"text cannot be encoded ({type(exc).__name__})", "Tokenizer") from None
        if isinstance(result.error, TooLong):
            raise ApiError(413, f"Input validation error: {result.error}", "Validation")
        if result.error is not None:
            raise result.error
        return result

    async def search(self, req: SearchRequest) -> dict[str, Any]:
        if not self.collections:
            raise ApiError(503, "no collection is served: start with --collection NAME", "NoCollection")
        name = req.collection or next(iter(self.collections))
        searcher = self.collections.get(name)
        if searcher is None:
            raise ApiError(404, f"unknown collection {name!r}; served: {sorted(self.collections)}")
        if blank(req.query):
            raise ApiError(422, "query is empty", "Empty")
        if len(req.query) > self.config.max_chars:
            raise ApiError(413, f"query has {len(req.query)} characters; at most {self.config.max_chars}")
        if req.top_k > self.config.max_top_k:
            raise ApiError(422, f"top_k={req.top_k} exceeds the limit {self.config.max_top_k}")
        enc = searcher.encoder or self.encoder  # a collection may own its (adapted) model
        k = self.check_k(req.k) or searcher.k or enc.k
        try:
            mode = searcher.check_mode(req.mode)
        except CSRAdapterError as exc:
            raise ApiError(422, f"search rejected: {first_line(exc)}") from None
        sparse = searcher.sparse is not None and mode in ("fused", "codes", "hybrid")
        own = enc is not self.encoder
        code = vector = None
        if mode != "lexical":  # the batcher encodes; the searcher gets what it made
            job = EncodeJob([enc.config.query_prefix + req.query], k=k if sparse and not own else None,
                            role="query", dense=True, normalize=None, raw=True)
            result = await self.run(job)
            vector = result.dense[0]
            code = result.sparse[0] if result.sparse and sparse else None
            if sparse and own:  # the shared backbone's vector through the collection's own head
                code = enc.sparsify(result.dense[:1], k, role="query")[0]
        query = Query(text=req.query, vector=vector, code=code)
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(
                self.search_pool, searcher.answer_query, query, req.top_k, self.absolute_filter(req.filter), mode),
                self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, f"collection {name!r} did not answer within {self.config.timeout_s:g}s",
                           "BackendUnavailable", {"Retry-After": "1"}) from None
        except (TypeError, ValueError) as exc:  # bad filter, k mismatch: the caller's input
            raise ApiError(422, f"search rejected: {first_line(exc)}") from None
        except CSRAdapterError as exc:  # backend unreachable, closed, corrupt
            raise ApiError(503, f"collection {name!r} unavailable: {exc}", "BackendUnavailable") from None
        except Exception as exc:  # a client library's own error (connection lost, ...): retryable, logged
            log.exception("search on %r failed", name)
            raise ApiError(503, f"collection {name!r} unavailable ({type(exc).__name__})",
                           "BackendUnavailable") from None
        hits = [self.public_hit(h.to_dict()) for h in answer.hits]
        return {"collection": name, "reason": answer.reason, "hits": hits}

    def public_path(self, path: str, file: str | None = None) -> str:
        """A stored ``source``/``file`` without the server's absolute path: relative to ``source_root``
        (``ServeConfig.source_root``, default the working directory), or just the file name outside it.
        ``file`` is the point's file, the prefix of a record's ``file#id`` source."""
        return public_path(path, self.source_root, file)

    def public_hit(self, hit: dict[str, Any]) -> dict[str, Any]:
        payload = hit.get("payload")
        if isinstance(payload, dict):
            file = payload.get("file") if isinstance(payload.get("file"), str) else None
            payload = dict(payload)
            for key in ("source", "file"):
                if isinstance(payload.get(key), str):
                    payload[key] = self.public_path(payload[key], file)
            hit = {**hit, "payload": payload}
        return hit

    def absolute_filter(self, flt: dict[str, Any] | None) -> dict[str, Any] | None:
        """A ``source``/``file`` filter value as shown in hits (relative) also matches the stored absolute path."""
        return with_absolute_paths(flt, self.source_root)

    def info(self, model: str) -> dict[str, Any]:
        """TEI's ``Info`` fields, and csr-adapter's own under ``csr_adapter``."""
        enc, cfg = self.encoder, self.config
        seq = enc.backbone.max_seq_length
        return {
            "model_id": model, "model_sha": None,
            "model_dtype": "bfloat16" if enc.backbone.runtime == "torch-bf16" else "float32",
            "model_type": {"embedding": {"pooling": enc.backbone.pooling.mode}},
            "max_concurrent_requests": cfg.max_queue, "max_input_length": seq,
            "max_batch_tokens": cfg.max_batch_size * seq, "max_batch_requests": None,
            "max_client_batch_size": cfg.max_inputs, "auto_truncate": cfg.auto_truncate, "tokenization_workers": 1,
            "version": __version__, "sha": None, "docker_label": None,
            "csr_adapter": {
                "model": model, "model_id": enc.model_id, "backbone": enc.config.backbone, "d": enc.d, "h": enc.h,
                "k": enc.k, "query_k": enc.config.query_k, "document_coding": enc.config.document_coding,
                "rescore_depth": enc.config.rescore_depth, "max_seq_length": seq, "device": str(enc.device),
                "runtime": enc.backbone.runtime,
                "collections": list(self.collections), "limits": cfg.limits(),
                "batching": {"max_batch_size": cfg.max_batch_size, "max_wait_ms": cfg.max_wait_ms,
                             "max_queue": cfg.max_queue, **self.engine.batcher.stats.to_dict()},
            },
        }
