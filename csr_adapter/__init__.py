"""csr-adapter: ultra-sparse CSRv2 text embeddings for Qdrant, FAISS and LangChain."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["CSRConfig", "CSREncoder", "Collection", "SparseEmbedding", "SparseEmbeddings", "__version__",
           "open_collection"]

if TYPE_CHECKING:  # pragma: no cover
    from .collection import Collection, open_collection
    from .config import CSRConfig
    from .encoder import CSREncoder
    from .sparse import SparseEmbedding, SparseEmbeddings

_LAZY = {"CSREncoder": ".encoder", "CSRConfig": ".config", "SparseEmbedding": ".sparse",
         "SparseEmbeddings": ".sparse", "Collection": ".collection", "open_collection": ".collection"}


def __getattr__(name: str):
    """Import heavy modules (torch, transformers) only when their names are first used."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'csr_adapter' has no attribute {name!r}")
