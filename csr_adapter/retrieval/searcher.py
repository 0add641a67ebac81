"""The one query pipeline: every search (CLI, ``serve``, ``Collection``, framework classes, benchmarks) runs here.

For one query (``top_k`` wanted) a :class:`Searcher`:

1. encodes it once (:meth:`Searcher.encode`): the backbone vector, the CSR code at the model's query width, the
   BM25 lexical vector (only what the mode needs: ``lexical`` runs no backbone);
2. checks ``top_k``, the filter and the mode once (:meth:`Searcher.answer_query`);
3. asks the engine by capability, by mode:

   - ``fused`` (the default where the collection has a lexical vector): codes and BM25 fused with Reciprocal
     Rank Fusion, ``1 / (rrf_k + rank)`` with ranks from 0 (``rrf_k`` 10), over the best ``fuse_depth`` (30) of
     each (the code list re-scored where the model re-scores, ``rescore_depth``). The engine returns both lists
     (ids and scores only) and they are fused here, so Qdrant Edge, a Qdrant server and every build rank alike
     (Qdrant's own RRF breaks score ties its own way on each);
   - ``codes``: the CSR codes alone, with the fallback policy below;
   - ``lexical``: BM25 alone; ``dense``: the dense vector (a hybrid collection's or the FAISS fallback's);
   - ``hybrid``: codes and the dense vector fused with RRF in the engine (a ``--hybrid`` collection);
4. fills a short list from the dense fallback, groups chunks by document where asked (``per_document``), and
   reads payloads for the kept hits only; returns one :class:`Answer`.

The codes policy: dense answers alone when the code is empty (``empty_code``), there is no sparse backend
(``no_sparse``), or the sparse backend raises (``sparse_error``, warned once). Otherwise sparse answers; hits with
score <= 0 are dropped; the model's ``rescore_depth`` best code matches are re-scored by the cosine of the query's
backbone vector and each decoded stored code. With ``rerank`` the sparse backend is asked for ``rerank_depth``
candidates re-scored by dense cosine (``served_by="rerank"``). Fewer than ``min_hits`` (default ``top_k``) positive
hits (``few_hits``): dense hits fill the list; ``merge="dense"`` sorts the union by dense cosine,
``merge="sparse_first"`` keeps the sparse hits on top. Sparse hits whose id the dense index lacks keep their
sparse score, never dropped, and a warning says to re-run ingest with ``--with-fallback``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..defaults import DEFAULT_RRF_K, FUSE_DEPTH, FUSE_RESCORE, FUSE_RRF_K
from ..filters import check_filter, resolve_filter
from ..fusion import rrf_scores
from ..integrations.base import (
    Backend,
    SearchHit,
    UnsupportedError,
    capabilities_of,
    check_top_k,
)
from ..integrations.fallback import FallbackConfigError
from ..lexical import query_vector
from ..sparse import SparseEmbedding

REASONS = ("sparse", "few_hits", "empty_code", "sparse_error", "no_sparse", "fused", "lexical", "dense", "hybrid")
MODES = ("fused", "codes", "lexical", "dense", "hybrid")
GROUP_FACTOR = 4  # per_document: chunks fetched per wanted document before grouping
TIE_MARGIN = 8  # fusion: candidates fetched past the depth, so ties at the cut are broken alike on every engine


@dataclass
class Query:
    """One encoded query: what each mode needs (``None`` where it was not computed)."""

    text: str | None = None
    vector: np.ndarray | None = None  # the backbone's vector (query prefix): re-scoring, the dense fallback
    code: SparseEmbedding | None = None  # the CSR code at the model's query width
    lexical: SparseEmbedding | None = None  # BM25 query terms, weighted by count (the engine applies IDF)
    dense: np.ndarray | None = None  # the dense index's query when another model made it (default: ``vector``)

    @property
    def dense_query(self) -> np.ndarray | None:
        return self.vector if self.dense is None else self.dense


@dataclass
class Answer:
    """Hits for one query and why they were served that way (one of :data:`REASONS`)."""

    hits: list[SearchHit]
    reason: str
    sparse_positive: int = 0  # positive sparse hits before any fill


def rrf(lists: Sequence[Sequence[SearchHit]], rrf_k: int = DEFAULT_RRF_K, label: str = "fused") -> list[SearchHit]:
    """Reciprocal Rank Fusion as Qdrant computes it: ``sum 1 / (rrf_k + rank)``, ranks from 0, best first; a hit
    keeps the first payload any list gave it."""
    scores = rrf_scores([[h.id for h in hits] for hits in lists], rrf_k)
    first: dict[str, SearchHit] = {}
    for hits in lists:
        for hit in hits:
            if hit.id not in first or (not first[hit.id].payload and hit.payload):
                first[hit.id] = hit
    order = sorted(scores, key=lambda i: -scores[i])
    return [SearchHit(i, scores[i], first[i].payload, label) for i in order]


def tie_order(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Hits best first, equal scores (to 5 decimals: engines differ in the last float bits) in id order: engines
    order ties their own way, and short texts often tie on BM25."""
    return sorted(hits, key=lambda h: (-round(h.score, 5), h.id))


def group_by_document(hits: Sequence[SearchHit], top_k: int) -> list[SearchHit]:
    """The best hit of each document (payload ``source``; a hit without one stands alone), best first."""
    seen: set[str] = set()
    out: list[SearchHit] = []
    for hit in hits:
        key = str(hit.payload.get("source", hit.id)) if isinstance(hit.payload, dict) else hit.id
        if key not in seen:
            seen.add(key)
            out.append(hit)
            if len(out) == top_k:
                break
    return out


class Searcher:
    """Search a collection's engine (and its dense fallback) for text queries, by mode.

    >>> searcher = Searcher(encoder, sparse=qdrant_backend, dense=FaissBackend(path))
    >>> [(h.id, h.served_by) for h in searcher.search("vitamin D and fractures", top_k=5)]
    """

    def __init__(
        self, encoder, sparse: Backend | None = None, dense: Backend | None = None, *, k: int | None = None,
        rerank: bool = False, rerank_depth: int = 50, min_hits: int | None = None, merge: str = "dense",
        mode: str | None = None, rrf_k: int | None = None, fuse_depth: int = FUSE_DEPTH,
        per_document: bool = False, budget: str = "fixed",
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
        self.rrf_k = None if rrf_k is None else check_top_k(rrf_k)  # None: FUSE_RRF_K fused, DEFAULT_RRF_K hybrid
        self.fuse_depth = check_top_k(fuse_depth)
        self.per_document = bool(per_document)
        self.budget = budget
        self._warned: set[str] = set()
        self.mode = self.check_mode(mode)

    # -- modes -------------------------------------------------------------------------------------
    @property
    def default_mode(self) -> str:
        """``fused`` where the collection has a lexical vector, else ``codes``; ``dense`` without a sparse engine."""
        have = capabilities_of(self.sparse)
        if self.sparse is None:
            return "dense"
        return "fused" if "lexical" in have and not self.rerank else "codes"

    def check_mode(self, mode: str | None) -> str:
        """``mode`` (``None``: :attr:`default_mode`) if this collection can answer it; one-line error otherwise."""
        if mode is None:
            return self.default_mode
        if mode not in MODES:
            raise UnsupportedError(f"unknown search mode {mode!r}: one of {', '.join(MODES)}")
        have = capabilities_of(self.sparse)
        if self.sparse is None and mode != "dense":
            raise UnsupportedError(f"mode={mode!r}: this is a dense-only collection (backend='faiss'): it answers "
                                   "mode='dense' only")
        if mode in ("fused", "lexical") and "lexical" not in have:
            raise UnsupportedError(f"mode={mode!r}: this collection has no lexical vector (ingested before it "
                                   "existed, with lexical=False, or on an engine without one): re-ingest with "
                                   "adapt=True or recreate=True to add it, or use mode='codes'")
        if mode == "hybrid" and "hybrid" not in have:
            raise UnsupportedError("mode='hybrid': the collection has no dense vectors: re-ingest with hybrid=True")
        if mode == "dense" and self.dense is None and "dense" not in have:
            raise UnsupportedError("mode='dense': the collection has no dense vectors: ingest with hybrid=True "
                                   "or with_fallback=True")
        return mode

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- encoding ----------------------------------------------------------------------------------
    def encode(self, queries: Sequence[str]) -> tuple[list[SparseEmbedding | None], np.ndarray]:
        """``(codes, backbone vectors)``: one batched backbone pass; the codes come from the vectors."""
        encoded = self.encode_queries(queries, "codes" if self.sparse is not None else "dense")
        return [q.code for q in encoded], np.stack([q.vector for q in encoded]) if encoded else np.zeros((0, 0))

    def encode_queries(self, queries: Sequence[str], mode: str | None = None) -> list[Query]:
        """Each query encoded once for ``mode``: one batched backbone pass (none for ``lexical``)."""
        mode = self.check_mode(mode) if mode is not None else self.mode
        texts = list(queries)
        vectors: Any = [None] * len(texts)
        codes: Any = [None] * len(texts)
        if mode != "lexical":
            if self.encoder is None:
                raise FallbackConfigError("text queries need an encoder; use answer_encoded() without one")
            vectors = self.encoder.encode_dense(texts, prefix=self.encoder.config.query_prefix)
            if self.sparse is not None and mode in ("fused", "codes", "hybrid"):
                codes = list(self.encoder.sparsify(vectors, k=self.k, role="query", budget=self.budget))
        lexical = [query_vector(t) for t in texts] if mode in ("fused", "lexical") else [None] * len(texts)
        return [Query(t, v, c, lx) for t, v, c, lx in zip(texts, vectors, codes, lexical)]

    # -- search ------------------------------------------------------------------------------------
    def search(self, query: str, top_k: int = 10, filter: dict[str, Any] | None = None,
               mode: str | None = None) -> list[SearchHit]:
        """Best ``top_k`` hits for a text query; each hit's ``served_by`` names its path."""
        return self.answer(query, top_k, filter, mode).hits

    def answer(self, query: str, top_k: int = 10, filter: dict[str, Any] | None = None,
               mode: str | None = None) -> Answer:
        """Like :meth:`search`, also saying why (``Answer.reason``). A relative ``source``/``file`` filter value
        also matches its absolute path under the working directory, as the CLI's ``--filter`` does."""
        return self.search_batch([query], top_k, filter, mode)[0]

    def search_batch(self, queries: Sequence[str], top_k: int = 10, filter: dict[str, Any] | None = None,
                     mode: str | None = None) -> list[Answer]:
        """:meth:`answer` for many queries, with one batched encoder pass."""
        top_k, filter = check_top_k(top_k), resolve_filter(filter)  # the caller's errors, before any encoding
        mode = self.check_mode(mode) if mode is not None else self.mode
        return [self._answer(q, top_k, filter, mode) for q in self.encode_queries(queries, mode)]

    def answer_query(self, query: Query, top_k: int = 10, filter: dict[str, Any] | None = None,
                     mode: str | None = None) -> Answer:
        """The pipeline on an already-encoded :class:`Query` (``serve`` passes what its batcher encoded); ``filter``
        values are taken as given (:func:`~csr_adapter.filters.resolve_filter` resolves relative paths)."""
        top_k, filter = check_top_k(top_k), check_filter(filter)
        mode = self.check_mode(mode) if mode is not None else self.mode
        if mode in ("fused", "lexical") and query.lexical is None and query.text is not None:
            query.lexical = query_vector(query.text)
        return self._answer(query, top_k, filter, mode)

    def answer_encoded(
        self, code: SparseEmbedding | None, dense: np.ndarray | None, top_k: int = 10,
        filter: dict[str, Any] | None = None, backbone: np.ndarray | None = None,
    ) -> Answer:
        """The codes policy on a code and/or a dense vector (``backbone``: the encoder's vector when ``dense`` comes
        from another model; re-scoring uses it)."""
        query = Query(vector=dense if backbone is None else backbone, code=code,
                      dense=None if backbone is None else dense)
        mode = "codes" if self.sparse is not None and code is not None else "dense"
        top_k, filter = check_top_k(top_k), check_filter(filter)
        return self._answer(query, top_k, filter, mode)

    def _answer(self, q: Query, top_k: int, filter: dict[str, Any] | None, mode: str) -> Answer:
        want = min(top_k * GROUP_FACTOR, 1000) if self.per_document else top_k
        if mode == "codes":
            answer = self._codes(q, want, filter)
        elif mode == "fused":
            answer = self._fused(q, want, filter)
        elif mode == "lexical":
            answer = Answer(self.sparse.lexical_search_batch([q.lexical], want, filter)[0], "lexical")
        elif mode == "hybrid":
            if q.code is None or q.vector is None:
                raise FallbackConfigError("hybrid search needs the query's code and backbone vector")
            answer = Answer(self.sparse.hybrid_search(q.code, q.vector, top_k=want, filter=filter,
                                                      rrf_k=self.rrf_k or DEFAULT_RRF_K), "hybrid")
        else:
            answer = Answer(self._dense(q.dense_query, want, filter), "no_sparse" if self.sparse is None else "dense")
        if self.per_document:
            answer.hits = group_by_document(answer.hits, top_k)
        return answer

    # -- modes -------------------------------------------------------------------------------------
    def _fused(self, q: Query, top_k: int, filter: dict[str, Any] | None) -> Answer:
        """The code list (re-scored where the model does) and the BM25 list, ``fuse_depth`` each without payloads,
        fused by :func:`rrf` here, so every engine ranks alike (engine-side RRF breaks ties its own way); payloads
        are read for the kept hits only."""
        code, lexical = q.code, q.lexical
        depth = max(self.fuse_depth, top_k)
        try:
            lists = []
            if code is not None and len(code):
                lists.append(self._codes(q, depth + TIE_MARGIN, filter, fill=False, payloads=False,
                                         rescore=FUSE_RESCORE * depth or None).hits)
            if lexical is not None and len(lexical):
                lists.append(self.sparse.lexical_search_batch([lexical], depth + TIE_MARGIN, filter,
                                                              with_payload=False)[0])
            hits = rrf([tie_order(hits)[:depth] for hits in lists], self.rrf_k or FUSE_RRF_K)[:top_k]
            self._read_payloads(hits)
        except Exception as exc:
            if isinstance(exc, ValueError):  # the caller's input (a filter the engine refused), not an outage
                raise
            return self._sparse_failed(exc, q.dense_query, top_k, filter)
        if len(hits) >= top_k or self.dense is None:
            return Answer(hits, "fused", len(hits))
        seen = {h.id for h in hits}
        fill = [h for h in self._dense(q.dense_query, top_k + len(hits), filter) if h.id not in seen]
        return Answer(hits + fill[: top_k - len(hits)], "few_hits", len(hits))

    def _sparse_failed(self, exc: Exception, dense: np.ndarray | None, top_k: int,
                       filter: dict[str, Any] | None) -> Answer:
        """An unreachable server, lost collection or closed shard: serve the dense fallback and say so once (re-raise
        without one, or for a ``TypeError``, a bug rather than an outage)."""
        if self.dense is None or isinstance(exc, TypeError):
            raise exc
        self._warn_once("sparse_error", f"sparse backend failed ({type(exc).__name__}: {exc}); "
                        "serving from the dense fallback index")
        return Answer(self._dense(dense, top_k, filter), "sparse_error")

    def _read_payloads(self, hits: list[SearchHit]) -> None:
        """Payloads for hits that came without them (one read by id)."""
        need = [h.id for h in hits if not h.payload]
        if need:
            payloads = {p.id: p.payload for p in self.sparse.retrieve(need, with_vectors=False)}
            for h in hits:
                h.payload = payloads.get(h.id, h.payload)

    def _codes(self, q: Query, top_k: int, filter: dict[str, Any] | None, fill: bool = True,
               payloads: bool = True, rescore: int | None = None) -> Answer:
        """The codes policy; ``fill=False``: no dense fill and errors raise; ``payloads=False``: hits without them;
        ``rescore``: re-score this many code matches whatever the model's ``rescore_depth`` (fused mode)."""
        code, dense, backbone = q.code, q.dense_query, q.vector
        if self.sparse is None or code is None:
            return Answer(self._dense(dense, top_k, filter), "no_sparse")
        if len(code) == 0 and self.dense is not None and fill:
            return Answer(self._dense(dense, top_k, filter), "empty_code")
        depth = self._code_rescore_depth(backbone)
        if rescore is not None and (depth or self._can_rescore(backbone)):
            depth = max(depth, rescore)
        codes_with_hits = bool(depth) and {"hit_vectors", "retrieve"} <= capabilities_of(self.sparse)
        try:
            if codes_with_hits:
                # the codes come with the hits; payloads are read afterwards for the top_k kept only
                raw = self.sparse.search(code, top_k=max(top_k, depth), filter=filter, with_vectors=True,
                                         with_payload=False)
            elif payloads:
                raw = self.sparse.search(code, top_k=self.rerank_depth if self.rerank else max(top_k, depth),
                                         filter=filter)
            else:
                raw = self.sparse.search(code, top_k=max(top_k, depth), filter=filter, with_payload=False)
        except Exception as exc:
            if not fill:
                raise
            return self._sparse_failed(exc, dense, top_k, filter)
        hits = [h for h in raw if h.score > 0]
        positive = len(hits)
        for h in hits:
            h.served_by = "sparse"
        missing: set[str] = set()
        if self.rerank:
            hits, missing = self._rescore(hits, dense, "rerank")
        elif depth and hits:
            hits = self._rescore_codes(hits, backbone, top_k, read_payloads=codes_with_hits and payloads)
        hits = hits[:top_k]
        want = top_k if self.min_hits is None else min(self.min_hits, top_k)
        if positive >= want or self.dense is None or not fill:
            return Answer(hits, "sparse", positive)
        by_dense = self.rerank or self.merge == "dense"
        if by_dense and not self.rerank:
            hits, missing = self._rescore(hits, dense, "sparse")
        seen = {h.id for h in hits}
        extra = [h for h in self._dense(dense, top_k + len(hits), filter) if h.id not in seen]
        merged = hits + extra[: top_k - len(hits)]
        if by_dense:  # one scale (dense cosine); hits the dense index lacks go last
            merged.sort(key=lambda h: (h.id in missing, -h.score))
        return Answer(merged, "few_hits", positive)

    def _dense(self, dense: np.ndarray | None, top_k: int, filter: dict[str, Any] | None) -> list[SearchHit]:
        index = self.dense if self.dense is not None else (
            self.sparse if "dense" in capabilities_of(self.sparse) else None)
        if index is None:
            return []
        if dense is None:
            raise FallbackConfigError("the dense fallback needs the query's dense vector")
        hits = index.search(dense, top_k=top_k, filter=filter)
        for h in hits:
            h.served_by = "dense"
        return hits

    def _can_rescore(self, dense: np.ndarray | None) -> bool:
        """Code matches can be re-scored: an encoder, a query vector, stored codes readable, no dense rerank."""
        return not (self.rerank or dense is None or getattr(self.encoder, "config", None) is None
                    or not {"retrieve", "hit_vectors"} & capabilities_of(self.sparse))

    def _code_rescore_depth(self, dense: np.ndarray | None) -> int:
        """The model's ``rescore_depth`` (0 without an encoder, a query vector, or with the dense rerank)."""
        return int(getattr(self.encoder.config, "rescore_depth", 0) or 0) if self._can_rescore(dense) else 0

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
        if read_payloads:
            self._read_payloads(kept)
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

    def close(self) -> None:
        for backend in (self.sparse, self.dense):
            if backend is not None:
                backend.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


FallbackSearcher = Searcher  # the name earlier versions exported
