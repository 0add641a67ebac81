"""Milvus backend (``--backend milvus``), extra ``milvus``: embedded milvus-lite by default, or a Milvus server.

Where the collection lives (first that applies):

- ``uri``/``url`` ``http(s)://HOST:PORT`` (or ``tcp://``, ``unix:``): a Milvus server or cluster through
  ``pymilvus``; token from ``token``/``api_key`` or ``MILVUS_TOKEN``;
- ``uri``/``url`` ``FILE.db``: milvus-lite in that local store;
- ``path`` DIR: milvus-lite in ``DIR/<collection>.db``;
- ``MILVUS_URI`` from the environment (only without ``path``);
- else ``./.csr-adapter/milvus/<collection>.db``.

One collection holds per chunk: ``id`` (VARCHAR primary key, the point id), ``csr`` (SPARSE_FLOAT_VECTOR,
``SPARSE_INVERTED_INDEX``, inner product = cosine of the L2-normalised codes), ``dense`` (FLOAT_VECTOR of
``meta.d``, inner product; only when the collection is hybrid) and ``payload`` (JSON). The
:class:`~.base.CollectionMeta` is a collection property (``csr_adapter.meta``). Consistency is Strong, so an
ingest that resumes sees everything written before. Milvus refuses empty sparse vectors: an empty code is
stored as the sentinel latent ``h`` (outside every query), so it never scores. There is no IDF modifier.

milvus-lite is a pure-Python stand-in (about 1 s per query at 20k points on 2 cores): for development and
tests; production means a Milvus server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..sparse import SparseEmbedding
from .base import (
    DEFAULT_RRF_K,
    BackendBase,
    BackendError,
    CollectionMeta,
    CollectionNotFoundError,
    Point,
    SearchHit,
    UnsupportedError,
    check_collection_name,
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

ID, SPARSE, DENSE, PAYLOAD = "id", "csr", "dense", "payload"
META_PROPERTY = "csr_adapter.meta"
ID_MAX = 512  # VARCHAR length of the primary key (UUIDs take 36)
WRITE_BATCH = 256
SCROLL_PAGE = 1024
_SERVER = re.compile(r"^(https?|tcp)://|^unix:", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_LITE_USERS: dict[str, int] = {}  # milvus-lite store -> open backends in this process
_LITE_LOCK = threading.Lock()


def _pymilvus():
    pm = require("pymilvus", "milvus")
    # our errors carry the engine's message in one line; pymilvus and milvus-lite also log each failed
    # call with a traceback, which a CLI must not print
    for name in ("pymilvus", "milvus_lite"):
        if logging.getLogger(name).level < logging.CRITICAL:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return pm


def default_path(collection: str) -> Path:
    """Where the embedded engine keeps ``collection``: ``./.csr-adapter/milvus/<collection>.db``."""
    return Path(os.environ.get("CSR_ADAPTER_HOME") or ".csr-adapter") / "milvus" / f"{collection}.db"


def check_milvus_name(name: str) -> str:
    """``name`` if it is a valid collection name for Milvus too (letters, digits and '_', not first a digit)."""
    check_collection_name(name)
    if not _NAME.match(name):
        raise BackendError(f"invalid collection name {name!r} for Milvus: use letters, digits and '_' "
                           "(no '-' or '.'), not starting with a digit")
    return name


def filter_expr(filter: dict[str, Any] | None) -> str:
    """A Milvus boolean expression on the JSON payload: ``{key: value}`` equality, a list = any of,
    dotted keys nest, a payload array matches if any element does (as in Qdrant).

    Keys follow :mod:`csr_adapter.filters` (letters, digits, ``_``, ``-``; no quote, bracket or backslash to
    escape in a Milvus JSON path); any other is a one-line ``FilterError`` before Milvus parses anything."""
    clauses = []
    for key, values in filter_terms(filter):
        path = PAYLOAD + "".join(f"[{json.dumps(part, ensure_ascii=False)}]" for part in key.split("."))
        alts = []
        for value in values:
            literal = json.dumps(value, ensure_ascii=False)
            alts.append(f"{path} == {literal} or json_contains({path}, {literal})")
        clauses.append("(" + " or ".join(alts) + ")")
    return " and ".join(clauses)


def open_milvus(
    collection: str, *, path: str | os.PathLike | None = None, uri: str | None = None, url: str | None = None,
    token: str | None = None, api_key: str | None = None, meta: CollectionMeta | None = None,
    recreate: bool = False, create: bool = True, client: Any = None, timeout: float = 10.0, **_ignored: Any,
) -> MilvusBackend:
    """Registry factory for ``--backend milvus`` (see the module docstring for where the collection lives)."""
    check_milvus_name(collection)
    target = uri or url
    if path is not None and (target or client is not None):
        raise BackendError("path and url are exclusive: path is the embedded store, url a server")
    if path is None and not target and client is None:
        target = os.environ.get("MILVUS_URI") or None
    if client is not None or (target and _SERVER.match(str(target))):
        token = token or api_key or os.environ.get("MILVUS_TOKEN") or None
        return MilvusBackend(collection, uri=target, token=token, client=client, meta=meta, recreate=recreate,
                             create=create, timeout=timeout)
    file = Path(target) if target else Path(path) / f"{collection}.db" if path is not None else default_path(collection)
    if file.suffix != ".db":
        raise BackendError(f"{file}: a milvus-lite store is a path ending in .db (or give an http(s):// URL)")
    return MilvusBackend(collection, file=file, meta=meta, recreate=recreate, create=create, timeout=timeout)


class MilvusBackend(BackendBase):
    """A CSR collection in Milvus (implements :class:`~.base.Backend`).

    >>> be = open_milvus("docs", meta=CollectionMeta(enc.model_id, enc.h, 8))  # ./.csr-adapter/milvus/docs.db
    >>> be.upsert([Point(id, payload, sparse=code)]); be.search(query_code, top_k=5)
    """

    name = "milvus"

    def __init__(
        self, collection: str, *, file: str | os.PathLike | None = None, uri: str | None = None,
        token: str | None = None, client: Any = None, meta: CollectionMeta | None = None, recreate: bool = False,
        create: bool = True, timeout: float = 10.0,
    ) -> None:
        pm = _pymilvus()
        self.collection = check_milvus_name(collection)
        self.file = Path(file).expanduser().absolute() if file is not None else None
        self.url = str(self.file) if self.file is not None else uri or "client"
        self.client, self._owns_client, self._lite = client, client is None, None
        if meta is not None and meta.idf:
            raise UnsupportedError("Milvus has no IDF modifier for sparse vectors: ingest without idf=True")
        if self.file is not None and not self.file.exists() and (not create or meta is None):
            raise CollectionNotFoundError(f"{self.file}: no Milvus store here (ingest into it first, "
                                          "or check the path and collection name)")
        if client is None:
            self.client = self._connect(pm, token, timeout)
        try:
            exists = self._call(self.client.has_collection, collection)
            if exists and recreate:
                self._call(self.client.drop_collection, collection)
                exists = False
            if not exists:
                if not create or meta is None:
                    raise CollectionNotFoundError(f"{self._where}: no such collection (ingest into it first)")
                self._create(meta)
            else:
                self._call(self.client.load_collection, collection)
            self.meta = self._read_meta(meta)
        except BaseException:
            self.close()
            raise
        self.capabilities = sparse_capabilities(self.meta) - {"lexical"}  # no engine-side IDF here

    @property
    def _where(self) -> str:
        return f"collection {self.collection!r} at {self.url}"

    def _connect(self, pm: Any, token: str | None, timeout: float) -> Any:
        if self.file is None:
            try:
                return pm.MilvusClient(uri=self.url, token=token or "", timeout=timeout)
            except Exception as exc:
                raise BackendError(f"cannot reach Milvus at {self.url}: {_message(exc)}") from None
        if not self.file.exists():
            make_private_dir(self.file)  # milvus-lite keeps its files in this directory: owner-only, like the others
        try:
            client = pm.MilvusClient(uri=str(self.file), timeout=timeout)
        except Exception as exc:
            msg = _message(exc)
            if "Open local milvus failed" in msg:
                raise BackendError(f"{self.file}: cannot open the milvus-lite store (open in another process, "
                                   "or not a milvus-lite store)") from None
            raise BackendError(f"{self.file}: milvus-lite error: {msg}") from None
        with _LITE_LOCK:
            _LITE_USERS[str(self.file)] = _LITE_USERS.get(str(self.file), 0) + 1
        self._lite = str(self.file)
        return client

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BackendError, ValueError, TypeError):
            raise
        except Exception as exc:  # MilvusException, gRPC errors: one line
            msg = _message(exc)
            if any(s in msg.lower() for s in ("fail connecting", "unavailable", "deadline", "connection refused")):
                raise BackendError(f"cannot reach Milvus at {self.url}: {msg}") from None
            raise BackendError(f"{self._where}: Milvus error: {msg}") from None

    def _create(self, meta: CollectionMeta) -> None:
        pm = _pymilvus()
        dt = pm.DataType
        schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID, dt.VARCHAR, is_primary=True, max_length=ID_MAX)
        schema.add_field(SPARSE, dt.SPARSE_FLOAT_VECTOR)
        if meta.d:
            schema.add_field(DENSE, dt.FLOAT_VECTOR, dim=int(meta.d))
        schema.add_field(PAYLOAD, dt.JSON)
        index = self.client.prepare_index_params()
        index.add_index(field_name=SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        if meta.d:
            index.add_index(field_name=DENSE, index_type="AUTOINDEX", metric_type="IP")
        self._call(self.client.create_collection, self.collection, schema=schema, index_params=index,
                   consistency_level="Strong", properties={META_PROPERTY: json.dumps(meta.to_dict())})

    def _read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta:
        described = self._call(self.client.describe_collection, self.collection)
        raw = (described.get("properties") or {}).get(META_PROPERTY)
        if not raw:
            raise BackendError(f"{self._where}: not created by csr-adapter (no {META_PROPERTY!r} property); "
                               "use another collection or recreate=True")
        try:
            stored = CollectionMeta.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise BackendError(f"{self._where}: unreadable collection metadata ({exc})") from None
        return check_meta(stored, wanted, self._where)

    # -- writes ------------------------------------------------------------------------------------
    def _sparse(self, emb: SparseEmbedding | None) -> dict[int, float]:
        """A code as Milvus takes it; empty -> the sentinel latent ``h``, which no query holds."""
        if emb is not None and len(emb):
            idx, val = sorted_unique(emb)
            row = {i: v for i, v in zip(idx, val) if v != 0.0}
            if row:
                return row
        return {int(self.meta.h): 1.0}

    def _row(self, p: Point) -> dict[str, Any]:
        row: dict[str, Any] = {ID: str(p.id), SPARSE: self._sparse(p.sparse), PAYLOAD: p.payload}
        if self.meta.d:
            if p.dense is None:
                raise BackendError(f"{self._where}: point {p.id!r} has no dense vector; this hybrid collection "
                                   "stores one per point")
            vec = np.asarray(p.dense, dtype=np.float32).ravel()
            if len(vec) != self.meta.d:
                raise ValueError(f"point {p.id!r}: dense vector has dim {len(vec)}, collection stores {self.meta.d}")
            row[DENSE] = vec.tolist()
        elif p.dense is not None:
            raise UnsupportedError(f"{self._where}: collection has no dense vector (created without hybrid=True)")
        return row

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id (the last of repeated ids wins)."""
        rows = list({str(p.id): self._row(p) for p in points}.values())
        for start in range(0, len(rows), WRITE_BATCH):
            self._call(self.client.upsert, self.collection, rows[start:start + WRITE_BATCH])

    def delete(self, ids: Iterable[str]) -> None:
        ids = [str(i) for i in ids]
        for start in range(0, len(ids), WRITE_BATCH):
            self._call(self.client.delete, self.collection, ids=ids[start:start + WRITE_BATCH])

    def optimize(self) -> None:
        """Seal the written segments so the server indexes them (after a bulk ingest)."""
        self._call(self.client.flush, self.collection)

    def flush(self) -> None:
        self._call(self.client.flush, self.collection)

    def close(self) -> None:
        """Close the client if this backend made it; the last user of a milvus-lite store stops its engine."""
        client, self.client = self.client, None
        if client is not None and self._owns_client:
            with contextlib.suppress(Exception):  # closing a dead connection is not worth an error
                client.close()
        if self._lite is not None:
            with _LITE_LOCK:
                left = _LITE_USERS.get(self._lite, 1) - 1
                _LITE_USERS[self._lite] = left
                if left <= 0:
                    del _LITE_USERS[self._lite]
            if left <= 0:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._lite)
            self._lite = None

    # -- reads -------------------------------------------------------------------------------------
    def count(self) -> int:
        rows = self._call(self.client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def scroll(self, fields: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored ``(id, payload)`` in id order, payload cut to ``fields`` (all when None)."""
        output = [PAYLOAD] if fields is None or len(fields) else []
        it = self._call(self.client.query_iterator, self.collection, batch_size=SCROLL_PAGE, filter="",
                        output_fields=output)
        try:
            while True:
                rows = self._call(it.next)
                if not rows:
                    return
                for row in rows:
                    payload = dict(row.get(PAYLOAD) or {})
                    yield str(row[ID]), payload if fields is None else {f: payload[f] for f in fields if f in payload}
        finally:
            it.close()

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Stored points for ``ids``, in that order (unknown ids skipped)."""
        ids = [str(i) for i in ids]
        if not ids:
            return []
        output = [PAYLOAD] + ([SPARSE] + ([DENSE] if self.meta.d else []) if with_vectors else [])
        rows = {str(r[ID]): r for r in self._call(self.client.get, self.collection, ids=ids, output_fields=output)}
        return [self._point(rows[i], with_vectors) for i in ids if i in rows]

    def _point(self, row: dict[str, Any], with_vectors: bool) -> Point:
        point = Point(str(row[ID]), dict(row.get(PAYLOAD) or {}))
        if with_vectors:
            pairs = sorted((int(i), float(v)) for i, v in (row.get(SPARSE) or {}).items() if int(i) < self.meta.h)
            point.sparse = SparseEmbedding(np.asarray([i for i, _ in pairs], np.int32),
                                           np.asarray([v for _, v in pairs], np.float32), self.meta.h)
            if DENSE in row and row[DENSE] is not None:
                point.dense = np.asarray(row[DENSE], dtype=np.float32)
        return point

    def _query(self, query: SparseEmbedding | np.ndarray) -> tuple[str, Any]:
        if isinstance(query, SparseEmbedding):
            idx, val = sorted_unique(query)
            return SPARSE, dict(zip(idx, val))
        return DENSE, dense_query(query, self.meta, self._where)

    @staticmethod
    def _hits(rows: Any, served_by: str, positive: bool) -> list[SearchHit]:
        return [SearchHit(str(r["id"]), float(r["distance"]), dict((r.get("entity") or {}).get(PAYLOAD) or {}),
                          served_by) for r in rows if r["distance"] > 0 or not positive]

    def search_batch(
        self, queries: Sequence[SparseEmbedding] | np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        with_payload: bool = True,
    ) -> list[list[SearchHit]]:
        """:meth:`search` for many sparse codes, or an ``(n, d)`` array of dense vectors, in one request."""
        check_top_k(top_k)
        rows = list(np.atleast_2d(queries)) if isinstance(queries, np.ndarray) else list(queries)
        sparse = [isinstance(r, SparseEmbedding) for r in rows]
        if len(set(sparse)) > 1:
            raise TypeError("search_batch takes sparse codes or dense vectors, not both")
        live = [i for i, r in enumerate(rows) if not (sparse[i] and len(r) == 0)]
        out: list[list[SearchHit]] = [[] for _ in rows]
        if not live:
            return out
        expr = filter_expr(filter)
        field = SPARSE if sparse[0] else DENSE
        data = [self._query(rows[i])[1] for i in live]
        res = self._call(self.client.search, self.collection, data=data, anns_field=field, limit=int(top_k),
                         filter=expr, search_params={"metric_type": "IP"},
                         output_fields=[PAYLOAD] if with_payload else [])
        for i, hits in zip(live, res):
            out[i] = self._hits(hits, "sparse" if sparse[0] else "dense", sparse[0])
        return out

    def hybrid_search(
        self, sparse: SparseEmbedding, dense: np.ndarray, top_k: int = 10, filter: dict[str, Any] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchHit]:
        """Sparse and dense candidates fused by Milvus with RRF (``1 / (rrf_k + rank)``, Milvus ranks from 1)."""
        require_capability(self, "hybrid", f"hybrid search in {self._where}")
        check_top_k(top_k)
        pm = _pymilvus()
        expr, limit, params = filter_expr(filter), prefetch_limit(top_k), {"metric_type": "IP"}
        requests = [pm.AnnSearchRequest([self._query(dense)[1]], DENSE, params, limit, expr=expr or None)]
        if len(sparse):
            requests.insert(0, pm.AnnSearchRequest([self._query(sparse)[1]], SPARSE, params, limit, expr=expr or None))
        res = self._call(self.client.hybrid_search, self.collection, requests, ranker=pm.RRFRanker(int(rrf_k)),
                         limit=int(top_k), output_fields=[PAYLOAD])
        return self._hits(res[0], "hybrid", True)

    def info(self) -> dict[str, Any]:
        where = {"path": self.url} if self.file is not None else {"url": self.url}
        return {"engine": self.name, **where, "collection": self.collection, "points": self.count(),
                "meta": self.meta.to_dict()}


def _message(exc: BaseException) -> str:
    """A pymilvus exception's own message (its ``str`` wraps it in ``<MilvusException: (code=..)>``)."""
    message = getattr(exc, "message", None)
    return first_line(Exception(message)) if isinstance(message, str) and message.strip() else first_line(exc)
