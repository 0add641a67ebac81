"""Server transport: a Qdrant server or cluster through ``qdrant-client`` (``--url``/``--api-key``).

Same layout as the embedded engine (see :mod:`.qdrant_backend`); the :class:`CollectionMeta` lives in the
collection's own ``metadata``. Tested against qdrant-client's in-memory mode (``QdrantClient(":memory:")``,
the same client requests), which scores every point in Python: a test double, not a store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from csr_adapter.errors import require
from csr_adapter.integrations.base import LAYOUTS, BackendError, CollectionMeta, Point, first_line
from csr_adapter.integrations.qdrant_backend import DENSE, LEXICAL, Nearest, QdrantBackend

META_KEY = "csr_adapter"


def _models():
    require("qdrant_client", "qdrant")
    from qdrant_client import models

    return models


class ClientTransport:
    """Collection ``collection`` through a ``QdrantClient`` (a :class:`~.qdrant_backend.Transport`).

    A ``client`` passed in belongs to the caller and is never closed here; else one is made for ``url``.
    """

    name = "qdrant-server"
    write_batch = 256
    scroll_page = 1024

    def __init__(self, collection: str, url: str | None = None, api_key: str | None = None, client: Any = None,
                 timeout: float = 10.0) -> None:
        qc = require("qdrant_client", "qdrant")
        self.collection = collection
        self.url = url or getattr(client, "_location", None) or "client"
        self._owns_client = client is None
        if client is None:
            try:
                client = qc.QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout)),
                                         check_compatibility=False)
            except Exception as exc:
                raise BackendError(f"--url {url}: invalid Qdrant URL ({first_line(exc)})") from None
        self.client = client
        self.where = self.label = f"collection {collection!r} at {self.url}"
        self.missing = f"{self.where}: no such collection (ingest into it first)"

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BackendError, ValueError, TypeError):
            raise
        except Exception as exc:  # network, HTTP and gRPC errors: one line
            msg = first_line(exc)
            if any(s in msg for s in ("Connection refused", "timed out", "Name or service", "Connect", "Errno")):
                raise BackendError(f"cannot reach Qdrant at {self.url}: {msg}") from None
            raise BackendError(f"{self.where}: Qdrant error: {msg}") from None

    # -- lifecycle ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call(self.client.collection_exists, self.collection))

    def remove(self) -> None:
        if self.exists():
            self._call(self.client.delete_collection, self.collection)

    def create(self, meta: CollectionMeta) -> None:
        m = _models()
        sparse = {LAYOUTS[meta.layout].sparse: m.SparseVectorParams(modifier=m.Modifier.IDF if meta.idf else None)}
        if meta.lexical:
            sparse[LEXICAL] = m.SparseVectorParams(modifier=m.Modifier.IDF)
        dense = {DENSE: m.VectorParams(size=meta.d, distance=m.Distance.DOT)} if meta.d else {}
        self._call(self.client.create_collection, self.collection, vectors_config=dense,
                   sparse_vectors_config=sparse, metadata={META_KEY: meta.to_dict()})

    def load(self) -> None:
        """A server collection needs no loading."""

    def read_meta(self, wanted: CollectionMeta | None) -> CollectionMeta:
        info = self._call(self.client.get_collection, self.collection)
        raw = (getattr(info.config, "metadata", None) or {}).get(META_KEY)
        if not raw:
            raise BackendError(f"{self.where}: not created by csr-adapter (no {META_KEY!r} metadata); "
                               "use another --collection or --recreate")
        return CollectionMeta.from_dict(raw)

    def close(self) -> None:
        if not self._owns_client:
            return
        with contextlib.suppress(Exception):  # closing a dead connection is not worth an error
            self.client.close()

    discard = close

    def optimize(self) -> None:
        """The server optimises in the background."""

    def flush(self) -> None:
        """Writes use ``wait=True``: nothing to flush."""

    # -- models ------------------------------------------------------------------------------------
    def point_id(self, id: str) -> str:
        return str(id)

    def sparse(self, indices: list[int], values: list[float]) -> Any:
        return _models().SparseVector(indices=indices, values=values)

    def match(self, key: str, value: Any) -> Any:
        m = _models()
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def filter(self, must: list | None = None, should: list | None = None) -> Any:
        return _models().Filter(must=must, should=should)

    # -- operations --------------------------------------------------------------------------------
    def upsert(self, points: Sequence[Point], vectors: Sequence[dict[str, Any]]) -> None:
        m = _models()
        structs = [m.PointStruct(id=str(p.id), vector=vec, payload=p.payload) for p, vec in zip(points, vectors)]
        self._call(self.client.upsert, self.collection, structs, wait=True)

    def delete(self, ids: Sequence[Any]) -> None:
        selector = _models().PointIdsList(points=list(ids))
        self._call(self.client.delete, self.collection, points_selector=selector, wait=True)

    def count(self) -> int:
        return int(self._call(self.client.count, self.collection, exact=True).count)

    def scroll(self, offset: Any, limit: int, with_payload: Any) -> tuple[list, Any]:
        return self._call(self.client.scroll, self.collection, limit=limit, offset=offset,
                          with_payload=with_payload, with_vectors=False)

    def retrieve(self, ids: Sequence[Any], with_vectors: bool) -> list:
        return self._call(self.client.retrieve, self.collection, list(ids), with_payload=True,
                          with_vectors=with_vectors)

    def query(self, request: Nearest) -> list:
        r = request
        return self._call(self.client.query_points, self.collection, query=r.vector, using=r.using, limit=r.limit,
                          query_filter=r.filter, score_threshold=r.threshold, with_payload=r.with_payload,
                          with_vectors=[r.using] if r.with_vector else False).points

    def query_batch(self, requests: Sequence[Nearest]) -> list[list]:
        return [self.query(r) for r in requests]

    def fuse(self, prefetches: Sequence[Nearest], rrf_k: int, limit: int) -> list:
        m = _models()
        stages = [m.Prefetch(query=p.vector, using=p.using, limit=p.limit, filter=p.filter,
                             score_threshold=p.threshold) for p in prefetches]
        return self._call(self.client.query_points, self.collection, prefetch=stages,
                          query=m.RrfQuery(rrf=m.Rrf(k=rrf_k)), limit=limit, with_payload=True).points

    def location(self) -> dict[str, Any]:
        return {"url": self.url, "collection": self.collection}


class QdrantServerBackend(QdrantBackend):
    """A CSR collection on a Qdrant server (implements :class:`~.base.Backend`).

    >>> be = QdrantServerBackend("docs", url="http://localhost:6333", meta=CollectionMeta(mid, 1536, 8))
    """

    transport: ClientTransport

    def __init__(
        self, collection: str, url: str | None = None, api_key: str | None = None, client: Any = None,
        meta: CollectionMeta | None = None, recreate: bool = False, create: bool = True, timeout: float = 10.0,
    ) -> None:
        transport = ClientTransport(collection, url=url, api_key=api_key, client=client, timeout=timeout)
        super().__init__(transport, meta=meta, recreate=recreate, create=create)

    @property
    def client(self) -> Any:
        return self.transport.client

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def collection(self) -> str:
        return self.transport.collection
