"""The dense fallback's write side and location: a sparse collection and its FAISS index kept in one id space.

The read side (the fallback policy: serve from sparse, fill from dense) is
:class:`csr_adapter.retrieval.Searcher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CSRAdapterError
from ..sparse import SparseEmbedding
from .base import (
    DEFAULT_RRF_K,
    Backend,
    Point,
    SearchHit,
    capabilities_of,
    check_collection_name,
    require_capability,
)


class FallbackConfigError(CSRAdapterError, ValueError):
    """A searcher or writer with no backend that can answer, or a point the fallback cannot take."""


class WithFallback:
    """A write-side :class:`~.base.Backend` keeping a sparse backend and its dense fallback in one id
    space (``ingest --with-fallback``): points go to both (the sparse side keeps dense vectors only
    with ``keep_dense``, i.e. a hybrid collection); deletes go to both.

    Sync: ``scroll`` reports only points present in both, so a resumed or repeated ingest re-writes
    chunks the fallback lacks; :meth:`sync` drops fallback points the sparse side no longer has.
    Reads go to the side that serves the query: sparse codes (and hybrid) to ``sparse``, dense
    vectors and ``score_ids`` to ``dense``.
    """

    needs_dense = True  # ingest passes the backbone vectors

    def __init__(self, sparse: Backend, dense: Backend, keep_dense: bool = False) -> None:
        self.sparse, self.dense, self.keep_dense = sparse, dense, keep_dense
        self.name = f"{sparse.name}+{dense.name}"
        self.meta = sparse.meta
        have_sparse, have_dense = capabilities_of(sparse), capabilities_of(dense)
        self.capabilities = frozenset(
            (have_sparse & {"sparse", "hybrid", "retrieve", "hit_vectors", "lexical"})
            | (have_dense & {"dense", "score_ids"})
            | (have_sparse & have_dense & {"filters"}) | {"scroll", "optimize"})

    def search(self, query: SparseEmbedding | np.ndarray, top_k: int = 10,
               filter: dict[str, Any] | None = None, with_vectors: bool = False,
               with_payload: bool = True) -> list[SearchHit]:
        """A sparse code searches the sparse side, a dense vector the fallback (``with_vectors``: sparse hits
        carry their codes, where the sparse side has ``hit_vectors``)."""
        if isinstance(query, SparseEmbedding):
            if with_vectors or not with_payload:
                return self.sparse.search(query, top_k=top_k, filter=filter, with_vectors=with_vectors,
                                          with_payload=with_payload)
            return self.sparse.search(query, top_k=top_k, filter=filter)
        return self.dense.search(query, top_k=top_k, filter=filter)

    def hybrid_search(self, sparse: SparseEmbedding, dense: np.ndarray, top_k: int = 10,
                      filter: dict[str, Any] | None = None, rrf_k: int = DEFAULT_RRF_K) -> list[SearchHit]:
        require_capability(self, "hybrid", "hybrid search")
        return self.sparse.hybrid_search(sparse, dense, top_k=top_k, filter=filter, rrf_k=rrf_k)

    def lexical_search_batch(self, queries: Sequence[SparseEmbedding], top_k: int = 10,
                             filter: dict[str, Any] | None = None, with_payload: bool = True) -> list[list[SearchHit]]:
        require_capability(self, "lexical", "lexical search")
        return self.sparse.lexical_search_batch(queries, top_k, filter, with_payload)

    def score_ids(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        require_capability(self, "score_ids", "scoring ids")
        return self.dense.score_ids(query, ids)

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        require_capability(self, "retrieve", "retrieving points")
        return self.sparse.retrieve(ids, with_vectors=with_vectors)

    def upsert(self, points: Sequence[Any]) -> None:
        points = list(points)
        missing = [p.id for p in points if p.dense is None]
        if missing:
            raise FallbackConfigError(f"point {missing[0]!r} has no dense vector for the fallback index")
        from dataclasses import replace

        self.sparse.upsert(points if self.keep_dense else [replace(p, dense=None) for p in points])
        self.dense.upsert(points)  # after the sparse side: the fallback never holds what sparse lacks

    def delete(self, ids: Any) -> None:
        ids = list(ids)
        self.sparse.delete(ids)
        self.dense.delete(ids)

    def count(self) -> int:
        return self.sparse.count()

    def scroll(self, fields: Sequence[str] | None = None):
        in_dense = {pid for pid, _ in self.dense.scroll([])}
        for pid, payload in self.sparse.scroll(fields):
            if pid in in_dense:
                yield pid, payload

    def sync(self) -> dict[str, int]:
        """Delete fallback points absent from the sparse side; count sparse points the fallback lacks."""
        sparse_ids = {pid for pid, _ in self.sparse.scroll([])}
        dense_ids = {pid for pid, _ in self.dense.scroll([])}
        orphans = sorted(dense_ids - sparse_ids)
        if orphans:
            self.dense.delete(orphans)
        return {"removed_from_fallback": len(orphans), "missing_from_fallback": len(sparse_ids - dense_ids)}

    def optimize(self) -> None:
        for side in (self.sparse, self.dense):
            if "optimize" in capabilities_of(side):
                side.optimize()

    def info(self) -> dict[str, Any]:
        return {**self.sparse.info(), "fallback": self.dense.info()}

    def close(self) -> None:
        try:
            self.sparse.close()
        finally:
            self.dense.close()


# -- CLI glue: where the fallback of a collection lives, attaching it, serving with it ----------------------
def fallback_path(collection: str, store: str | None = None):
    """The FAISS fallback of ``collection``: ``<--path>/<collection>.faiss`` next to an embedded store given
    with ``--path``, else ``./.csr-adapter/faiss/<collection>`` (what ``--backend faiss`` opens too)."""
    from pathlib import Path

    from .faiss import default_path

    check_collection_name(collection)
    return Path(store) / f"{collection}.faiss" if store is not None else default_path(collection)


def with_fallback(backend: Backend, collection: str, store: str | None = None, meta: Any = None,
                  recreate: bool = False, threads: int | None = None) -> WithFallback:
    """``ingest --with-fallback``: ``backend`` plus its FAISS fallback, written together."""
    from .faiss import FaissBackend

    dense = FaissBackend(fallback_path(collection, store), meta=meta, recreate=recreate, threads=threads)
    return WithFallback(backend, dense, keep_dense=bool(backend.meta is not None and backend.meta.d))


def open_fallback(collection: str, store: str | None = None, threads: int | None = None):
    """The collection's FAISS fallback if one was ingested (``None`` otherwise)."""
    from .faiss import STORE_FILE, FaissBackend

    where = fallback_path(collection, store)
    return FaissBackend(where, threads=threads) if (where / STORE_FILE).exists() else None
