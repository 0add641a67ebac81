"""Server backend: a Qdrant server or cluster through ``qdrant-client`` (``--url``/``--api-key``).

Same layout as the embedded engine (see :mod:`.qdrant`); the :class:`CollectionMeta` lives in the
collection's own ``metadata``. Tested against qdrant-client's in-memory mode (``QdrantClient(":memory:")``,
the same client requests), which scores every point in Python: a test double, not a store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import require
from ..sparse import SparseEmbedding, SparseEmbeddings
from .base import (
    DEFAULT_RRF_K,
    BackendError,
    CollectionMeta,
    CollectionNotFoundError,
    Point,
    SearchHit,
    check_meta,
    check_top_k,
    dense_query,
    filter_terms,
    first_line,
    prefetch_limit,
    require_capability,
    sorted_unique,
    sparse_capabilities,
)
from .qdrant import DENSE, MIN_SCORE, SPARSE, chunked, record_to_point, to_hits

META_KEY = "csr_adapter"
SCROLL_PAGE = 1024
WRITE_BATCH = 256


def _models():
    require("qdrant_client", "qdrant")
    from qdrant_client import models

    return models


class QdrantServerBackend:
    """A CSR collection on a Qdrant server (implements :class:`~.base.Backend`).

    >>> be = QdrantServerBackend("docs", url="http://localhost:6333", meta=CollectionMeta(mid, 1536, 8))
    """

    name = "qdrant-server"
    needs_dense = False

    def __init__(
        self, collection: str, url: str | None = None, api_key: str | None = None, client: Any = None,
        meta: CollectionMeta | None = None, recreate: bool = False, create: bool = True, timeout: float = 10.0,
    ) -> None:
        qc = require("qdrant_client", "qdrant")
        self.collection = collection
        self.url = url or getattr(client, "_location", None) or "client"
        self._owns_client = client is None  # a client passed in belongs to the caller: never closed here
        if client is None:
            try:
                client = qc.QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout)),
                                         check_compatibility=False)
            except Exception as exc:
                raise BackendError(f"--url {url}: invalid Qdrant URL ({first_line(exc)})") from None
        self.client = client
        exists = self._call(self.client.collection_exists, collection)
        if exists and recreate:
            self._call(self.client.delete_collection, collection)
            exists = False
        if not exists:
            if not create or meta is None:
                raise CollectionNotFoundError(f"{self._where}: no such collection (ingest into it first)")
            self._create(meta)
        self.meta = self._read_meta(meta)
        self.capabilities = sparse_capabilities(self.meta)

    @property
    def _where(self) -> str:
        return f"collection {self.collection!r} at {self.url}"

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BackendError, ValueError, TypeError):
            raise
        except Exception as exc:  # network, HTTP and gRPC errors: one line
            msg = first_line(exc)
            if any(s in msg for s in ("Connection refused", "timed out", "Name or service", "Connect", "Errno")):
                raise BackendError(f"cannot reach Qdrant at {self.url}: {msg}") from None
            raise BackendError(f"{self._where}: Qdrant error: {msg}") from None

    def _create(self, meta: CollectionMeta) -> None:
        m = _models()
        sparse = {SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF if meta.idf else None)}
        dense = {DENSE: m.VectorParams(size=meta.d, distance=m.Distance.DOT)} if meta.d else {}
        self._call(self.client.create_collection, self.collection, vectors_config=dense,
                   sparse_vectors_config=sparse, metadata={META_KEY: meta.to_dict()})

    def _read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta:
        info = self._call(self.client.get_collection, self.collection)
        raw = (getattr(info.config, "metadata", None) or {}).get(META_KEY)
        if not raw:
            raise BackendError(f"{self._where}: not created by csr-adapter (no {META_KEY!r} metadata); "
                               "use another --collection or --recreate")
        return check_meta(CollectionMeta.from_dict(raw), wanted, self._where)

    # -- writes ------------------------------------------------------------------------------------
    def _struct(self, p: Point):
        m = _models()
        vec: dict[str, Any] = {}
        if p.sparse is not None:
            idx, val = sorted_unique(p.sparse)
            vec[SPARSE] = m.SparseVector(indices=idx, values=val)
        if p.dense is not None:
            if not self.meta.d:
                raise BackendError(f"{self._where}: collection has no dense vector (created without --hybrid)")
            vec[DENSE] = np.asarray(p.dense, dtype=np.float32).tolist()
        return m.PointStruct(id=str(p.id), vector=vec, payload=p.payload)

    def upsert(self, points: Sequence[Point]) -> None:
        for batch in chunked(list(points), WRITE_BATCH):
            self._call(self.client.upsert, self.collection, [self._struct(p) for p in batch], wait=True)

    def delete(self, ids: Iterable[str]) -> None:
        m = _models()
        for batch in chunked([str(i) for i in ids], WRITE_BATCH):
            self._call(self.client.delete, self.collection, points_selector=m.PointIdsList(points=batch), wait=True)

    def optimize(self) -> None:
        """The server optimises in the background."""

    def flush(self) -> None:
        """Writes use ``wait=True``: nothing to flush."""

    def close(self) -> None:
        if not self._owns_client:
            return
        with contextlib.suppress(Exception):  # closing a dead connection is not worth an error
            self.client.close()

    def __enter__(self) -> QdrantServerBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._call(self.client.count, self.collection, exact=True).count)

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        offset = None
        with_payload = list(fields) if fields is not None else True
        while True:
            records, offset = self._call(self.client.scroll, self.collection, limit=SCROLL_PAGE, offset=offset,
                                         with_payload=with_payload, with_vectors=False)
            for r in records:
                yield str(r.id), dict(r.payload or {})
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        recs = self._call(self.client.retrieve, self.collection, [str(i) for i in ids], with_payload=True,
                          with_vectors=with_vectors)
        return [record_to_point(r, self.meta.h) for r in recs]

    def _filter(self, filter: dict[str, Any] | None):
        m = _models()
        terms = filter_terms(filter)
        if not terms:
            return None
        return m.Filter(must=[m.Filter(should=[m.FieldCondition(key=key, match=m.MatchValue(value=v))
                                               for v in values]) for key, values in terms])

    def _query(self, query: SparseEmbedding | np.ndarray) -> tuple[Any, str, float | None]:
        m = _models()
        if isinstance(query, SparseEmbedding):
            idx, val = sorted_unique(query)
            return m.SparseVector(indices=idx, values=val), SPARSE, MIN_SCORE
        return dense_query(query, self.meta, self._where), DENSE, None

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[SearchHit]:
        """Top hits for one sparse code (score > 0 only) or dense vector, best first."""
        check_top_k(top_k)
        sparse = isinstance(query, SparseEmbedding)
        if sparse and len(query) == 0:
            return []
        vector, using, threshold = self._query(query)
        res = self._call(self.client.query_points, self.collection, query=vector, using=using, limit=top_k,
                         query_filter=self._filter(filter), score_threshold=threshold, with_payload=with_payload)
        return to_hits(res.points, "sparse" if sparse else "dense", sparse)

    def search_batch(
        self, queries: SparseEmbeddings, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[list[SearchHit]]:
        check_top_k(top_k)
        return [self.search(q, top_k, filter, with_payload) for q in queries]

    def hybrid_search(
        self, sparse: SparseEmbedding, dense: np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchHit]:
        """Sparse and dense candidates fused server-side with RRF (``1 / (rrf_k + rank)``, ranks from 0)."""
        require_capability(self, "hybrid", f"hybrid search in {self._where}")
        check_top_k(top_k)
        m = _models()
        flt, limit = self._filter(filter), prefetch_limit(top_k)
        prefetch = []
        if len(sparse):
            vector, using, threshold = self._query(sparse)
            prefetch.append(m.Prefetch(query=vector, using=using, limit=limit, filter=flt, score_threshold=threshold))
        vector, using, _ = self._query(dense)
        prefetch.append(m.Prefetch(query=vector, using=using, limit=limit, filter=flt))
        res = self._call(self.client.query_points, self.collection, prefetch=prefetch,
                         query=m.RrfQuery(rrf=m.Rrf(k=int(rrf_k))), limit=top_k, with_payload=True)
        return to_hits(res.points, "hybrid", True)

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "url": self.url, "collection": self.collection, "points": self.count(),
                "meta": self.meta.to_dict()}
