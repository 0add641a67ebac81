"""FAISS dense index (the sparse path's fallback, or a backend on its own), extra ``faiss``.

Layout of a collection directory::

    store.sqlite      source of truth: string id <-> int64 id, payload JSON, float32 vector, meta
                      (:mod:`.faiss_store`)
    index.faiss       derived: any ``index_factory`` spec (default ``Flat``) under ``IndexIDMap2``
                      (IVF specs keep ids natively) (:mod:`.faiss_index`)
    index.faiss.gen   the store generation the index file was written at

Point ids are strings (UUIDs from ingest, or anything: "1", "foo"); each gets a stable int64 id
(SQLite rowid) that FAISS stores. The index file is derived data: when it is missing, corrupt, or
older than the store (a crash between commit and save), it is rebuilt from the stored vectors with a
warning. Index types that cannot remove ids (HNSW) are rebuilt lazily after a delete or replace.
Vectors are L2-normalised by default, so inner-product scores are cosines. ``path=None`` keeps
everything in memory (nothing written), e.g. for tests and throwaway LangChain stores.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from csr_adapter.integrations.base import (  # noqa: F401  (InvalidTopKError: re-exported)
    BackendBase,
    CollectionMeta,
    CollectionNotFoundError,
    InvalidTopKError,
    Point,
    SearchHit,
    check_collection_name,
    check_top_k,
)
from csr_adapter.integrations.faiss_index import DEFAULT_BLAS_THRESHOLD, INDEX_FILE, FaissIndex  # noqa: F401
from csr_adapter.integrations.faiss_store import (  # noqa: F401  (errors and filter_sql: re-exported)
    STORE_FILE,
    DimensionMismatchError,
    FaissIndexError,
    ModelMismatchError,
    PointStore,
    filter_sql,
)
from csr_adapter.sparse import SparseEmbedding


def default_path(collection: str) -> Path:
    """Where ``--backend faiss`` keeps ``collection``: ``./.csr-adapter/faiss/<collection>``."""
    return Path(os.environ.get("CSR_ADAPTER_HOME") or ".csr-adapter") / "faiss" / collection


def open_faiss(
    collection: str, *, path: str | os.PathLike | None = None, meta: CollectionMeta | None = None,
    recreate: bool = False, create: bool = True, threads: int | None = None, index_factory: str = "Flat",
    **_ignored: Any,
) -> FaissBackend:
    """Registry factory for ``--backend faiss``: ``path/<collection>`` (default under ``.csr-adapter/faiss``)."""
    check_collection_name(collection)
    location = Path(path) / collection if path is not None else default_path(collection)
    if not create and not (location / STORE_FILE).exists():
        raise CollectionNotFoundError(f"{location}: no FAISS collection here (ingest into it first with "
                                      "backend='faiss', or check the path and collection name)")
    return FaissBackend(location, meta=meta, recreate=recreate, threads=threads, index_factory=index_factory)


class FaissBackend(BackendBase):
    """Dense vectors in FAISS + payloads in SQLite, implementing :class:`~.base.Backend`.

    ``store`` (:class:`~.faiss_store.PointStore`) holds the points; ``index``
    (:class:`~.faiss_index.FaissIndex`) the derived FAISS index; this class keeps them in step.

    >>> be = FaissBackend(".csr-adapter/faiss/docs", meta=CollectionMeta(model_id, h, k, d=384))
    >>> be.upsert([Point(id, payload, dense=vector)]); be.search(query_vector, top_k=5)
    """

    name = "faiss"
    needs_dense = True  # ingest passes the backbone vectors
    capabilities = frozenset({"dense", "score_ids", "filters", "scroll", "optimize", "retrieve", "batch"})

    def __init__(
        self, path: str | os.PathLike | None, meta: CollectionMeta | None = None, index_factory: str = "Flat",
        normalize: bool = True, threads: int | None = None, blas_threshold: int | None = DEFAULT_BLAS_THRESHOLD,
        recreate: bool = False,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self.index_factory = index_factory
        self.normalize = normalize
        self._lock = threading.RLock()
        if recreate and self.path is not None:
            FaissIndex.remove_files(self.path)
            PointStore.remove_files(self.path)
        if self.path is not None and not (self.path / STORE_FILE).exists() and (self.path / INDEX_FILE).exists():
            raise FaissIndexError(
                f"{self.path / STORE_FILE}: payload store missing next to {INDEX_FILE}; the index cannot be used "
                "without it (delete the directory and re-ingest, or pass recreate=True)"
            )
        self.store = PointStore(self.path, self._lock)
        self.meta = self._check_meta(meta)
        self.index = FaissIndex(self.store, self.path, self.index_factory, lambda: self.dim, threads, blas_threshold)

    def _check_meta(self, meta: CollectionMeta | None) -> CollectionMeta | None:
        stored = self.store.get_meta()
        if "d" not in stored:  # new: record what we know now (d may come with the first upsert)
            if meta is not None:
                kept = {k: v for k, v in meta.to_dict().items() if v is not None and k not in ("idf", "lexical")}
                self.store.set_meta(**kept, index_factory=self.index_factory, normalize=int(self.normalize))
            return meta
        have = CollectionMeta(stored.get("model_id", ""), int(stored.get("h", 0)), int(stored.get("k", 0)),
                              int(stored["d"]))
        self.index_factory = stored.get("index_factory", self.index_factory)
        self.normalize = bool(int(stored.get("normalize", int(self.normalize))))
        if meta is not None:
            if meta.d is not None and meta.d != have.d:
                raise DimensionMismatchError(
                    f"{self.path}: collection holds {have.d}-d vectors, got a {meta.d}-d model "
                    "(use another collection or recreate=True)"
                )
            if meta.model_id and have.model_id and meta.model_id != have.model_id:
                raise ModelMismatchError(
                    f"{self.path}: built with model {have.model_id}, not {meta.model_id} "
                    "(use another collection or recreate=True)"
                )
        return have

    @property
    def dim(self) -> int | None:
        return self.meta.d if self.meta is not None else None

    def rebuild(self):
        """Recreate the FAISS index from the vectors in the store (training it first if needed)."""
        return self.index.rebuild()

    def flush(self) -> None:
        """Write the index file (atomically) if it changed since the last write."""
        self.index.flush()

    def optimize(self) -> None:
        """After a bulk write: rebuild a stale index (untrained, or after deletes it cannot do) and write it."""
        self.index.flush()

    def _prepare(self, vectors: np.ndarray | Sequence, what: str = "vectors") -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise DimensionMismatchError(f"{what} must be 1-d or 2-d, got shape {x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"{self.path}: {what} have dim {x.shape[1]}, the collection holds {self.dim}-d vectors"
            )
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or inf")
        if self.normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0)
        return np.ascontiguousarray(x, dtype=np.float32)

    # -- Backend protocol --------------------------------------------------------------------------
    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points (by string id); every point needs a dense vector."""
        points = list(points)
        if not points:
            return
        missing = [p.id for p in points if p.dense is None]
        if missing:
            raise FaissIndexError(f"the FAISS backend stores dense vectors; point {missing[0]!r} has none")
        if len({p.id for p in points}) != len(points):
            raise ValueError("duplicate point ids in one upsert batch")
        with self._lock:
            if self.dim is None:  # a new collection learns its dim from the first vectors
                d = int(np.asarray(points[0].dense).shape[-1])
                self.meta = replace(self.meta or CollectionMeta("", 0, 0), d=d)
                self._check_meta(self.meta)
            x = self._prepare([np.asarray(p.dense, dtype=np.float32).ravel() for p in points], "point vectors")
            payloads = [json.dumps(p.payload, ensure_ascii=False, allow_nan=False) for p in points]
            index = self.index.load(fresh=False)
            ids = [str(p.id) for p in points]
            old = self.store.iids(ids)
            self.store.upsert(ids, payloads, x)
            iids = self.store.iids(ids)
            self.index.remove(list(old.values()))
            self.index.add(index, x, [iids[i] for i in ids])

    def delete(self, ids: Iterable[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        ids = [str(i) for i in ids]
        with self._lock:
            self.index.load(fresh=False)
            old = self.store.iids(ids)
            if not old:
                return
            self.store.delete(list(old.values()))
            self.index.remove(list(old.values()))

    def count(self) -> int:
        return self.store.count()

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        """Top ``top_k`` points by cosine (inner product), best first; fewer only if fewer match."""
        if isinstance(query, SparseEmbedding):
            raise TypeError("the FAISS backend is dense-only: pass the query's dense vector")
        return self.search_batch(np.asarray(query, dtype=np.float32)[None, :] if np.ndim(query) == 1 else query,
                                 top_k, filter)[0]

    def search_batch(
        self, queries: np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None
    ) -> list[list[SearchHit]]:
        """:meth:`search` for a ``(n, d)`` batch of queries in one FAISS call."""
        top_k = check_top_k(top_k)
        with self._lock:
            index = self.index.load()
            if index is None or index.ntotal == 0:
                if self.dim is not None:
                    self._prepare(queries, "queries")
                return [[] for _ in range(len(np.atleast_2d(queries)))]
            q = self._prepare(queries, "queries")
            allowed = self.store.allowed(filter)
            if allowed is not None and len(allowed) == 0:
                return [[] for _ in q]
            scores, iids = self.index.search(index, q, min(top_k, index.ntotal), allowed)
            hits = [self._hits(s, i) for s, i in zip(scores, iids)]
            if allowed is not None:  # approximate indexes may miss filtered points: score them exactly
                want = min(top_k, len(allowed))
                for row, qv in enumerate(q):
                    if len(hits[row]) < want:
                        hits[row] = [SearchHit(pid, s, pl, served_by="dense")
                                     for s, pid, pl in self.store.exact(qv, allowed, top_k)]
            return hits

    def _hits(self, scores: np.ndarray, iids: np.ndarray) -> list[SearchHit]:
        keep = [(float(s), int(i)) for s, i in zip(scores, iids) if i >= 0]
        rows = self.store.rows([i for _, i in keep])
        return [SearchHit(rows[i][0], s, rows[i][1], served_by="dense") for s, i in keep if i in rows]

    # -- extras used by the fallback policy and the LangChain store ------------------------------------
    def score_ids(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Exact cosine of ``query`` with the stored vectors of ``ids`` (ids not stored are absent)."""
        return self.store.score_ids(self._prepare(query, "query")[0], ids)

    def get(self, ids: Sequence[str]) -> list[Point]:
        """Stored points for ``ids``, in the given order; unknown ids are skipped."""
        return self.store.get(ids)

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Stored points for ``ids`` (as the Qdrant backends name it); vectors only if asked."""
        points = self.store.get(ids)
        if not with_vectors:
            for p in points:
                p.dense = None
        return points

    def scroll(self, fields: Sequence[str] | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
        """Every stored ``(id, payload)``, payload cut to ``fields`` (all when None), in insertion order."""
        return self.store.scroll(fields)

    def ids(self) -> list[str]:
        """All point ids, in insertion order."""
        return self.store.ids()

    def info(self) -> dict[str, Any]:
        index = self.index.current
        return {
            "engine": "faiss", "path": str(self.path) if self.path else None, "index_factory": self.index_factory,
            "normalize": self.normalize, "points": self.count(), "count": self.count(),
            "ntotal": None if index is None else int(index.ntotal),
            "meta": self.meta.to_dict() if self.meta else None,
        }

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
            finally:
                self.index.current = None
                self.store.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.path else None
        return f"FaissBackend({where!r}, index_factory={self.index_factory!r}, count={self.count()})"
