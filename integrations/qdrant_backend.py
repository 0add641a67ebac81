"""The Qdrant backend: one collection layout and one search logic over two transports.

One collection holds, per chunk:

- the named sparse vector ``csr``: the L2-normalised CSRv2 code, scored by dot product (= cosine);
  an optional IDF modifier (off by default: CSR codes are not term counts);
- optionally the named dense vector ``dense``: the backbone embedding (``d`` floats, dot product),
  for ``--hybrid`` search fused with Reciprocal Rank Fusion (``1 / (rrf_k + rank)``, ranks from 0);
- a JSON payload (text, source, chunk index, content hash, user metadata under ``meta``).

The collection records the :class:`~.base.CollectionMeta` it was built with (model id, h, k, dense
dim, IDF, layout); opening it with different values raises :class:`~.base.CollectionMismatchError`.
The ``langchain`` :class:`~.base.Layout` stores the sparse vector as ``langchain-sparse`` and the text and
metadata as ``page_content``/``metadata`` (what langchain-qdrant reads); payloads, filters and field lists
are mapped at this boundary, so callers always see the layout above.
Sparse hits with score <= 0 are dropped on both paths (the server drops them, local mode does not).

:class:`QdrantBackend` holds everything that does not depend on the engine (opening rules, point and
record conversion, batching, scroll paging, filters, search and hybrid RRF requests, result mapping,
capabilities). A :class:`Transport` speaks to one engine: Qdrant Edge in-process
(:mod:`.qdrant_edge`) or a Qdrant server through qdrant-client (:mod:`.qdrant_server`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from csr_adapter.integrations.base import (
    DEFAULT_RRF_K,
    LAYOUTS,
    BackendBase,
    BackendError,
    CollectionMeta,
    CollectionNotFoundError,
    Layout,
    Point,
    SearchHit,
    check_meta,
    check_top_k,
    dense_query,
    filter_terms,
    prefetch_limit,
    require_capability,
    sorted_unique,
    sparse_capabilities,
)
from csr_adapter.sparse import SparseEmbedding

SPARSE = "csr"
DENSE = "dense"
LEXICAL = "lexical"  # BM25 term weights, IDF applied by the engine (collections whose meta has ``lexical``)
MIN_SCORE = 1e-30  # score_threshold for sparse queries: keeps only hits that share a latent


@dataclass(frozen=True)
class Nearest:
    """One nearest-neighbour request in engine-neutral terms; a transport makes its own request of it."""

    vector: Any  # the transport's sparse vector, or a dense list of floats
    using: str  # SPARSE or DENSE
    limit: int
    filter: Any = None  # the transport's filter (see QdrantBackend._filter)
    threshold: float | None = None
    with_payload: bool = True
    with_vector: bool = False  # return each hit's stored vectors (its code for SearchHit.code)


class Transport(Protocol):
    """What :class:`QdrantBackend` needs from one engine; every call maps its errors to ``BackendError``.

    ``where`` prefixes error messages, ``label`` names the collection in a meta mismatch, ``missing`` is
    the not-found message; ``write_batch``/``scroll_page`` size writes and scroll pages.
    """

    name: str
    where: str
    label: str
    missing: str
    write_batch: int
    scroll_page: int

    def exists(self) -> bool: ...
    def remove(self) -> None: ...  # drop the collection if there is one (refuse what is not ours)
    def create(self, meta: CollectionMeta) -> None: ...  # the layout above, with ``meta`` recorded
    def load(self) -> None: ...
    def read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta: ...  # the stored meta
    def discard(self) -> None: ...  # release after a failed open, without flushing
    def point_id(self, id: str) -> Any: ...
    def sparse(self, indices: list[int], values: list[float]) -> Any: ...
    def match(self, key: str, value: Any) -> Any: ...  # a field condition, ``key == value``
    def filter(self, must: list | None = None, should: list | None = None) -> Any: ...
    def upsert(self, points: Sequence[Point], vectors: Sequence[dict[str, Any]]) -> None: ...
    def delete(self, ids: Sequence[Any]) -> None: ...
    def count(self) -> int: ...
    def scroll(self, offset: Any, limit: int, with_payload: Any) -> tuple[list, Any]: ...
    def retrieve(self, ids: Sequence[Any], with_vectors: bool) -> list: ...
    def query(self, request: Nearest) -> list: ...
    def query_batch(self, requests: Sequence[Nearest]) -> list[list]: ...
    def fuse(self, prefetches: Sequence[Nearest], rrf_k: int, limit: int) -> list: ...  # RRF over prefetches
    def optimize(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def location(self) -> dict[str, Any]: ...  # where the collection is, for info()


def stored_code(point: Any, h: int, name: str) -> SparseEmbedding | None:
    """The sparse vector ``name`` a Qdrant point or record came back with, as a code (``None`` without it)."""
    vector = point.vector.get(name) if isinstance(point.vector, dict) else None
    return None if vector is None else SparseEmbedding(np.asarray(vector.indices, np.int32),
                                                       np.asarray(vector.values, np.float32), h)


def record_to_point(record: Any, h: int, layout: Layout = LAYOUTS["csr"]) -> Point:
    """A retrieved Qdrant record (Edge or client: ``id``, ``payload``, named ``vector``) as a :class:`Point`."""
    from csr_adapter.lexical import DIM

    vec = record.vector if isinstance(record.vector, dict) else {}
    dense = np.asarray(vec[DENSE], np.float32) if DENSE in vec else None
    return Point(str(record.id), layout.load(dict(record.payload or {})), stored_code(record, h, layout.sparse), dense,
                 stored_code(record, DIM, LEXICAL))


def to_hits(points: Any, served_by: str, positive: bool, layout: Layout = LAYOUTS["csr"],
            h: int | None = None) -> list[SearchHit]:
    """Scored Qdrant points as :class:`SearchHit` s; ``positive`` drops scores <= 0 (as a server does); with ``h``
    each hit carries its stored sparse code (points fetched with their vectors)."""
    return [SearchHit(str(p.id), float(p.score), layout.load(dict(p.payload)) if p.payload else {}, served_by,
                      stored_code(p, h, layout.sparse) if h is not None else None)
            for p in points if p.score > 0 or not positive]


def chunked(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class QdrantBackend(BackendBase):
    """A CSR collection in Qdrant, through ``transport`` (implements :class:`~.base.Backend`).

    ``meta`` is what the caller will write (``None``: read-only use); ``create=False`` refuses a missing
    collection; ``recreate`` drops an existing one first.
    """

    def __init__(self, transport: Transport, meta: CollectionMeta | None = None, recreate: bool = False,
                 create: bool = True) -> None:
        self.transport = transport
        self.name = transport.name
        exists = transport.exists()
        if recreate:
            transport.remove()
            exists = False
        if not exists:
            if not create or meta is None:
                raise CollectionNotFoundError(transport.missing)
            transport.create(meta)
        else:
            transport.load()
        try:
            self.meta = check_meta(transport.read_meta(meta), meta, transport.label)
        except BaseException:
            transport.discard()
            raise
        self.capabilities = sparse_capabilities(self.meta) | {"hit_vectors"}
        self.layout = LAYOUTS[self.meta.layout]

    # -- writes ------------------------------------------------------------------------------------
    def _vectors(self, p: Point) -> dict[str, Any]:
        vec: dict[str, Any] = {}
        if p.sparse is not None:
            vec[self.layout.sparse] = self.transport.sparse(*sorted_unique(p.sparse))
        if p.lexical is not None and self.meta.lexical and len(p.lexical):
            vec[LEXICAL] = self.transport.sparse(*sorted_unique(p.lexical))
        if p.dense is not None:
            if not self.meta.d:
                raise BackendError(f"{self.transport.where}: collection has no dense vector "
                                   "(created without hybrid=True)")
            vec[DENSE] = np.asarray(p.dense, dtype=np.float32).tolist()
        return vec

    def upsert(self, points: Sequence[Point]) -> None:
        t = self.transport
        for batch in chunked(list(points), t.write_batch):
            stored = [Point(p.id, self.layout.store(p.payload), p.sparse, p.dense) for p in batch]
            t.upsert(stored, [self._vectors(p) for p in batch])

    def delete(self, ids: Iterable[str]) -> None:
        t = self.transport
        for batch in chunked([t.point_id(i) for i in ids], t.write_batch):
            t.delete(batch)

    def optimize(self) -> None:
        """Merge segments and build indexes after a bulk ingest (a server does this in the background)."""
        self.transport.optimize()

    def flush(self) -> None:
        self.transport.flush()

    def close(self) -> None:
        self.transport.close()

    # -- reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.transport.count()

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        t = self.transport
        offset = None
        with_payload = list(dict.fromkeys(self.layout.field(f) for f in fields)) if fields is not None else True
        while True:
            records, offset = t.scroll(offset, t.scroll_page, with_payload)
            for r in records:
                yield str(r.id), self.layout.load(dict(r.payload or {}))
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Stored points for ``ids`` (unknown ids skipped)."""
        t = self.transport
        return [record_to_point(r, self.meta.h, self.layout)
                for r in t.retrieve([t.point_id(i) for i in ids], with_vectors)]

    def _filter(self, filter: dict[str, Any] | None) -> Any:
        """``{key: value | [values]}`` as the transport's filter: every key must match one of its values."""
        t = self.transport
        terms = filter_terms(filter)
        if not terms:
            return None
        return t.filter(must=[t.filter(should=[t.match(self.layout.field(key), v) for v in values])
                              for key, values in terms])

    def _nearest(self, query: SparseEmbedding | np.ndarray, limit: int, filter: Any,
                 with_payload: bool = True, with_vector: bool = False) -> Nearest:
        if isinstance(query, SparseEmbedding):
            return Nearest(self.transport.sparse(*sorted_unique(query)), self.layout.sparse, limit, filter, MIN_SCORE,
                           with_payload, with_vector)
        return Nearest(dense_query(query, self.meta, self.transport.where), DENSE, limit, filter, None, with_payload)

    def search_batch(
        self, queries: Sequence[SparseEmbedding] | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True, with_vectors: bool = False,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, planned together where the engine can; ``with_vectors``: each sparse
        hit carries its stored code (``SearchHit.code``)."""
        check_top_k(top_k)
        rows = list(queries)
        live = [r for r in rows if not (isinstance(r, SparseEmbedding) and len(r) == 0)]
        if not live:
            return [[] for _ in rows]
        flt = self._filter(filter)
        requests = [self._nearest(r, top_k, flt, with_payload, with_vectors and isinstance(r, SparseEmbedding))
                    for r in live]
        results = iter(self.transport.query_batch(requests))
        out = []
        for r in rows:
            sparse = isinstance(r, SparseEmbedding)
            empty = sparse and len(r) == 0
            h = self.meta.h if with_vectors and sparse and self.meta is not None else None
            out.append([] if empty else to_hits(next(results), "sparse" if sparse else "dense", sparse, self.layout, h))
        return out

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True, with_vectors: bool = False,
    ) -> list[SearchHit]:
        """Top hits for one sparse code (score > 0 only) or dense vector, best first (``with_vectors``: each
        sparse hit carries its stored code)."""
        return self.search_batch([query], top_k, filter, with_payload, with_vectors)[0]

    def lexical_search_batch(
        self, queries: Sequence[SparseEmbedding], top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[list[SearchHit]]:
        """Top hits per lexical query vector (BM25: the engine's IDF times the stored term weights), best first."""
        require_capability(self, "lexical", f"lexical search in {self.transport.where}")
        check_top_k(top_k)
        rows = list(queries)
        flt = self._filter(filter)
        live = [r for r in rows if len(r)]
        requests = [Nearest(self.transport.sparse(*sorted_unique(r)), LEXICAL, top_k, flt, MIN_SCORE, with_payload)
                    for r in live]
        results = iter(self.transport.query_batch(requests) if requests else [])
        return [to_hits(next(results), "lexical", True, self.layout) if len(r) else [] for r in rows]

    def hybrid_search(
        self, sparse: SparseEmbedding, dense: np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchHit]:
        """Sparse and dense candidates fused with Reciprocal Rank Fusion (``1 / (rrf_k + rank)``, ranks from 0)."""
        require_capability(self, "hybrid", f"hybrid search in {self.transport.where}")
        check_top_k(top_k)
        flt, limit = self._filter(filter), prefetch_limit(top_k)
        prefetches = [self._nearest(sparse, limit, flt)] if len(sparse) else []
        prefetches.append(self._nearest(dense, limit, flt))
        return to_hits(self.transport.fuse(prefetches, int(rrf_k), top_k), "hybrid", True, self.layout)

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, **self.transport.location(), "points": self.count(),
                "meta": self.meta.to_dict()}
