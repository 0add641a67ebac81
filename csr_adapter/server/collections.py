"""Open ingested collections for ``/search``, the way ``csr-adapter search`` does.

Each collection is opened read-only through :class:`~csr_adapter.collection.Collection` (the same rules as
the CLI), checked against the served model, and wrapped in the sparse -> dense
:class:`~csr_adapter.retrieval.Searcher` (with the collection's FAISS fallback
when ``ingest --with-fallback`` wrote one; a dense-only ``--backend faiss`` collection answers dense).
"""

from __future__ import annotations

from collections.abc import Iterable


def open_collection(encoder, name: str, backend: str = "qdrant", path: str | None = None, url: str | None = None,
                    api_key: str | None = None, threads: int | None = None, fallback: bool = True,
                    own_model: bool = False):
    """One collection as a ``Searcher`` (its ``k`` = the collection's k).

    ``own_model``: a collection built with another model (e.g. adapted at ingest) is served with that
    model, loaded from the collection's model store and sharing ``encoder``'s backbone; otherwise a
    model mismatch is refused.
    """
    from ..collection import Collection

    col = Collection(name, backend=backend, path=path, url=url, api_key=api_key, threads=threads,
                     device=str(encoder.device), share=encoder, encoder=None if own_model else encoder)
    return col.searcher(fallback)


def open_collections(encoder, names: Iterable[str], **options) -> dict:
    """``{name: Searcher}`` for each name (all closed again if one fails to open)."""
    opened: dict = {}
    try:
        for name in dict.fromkeys(names):
            opened[name] = open_collection(encoder, name, **options)
    except BaseException:
        for searcher in opened.values():
            searcher.close()
        raise
    return opened


def served_encoder(encoder, searchers: dict, model: str | None = None) -> tuple:
    """``(encoder, name)`` the embeddings routes serve: with no ``--model``, the first collection's own model (an
    adapted head over the shared backbone), so ``/embed_sparse`` codes match the collection ``/search`` answers
    from; else ``encoder`` (the given model, or the shipped default)."""
    if model is None and searchers:
        first, searcher = next(iter(searchers.items()))
        own = getattr(searcher, "encoder", None)
        if own is not None and own is not encoder:
            return own, f"collection {first}: model {own.model_id}"
    return encoder, model or "csr-adapter/default_model"
