"""LangChain integration (extra ``langchain``): embeddings, a sparse embedding for langchain-qdrant,
a retriever with the dense fallback, and a vector store over csr-adapter's backends.

>>> from langchain_qdrant import QdrantVectorStore, RetrievalMode
>>> store = QdrantVectorStore.from_texts(texts, embedding=None, sparse_embedding=CSRSparseEmbeddings(),
...                                      retrieval_mode=RetrievalMode.SPARSE, location=":memory:")
>>> retriever = CSRRetriever.from_paths(sparse=qdrant_backend, dense=".csr-adapter/faiss/docs", k=5)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import require

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from ..filters import check_filter  # noqa: E402
from ..retrieval import Searcher  # noqa: E402
from ..sparse import SparseEmbedding  # noqa: E402
from .base import Backend, Point, SearchHit  # noqa: E402
from .encoders import _ENCODERS, RECENT, collection_encoder, load_encoder  # noqa: E402, F401
from .fallback import WithFallback  # noqa: E402


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class CSREmbeddings(Embeddings):
    """Dense ``Embeddings``: the backbone vector (``output="backbone"``) or the CSR head's decoded
    reconstruction of the k-sparse code (``output="decoded"``), L2-normalised. Async comes from the base."""

    def __init__(
        self, model: str | None = None, *, encoder=None, output: str = "backbone", k: int | None = None,
        device: str = "auto", batch_size: int = 32,
    ) -> None:
        if output not in ("backbone", "decoded"):
            raise ValueError(f"output must be 'backbone' or 'decoded', got {output!r}")
        self.encoder = encoder if encoder is not None else load_encoder(model, device)
        self.output, self.k, self.batch_size = output, k, batch_size

    def _embed(self, texts: list[str], prefix: str) -> list[list[float]]:
        if not texts:
            return []
        dense = RECENT.encode(self.encoder, texts, prefix, self.batch_size)  # shared with CSRSparseEmbeddings
        if self.output == "decoded":
            dense = self.encoder.decode(self.encoder.sparsify(dense, k=self.k))
        return _normalize(dense).astype(float).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts), self.encoder.config.document_prefix)

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text], self.encoder.config.query_prefix)[0]


def _sparse_base():
    return require("langchain_qdrant", "langchain").SparseEmbeddings


def _sparse_vector(row: SparseEmbedding):
    from langchain_qdrant.sparse_embeddings import SparseVector

    return SparseVector(indices=row.indices.tolist(), values=row.values.astype(float).tolist())


class CSRSparseEmbeddings(_sparse_base()):
    """``langchain_qdrant.SparseEmbeddings`` returning CSR codes (sorted unique indices, unit norm), so
    ``QdrantVectorStore(..., sparse_embedding=CSRSparseEmbeddings(), retrieval_mode=SPARSE|HYBRID)`` works."""

    def __init__(
        self, model: str | None = None, *, encoder=None, k: int | None = None, device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        self.encoder = encoder if encoder is not None else load_encoder(model, device)
        self.k, self.batch_size = k, batch_size

    @classmethod
    def from_collection(cls, collection: str = "csr", *, path: str | None = None, url: str | None = None,
                        api_key: str | None = None, device: str = "auto", client: Any = None,
                        **kwargs: Any) -> CSRSparseEmbeddings:
        """The model a csr-adapter collection was built with (adapted at ingest) and its k (``client``: a
        ``QdrantClient`` to read the collection through instead of ``url``)."""
        encoder, k = collection_encoder(collection, path=path, url=url, api_key=api_key, device=device,
                                        client=client)
        kwargs.setdefault("k", k)
        return cls(encoder=encoder, **kwargs)

    def embed_documents(self, texts: list[str]) -> list:
        dense = RECENT.encode(self.encoder, list(texts), self.encoder.config.document_prefix, self.batch_size)
        return [_sparse_vector(row) for row in self.encoder.sparsify(dense, k=self.k)]

    def embed_query(self, text: str):
        dense = RECENT.encode(self.encoder, [text], self.encoder.config.query_prefix, self.batch_size)
        return _sparse_vector(self.encoder.sparsify(dense, k=self.k, role="query")[0])

    def from_dense(self, dense: np.ndarray) -> list[SparseEmbedding]:
        """Codes for backbone vectors already computed (saves a second backbone pass)."""
        return list(self.encoder.sparsify(np.asarray(dense, dtype=np.float32), k=self.k))


def hit_to_document(hit: SearchHit, text_key: str = "text") -> Document:
    """A ``Document`` whose metadata is the payload (minus the text) plus ``score`` and ``served_by``."""
    payload = dict(hit.payload)
    text = payload.pop(text_key, "")
    return Document(page_content=str(text), id=hit.id,
                    metadata={**payload, "id": hit.id, "score": hit.score, "served_by": hit.served_by})


class CSRRetriever(BaseRetriever):
    """Retriever over csr-adapter backends with the sparse -> dense fallback policy.

    Every ``Document`` carries ``metadata["served_by"]`` (``sparse``, ``dense`` or ``rerank``) and
    ``metadata["score"]``, plus the stored payload (source, chunk, ...). ``k`` and ``filter`` can be
    set on the retriever or per call: ``retriever.invoke(q, k=3, filter={"source": "a.txt"})``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Any
    k: int = 4
    filter: dict[str, Any] | None = None
    text_key: str = "text"

    def __init__(self, **kwargs: Any) -> None:
        check_filter(kwargs.get("filter"))  # one line at construction, not pydantic's report at the first query
        super().__init__(**kwargs)

    @classmethod
    def from_backends(
        cls, sparse: Backend | None = None, dense: Backend | str | None = None, *, encoder=None,
        model: str | None = None, rerank: bool = False, **kwargs: Any,
    ) -> CSRRetriever:
        """Build from backends (``dense`` may be a FAISS collection directory)."""
        if isinstance(dense, str):
            from .faiss import FaissBackend

            dense = FaissBackend(dense)
        encoder = encoder if encoder is not None else load_encoder(model)
        return cls(searcher=Searcher(encoder, sparse, dense, rerank=rerank), **kwargs)

    @classmethod
    def from_collection(
        cls, collection: str = "csr", *, backend: str = "qdrant", path: str | None = None, url: str | None = None,
        api_key: str | None = None, fallback: bool = True, device: str = "auto", **kwargs: Any,
    ) -> CSRRetriever:
        """A retriever over an ingested collection, with the collection's own model and its FAISS fallback."""
        from ..collection import Collection

        col = Collection(collection, backend=backend, path=path, url=url, api_key=api_key, device=device)
        return cls(searcher=col.searcher(fallback), **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None,
        filter: dict[str, Any] | None = None, **kwargs: Any,
    ) -> list[Document]:
        hits = self.searcher.search(query, top_k=k or self.k, filter=filter if filter is not None else self.filter)
        return [hit_to_document(h, self.text_key) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None,
        filter: dict[str, Any] | None = None, **kwargs: Any,
    ) -> list[Document]:
        """``ainvoke(q, k=3, filter={...})``: the sync search in a worker thread, with the same per-call arguments."""
        import asyncio

        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync(),
                                       k=k, filter=filter, **kwargs)


class CSRVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over a dense :class:`~.faiss.FaissBackend` (any ``Embeddings``),
    optionally with a sparse backend + :class:`CSRSparseEmbeddings` served first (fallback policy).

    Payloads are ``{"text": ..., "metadata": {...}}``; ``filter`` keys name metadata fields.
    Ids are any strings (a sparse Qdrant backend needs UUIDs).
    """

    def __init__(
        self, embedding: Embeddings, dense: Backend | None = None, *, path: str | None = None,
        sparse: Backend | None = None, sparse_embedding: CSRSparseEmbeddings | None = None,
        rerank: bool = False,
    ) -> None:
        if dense is None:
            from .faiss import FaissBackend

            dense = FaissBackend(path)
        if sparse is not None and sparse_embedding is None:
            raise ValueError("a sparse backend needs sparse_embedding=CSRSparseEmbeddings(...)")
        self._embedding = embedding
        self.sparse_embedding = sparse_embedding
        self.dense = dense
        self.sparse = sparse
        # with the encoder, sparse hits get the model's code re-scoring (``rescore_depth``), as ``search`` does
        self.searcher = Searcher(sparse_embedding.encoder if sparse is not None else None, sparse, dense,
                                         rerank=rerank)
        hybrid = bool(getattr(getattr(sparse, "meta", None), "d", None))  # sparse side stores dense too
        self._writer = WithFallback(sparse, dense, keep_dense=hybrid) if sparse is not None else dense

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writes ----------------------------------------------------------------------------------
    def _shared_backbone(self) -> bool:
        emb, sp = self._embedding, self.sparse_embedding
        return (isinstance(emb, CSREmbeddings) and emb.output == "backbone" and sp is not None
                and emb.encoder is sp.encoder)

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = list(ids) if ids is not None else [None] * len(texts)
        if not len(texts) == len(metadatas) == len(ids):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas, {len(ids)} ids: lengths differ")
        ids = [str(i) if i is not None else str(uuid.uuid4()) for i in ids]
        if not texts:
            return []
        codes: list[SparseEmbedding | None] = [None] * len(texts)
        if self.sparse is not None and self._shared_backbone():  # one backbone pass for both vectors
            enc = self._embedding.encoder
            raw = enc.encode_dense(texts, batch_size=self._embedding.batch_size, prefix=enc.config.document_prefix)
            dense, codes = _normalize(raw), self.sparse_embedding.from_dense(raw)
        else:
            dense = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
            if self.sparse is not None:
                h = self.sparse_embedding.encoder.h
                codes = [SparseEmbedding(np.asarray(v.indices, np.int32), np.asarray(v.values, np.float32), h)
                         for v in self.sparse_embedding.embed_documents(texts)]
        points = [Point(i, {"text": t, "metadata": dict(m or {})}, sparse=c, dense=d)
                  for i, t, m, c, d in zip(ids, texts, metadatas, codes, dense)]
        self._writer.upsert(points)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        if ids is None:
            raise ValueError("delete needs ids (deleting everything is not supported; use a new path)")
        self._writer.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [Document(page_content=p.payload.get("text", ""), metadata=p.payload.get("metadata", {}), id=p.id)
                for p in self.dense.get(list(ids))]

    # -- reads -----------------------------------------------------------------------------------
    def _query(self, query: str, k: int, filter: dict[str, Any] | None) -> list[SearchHit]:
        where = {f"metadata.{key}": v for key, v in check_filter(filter).items()} if filter else None
        code = backbone = None
        if self.sparse is not None:  # one backbone pass: the code, the re-scoring vector (and the dense query)
            enc = self.sparse_embedding.encoder
            raw = enc.encode_dense([query], batch_size=1, prefix=enc.config.query_prefix)
            code, backbone = enc.sparsify(raw, k=self.sparse_embedding.k, role="query")[0], raw[0]
        if backbone is not None and self._shared_backbone():
            dense = _normalize(backbone[None])[0]
        else:
            dense = np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        return self.searcher.answer_encoded(code, dense, k, where, backbone=backbone).hits

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return [(Document(page_content=h.payload.get("text", ""), metadata=h.payload.get("metadata", {}), id=h.id),
                 h.score) for h in self._query(query, k, filter)]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self):
        return lambda score: (score + 1.0) / 2.0  # cosine in [-1, 1] -> [0, 1]

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
        ids: list[str] | None = None, **kwargs: Any,
    ) -> CSRVectorStore:
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
