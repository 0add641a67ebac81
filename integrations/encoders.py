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


class RecentVectors:
    """The backbone vectors of the texts embedded last, per :func:`~csr_adapter.cache.vector_key` (an LRU of
    ``size`` texts).

    A HYBRID vector store (langchain-qdrant, LlamaIndex) asks the dense and the sparse embedding for the same texts
    one after the other; whichever asks second gets the vectors without running the backbone again."""

    def __init__(self, size: int = 4096) -> None:
        from collections import OrderedDict

        self.size, self._rows, self._lock = size, OrderedDict(), threading.Lock()
        self.passes = 0  # texts the backbone actually ran on (for tests and benchmarks)

    def encode(self, encoder, texts: list[str], prefix: str = "", batch_size: int = 32):
        import numpy as np

        from ..cache import vector_key

        key = vector_key(encoder, prefix)  # what fixes a text's vector (an id() could be reused by another backbone)
        with self._lock:
            found = {i: self._rows[(key, t)] for i, t in enumerate(texts) if (key, t) in self._rows}
            for i in found:
                self._rows.move_to_end((key, texts[i]))
        todo = sorted({t for i, t in enumerate(texts) if i not in found})
        fresh = dict(zip(todo, encoder.encode_dense(todo, batch_size=batch_size, prefix=prefix))) if todo else {}
        with self._lock:
            self.passes += len(todo)
            for text, row in fresh.items():
                self._rows[(key, text)] = row
                self._rows.move_to_end((key, text))
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        out = np.zeros((len(texts), encoder.d), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = found[i] if i in found else fresh[text]
        return out


RECENT = RecentVectors()
