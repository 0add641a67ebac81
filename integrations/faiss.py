"""FAISS dense index (the sparse path's fallback, or a backend on its own), extra ``faiss``.

Layout of a collection directory::

    store.sqlite      source of truth: string id <-> int64 id, payload JSON, float32 vector, meta
    index.faiss       derived: any ``index_factory`` spec (default ``Flat``) under ``IndexIDMap2``
                      (IVF specs keep ids natively)
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
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..sparse import SparseEmbedding
from .base import (  # noqa: F401  (InvalidTopKError: re-exported)
    BackendBase,
    BackendError,
    CollectionMeta,
    CollectionMismatchError,
    CollectionNotFoundError,
    InvalidTopKError,
    Point,
    SearchHit,
    check_collection_name,
    check_top_k,
    make_private_dir,
)

INDEX_FILE = "index.faiss"
STORE_FILE = "store.sqlite"
DEFAULT_BLAS_THRESHOLD = 16  # batched flat search uses BLAS from 16 queries (faiss default here: 128000)


class FaissIndexError(BackendError):
    """A FAISS collection's store is missing/corrupt, cannot be trained, or was built differently."""


class DimensionMismatchError(CollectionMismatchError, FaissIndexError, ValueError):
    """Vectors whose dimension differs from the collection's."""


class ModelMismatchError(CollectionMismatchError, FaissIndexError):
    """The collection was built with another model."""


def _faiss():
    return require("faiss", "faiss")


def _inner(index):
    """The index doing the search under ID maps and pre-transforms (an ``IndexIVF`` if there is one)."""
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    while hasattr(index, "index"):
        index = faiss.downcast_index(index.index)
    return index


def _json_path(key: str) -> str:
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"bad filter key {key!r}")
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in key.split("."))


def filter_sql(filter: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """SQL ``WHERE`` clause for a payload filter: ``{key: value}`` equality, a list value = any of;
    dotted keys reach nested fields; a payload array matches if any element does (as in Qdrant)."""
    if not filter:
        return "1", []
    clauses, args = [], []
    for key, value in filter.items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        # the same rule as Qdrant's match filter, so a filter valid here is valid on every backend
        if not values or any(not isinstance(v, (str, int, bool)) for v in values):
            raise ValueError(f"filter {key!r}: values must be str, int or bool (or a non-empty list)")
        path, marks = _json_path(key), ",".join("?" * len(values))
        clauses.append(
            f"(json_extract(payload, ?) IN ({marks}) OR (json_type(payload, ?) = 'array' AND EXISTS "
            f"(SELECT 1 FROM json_each(payload, ?) WHERE value IN ({marks}))))"
        )
        args += [path, *values, path, path, *values]
    return " AND ".join(clauses), args


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
                                      "--backend faiss, or check --path/--collection)")
    return FaissBackend(location, meta=meta, recreate=recreate, threads=threads, index_factory=index_factory)


class FaissBackend(BackendBase):
    """Dense vectors in FAISS + payloads in SQLite, implementing :class:`~.base.Backend`.

    >>> be = FaissBackend(".csr-adapter/faiss/docs", meta=CollectionMeta(model_id, h, k, d=384))
    >>> be.upsert([Point(id, payload, dense=vector)]); be.search(query_vector, top_k=5)
    """

    name = "faiss"
    needs_dense = True  # ingest passes the backbone vectors
    capabilities = frozenset({"dense", "score_ids", "filters", "scroll", "retrieve", "batch"})

    def __init__(
        self, path: str | os.PathLike | None, meta: CollectionMeta | None = None, index_factory: str = "Flat",
        normalize: bool = True, threads: int | None = None, blas_threshold: int | None = DEFAULT_BLAS_THRESHOLD,
        recreate: bool = False,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self.index_factory = index_factory
        self.normalize = normalize
        self.threads = threads
        self.blas_threshold = blas_threshold
        self._lock = threading.RLock()
        self._index = None
        self._stale = False
        self._dirty = False
        if recreate and self.path is not None:
            for name in (INDEX_FILE, INDEX_FILE + ".gen", STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
                (self.path / name).unlink(missing_ok=True)
        self._db = self._open_store()
        self.meta = self._check_meta(meta)

    # -- store -------------------------------------------------------------------------------------
    def _open_store(self) -> sqlite3.Connection:
        if self.path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._create_tables(db)
            return db
        file = self.path / STORE_FILE
        if not file.exists() and (self.path / INDEX_FILE).exists():
            raise FaissIndexError(
                f"{file}: payload store missing next to {INDEX_FILE}; the index cannot be used without it "
                "(delete the directory and re-ingest, or pass recreate=True)"
            )
        try:
            make_private_dir(self.path)
            db = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._create_tables(db)
        except sqlite3.DatabaseError as exc:
            raise FaissIndexError(f"{file}: not a readable payload store, or not writable here ({exc})") from None
        except OSError as exc:
            raise FaissIndexError(f"{self.path}: cannot create the FAISS collection ({exc})") from None
        return db

    @staticmethod
    def _create_tables(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS points (iid INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT UNIQUE NOT NULL, payload TEXT NOT NULL, vector BLOB NOT NULL)"
        )

    def _get_meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, **values: Any) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def _check_meta(self, meta: CollectionMeta | None) -> CollectionMeta | None:
        stored = self._get_meta()
        if "d" not in stored:  # new: record what we know now (d may come with the first upsert)
            if meta is not None:
                self._set_meta(**{k: v for k, v in meta.to_dict().items() if v is not None and k != "idf"},
                               index_factory=self.index_factory, normalize=int(self.normalize))
            return meta
        have = CollectionMeta(stored.get("model_id", ""), int(stored.get("h", 0)), int(stored.get("k", 0)),
                              int(stored["d"]))
        self.index_factory = stored.get("index_factory", self.index_factory)
        self.normalize = bool(int(stored.get("normalize", int(self.normalize))))
        if meta is not None:
            if meta.d is not None and meta.d != have.d:
                raise DimensionMismatchError(
                    f"{self.path}: collection holds {have.d}-d vectors, got a {meta.d}-d model "
                    "(use another collection or recreate=True / --recreate)"
                )
            if meta.model_id and have.model_id and meta.model_id != have.model_id:
                raise ModelMismatchError(
                    f"{self.path}: built with model {have.model_id}, not {meta.model_id} "
                    "(use another collection or recreate=True / --recreate)"
                )
        return have

    def _generation(self) -> int:
        return int(self._get_meta().get("generation", 0))

    def _bump(self) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES ('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    @property
    def dim(self) -> int | None:
        return self.meta.d if self.meta is not None else None

    # -- index -------------------------------------------------------------------------------------
    def _new_index(self):
        """IVF indexes keep ids natively (``IndexIDMap`` over IVF renumbers wrongly on remove);
        everything else is wrapped in ``IndexIDMap2``."""
        faiss = _faiss()
        spec = self.index_factory
        if spec.upper().startswith("IDMAP"):
            spec = spec.split(",", 1)[-1]
        try:
            index = faiss.index_factory(self.dim, spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise FaissIndexError(f"bad index_factory {self.index_factory!r}: {str(exc).splitlines()[0]}") from None
        return index if isinstance(_inner(index), faiss.IndexIVF) else faiss.IndexIDMap2(index)

    def _configure_faiss(self, nq: int) -> None:
        faiss = _faiss()
        if self.blas_threshold is not None:
            faiss.cvar.distance_compute_blas_threshold = self.blas_threshold
        from ..runtime import available_cores

        # one query: 1 thread (2 threads were 7x slower on a 2-core box); batches: all cores
        faiss.omp_set_num_threads(1 if nq == 1 else (self.threads or available_cores()))

    def _load(self, fresh: bool = True):
        """The FAISS index, loaded (or rebuilt from the store) on first use.

        ``fresh=False`` (writes) returns a stale index as is: it is rebuilt once, on the next search or flush.
        """
        with self._lock:
            if self._index is not None and (not self._stale or not fresh):
                return self._index
            if self._index is not None:  # stale: untrained, or after a delete the index type cannot do
                return self.rebuild()
            if self.dim is None:
                return None  # nothing ingested yet
            n = self.count()
            file = self.path / INDEX_FILE if self.path is not None else None
            if file is None or not file.exists():
                if n:
                    warnings.warn(f"{file} missing: rebuilding it from {STORE_FILE} ({n} vectors)", stacklevel=3)
                    return self.rebuild()
                self._index = self._tune(self._new_index())
                return self._index
            faiss = _faiss()
            try:
                index = faiss.read_index(str(file))
            except RuntimeError:
                warnings.warn(f"{file} is corrupt: rebuilding it from {STORE_FILE} ({n} vectors)", stacklevel=3)
                return self.rebuild()
            gen_file = file.with_name(INDEX_FILE + ".gen")
            gen = gen_file.read_text().strip() if gen_file.exists() else ""
            if index.d != self.dim or index.ntotal != n or gen != str(self._generation()):
                warnings.warn(
                    f"{file} is out of date with {STORE_FILE} (index {index.ntotal} vectors of dim {index.d}, "
                    f"store {n} of dim {self.dim}): rebuilding it from the store", stacklevel=3,
                )
                return self.rebuild()
            self._index = self._tune(index)
            return index

    def _tune(self, index):
        """Search-time defaults faiss leaves low: IVF ``nprobe`` 1 -> nlist/16 (>= 8)."""
        faiss = _faiss()
        inner = _inner(index)
        if isinstance(inner, faiss.IndexIVF) and inner.nprobe == 1:
            inner.nprobe = min(inner.nlist, max(8, inner.nlist // 16))
        return index

    def rebuild(self):
        """Recreate the FAISS index from the vectors in the store (training it first if needed)."""
        with self._lock:
            index = self._new_index()
            n = self.count()
            if not index.is_trained and n:
                train = np.stack([v for _, v in self._iter_vectors()])
                try:
                    index.train(train)
                except RuntimeError as exc:
                    raise FaissIndexError(
                        f"cannot train index {self.index_factory!r} on {n} vectors "
                        f"({str(exc).splitlines()[0][:200]}); use 'Flat' for small collections"
                    ) from None
            if index.is_trained:
                batch_ids, batch_vecs = [], []
                for iid, vec in self._iter_vectors():
                    batch_ids.append(iid)
                    batch_vecs.append(vec)
                    if len(batch_ids) == 8192:
                        index.add_with_ids(np.stack(batch_vecs), np.asarray(batch_ids, dtype=np.int64))
                        batch_ids, batch_vecs = [], []
                if batch_ids:
                    index.add_with_ids(np.stack(batch_vecs), np.asarray(batch_ids, dtype=np.int64))
            self._index, self._stale, self._dirty = self._tune(index), False, True
            self.flush()
            return index

    def _iter_vectors(self) -> Iterable[tuple[int, np.ndarray]]:
        for iid, blob in self._db.execute("SELECT iid, vector FROM points ORDER BY iid"):
            yield iid, np.frombuffer(blob, dtype=np.float32)

    def flush(self) -> None:
        """Write the index file (atomically) if it changed since the last write."""
        with self._lock:
            if self._index is not None and self._stale:
                self.rebuild()  # writes the file
                return
            if not self._dirty or self._index is None or self.path is None:
                return
            file = self.path / INDEX_FILE
            tmp = file.with_name(INDEX_FILE + ".tmp")
            _faiss().write_index(self._index, str(tmp))
            os.replace(tmp, file)
            file.with_name(INDEX_FILE + ".gen").write_text(str(self._generation()))
            self._dirty = False

    # -- vectors -----------------------------------------------------------------------------------
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
            index = self._load(fresh=False)
            ids = [str(p.id) for p in points]
            old = self._iids(ids)
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO points (id, payload, vector) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                    "SET payload = excluded.payload, vector = excluded.vector",
                    [(i, pl, v.tobytes()) for i, pl, v in zip(ids, payloads, x)],
                )
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            iids = self._iids(ids)
            self._remove_from_index(list(old.values()))
            if index is not None and index.is_trained and not self._stale:
                try:
                    index.add_with_ids(x, np.asarray([iids[i] for i in ids], dtype=np.int64))
                except RuntimeError:  # the store has the points: rebuild the index from it on next use
                    self._stale = True
            else:  # untrained (IVF, PQ): trained on all stored vectors at the next search or flush
                self._stale = True
            self._dirty = True

    def _iids(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 900):
            chunk = list(ids[start:start + 900])
            rows = self._db.execute(
                f"SELECT id, iid FROM points WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            out.update(rows)
        return out

    def _remove_from_index(self, iids: list[int]) -> None:
        if not iids or self._index is None or self._stale:
            return
        try:
            self._index.remove_ids(np.asarray(iids, dtype=np.int64))
        except RuntimeError:  # e.g. HNSW: rebuild from the store on next use
            self._stale = True
        self._dirty = True

    def delete(self, ids: Iterable[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        ids = [str(i) for i in ids]
        with self._lock:
            self._load(fresh=False)
            old = self._iids(ids)
            if not old:
                return
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM points WHERE iid = ?", [(i,) for i in old.values()])
            self._bump()
            self._db.execute("COMMIT")
            self._remove_from_index(list(old.values()))

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

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
            index = self._load()
            if index is None or index.ntotal == 0:
                if self.dim is not None:
                    self._prepare(queries, "queries")
                return [[] for _ in range(len(np.atleast_2d(queries)))]
            q = self._prepare(queries, "queries")
            allowed = self._allowed(filter)
            if allowed is not None and len(allowed) == 0:
                return [[] for _ in q]
            self._configure_faiss(len(q))
            k = min(top_k, index.ntotal)
            scores, iids = index.search(q, k, params=self._params(index, allowed))
            hits = [self._hits(s, i) for s, i in zip(scores, iids)]
            if allowed is not None:  # approximate indexes may miss filtered points: score them exactly
                want = min(top_k, len(allowed))
                for row, qv in enumerate(q):
                    if len(hits[row]) < want:
                        hits[row] = self._exact(qv, allowed, top_k)
            return hits

    def _allowed(self, filter: dict[str, Any] | None) -> np.ndarray | None:
        if not filter:
            return None
        where, args = filter_sql(filter)
        rows = self._db.execute(f"SELECT iid FROM points WHERE {where}", args).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def _params(self, index, allowed: np.ndarray | None):
        if allowed is None:
            return None
        faiss = _faiss()
        inner = _inner(index)
        selector = faiss.IDSelectorBatch(allowed)
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=max(inner.nprobe, min(inner.nlist, 64)))
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(inner.hnsw.efSearch, 64))
        return faiss.SearchParameters(sel=selector)

    def _hits(self, scores: np.ndarray, iids: np.ndarray) -> list[SearchHit]:
        keep = [(float(s), int(i)) for s, i in zip(scores, iids) if i >= 0]
        rows = self._rows([i for _, i in keep])
        return [SearchHit(rows[i][0], s, rows[i][1], served_by="dense") for s, i in keep if i in rows]

    def _rows(self, iids: Sequence[int]) -> dict[int, tuple[str, dict]]:
        out: dict[int, tuple[str, dict]] = {}
        for start in range(0, len(iids), 900):
            chunk = [int(i) for i in iids[start:start + 900]]
            for iid, pid, payload in self._db.execute(
                f"SELECT iid, id, payload FROM points WHERE iid IN ({','.join('?' * len(chunk))})", chunk
            ):
                out[iid] = (pid, json.loads(payload))
        return out

    def _exact(self, q: np.ndarray, iids: np.ndarray, top_k: int) -> list[SearchHit]:
        scored = []
        for start in range(0, len(iids), 900):
            chunk = [int(i) for i in iids[start:start + 900]]
            for iid, pid, payload, blob in self._db.execute(
                f"SELECT iid, id, payload, vector FROM points WHERE iid IN ({','.join('?' * len(chunk))})", chunk
            ):
                scored.append((float(np.dot(np.frombuffer(blob, np.float32), q)), iid, pid, payload))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [SearchHit(pid, s, json.loads(pl), served_by="dense") for s, _, pid, pl in scored[:top_k]]

    # -- extras used by the fallback policy and the LangChain store ------------------------------------
    def score_ids(self, query: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Exact cosine of ``query`` with the stored vectors of ``ids`` (ids not stored are absent)."""
        q = self._prepare(query, "query")[0]
        out: dict[str, float] = {}
        ids = [str(i) for i in ids]
        with self._lock:
            for start in range(0, len(ids), 900):
                chunk = ids[start:start + 900]
                for pid, blob in self._db.execute(
                    f"SELECT id, vector FROM points WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ):
                    out[pid] = float(np.dot(np.frombuffer(blob, np.float32), q))
        return out

    def get(self, ids: Sequence[str]) -> list[Point]:
        """Stored points for ``ids``, in the given order; unknown ids are skipped."""
        ids = [str(i) for i in ids]
        found: dict[str, Point] = {}
        with self._lock:
            for start in range(0, len(ids), 900):
                chunk = ids[start:start + 900]
                for pid, payload, blob in self._db.execute(
                    f"SELECT id, payload, vector FROM points WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ):
                    found[pid] = Point(pid, json.loads(payload), dense=np.frombuffer(blob, np.float32).copy())
        return [found[i] for i in ids if i in found]

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Stored points for ``ids`` (as the Qdrant backends name it); vectors only if asked."""
        points = self.get(ids)
        if not with_vectors:
            for p in points:
                p.dense = None
        return points

    def scroll(self, fields: Sequence[str] | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
        """Every stored ``(id, payload)``, payload cut to ``fields`` (all when None), in insertion order."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT iid, id, payload FROM points WHERE iid > ? ORDER BY iid LIMIT 2048", (last,)
                ).fetchall()
            if not rows:
                return
            for _, pid, payload in rows:
                data = json.loads(payload)
                yield pid, data if fields is None else {f: data[f] for f in fields if f in data}
            last = rows[-1][0]

    def ids(self) -> list[str]:
        """All point ids, in insertion order."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM points ORDER BY iid")]

    def info(self) -> dict[str, Any]:
        index = self._index
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
                self._index = None
                self._db.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.path else None
        return f"FaissBackend({where!r}, index_factory={self.index_factory!r}, count={self.count()})"
