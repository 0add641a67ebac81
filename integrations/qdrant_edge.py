"""Embedded backend: Qdrant Edge (``qdrant-edge-py``, pinned), Qdrant's engine in-process, extra ``qdrant``.

A collection is one Edge shard directory plus ``csr-adapter.json`` (its :class:`CollectionMeta`).
Writes go through Edge's write-ahead log, so a killed process loses nothing it was told was written;
re-running an ingest resumes. Edge lets one process open a shard at a time.

Edge maps its files into memory and dies with SIGBUS when the disk fills under it, so every write
first checks free space (``min_free_mb``, env ``CSR_ADAPTER_MIN_FREE_MB``, default 128) and refuses
with a one-line error instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
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
    make_private_dir,
    prefetch_limit,
    require_capability,
    sorted_unique,
    sparse_capabilities,
)
from .qdrant import DENSE, MIN_SCORE, SPARSE, chunked, record_to_point, to_hits

META_FILE = "csr-adapter.json"
EDGE_FILE = "edge_config.json"
FORMAT = "csr-adapter-qdrant/1"
SCROLL_PAGE = 2048
WRITE_BATCH = 512


def _edge():
    return require("qdrant_edge", "qdrant")


def _writable(directory: Path) -> Path | None:
    """The nearest existing ancestor of ``directory`` if we cannot create files there, else None."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        return probe
    return None


def _config(meta: CollectionMeta, threads: int | None):
    """The shard layout for ``meta`` (sparse ``csr`` with optional IDF, optional dense) + search threads."""
    q = _edge()
    sparse = q.EdgeSparseVectorParams(modifier=q.Modifier.Idf if meta.idf else None)
    vectors = {DENSE: q.EdgeVectorParams(size=meta.d, distance=q.Distance.Dot)} if meta.d else None
    return q.EdgeConfig(vectors=vectors, sparse_vectors={SPARSE: sparse}, max_search_threads=threads)


class EdgeBackend:
    """A CSR collection in an embedded Qdrant Edge shard (implements :class:`~.base.Backend`).

    >>> be = EdgeBackend(".csr-adapter/qdrant/csr", meta=CollectionMeta(enc.model_id, enc.h, 8))
    >>> be.upsert([Point(id, payload, sparse=code)]); be.search(query_code, top_k=5)
    """

    name = "qdrant-edge"
    needs_dense = False

    def __init__(
        self, path: str | os.PathLike, meta: CollectionMeta | None = None, recreate: bool = False,
        create: bool = True, threads: int | None = None, min_free_mb: float | None = None,
    ) -> None:
        q = _edge()
        self.path = Path(path).expanduser()
        self.min_free = 1e6 * float(min_free_mb if min_free_mb is not None
                                    else os.environ.get("CSR_ADAPTER_MIN_FREE_MB", 128))
        exists = (self.path / EDGE_FILE).exists()
        if recreate and self.path.exists():
            self._remove()
            exists = False
        if not exists and (not create or meta is None):
            raise CollectionNotFoundError(f"{self.path}: no collection here (ingest into it first, "
                                          "or check --path/--collection)")
        if not exists:
            self._check_writable()
            self._check_space()
            make_private_dir(self.path)
            if threads is None:
                from ..runtime import available_cores

                threads = available_cores()
            self._shard = self._call(q.EdgeShard.create, str(self.path), _config(meta, threads))
            self._write_meta(meta)
        else:
            stored = self._stored_meta() if threads else None  # reopen with this many search threads
            config = _config(stored, threads) if stored is not None else None
            self._shard = self._call(q.EdgeShard.load, str(self.path), config)
        try:
            self.meta = self._read_meta(meta)
        except BaseException:
            self._shard.close()
            raise
        self.capabilities = sparse_capabilities(self.meta)

    # -- metadata ---------------------------------------------------------------------------------
    def _write_meta(self, meta: CollectionMeta) -> None:
        from .. import __version__

        data = {"format": FORMAT, "meta": meta.to_dict(), "csr_adapter": __version__}
        tmp = self.path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path / META_FILE)

    def _stored_meta(self) -> CollectionMeta | None:
        file = self.path / META_FILE
        if not file.exists():
            return None
        try:
            return CollectionMeta.from_dict(json.loads(file.read_text(encoding="utf-8"))["meta"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{file}: unreadable collection metadata ({exc})") from None

    def _read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta:
        stored = self._stored_meta()
        if stored is None:  # killed between creating the shard and writing its meta
            if self.count() == 0 and wanted is not None:
                self._write_meta(wanted)
                return wanted
            raise BackendError(f"{self.path / META_FILE}: missing, the collection's model is unknown (use --recreate)")
        return check_meta(stored, wanted, f"collection {self.path}")

    def _remove(self) -> None:
        looks_ours = any((self.path / name).exists() for name in (EDGE_FILE, META_FILE, "segments", "wal"))
        if self.path.is_dir() and (looks_ours or not any(self.path.iterdir())):
            shutil.rmtree(self.path)
        elif self.path.exists():
            raise BackendError(f"{self.path}: exists and is not a csr-adapter collection; not deleting it")

    # -- guards ------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        blocked = _writable(self.path)
        if blocked is not None:
            raise BackendError(f"{blocked}: storage directory is not writable (read-only?); use --path DIR")

    def _check_space(self, extra: float = 0.0) -> None:
        probe = self.path if self.path.exists() else self.path.parent
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < self.min_free + extra:
            raise BackendError(
                f"{probe}: disk full ({free / 1e6:.0f} MB free, need {(self.min_free + extra) / 1e6:.0f} MB); "
                "free space and re-run: finished work is kept"
            )

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # Edge raises bare Exception with the engine's message
            msg = first_line(exc)
            if "WouldBlock" in msg or "lock" in msg.lower():
                raise BackendError(f"{self.path}: collection is open in another process (one at a time)") from None
            if "Read-only" in msg or "Permission denied" in msg:
                raise BackendError(f"{self.path}: storage directory is not writable ({msg})") from None
            if "No space" in msg:
                raise BackendError(f"{self.path}: disk full ({msg}); free space and re-run") from None
            raise BackendError(f"{self.path}: Qdrant Edge error: {msg}") from None

    # -- writes ------------------------------------------------------------------------------------
    def _vector(self, p: Point) -> dict:
        q = _edge()
        vec: dict[str, Any] = {}
        if p.sparse is not None:
            vec[SPARSE] = q.SparseVector(*sorted_unique(p.sparse))
        if p.dense is not None:
            if not self.meta.d:
                raise BackendError(f"{self.path}: collection has no dense vector (created without --hybrid)")
            vec[DENSE] = np.asarray(p.dense, dtype=np.float32).tolist()
        return vec

    def upsert(self, points: Sequence[Point]) -> None:
        q = _edge()
        for batch in chunked(list(points), WRITE_BATCH):
            est = sum(len(json.dumps(p.payload)) + 16 * (len(p.sparse) if p.sparse is not None else 0)
                      + 4 * (self.meta.d or 0) for p in batch)
            self._check_space(4 * est)
            ops = [q.Point(uuid.UUID(str(p.id)), self._vector(p), p.payload) for p in batch]
            self._call(self._shard.update, q.UpdateOperation.upsert_points(ops))

    def delete(self, ids: Iterable[str]) -> None:
        q = _edge()
        for batch in chunked([uuid.UUID(str(i)) for i in ids], WRITE_BATCH):
            self._check_space()
            self._call(self._shard.update, q.UpdateOperation.delete_points(batch))

    def optimize(self) -> None:
        """Merge segments and build indexes (after a bulk ingest)."""
        self._check_space()
        self._call(self._shard.optimize)

    def flush(self) -> None:
        self._call(self._shard.flush)

    def close(self) -> None:
        if getattr(self, "_shard", None) is not None:
            try:
                self._shard.flush()
            finally:
                self._shard.close()
                self._shard = None

    def __enter__(self) -> EdgeBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._call(self._shard.count, _edge().CountRequest(exact=True)))

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        q = _edge()
        offset = None
        with_payload = list(fields) if fields is not None else True
        while True:
            records, offset = self._call(self._shard.scroll, q.ScrollRequest(
                offset=offset, limit=SCROLL_PAGE, with_payload=with_payload, with_vector=False))
            for r in records:
                yield str(r.id), dict(r.payload or {})
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Stored points for ``ids`` (unknown ids skipped)."""
        recs = self._call(self._shard.retrieve, [uuid.UUID(str(i)) for i in ids], True, with_vectors)
        return [record_to_point(r, self.meta.h) for r in recs]

    def _filter(self, filter: dict[str, Any] | None):
        q = _edge()
        terms = filter_terms(filter)
        if not terms:
            return None
        return q.Filter(must=[q.Filter(should=[q.FieldCondition(key=key, match=q.MatchValue(v)) for v in values])
                              for key, values in terms])

    def _nearest(self, query: SparseEmbedding | np.ndarray):
        q = _edge()
        if isinstance(query, SparseEmbedding):
            return q.Query.Nearest(q.SparseVector(*sorted_unique(query)), using=SPARSE), MIN_SCORE
        return q.Query.Nearest(dense_query(query, self.meta, str(self.path)), using=DENSE), None

    def _request(self, query, top_k: int, filter, with_payload: bool):
        q = _edge()
        nearest, threshold = self._nearest(query)
        return q.QueryRequest(limit=top_k, query=nearest, filter=self._filter(filter), score_threshold=threshold,
                              with_payload=with_payload, with_vector=False)

    def search(
        self, query: SparseEmbedding | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[SearchHit]:
        """Top hits for one sparse code (score > 0 only) or dense vector, best first."""
        check_top_k(top_k)
        if isinstance(query, SparseEmbedding) and len(query) == 0:
            return []
        points = self._call(self._shard.query, self._request(query, top_k, filter, with_payload))
        sparse = isinstance(query, SparseEmbedding)
        return to_hits(points, "sparse" if sparse else "dense", sparse)

    def search_batch(
        self, queries: SparseEmbeddings, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for a batch of sparse codes, planned together by Edge."""
        q = _edge()
        check_top_k(top_k)
        rows = list(queries)
        reqs = [self._request(r, top_k, filter, with_payload) for r in rows if len(r)]
        results = iter(self._call(self._shard.query_batch, q.QueryBatchRequest(reqs)) if reqs else [])
        return [to_hits(next(results), "sparse", True) if len(r) else [] for r in rows]

    def hybrid_search(
        self, sparse: SparseEmbedding, dense: np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchHit]:
        """Sparse and dense candidates fused with Reciprocal Rank Fusion (``1 / (rrf_k + rank)``, ranks from 0)."""
        require_capability(self, "hybrid", f"hybrid search in {self.path}")
        check_top_k(top_k)
        q = _edge()
        flt, limit = self._filter(filter), prefetch_limit(top_k)
        prefetches = []
        if len(sparse):
            nearest, threshold = self._nearest(sparse)
            prefetches.append(q.Prefetch(limit=limit, query=nearest, filter=flt, score_threshold=threshold))
        prefetches.append(q.Prefetch(limit=limit, query=self._nearest(dense)[0], filter=flt))
        req = q.QueryRequest(limit=top_k, prefetches=prefetches, query=q.Fusion.Rrf(k=int(rrf_k)),
                             with_payload=True, with_vector=False)
        return to_hits(self._call(self._shard.query, req), "hybrid", True)

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "path": str(self.path.resolve()), "collection": self.path.name,
                "points": self.count(), "meta": self.meta.to_dict()}
