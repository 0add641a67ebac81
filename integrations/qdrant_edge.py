"""Embedded transport: Qdrant Edge (``qdrant-edge-py``, pinned), Qdrant's engine in-process, extra ``qdrant``.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csr_adapter.errors import require
from csr_adapter.integrations.base import (
    LAYOUTS,
    BackendError,
    CollectionMeta,
    Point,
    first_line,
    make_private_dir,
)
from csr_adapter.integrations.qdrant_backend import DENSE, LEXICAL, Nearest, QdrantBackend

META_FILE = "csr-adapter.json"
EDGE_FILE = "edge_config.json"
FORMAT = "csr-adapter-qdrant/1"


def _edge():
    return require("qdrant_edge", "qdrant")


def _env_min_free() -> float:
    """``CSR_ADAPTER_MIN_FREE_MB`` (default 128): a finite number >= 0, else a one-line error naming the variable."""
    import math

    raw = os.environ.get("CSR_ADAPTER_MIN_FREE_MB", "128")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BackendError(f"CSR_ADAPTER_MIN_FREE_MB={raw[:40]!r}: give the megabytes to keep free on the disk, a "
                           "number >= 0 (default 128)")
    return value


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
    sparse_vectors = {LAYOUTS[meta.layout].sparse: sparse}
    if meta.lexical:
        sparse_vectors[LEXICAL] = q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)
    return q.EdgeConfig(vectors=vectors, sparse_vectors=sparse_vectors, max_search_threads=threads)


class EdgeTransport:
    """One Edge shard directory at ``path`` (a :class:`~.qdrant_backend.Transport`)."""

    name = "qdrant-edge"
    write_batch = 512
    scroll_page = 2048

    def __init__(self, path: str | os.PathLike, threads: int | None = None, min_free_mb: float | None = None) -> None:
        _edge()
        self.path = Path(path).expanduser()
        self.threads = threads
        self.min_free = 1e6 * (float(min_free_mb) if min_free_mb is not None else _env_min_free())
        self.where, self.label = str(self.path), f"collection {self.path}"
        self.missing = f"{self.path}: no collection here (ingest into it first, or check the path and collection name)"
        self._shard: Any = None
        self._dense_dim = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / EDGE_FILE).exists()

    def remove(self) -> None:
        if not self.path.exists():
            return
        looks_ours = any((self.path / name).exists() for name in (EDGE_FILE, META_FILE, "segments", "wal"))
        if self.path.is_dir() and (looks_ours or not any(self.path.iterdir())):
            shutil.rmtree(self.path)
        else:
            raise BackendError(f"{self.path}: exists and is not a csr-adapter collection; not deleting it")

    def create(self, meta: CollectionMeta) -> None:
        blocked = _writable(self.path)
        if blocked is not None:
            raise BackendError(f"{blocked}: storage directory is not writable (read-only?); use path=DIR")
        self._check_space()
        make_private_dir(self.path)
        if self.threads is None:
            from csr_adapter.runtime import available_cores

            self.threads = available_cores()
        self._shard = self._call(_edge().EdgeShard.create, str(self.path), _config(meta, self.threads))
        self._write_meta(meta)

    def load(self) -> None:
        stored = self._stored_meta() if self.threads else None  # reopen with this many search threads
        config = _config(stored, self.threads) if stored is not None else None
        self._shard = self._call(_edge().EdgeShard.load, str(self.path), config)

    def _write_meta(self, meta: CollectionMeta) -> None:
        from csr_adapter import __version__

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

    def read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta:
        stored = self._stored_meta()
        if stored is None:  # killed between creating the shard and writing its meta
            if self.count() != 0 or wanted is None:
                raise BackendError(f"{self.path / META_FILE}: missing, the collection's model is unknown "
                                   "(use recreate=True)")
            self._write_meta(wanted)
            stored = wanted
        self._dense_dim = stored.d or 0
        return stored

    def discard(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def close(self) -> None:
        if self._shard is not None:
            try:
                self._shard.flush()
            finally:
                self.discard()

    # -- guards ------------------------------------------------------------------------------------
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

    # -- models ------------------------------------------------------------------------------------
    def point_id(self, id: str) -> uuid.UUID:
        return uuid.UUID(str(id))

    def sparse(self, indices: list[int], values: list[float]) -> Any:
        return _edge().SparseVector(indices, values)

    def match(self, key: str, value: Any) -> Any:
        q = _edge()
        return q.FieldCondition(key=key, match=q.MatchValue(value))

    def filter(self, must: list | None = None, should: list | None = None) -> Any:
        return _edge().Filter(must=must, should=should)

    def _nearest(self, r: Nearest) -> Any:
        return _edge().Query.Nearest(r.vector, using=r.using)

    def _request(self, r: Nearest) -> Any:
        return _edge().QueryRequest(limit=r.limit, query=self._nearest(r), filter=r.filter,
                                    score_threshold=r.threshold, with_payload=r.with_payload, with_vector=r.with_vector)

    # -- operations --------------------------------------------------------------------------------
    def upsert(self, points: Sequence[Point], vectors: Sequence[dict[str, Any]]) -> None:
        q = _edge()
        est = sum(len(json.dumps(p.payload)) + 16 * (len(p.sparse) if p.sparse is not None else 0)
                  + 4 * self._dense_dim for p in points)
        self._check_space(4 * est)
        ops = [q.Point(self.point_id(p.id), vec, p.payload) for p, vec in zip(points, vectors)]
        self._call(self._shard.update, q.UpdateOperation.upsert_points(ops))

    def delete(self, ids: Sequence[Any]) -> None:
        self._check_space()
        self._call(self._shard.update, _edge().UpdateOperation.delete_points(list(ids)))

    def optimize(self) -> None:
        self._check_space()
        self._call(self._shard.optimize)

    def flush(self) -> None:
        self._call(self._shard.flush)

    def count(self) -> int:
        return int(self._call(self._shard.count, _edge().CountRequest(exact=True)))

    def scroll(self, offset: Any, limit: int, with_payload: Any) -> tuple[list, Any]:
        request = _edge().ScrollRequest(offset=offset, limit=limit, with_payload=with_payload, with_vector=False)
        return self._call(self._shard.scroll, request)

    def retrieve(self, ids: Sequence[Any], with_vectors: bool) -> list:
        return self._call(self._shard.retrieve, list(ids), True, with_vectors)

    def query(self, request: Nearest) -> list:
        return self._call(self._shard.query, self._request(request))

    def query_batch(self, requests: Sequence[Nearest]) -> list[list]:
        q = _edge()
        return self._call(self._shard.query_batch, q.QueryBatchRequest([self._request(r) for r in requests]))

    def fuse(self, prefetches: Sequence[Nearest], rrf_k: int, limit: int) -> list:
        q = _edge()
        stages = [q.Prefetch(limit=p.limit, query=self._nearest(p), filter=p.filter, score_threshold=p.threshold)
                  for p in prefetches]
        request = q.QueryRequest(limit=limit, prefetches=stages, query=q.Fusion.Rrf(k=rrf_k), with_payload=True,
                                 with_vector=False)
        return self._call(self._shard.query, request)

    def location(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "collection": self.path.name}


class EdgeBackend(QdrantBackend):
    """A CSR collection in an embedded Qdrant Edge shard at ``path`` (implements :class:`~.base.Backend`).

    >>> be = EdgeBackend(".csr-adapter/qdrant/csr", meta=CollectionMeta(enc.model_id, enc.h, 8))
    >>> be.upsert([Point(id, payload, sparse=code)]); be.search(query_code, top_k=5)
    """

    transport: EdgeTransport

    def __init__(
        self, path: str | os.PathLike, meta: CollectionMeta | None = None, recreate: bool = False,
        create: bool = True, threads: int | None = None, min_free_mb: float | None = None,
    ) -> None:
        super().__init__(EdgeTransport(path, threads, min_free_mb), meta=meta, recreate=recreate, create=create)

    @property
    def path(self) -> Path:
        return self.transport.path

    @property
    def min_free(self) -> float:
        """Bytes that must stay free on the disk; writes that would leave less are refused."""
        return self.transport.min_free

    @min_free.setter
    def min_free(self, value: float) -> None:
        self.transport.min_free = value
