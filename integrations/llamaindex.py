"""LlamaIndex integration (extra ``llamaindex``): CSR codes as the sparse side of LlamaIndex's
``QdrantVectorStore``, a dense embedding over the same backbone, and a retriever over csr-adapter
collections with the sparse -> dense (FAISS) fallback policy.

>>> from llama_index.vector_stores.qdrant import QdrantVectorStore
>>> sparse = CSRSparseFunctions()
>>> store = QdrantVectorStore("docs", client=client, enable_hybrid=True,
...                           sparse_doc_fn=sparse.doc_fn, sparse_query_fn=sparse.query_fn)
>>> index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
...                                         embed_model=CSREmbedding())
>>> retriever = CSRRetriever.from_collection("docs", similarity_top_k=5)   # a collection csr-adapter ingested
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import require

require("llama_index.core", "llamaindex")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilters  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from ..filters import FilterError, check_filter, public_path  # noqa: E402
from ..retrieval import Searcher  # noqa: E402
from ..sparse import SparseEmbeddings  # noqa: E402
from .base import SearchHit  # noqa: E402
from .encoders import RECENT, collection_encoder, load_encoder  # noqa: E402

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]


def to_lists(codes: SparseEmbeddings) -> BatchSparseEncoding:
    """``(indices_list, values_list)``, one entry per row, as LlamaIndex's sparse callables return them.

    Rows pass through as the encoder made them: any length, any sign (query codes may be wider than
    document codes and carry negative weights)."""
    return ([row.indices.tolist() for row in codes], [row.values.astype(float).tolist() for row in codes])


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("sparse functions take a list of texts, got a single str")
    return list(texts)


class CSRSparseFunctions:
    """``sparse_doc_fn`` / ``sparse_query_fn`` for ``llama_index.vector_stores.qdrant.QdrantVectorStore``
    (``enable_hybrid=True``): each takes a list of texts and returns ``(indices_list, values_list)``."""

    def __init__(self, model: str | None = None, *, encoder=None, k: int | None = None, device: str = "auto",
                 batch_size: int = 32) -> None:
        self.encoder = encoder if encoder is not None else load_encoder(model, device)
        self.k, self.batch_size = k, batch_size

    @classmethod
    def from_collection(cls, collection: str = "csr", *, path: str | None = None, url: str | None = None,
                        api_key: str | None = None, device: str = "auto", **kwargs: Any) -> CSRSparseFunctions:
        """The model a csr-adapter collection was built with (adapted at ingest) and its k."""
        encoder, k = collection_encoder(collection, path=path, url=url, api_key=api_key, device=device)
        kwargs.setdefault("k", k)
        return cls(encoder=encoder, **kwargs)

    def doc_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """Document codes (the model's document prefix), one per text."""
        enc = self.encoder
        dense = RECENT.encode(enc, _texts(texts), enc.config.document_prefix, self.batch_size)  # shared with dense
        return to_lists(enc.sparsify(dense, k=self.k))

    def query_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """Query codes (the model's query prefix and query coding), one per text."""
        enc = self.encoder
        dense = RECENT.encode(enc, _texts(texts), enc.config.query_prefix, self.batch_size)
        return to_lists(enc.sparsify(dense, k=self.k, role="query"))


def sparse_doc_fn(model: str | None = None, **kwargs: Any):
    """A ``sparse_doc_fn`` for ``QdrantVectorStore`` (options as :class:`CSRSparseFunctions`)."""
    return CSRSparseFunctions(model, **kwargs).doc_fn


def sparse_query_fn(model: str | None = None, **kwargs: Any):
    """A ``sparse_query_fn`` for ``QdrantVectorStore`` (options as :class:`CSRSparseFunctions`)."""
    return CSRSparseFunctions(model, **kwargs).query_fn


class CSREmbedding(BaseEmbedding):
    """Dense LlamaIndex embedding: the backbone vector behind the CSR code, L2-normalised (the dense side
    of a hybrid store, or the whole of a dense one). Shares the loaded model with the sparse functions."""

    model_name: str = "csr-adapter"
    _encoder: Any = PrivateAttr()

    def __init__(self, model: str | None = None, *, encoder=None, device: str = "auto", embed_batch_size: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(model_name=str(model) if model is not None else "csr-adapter",
                         embed_batch_size=embed_batch_size, **kwargs)
        self._encoder = encoder if encoder is not None else load_encoder(model, device)

    @classmethod
    def class_name(cls) -> str:
        return "CSREmbedding"

    def _embed(self, texts: list[str], prefix: str) -> list[list[float]]:
        if not texts:
            return []
        import numpy as np

        dense = RECENT.encode(self._encoder, list(texts), prefix, self.embed_batch_size)  # shared with the sparse fns
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        return (dense / np.where(norms > 0, norms, 1.0)).astype(float).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], self._encoder.config.query_prefix)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], self._encoder.config.document_prefix)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts), self._encoder.config.document_prefix)


def to_filter(filters: MetadataFilters | dict[str, Any] | None) -> dict[str, Any] | None:
    """csr-adapter's payload filter (``{key: value | [values]}``, all must match) from LlamaIndex
    ``MetadataFilters`` of ``==`` / ``in`` conditions joined by AND (or a csr-adapter filter as is), checked
    against the grammar of :mod:`csr_adapter.filters` (one-line ``FilterError``, a ``ValueError``)."""
    if filters is None or isinstance(filters, dict):
        return check_filter(filters)
    if not isinstance(filters, MetadataFilters):
        raise FilterError(f"filters must be MetadataFilters or a dict, got {type(filters).__name__}")
    if filters.condition not in (None, FilterCondition.AND) and len(filters.filters) > 1:
        raise ValueError(f"filters: only AND is supported, got {filters.condition.value!r}")
    out: dict[str, Any] = {}
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            raise ValueError("filters: nested MetadataFilters are not supported")
        if f.operator not in (FilterOperator.EQ, FilterOperator.IN):
            raise ValueError(f"filters: operator {f.operator.value!r} on {f.key!r} is not supported (use == or in)")
        if f.key in out:
            raise ValueError(f"filters: {f.key!r} appears twice")
        out[f.key] = list(f.value) if f.operator == FilterOperator.IN else f.value
    return check_filter(out or None)


INTERNAL = ["source", "file", "content_hash", "chunk", "n_chunks", "served_by"]  # in metadata, never in a prompt


def hit_to_node(hit: SearchHit, text_key: str = "text") -> NodeWithScore:
    """A ``TextNode`` whose metadata is the payload (minus the text) plus ``served_by``, with the hit's score. What an
    LLM prompt shows of it is the text, ``file_name`` (the source relative to the working directory, as LlamaIndex's
    readers name it) and the document's own metadata: absolute paths and csr-adapter's bookkeeping (:data:`INTERNAL`,
    still in ``metadata`` for filters) stay out of the prompt."""
    payload = dict(hit.payload)
    text = payload.pop(text_key, "")
    if isinstance(payload.get("source"), str):
        file = payload.get("file") if isinstance(payload.get("file"), str) else None
        payload.setdefault("file_name", public_path(payload["source"], os.getcwd(), file))
    node = TextNode(id_=hit.id, text=str(text), metadata={**payload, "served_by": hit.served_by},
                    excluded_embed_metadata_keys=list(INTERNAL), excluded_llm_metadata_keys=list(INTERNAL))
    return NodeWithScore(node=node, score=hit.score)


class CSRRetriever(BaseRetriever):
    """LlamaIndex retriever over csr-adapter collections with the sparse -> dense fallback policy.

    Each ``NodeWithScore`` carries the hit's score and ``node.metadata["served_by"]`` (``sparse``,
    ``dense`` or ``rerank``) plus the stored payload (source, chunk, ...). Close it when done.
    """

    def __init__(self, searcher: Searcher, *, similarity_top_k: int = 4,
                 filters: MetadataFilters | dict[str, Any] | None = None, text_key: str = "text",
                 **kwargs: Any) -> None:
        from .base import check_top_k

        self.searcher = searcher
        self.similarity_top_k = check_top_k(similarity_top_k)
        self.filters = to_filter(filters)
        self.text_key = text_key
        super().__init__(**kwargs)

    @classmethod
    def from_collection(
        cls, collection: str = "csr", *, backend: str = "qdrant", path: str | None = None, url: str | None = None,
        api_key: str | None = None, fallback: bool = True, device: str = "auto", client: Any = None,
        share=None, **kwargs: Any,
    ) -> CSRRetriever:
        """A retriever over an ingested collection, with the collection's own model and its FAISS fallback.

        ``client``: a ``qdrant_client.QdrantClient`` to use instead of ``url``; ``share``: a loaded encoder
        whose backbone the collection's model may reuse."""
        from ..collection import Collection

        col = Collection(collection, backend=backend, path=path, url=url, api_key=api_key, device=device,
                         client=client, share=share)
        return cls(col.searcher(fallback), **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.searcher.search(query_bundle.query_str, top_k=self.similarity_top_k, filter=self.filters)
        return [hit_to_node(h, self.text_key) for h in hits]

    def close(self) -> None:
        self.searcher.close()
