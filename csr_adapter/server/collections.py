"""Open ingested collections for ``/search``, the way ``csr-adapter search`` does.

Each collection is opened read-only through :func:`~csr_adapter.integrations.registry.open_backend`,
checked against the served model, and wrapped in the sparse -> dense
:class:`~csr_adapter.integrations.fallback.FallbackSearcher` (with the collection's FAISS fallback
when ``ingest --with-fallback`` wrote one; a dense-only ``--backend faiss`` collection answers dense).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..integrations.base import CollectionMismatchError


def open_collection(encoder, name: str, backend: str = "qdrant", path: str | None = None, url: str | None = None,
                    api_key: str | None = None, threads: int | None = None, fallback: bool = True,
                    own_model: bool = False):
    """One collection as a ``FallbackSearcher`` (its ``k`` = the collection's k).

    ``own_model``: a collection built with another model (e.g. adapted at ingest) is served with that
    model, loaded from the collection's model store and sharing ``encoder``'s backbone; otherwise a
    model mismatch is refused.
    """
    if own_model:
        from ..collection import Collection

        return Collection(name, backend=backend, path=path, url=url, api_key=api_key, threads=threads,
                          device=str(encoder.device), share=encoder).searcher(fallback)
    from ..integrations.fallback import FallbackSearcher, open_fallback
    from ..integrations.registry import open_backend

    if path is not None:
        url = None  # an explicit --path wins over QDRANT_URL, as in `csr-adapter search`
    be = open_backend(backend, name, path=path, url=url, api_key=api_key, create=False, threads=threads)
    try:
        meta = getattr(be, "meta", None)
        if meta is not None and meta.model_id and meta.model_id != encoder.model_id:
            raise CollectionMismatchError(f"collection {name!r} was built with model {meta.model_id}, "
                                          f"this server runs {encoder.model_id}: pass the same --model")
        k = getattr(meta, "k", None)
        if getattr(be, "needs_dense", False):  # dense-only collection
            return FallbackSearcher(encoder, None, be, k=k)
        dense = open_fallback(name, path, threads) if fallback else None
        return FallbackSearcher(encoder, be, dense, k=k)
    except BaseException:
        be.close()
        raise


def open_collections(encoder, names: Iterable[str], **options) -> dict:
    """``{name: FallbackSearcher}`` for each name (all closed again if one fails to open)."""
    opened: dict = {}
    try:
        for name in dict.fromkeys(names):
            opened[name] = open_collection(encoder, name, **options)
    except BaseException:
        for searcher in opened.values():
            searcher.close()
        raise
    return opened
