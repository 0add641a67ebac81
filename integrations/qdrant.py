"""Qdrant collection layout shared by the embedded (Qdrant Edge) and server (qdrant-client) backends.

One collection holds, per chunk:

- the named sparse vector ``csr``: the L2-normalised CSRv2 code, scored by dot product (= cosine);
  an optional IDF modifier (off by default: CSR codes are not term counts);
- optionally the named dense vector ``dense``: the backbone embedding (``d`` floats, dot product),
  for ``--hybrid`` search fused with Reciprocal Rank Fusion (``1 / (rrf_k + rank)``, ranks from 0);
- a JSON payload (text, source, chunk index, content hash, user metadata under ``meta``).

The collection records the :class:`~.base.CollectionMeta` it was built with (model id, h, k, dense
dim, IDF); opening it with different values raises :class:`~.base.CollectionMismatchError`.
Sparse hits with score <= 0 are dropped on both paths (the server drops them, local mode does not).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import (  # noqa: F401  (shared rules, re-exported for existing imports)
    DEFAULT_RRF_K,
    Backend,
    BackendError,
    CollectionMeta,
    Point,
    SearchHit,
    check_collection_name,
    check_meta,
    dense_query,
    filter_terms,
    prefetch_limit,
)

SPARSE = "csr"
DENSE = "dense"
DEFAULT_COLLECTION = "csr"
MIN_SCORE = 1e-30  # score_threshold for sparse queries: keeps only hits that share a latent


def default_path(collection: str = DEFAULT_COLLECTION) -> Path:
    """Where the embedded engine keeps ``collection``: ``./.csr-adapter/qdrant/<collection>``."""
    root = os.environ.get("CSR_ADAPTER_HOME") or ".csr-adapter"
    return Path(root) / "qdrant" / collection


def record_to_point(record: Any, h: int) -> Point:
    """A retrieved Qdrant record (Edge or client: ``id``, ``payload``, named ``vector``) as a :class:`Point`."""
    import numpy as np

    from ..sparse import SparseEmbedding

    vec = record.vector if isinstance(record.vector, dict) else {}
    sparse = vec.get(SPARSE)
    code = None if sparse is None else SparseEmbedding(
        np.asarray(sparse.indices, np.int32), np.asarray(sparse.values, np.float32), h)
    dense = np.asarray(vec[DENSE], np.float32) if DENSE in vec else None
    return Point(str(record.id), dict(record.payload or {}), code, dense)


def to_hits(points: Any, served_by: str, positive: bool) -> list[SearchHit]:
    """Scored Qdrant points as :class:`SearchHit` s; ``positive`` drops scores <= 0 (as a server does)."""
    return [SearchHit(str(p.id), float(p.score), dict(p.payload or {}), served_by)
            for p in points if p.score > 0 or not positive]


def open_qdrant(
    collection: str = DEFAULT_COLLECTION, *, path: str | os.PathLike | None = None, url: str | None = None,
    api_key: str | None = None, meta: CollectionMeta | None = None, recreate: bool = False,
    create: bool = True, client: Any = None, threads: int | None = None, timeout: float = 10.0,
    **options: Any,
) -> Backend:
    """Open (or create) ``collection``: on a Qdrant server when ``url``/``client`` is given, else embedded.

    ``path`` is the embedded storage root (the collection lives in ``path/<collection>``); default
    ``./.csr-adapter/qdrant``. Without ``path``, ``QDRANT_URL``/``QDRANT_API_KEY`` from the environment
    select a server. ``meta`` is what the caller will write; ``None`` = read-only use (search).
    """
    check_collection_name(collection)
    if path is not None and (url or client is not None):
        raise BackendError("--path and --url are exclusive: --path is the embedded store, --url a server")
    if path is None:
        url = url or os.environ.get("QDRANT_URL") or None
    if client is not None or url:
        from .qdrant_server import QdrantServerBackend

        api_key = api_key or os.environ.get("QDRANT_API_KEY") or None
        return QdrantServerBackend(collection, url=url, api_key=api_key, client=client, meta=meta,
                                   recreate=recreate, create=create, timeout=timeout, **options)
    from .qdrant_edge import EdgeBackend

    location = Path(path) / collection if path is not None else default_path(collection)
    return EdgeBackend(location, meta=meta, recreate=recreate, create=create, threads=threads, **options)


def chunked(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
