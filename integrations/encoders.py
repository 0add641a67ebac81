"""Process-wide shared encoders for the framework integrations (LangChain, LlamaIndex, Haystack).

Loading a model costs seconds and ~100 MB; every framework object built with the same model directory
and device reuses one :class:`~csr_adapter.CSREncoder`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_ENCODERS: dict[tuple[str | None, str], Any] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(model: str | os.PathLike | None = None, device: str = "auto"):
    """A process-wide shared :class:`~csr_adapter.CSREncoder` per (model dir, device)."""
    with _ENCODERS_LOCK:
        key = (None if model is None else str(model), device)
        if key not in _ENCODERS:
            from ..encoder import CSREncoder

            _ENCODERS[key] = CSREncoder.from_pretrained(model, device=device)
        return _ENCODERS[key]


def collection_encoder(collection: str = "csr", *, path: str | None = None, url: str | None = None,
                       api_key: str | None = None, device: str = "auto", client: Any = None):
    """``(encoder, k)``: the model an ingested collection was built with (adapted at ingest) and its k."""
    from ..collection import Collection
    from .base import CollectionNotFoundError

    col = Collection(collection, path=path, url=url, api_key=api_key, device=device, client=client)
    meta = col.meta()
    if meta is None:
        raise CollectionNotFoundError(f"collection {collection!r} does not exist (ingest into it first)")
    return col.encoder, meta.k
