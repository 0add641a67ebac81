"""LangChain integration: the langchain-tests standard suites plus langchain-qdrant interop."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

pytest.importorskip("langchain_tests")
qdrant_edge = pytest.importorskip("csr_adapter.integrations.qdrant_edge")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from csr_adapter.integrations import langchain as lc  # noqa: E402
from csr_adapter.integrations.base import CollectionMeta, Point  # noqa: E402
from csr_adapter.integrations.faiss import FaissBackend  # noqa: E402
from csr_adapter.integrations.fallback import WithFallback  # noqa: E402
from csr_adapter.retrieval import Searcher as FallbackSearcher  # noqa: E402

STATE: dict = {}


# the suites build objects from params: they reuse the session's model instead of reloading (conftest.py)
pytestmark = pytest.mark.usefixtures("shared_integration_encoder")


@pytest.fixture(scope="module")
def corpus(encoder, scifact_slice, scifact_dense, tmp_path_factory):
    """The SciFact slice in a Qdrant Edge shard (k=8) + FAISS fallback, written through WithFallback."""
    doc_ids, texts = zip(*scifact_slice["docs"].items())
    dense = scifact_dense
    codes = encoder.sparsify(dense, k=8)
    root = tmp_path_factory.mktemp("lc")
    sparse = qdrant_edge.EdgeBackend(root / "q", meta=CollectionMeta(encoder.model_id, encoder.h, 8))
    fallback = FaissBackend(root / "f", meta=CollectionMeta(encoder.model_id, encoder.h, 8, encoder.d))
    WithFallback(sparse, fallback).upsert([
        Point(str(uuid.uuid5(uuid.NAMESPACE_URL, d)), {"text": t, "source": f"{d}.txt", "chunk": 0}, codes[i], dense[i])
        for i, (d, t) in enumerate(zip(doc_ids, texts))])
    STATE["searcher"] = FallbackSearcher(encoder, sparse, fallback)
    yield {"texts": list(texts), "doc_ids": list(doc_ids), "queries": list(scifact_slice["queries"].values())}
    sparse.close()
    fallback.close()


class TestCSREmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self):
        return lc.CSREmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"device": "cpu"}


class TestCSREmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self):
        return lc.CSREmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"device": "cpu", "output": "decoded"}


class TestCSRRetriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _corpus(self, corpus):
        return corpus

    @property
    def retriever_constructor(self):
        return lc.CSRRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"searcher": STATE["searcher"], "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "Vitamin D deficiency and bone fractures"


class TestCSRVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        store = lc.CSRVectorStore(self.get_embeddings())  # in-memory FAISS, any Embeddings
        yield store


class TestCSRVectorStoreOnDisk(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path):
        store = lc.CSRVectorStore(self.get_embeddings(), path=str(tmp_path / "store"))
        yield store
        store.dense.close()

    @property
    def has_async(self) -> bool:
        return False  # same code path as the in-memory store; keep the suite short


def test_retriever_metadata_filters_and_fallback(corpus):
    retriever = lc.CSRRetriever(searcher=STATE["searcher"], k=5)
    docs = retriever.invoke(corpus["queries"][0])
    assert len(docs) == 5 and all(isinstance(d, Document) and d.id for d in docs)
    for d in docs:
        assert {"source", "chunk", "score", "served_by", "id"} <= set(d.metadata) and d.page_content
        assert d.metadata["served_by"] in ("sparse", "dense")
    src = [f"{x}.txt" for x in corpus["doc_ids"][:2]]
    docs = retriever.invoke(corpus["queries"][0], k=7, filter={"source": src})
    assert 1 <= len(docs) <= 2 and all(d.metadata["source"] in src for d in docs)
    empty = retriever.invoke("")  # empty code: served by the dense fallback, never empty
    assert len(empty) == 5 and {d.metadata["served_by"] for d in empty} == {"dense"}


async def test_retriever_async(corpus):
    docs = await lc.CSRRetriever(searcher=STATE["searcher"], k=3).ainvoke(corpus["queries"][1])
    assert len(docs) == 3


async def test_retriever_async_takes_per_call_arguments(corpus):
    """``ainvoke(q, k=..., filter=...)`` as the sync path (it raised TypeError: issue 28)."""
    retriever = lc.CSRRetriever(searcher=STATE["searcher"], k=5)
    src = [f"{d}.txt" for d in corpus["doc_ids"][:2]]
    sync = retriever.invoke(corpus["queries"][0], k=7, filter={"source": src})
    docs = await retriever.ainvoke(corpus["queries"][0], k=7, filter={"source": src})
    assert [d.id for d in docs] == [d.id for d in sync] and 1 <= len(docs) <= 2
    assert len(await retriever.ainvoke(corpus["queries"][1], k=2)) == 2


def test_embeddings_shapes(encoder):
    backbone = lc.CSREmbeddings(encoder=encoder)
    decoded = lc.CSREmbeddings(encoder=encoder, output="decoded", k=8)
    texts = ["Aspirin reduces the risk of heart attack.", "Graphene conducts electricity."]
    a, b = np.asarray(backbone.embed_documents(texts)), np.asarray(decoded.embed_documents(texts))
    assert a.shape == b.shape == (2, encoder.d)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4) and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-4)
    assert backbone.embed_documents([]) == []
    with pytest.raises(ValueError, match="output"):
        lc.CSREmbeddings(encoder=encoder, output="tokens")


@pytest.mark.parametrize("mode", ["SPARSE", "HYBRID"])
def test_sparse_embeddings_in_langchain_qdrant(encoder, small_docs, mode):
    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from qdrant_client import models

    sparse = lc.CSRSparseEmbeddings(encoder=encoder, k=8)
    vec = sparse.embed_query("bone fractures")
    assert vec.indices == sorted(set(vec.indices)) and 0 < len(vec.indices) <= max(8, encoder.config.query_k or 8)
    texts = [t[:400] for t in small_docs.values()][:12]  # the point is the interop: 12 real docs will do
    metas = [{"source": f"{d}.txt"} for d in small_docs][:12]
    dense = lc.CSREmbeddings(encoder=encoder) if mode == "HYBRID" else None
    store = QdrantVectorStore.from_texts(
        texts, embedding=dense, metadatas=metas, location=":memory:", collection_name=f"csr-{mode}",
        sparse_embedding=sparse, retrieval_mode=getattr(RetrievalMode, mode),
    )
    hits = store.similarity_search(texts[3][:200], k=3)
    assert hits[0].page_content == texts[3]
    match = models.MatchValue(value=metas[7]["source"])
    only = models.Filter(must=[models.FieldCondition(key="metadata.source", match=match)])
    hits = store.similarity_search(texts[7][:200], k=3, filter=only)
    assert [h.metadata["source"] for h in hits] == [metas[7]["source"]]


def test_csr_vector_store_sparse_first_with_fallback(encoder, tmp_path):
    emb, sp = lc.CSREmbeddings(encoder=encoder), lc.CSRSparseEmbeddings(encoder=encoder, k=8)
    sparse = qdrant_edge.EdgeBackend(tmp_path / "q", meta=CollectionMeta(encoder.model_id, encoder.h, 8))
    store = lc.CSRVectorStore(emb, path=str(tmp_path / "f"), sparse=sparse, sparse_embedding=sp)
    texts = ["Vitamin D supplements and fracture risk in older adults.", "Graphene transistors at room temperature.",
             "Statins lower LDL cholesterol.", ""]
    ids = store.add_texts(texts, [{"n": i} for i in range(4)], ids=[str(uuid.uuid4()) for _ in texts])
    assert sparse.count() == store.dense.count() == 4
    top = store.similarity_search_with_score("does vitamin D prevent fractures", k=2)
    assert top[0][0].page_content == texts[0] and top[0][0].id == ids[0] and len(top) == 2
    assert store.similarity_search("cholesterol drugs", k=1, filter={"n": 2})[0].metadata == {"n": 2}
    store.delete([ids[0]])
    assert sparse.count() == store.dense.count() == 3
    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert len(retriever.invoke("graphene")) == 2
    sparse.close()
    with pytest.raises(ValueError, match="sparse_embedding"):
        lc.CSRVectorStore(emb, sparse=sparse)


def test_csr_vector_store_rescores_sparse_hits_like_search(encoder, tmp_path):
    """The shipped default re-scores its best code matches (``rescore_depth``); the store's sparse hits carry
    the cosine of the query's backbone vector and each decoded stored code, as ``csr-adapter search`` does."""
    assert encoder.config.rescore_depth > 0
    emb, sp = lc.CSREmbeddings(encoder=encoder), lc.CSRSparseEmbeddings(encoder=encoder, k=8)
    sparse = qdrant_edge.EdgeBackend(tmp_path / "q", meta=CollectionMeta(encoder.model_id, encoder.h, 8))
    store = lc.CSRVectorStore(emb, path=str(tmp_path / "f"), sparse=sparse, sparse_embedding=sp)
    texts = ["Vitamin D supplements and fracture risk in older adults.", "Bone density after calcium intake.",
             "Hip fractures in elderly women.", "Statins lower LDL cholesterol.", "Graphene transistors."]
    ids = store.add_texts(texts, ids=[str(uuid.uuid4()) for _ in texts])
    query = "does vitamin D prevent fractures"
    [(doc, score)] = store.similarity_search_with_score(query, k=1)
    q = encoder.encode_dense([query], prefix=encoder.config.query_prefix)[0]
    stored = {p.id: p.sparse for p in sparse.retrieve(ids, with_vectors=True)}
    expected = encoder.rescore(q, [stored[i] for i in ids])
    assert doc.id == ids[int(np.argmax(expected))]
    assert score == pytest.approx(float(expected.max()), abs=1e-5)
    store.searcher.close()


def test_rag_example_runs_offline(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "rag_langchain.py"
    spec = importlib.util.spec_from_file_location("rag_langchain", path)
    rag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rag)
    retriever, index = rag.build_index(tmp_path, limit=6)
    try:
        chain = ({"context": retriever | rag.format_docs, "question": lambda q: q} | rag.PROMPT
                 | rag.ExtractiveChatModel() | rag.StrOutputParser())
        answer = chain.invoke("What does vitamin D do?")
        assert isinstance(answer, str) and answer
        docs = retriever.invoke("qwerty zxcvb")  # nonsense still gets an answer set (dense fallback)
        assert len(docs) == 4 and "dense" in {d.metadata["served_by"] for d in docs}
    finally:
        index.close()


def test_readme_swap_in_snippet_runs(readme_snippets, small_docs):
    """The README's first LangChain snippet: CSR codes as langchain-qdrant's sparse side, hybrid, in memory."""
    (snippet,) = [s for s in readme_snippets("LangChain") if "QdrantVectorStore.from_texts" in s]
    texts = [t[:400] for t in small_docs.values()][:12]
    namespace = {"texts": texts}
    exec(snippet, namespace)
    assert namespace["store"].similarity_search(texts[3][:200], k=3)[0].page_content == texts[3]


def test_hybrid_store_runs_the_backbone_once_per_text(encoder, small_docs):
    """langchain-qdrant HYBRID asks the dense and the sparse embedding for the same texts: the backbone runs once
    per text, not twice (issue 28 item 6), and the codes equal the encoder's own."""
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    from csr_adapter.integrations.encoders import RECENT

    texts = [f"{t[:300]} (hybrid {i})" for i, t in enumerate(small_docs.values())][:20]  # new to the memo
    sparse, dense = lc.CSRSparseEmbeddings(encoder=encoder, k=8), lc.CSREmbeddings(encoder=encoder)
    before = RECENT.passes
    QdrantVectorStore.from_texts(texts, embedding=dense, location=":memory:", collection_name="once",
                                 sparse_embedding=sparse, retrieval_mode=RetrievalMode.HYBRID)
    assert RECENT.passes - before == len(texts)
    got = sparse.embed_documents(texts[:3])
    want = encoder.encode_document(texts[:3], k=8)
    assert [g.indices for g in got] == [w.indices.tolist() for w in want]
