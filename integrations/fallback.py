"""The fallback policy, in one place: serve from sparse, fall back to dense when sparse cannot answer.

For one query (``top_k`` wanted):

1. The backbone embeds the query once; the CSR head turns that dense vector into the sparse code.
2. Dense answers alone when the code is empty (reason ``empty_code``), there is no sparse backend
   (``no_sparse``), or the sparse backend raises / is unreachable (``sparse_error``, warned once).
3. Otherwise sparse answers; hits with score <= 0 are dropped. With ``rerank`` the sparse backend is
   asked for ``rerank_depth`` candidates, which are re-scored by dense cosine (``served_by="rerank"``).
4. If fewer than ``min_hits`` (default ``top_k``) positive hits remain (``few_hits``), dense hits that
   are not already there fill the list up to ``top_k`` (``served_by="dense"``).

Order of a filled list: ``merge="dense"`` (default) scores the sparse hits by dense cosine too and sorts
the union by it, so both paths compete on one scale (the sparse hits keep ``served_by="sparse"``);
``merge="sparse_first"`` keeps the sparse hits on top (sparse cosine), then the dense fill. With
rerank every score is a dense cosine and the list is sorted by it. Sparse hits whose id the
dense index lacks (the indexes are out of sync) are kept with their sparse score, never dropped,
and a warning says to re-run ingest with ``--with-fallback``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CSRAdapterError
from ..filters import check_filter, resolve_filter
from ..sparse import SparseEmbedding
from .base import (
    DEFAULT_RRF_K,
    Backend,
    Point,
    SearchHit,
    capabilities_of,
    check_collection_name,
    check_top_k,
    require_capability,
)

REASONS = ("sparse", "few_hits", "empty_code", "sparse_error", "no_sparse")


class FallbackConfigError(CSRAdapterError, ValueError):
    """The searcher has no backend that can answer, or rerank without a dense index."""


@dataclass
class Answer:
    """Hits for one query and why they were served that way (one of :data:`REASONS`)."""

    hits: list[SearchHit]
    reason: str
    sparse_positive: int = 0  # positive sparse hits before any fill


class FallbackSearcher:
    """Sparse search with a dense (FAISS) fallback over the same point ids.

    >>> searcher = FallbackSearcher(encoder, sparse=qdrant_backend, dense=FaissBackend(path))
    >>> [(h.id, h.served_by) for h in searcher.search("vitamin D and fractures", top_k=5)]
    """

    def __init__(
        self, encoder, sparse: Backend | None = None, dense: Backend | None = None, *, k: int | None = None,
        rerank: bool = False, rerank_depth: int = 50, min_hits: int | None = None, merge: str = "dense",
    ) -> None:
        if merge not in ("dense", "sparse_first"):
            raise FallbackConfigError(f"merge must be 'dense' or 'sparse_first', got {merge!r}")
        if sparse is None and dense is None:
            raise FallbackConfigError("need a sparse backend, a dense fallback index, or both")
        if rerank and "score_ids" not in capabilities_of(dense):
            raise FallbackConfigError("rerank needs a dense index that can score ids (FaissBackend)")
        self.encoder = encoder
        self.sparse = sparse
        self.dense = dense
        self.k = k
        self.rerank = rerank
        self.rerank_depth = check_top_k(rerank_depth)
        self.min_hits = min_hits
        self.merge = merge if "score_ids" in capabilities_of(dense) else "sparse_first"
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, queries: Sequence[str]) -> tuple[list[SparseEmbedding], np.ndarray]:
        """One backbone pass per query: ``(codes, dense)``; the codes come from the dense vectors."""
        if self.encoder is None:
            raise FallbackConfigError("text queries need an encoder; use answer_encoded() without one")
        dense = self.encoder.encode_dense(list(queries), prefix=self.encoder.config.query_prefix)
        codes = self.encoder.sparsify(dense, k=self.k, role="query") if self.sparse is not None else None
        return (list(codes) if codes is not None else [None] * len(dense)), dense

    # -- search ------------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 10, filter: dict[str, Any] | None = None) -> list[SearchHit]:
        """Best ``top_k`` hits for a text query; each hit's ``served_by`` names its path."""
        return self.answer(query, top_k, filter).hits

    def answer(self, query: str, top_k: int = 10, filter: dict[str, Any] | None = None) -> Answer:
        """Like :meth:`search`, also saying why (``Answer.reason``). A relative ``source``/``file`` filter value
        also matches its absolute path under the working directory, as the CLI's ``--filter`` does."""
        top_k, filter = check_top_k(top_k), resolve_filter(filter)  # the caller's errors, before any encoding
        codes, dense = self.encode([query])
        return self.answer_encoded(codes[0], dense[0], top_k, filter)

    def answer_encoded(
        self, code: SparseEmbedding | None, dense: np.ndarray | None, top_k: int = 10,
        filter: dict[str, Any] | None = None, backbone: np.ndarray | None = None,
    ) -> Answer:
        """The policy on an already-encoded query (``code`` and/or its backbone vector ``dense``); ``filter``
        values are taken as given (:func:`~csr_adapter.filters.resolve_filter` resolves relative paths).
        ``backbone``: the query's vector from the encoder's backbone when ``dense`` (what the dense index is
        searched with) comes from another model; code re-scoring uses it (default: ``dense``)."""
        top_k = check_top_k(top_k)
        filter = check_filter(filter)  # a bad filter is the caller's one-line error, not a backend failure
        if self.sparse is None or code is None:
            return Answer(self._dense(dense, top_k, filter), "no_sparse")
        if len(code) == 0 and self.dense is not None:
            return Answer(self._dense(dense, top_k, filter), "empty_code")
        backbone = dense if backbone is None else backbone
        depth = self._code_rescore_depth(backbone)
        codes_with_hits = bool(depth) and {"hit_vectors", "retrieve"} <= capabilities_of(self.sparse)
        try:
            if codes_with_hits:
                # the codes come with the hits; payloads are read afterwards for the top_k kept only
                raw = self.sparse.search(code, top_k=max(top_k, depth), filter=filter, with_vectors=True,
                                         with_payload=False)
            else:
                raw = self.sparse.search(code, top_k=self.rerank_depth if self.rerank else max(top_k, depth),
                                         filter=filter)
        except Exception as exc:  # unreachable server, lost collection, closed shard: serve dense, say so once
            if self.dense is None or isinstance(exc, TypeError):
                raise
            self._warn_once("sparse_error", f"sparse backend failed ({type(exc).__name__}: {exc}); "
                            "serving from the dense fallback index")
            return Answer(self._dense(dense, top_k, filter), "sparse_error")
        hits = [h for h in raw if h.score > 0]
        positive = len(hits)
        for h in hits:
            h.served_by = "sparse"
        missing: set[str] = set()
        if self.rerank:
            hits, missing = self._rescore(hits, dense, "rerank")
        elif depth and hits:
            hits = self._rescore_codes(hits, backbone, top_k, read_payloads=codes_with_hits)
        hits = hits[:top_k]
        want = top_k if self.min_hits is None else min(self.min_hits, top_k)
        if positive >= want or self.dense is None:
            return Answer(hits, "sparse", positive)
        by_dense = self.rerank or self.merge == "dense"
        if by_dense and not self.rerank:
            hits, missing = self._rescore(hits, dense, "sparse")
        seen = {h.id for h in hits}
        fill = [h for h in self._dense(dense, top_k + len(hits), filter) if h.id not in seen]
        merged = hits + fill[: top_k - len(hits)]
        if by_dense:  # one scale (dense cosine); hits the dense index lacks go last
            merged.sort(key=lambda h: (h.id in missing, -h.score))
        return Answer(merged, "few_hits", positive)

    def _dense(self, dense: np.ndarray | None, top_k: int, filter: dict[str, Any] | None) -> list[SearchHit]:
        if self.dense is None:
            return []
        if dense is None:
            raise FallbackConfigError("the dense fallback needs the query's dense vector")
        hits = self.dense.search(dense, top_k=top_k, filter=filter)
        for h in hits:
            h.served_by = "dense"
        return hits

    def _code_rescore_depth(self, dense: np.ndarray | None) -> int:
        """The model's ``rescore_depth`` (0 without an encoder, a query vector, or with the dense rerank)."""
        config = getattr(self.encoder, "config", None)
        if self.rerank or dense is None or config is None or not {"retrieve", "hit_vectors"} & capabilities_of(
                self.sparse):
            return 0
        return int(getattr(config, "rescore_depth", 0) or 0)

    def _rescore_codes(self, hits: list[SearchHit], dense: np.ndarray, top_k: int,
                       read_payloads: bool = False) -> list[SearchHit]:
        """The best ``top_k`` sparse hits re-scored by the cosine of the query vector and each hit's decoded stored
        code (:meth:`~csr_adapter.CSREncoder.rescore`), best first; hits whose code cannot be read keep their
        order after them. ``read_payloads``: the hits came without payloads; the kept ones get theirs."""
        codes = {h.id: h.code for h in hits if h.code is not None}
        stored = {}
        if len(codes) < len(hits):  # engines without hit_vectors: read the codes (and payloads) by id
            stored = {p.id: p for p in self.sparse.retrieve([h.id for h in hits if h.id not in codes],
                                                            with_vectors=True)}
            codes.update({i: p.sparse for i, p in stored.items() if p.sparse is not None})
        known = [h for h in hits if h.id in codes]
        scores = self.encoder.rescore(dense, [codes[h.id] for h in known]) if known else []
        for h, score in zip(known, scores):
            h.score, h.code = float(score), None
        known.sort(key=lambda h: -h.score)
        kept = (known + [h for h in hits if h.id not in codes])[:top_k]
        need = [h.id for h in kept if h.id not in stored] if read_payloads else []
        if need:
            payloads = {p.id: p.payload for p in self.sparse.retrieve(need, with_vectors=False)}
            for h in kept:
                h.payload = payloads.get(h.id, h.payload)
        return kept

    def _rescore(self, hits: list[SearchHit], dense: np.ndarray, label: str) -> tuple[list[SearchHit], set[str]]:
        """Sparse hits re-scored by dense cosine, best first; ids the dense index lacks keep their
        sparse score, go last, and are reported once (the indexes are out of sync)."""
        scores = self.dense.score_ids(dense, [h.id for h in hits])
        missing = [h for h in hits if h.id not in scores]
        if missing:
            self._warn_once("missing", f"{len(missing)} sparse hit(s) (e.g. {missing[0].id!r}) are not in the "
                            "dense index; kept with sparse scores. Re-run ingest with --with-fallback to sync it")
        scored = [SearchHit(h.id, scores[h.id], h.payload, label) for h in hits if h.id in scores]
        scored.sort(key=lambda h: -h.score)
        return scored + missing, {h.id for h in missing}

    def search_batch(
        self, queries: Sequence[str], top_k: int = 10, filter: dict[str, Any] | None = None
    ) -> list[Answer]:
        """:meth:`answer` for many queries, with one batched encoder pass."""
        top_k, filter = check_top_k(top_k), resolve_filter(filter)
        codes, dense = self.encode(queries)
        return [self.answer_encoded(c, d, top_k, filter) for c, d in zip(codes, dense)]

    def close(self) -> None:
        for backend in (self.sparse, self.dense):
            if backend is not None:
                backend.close()


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
            (have_sparse & {"sparse", "hybrid", "retrieve", "hit_vectors"}) | (have_dense & {"dense", "score_ids"})
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


def serve(encoder, backend: Backend, code: SparseEmbedding, dense: np.ndarray, top_k: int,
          filter: dict[str, Any] | None = None, fallback: Backend | None = None) -> list[SearchHit]:
    """``csr-adapter search``: a dense-only backend answers with ``dense``; a sparse one with the policy
    (its fallback when there is one)."""
    if "sparse" not in capabilities_of(backend):
        return FallbackSearcher(encoder, None, backend).answer_encoded(None, dense, top_k, filter).hits
    return FallbackSearcher(encoder, backend, fallback).answer_encoded(code, dense, top_k, filter).hits
