"""Qdrant: one backend (:mod:`.qdrant_backend`), two transports, chosen by :func:`open_qdrant`.

- embedded: Qdrant Edge in-process (:mod:`.qdrant_edge`), a shard directory under ``path``;
- server: a Qdrant server or cluster through qdrant-client (:mod:`.qdrant_server`), given ``url`` or ``client``.

Both keep the same layout and answer the same way (see :mod:`.qdrant_backend`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from csr_adapter.integrations.base import (  # noqa: F401  (check_collection_name, filter_terms: re-exported)
    Backend,
    BackendError,
    CollectionMeta,
    check_collection_name,
    filter_terms,
)
from csr_adapter.integrations.qdrant_backend import QdrantBackend  # noqa: F401  (the one Qdrant backend)

DEFAULT_COLLECTION = "csr"


def default_path(collection: str = DEFAULT_COLLECTION) -> Path:
    """Where the embedded engine keeps ``collection``: ``./.csr-adapter/qdrant/<collection>``."""
    root = os.environ.get("CSR_ADAPTER_HOME") or ".csr-adapter"
    return Path(root) / "qdrant" / collection


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
        from csr_adapter.integrations.qdrant_server import QdrantServerBackend

        api_key = api_key or os.environ.get("QDRANT_API_KEY") or None
        return QdrantServerBackend(collection, url=url, api_key=api_key, client=client, meta=meta,
                                   recreate=recreate, create=create, timeout=timeout, **options)
    from csr_adapter.integrations.qdrant_edge import EdgeBackend

    location = Path(path) / collection if path is not None else default_path(collection)
    return EdgeBackend(location, meta=meta, recreate=recreate, create=create, threads=threads, **options)

