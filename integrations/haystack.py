"""Haystack integration (extra ``haystack``): components that attach CSR codes as Haystack
``SparseEmbedding``s, for any sparse retriever (e.g. qdrant-haystack's ``QdrantSparseEmbeddingRetriever``).

>>> store = QdrantDocumentStore(":memory:", use_sparse_embeddings=True)
>>> store.write_documents(CSRSparseDocumentEmbedder().run(documents)["documents"])
>>> query = Pipeline()
>>> query.add_component("embed", CSRSparseTextEmbedder())
>>> query.add_component("retrieve", QdrantSparseEmbeddingRetriever(document_store=store))
>>> query.connect("embed.sparse_embedding", "retrieve.query_sparse_embedding")
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import require

require("haystack", "haystack")

from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402
from haystack.dataclasses import SparseEmbedding  # noqa: E402

from ..filters import check_filter  # noqa: E402
from ..sparse import SparseEmbedding as CSRCode  # noqa: E402
from .base import check_top_k  # noqa: E402
from .encoders import load_encoder  # noqa: E402


def to_haystack(row: CSRCode) -> SparseEmbedding:
    """A Haystack ``SparseEmbedding`` holding one code's entries as they are (any length, any sign)."""
    return SparseEmbedding(indices=row.indices.tolist(), values=row.values.astype(float).tolist())


class _CSRComponent:
    """Shared settings: the model (a directory, or the shipped default), its k, device and batch size."""

    def __init__(self, model: str | None = None, *, k: int | None = None, device: str = "auto",
                 batch_size: int = 32, encoder=None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = None if model is None else str(model)
        self.k, self.device, self.batch_size = k, device, batch_size
        self.encoder = encoder  # a loaded CSREncoder to use as is (not serialised: pass model= for pipelines)
        self._given = encoder is not None

    def warm_up(self) -> None:
        """Load the model (shared with other csr-adapter components of the same model and device)."""
        if self.encoder is None:
            self.encoder = load_encoder(self.model, self.device)

    def _settings(self) -> dict[str, Any]:
        if self._given:
            raise ValueError(f"{type(self).__name__} built from encoder= cannot be serialised: pass model=DIR")
        return {"model": self.model, "k": self.k, "device": self.device, "batch_size": self.batch_size}


@component
class CSRSparseTextEmbedder(_CSRComponent):
    """Embed one query text into a CSR code (the model's query prefix and query coding).

    Output ``sparse_embedding``: a ``haystack.dataclasses.SparseEmbedding``.
    """

    @component.output_types(sparse_embedding=SparseEmbedding)
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"CSRSparseTextEmbedder takes one str (use CSRSparseDocumentEmbedder for Documents), "
                            f"got {type(text).__name__}")
        self.warm_up()
        return {"sparse_embedding": to_haystack(self.encoder.encode_query([text], k=self.k)[0])}

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, **self._settings())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSRSparseTextEmbedder:
        return default_from_dict(cls, data)


@component
class CSRSparseDocumentEmbedder(_CSRComponent):
    """Attach a CSR code to each ``Document`` as ``sparse_embedding`` (the model's document prefix).

    ``meta_fields_to_embed`` are joined before the content with ``embedding_separator``, as Haystack's
    own embedders do. Returns new ``Document``s; the inputs are not modified.
    """

    def __init__(self, model: str | None = None, *, k: int | None = None, device: str = "auto",
                 batch_size: int = 32, meta_fields_to_embed: list[str] | None = None,
                 embedding_separator: str = "\n", progress_bar: bool = False, encoder=None) -> None:
        _CSRComponent.__init__(self, model, k=k, device=device, batch_size=batch_size, encoder=encoder)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.progress_bar = progress_bar

    def _text(self, doc: Document) -> str:
        meta = [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key) is not None]
        return self.embedding_separator.join([*meta, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
            raise TypeError("CSRSparseDocumentEmbedder takes a list of Documents (use CSRSparseTextEmbedder for a str)")
        self.warm_up()
        if not documents:
            return {"documents": []}
        codes = self.encoder.encode_document([self._text(d) for d in documents], k=self.k,
                                             batch_size=self.batch_size, show_progress_bar=self.progress_bar)
        return {"documents": [replace(d, sparse_embedding=to_haystack(c)) for d, c in zip(documents, codes)]}

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, **self._settings(), meta_fields_to_embed=self.meta_fields_to_embed,
                               embedding_separator=self.embedding_separator, progress_bar=self.progress_bar)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSRSparseDocumentEmbedder:
        return default_from_dict(cls, data)


@component
class CSRRetriever:
    """``Document`` s from an ingested csr-adapter collection through its :class:`~csr_adapter.retrieval.Searcher`
    (the collection's own model; codes fused with BM25 where the collection has a lexical vector).

    Each ``Document`` carries the hit's ``score`` and ``meta`` = the stored payload (minus the text) plus
    ``served_by``. ``top_k`` and ``filters`` (csr-adapter equality filters, ``{"source": "a.txt"}``) can be set
    here or per ``run``. Close it when done.

    >>> retriever = CSRRetriever.from_collection("docs", path="store/")
    >>> retriever.run("vitamin D and fractures", top_k=3)["documents"]
    """

    def __init__(self, searcher, *, top_k: int = 10, filters: dict[str, Any] | None = None) -> None:
        self.searcher, self.top_k, self.filters = searcher, check_top_k(top_k), check_filter(filters)

    @classmethod
    def from_collection(cls, collection: str = "csr", *, backend: str = "qdrant", path: str | None = None,
                        url: str | None = None, api_key: str | None = None, fallback: bool = True,
                        device: str = "auto", mode: str | None = None, **kwargs: Any) -> CSRRetriever:
        from ..collection import Collection

        col = Collection(collection, backend=backend, path=path, url=url, api_key=api_key, device=device)
        return cls(col.searcher(fallback, mode=mode), **kwargs)

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        hits = self.searcher.search(query, top_k=top_k or self.top_k,
                                    filter=filters if filters is not None else self.filters)
        docs = []
        for hit in hits:
            meta = dict(hit.payload)
            text = meta.pop("text", "")
            docs.append(Document(id=hit.id, content=str(text), meta={**meta, "served_by": hit.served_by},
                                 score=hit.score))
        return {"documents": docs}

    def close(self) -> None:
        self.searcher.close()
