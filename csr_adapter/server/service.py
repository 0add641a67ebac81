"""The request logic behind the routes: input limits, the encoding engine, and collection search."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import __version__
from ..errors import CSRAdapterError
from ..filters import with_absolute_paths
from .batching import BatchTimeout, Overloaded, Unavailable
from .config import ServeConfig
from .engine import EncodeEngine, EncodeJob, EncodeResult
from .errors import ApiError, log
from .schemas import SearchRequest


def as_searcher(encoder, backend):
    """A :class:`~csr_adapter.integrations.fallback.FallbackSearcher` as is; a bare backend = sparse only."""
    if hasattr(backend, "answer_encoded"):
        return backend
    from ..integrations.fallback import FallbackSearcher

    return FallbackSearcher(encoder, sparse=backend)


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
        except UnicodeError as exc:  # the tokenizer rejected this request's text (its batch-mates were re-run)
            raise ApiError(422, f"text cannot be encoded ({type(exc).__name__})") from None

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
        enc = getattr(searcher, "encoder", None) or self.encoder  # a collection may own its (adapted) model
        k = self.check_k(req.k) or getattr(searcher, "k", None) or enc.k
        sparse = getattr(searcher, "sparse", None) is not None
        own = enc is not self.encoder
        job = EncodeJob([enc.config.query_prefix + req.query], k=k if sparse and not own else None, dense=True,
                        normalize=False, raw=True)
        result = await self.run(job)
        code = result.sparse[0] if result.sparse else None
        if sparse and own:  # the shared backbone's vector through the collection's own head
            code = enc.sparsify(result.dense[:1], k, role="query")[0]
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(
                self.search_pool, searcher.answer_encoded, code, result.dense[0], req.top_k,
                self.absolute_filter(req.filter)),
                self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, f"collection {name!r} did not answer within {self.config.timeout_s:g}s", "timeout",
                           {"Retry-After": "1"}) from None
        except (TypeError, ValueError) as exc:  # bad filter, k mismatch: the caller's input
            raise ApiError(422, f"search rejected: {first_line(exc)}") from None
        except CSRAdapterError as exc:  # backend unreachable, closed, corrupt
            raise ApiError(503, f"collection {name!r} unavailable: {exc}", "backend_unavailable") from None
        except Exception as exc:  # a client library's own error (connection lost, ...): retryable, logged
            log.exception("search on %r failed", name)
            raise ApiError(503, f"collection {name!r} unavailable ({type(exc).__name__})",
                           "backend_unavailable") from None
        hits = [self.public_hit(h.to_dict()) for h in answer.hits]
        return {"collection": name, "reason": answer.reason, "hits": hits}

    def public_path(self, path: str, file: str | None = None) -> str:
        """A stored ``source``/``file`` without the server's absolute path: relative to ``source_root``
        (``ServeConfig.source_root``, default the working directory), or just the file name outside it.
        ``file`` is the point's file, the prefix of a record's ``file#id`` source."""
        base = file if file and path.startswith(file) else path
        if not os.path.isabs(base):
            return path
        rel = os.path.relpath(base, self.source_root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            rel = os.path.basename(base)
        return rel.replace(os.sep, "/") + path[len(base):]

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
        enc = self.encoder
        return {"model": model, "model_id": enc.model_id, "backbone": enc.config.backbone, "d": enc.d, "h": enc.h,
                "k": enc.k, "max_seq_length": enc.backbone.max_seq_length, "device": str(enc.device),
                "runtime": getattr(enc.backbone, "runtime", "torch"), "collections": list(self.collections),
                "limits": self.config.limits(),
                "batching": {"max_batch_size": self.config.max_batch_size, "max_wait_ms": self.config.max_wait_ms,
                             "max_queue": self.config.max_queue, **self.engine.batcher.stats.to_dict()},
                "version": __version__}
