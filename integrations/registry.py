"""``open_backend(kind, ...)``: one entry point from a backend name to an open :class:`~.base.Backend`.

Backends register as ``kind -> "module:factory"`` (modules under ``csr_adapter.integrations``) and are
imported only when opened, so ``csr-adapter --help`` and the other backends never pay for them.
A factory takes ``collection`` and keyword options (``path``, ``url``, ``api_key``, ``meta``,
``recreate``, ``create``, ``threads`` ...) and ignores the options it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, BackendError

# kind -> "module:factory"; "qdrant" is embedded Qdrant Edge, or a server when url/client is given
BACKENDS: dict[str, str] = {
    "qdrant": "qdrant:open_qdrant",
    "faiss": "faiss:open_faiss",  # dense-only FAISS collection (``--backend faiss``)
    "milvus": "milvus:open_milvus",  # milvus-lite file by default, a Milvus server with url/uri
}


def register_backend(kind: str, target: str) -> None:
    """Add or replace a backend kind (``target`` = ``"module:factory"`` under this package, or absolute)."""
    if ":" not in target:
        raise ValueError(f"backend target must be 'module:factory', got {target!r}")
    BACKENDS[kind] = target


def backend_kinds() -> list[str]:
    return sorted(BACKENDS)


def open_backend(kind: str, collection: str | None = None, **options: Any) -> Backend:
    """Open backend ``kind`` for ``collection`` (``None``: ``"csr"``); unknown kinds raise :class:`BackendError`."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}: choose one of {', '.join(backend_kinds())}")
    module, attr = BACKENDS[kind].split(":")
    name = module if "." in module and not module.startswith(".") else f"{__package__}.{module.lstrip('.')}"
    factory = getattr(importlib.import_module(name), attr)
    from .qdrant import DEFAULT_COLLECTION

    return factory(DEFAULT_COLLECTION if collection is None else collection, **options)
