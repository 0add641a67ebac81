"""LlamaIndex integration on real parts: llama-index-vector-stores-qdrant over qdrant-client ``:memory:``,
and the retriever over a real ingested csr-adapter collection (Qdrant Edge + FAISS fallback)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.vector_stores.qdrant")
pytest.importorskip("qdrant_edge")

from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

from csr_adapter.integrations import llamaindex as li  # noqa: E402
from csr_adapter.sparse import SparseEmbeddings  # noqa: E402

# objects built with no model reuse the session's model (conftest.py)
pytestmark = pytest.mark.usefixtures("shared_integration_encoder")


@pytest.fixture(scope="module")
def docs(small_docs) -> dict[str, str]:
    return small_docs


@pytest.fixture(scope="module")
def hybrid(docs):
    """A LlamaIndex hybrid QdrantVectorStore (dense CSREmbedding + CSR sparse functions) over :memory:."""
    client = QdrantClient(":memory:")
    sparse = li.CSRSparseFunctions()
    store = QdrantVectorStore("docs", client=client, enable_hybrid=True, sparse_doc_fn=sparse.doc_fn,
                              sparse_query_fn=sparse.query_fn)
    nodes = [TextNode(id_=f"00000000-0000-0000-0000-{i:012d}", text=t, metadata={"doc": d},
                      excluded_embed_metadata_keys=["doc"])
             for i, (d, t) in enumerate(docs.items())]
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=li.CSREmbedding())
    return client, store, index


def test_sparse_functions_have_the_callable_shape_the_store_expects(encoder, docs):
    texts = list(docs.values())[:3]
    sparse = li.CSRSparseFunctions(k=16)
    indices, values = sparse.doc_fn(texts)
    codes = encoder.encode_document(texts, k=16)
    assert indices == [r.indices.tolist() for r in codes]
    np.testing.assert_allclose(np.concatenate(values), codes.values, atol=1e-7)
    assert all(type(i) is int for i in indices[0]) and all(type(v) is float for v in values[0])
    q_ind, q_val = li.sparse_query_fn(k=16)(["vitamin D"])
    query = encoder.encode_query(["vitamin D"], k=16)[0]  # queries: up to max(k, query_k) latents
    assert q_ind == [query.indices.tolist()] and len(q_val[0]) == len(query.indices) >= 16
    assert li.sparse_doc_fn()([]) == ([], [])
    with pytest.raises(TypeError, match="list of texts"):
        sparse.query_fn("one str")


def test_rows_pass_through_with_any_sign_and_length(encoder):
    """Query codes may be wider than k and signed (asymmetric query modes): nothing is dropped or clipped."""
    dense = np.zeros((2, encoder.h), np.float32)
    dense[0] = np.where(np.arange(encoder.h) % 3 == 0, -0.5, 0.25)
    dense[1, [3, 7]] = [-1.0, 2.0]
    codes = SparseEmbeddings.from_dense(dense, normalize=False)
    indices, values = li.to_lists(codes)
    assert len(indices[0]) == encoder.h and min(values[0]) == -0.5
    assert indices[1] == [3, 7] and values[1] == [-1.0, 2.0]


def test_hybrid_qdrant_vector_store_stores_and_searches_csr_codes(encoder, docs, hybrid):
    client, store, index = hybrid
    point = client.retrieve("docs", ["00000000-0000-0000-0000-000000000004"], with_vectors=True)[0]
    stored = point.vector[store.sparse_vector_name]
    code = encoder.encode_document([list(docs.values())[4]])[0]
    assert stored.indices == code.indices.tolist()
    np.testing.assert_allclose(stored.values, code.values, atol=1e-6)
    doc_id, text = list(docs.items())[7]
    for mode in ("sparse", "hybrid", "default"):
        nodes = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=3).retrieve(text[:300])
        assert len(nodes) == 3 and nodes[0].node.metadata["doc"] == doc_id, mode
    # sparse scores are the plain dot product of the query code with each stored code
    query = encoder.encode_query([text[:300]])
    nodes = index.as_retriever(vector_store_query_mode="sparse", similarity_top_k=5).retrieve(text[:300])
    stored_codes = encoder.encode_document([docs[n.node.metadata["doc"]] for n in nodes])
    np.testing.assert_allclose([n.score for n in nodes], query.dot(stored_codes)[0], atol=1e-5)


def test_signed_wide_query_codes_reach_qdrant_unfiltered(encoder, docs, hybrid):
    client, _, _ = hybrid
    row = np.where(np.arange(encoder.h) % 2 == 0, -1.0, 0.5).astype(np.float32)
    signed = SparseEmbeddings.from_dense(row[None, :])
    store = QdrantVectorStore("docs", client=client, enable_hybrid=True, sparse_doc_fn=li.sparse_doc_fn(),
                              sparse_query_fn=lambda texts: li.to_lists(signed))
    result = store.query(VectorStoreQuery(query_str="any", mode=VectorStoreQueryMode.SPARSE, similarity_top_k=30))
    assert len(result.ids) == len(docs)  # negative and zero scores come back too
    # every stored code scored (the stored codes are the encoder's: see the test above)
    points = client.retrieve("docs", [f"00000000-0000-0000-0000-{i:012d}" for i in range(len(docs))],
                             with_vectors=True)
    vectors = [p.vector[store.sparse_vector_name] for p in points]
    stored = SparseEmbeddings.from_rows([{"indices": v.indices, "values": v.values} for v in vectors], encoder.h)
    expected = np.sort(signed.dot(stored)[0])[::-1]
    np.testing.assert_allclose(result.similarities, expected, atol=1e-4)
    assert min(result.similarities) < 0


@pytest.fixture(scope="module")
def collection(encoder, docs, scifact_slice, tmp_path_factory):
    """A real csr-adapter collection "docs" under its own CSR_ADAPTER_HOME (the default location): an
    adapted head stored with it, Qdrant Edge + FAISS fallback. The same 30 docs, uncut (several chunks each:
    their chunk vectors are in the run's dense store when test_adapt ran first)."""
    from csr_adapter import open_collection
    from csr_adapter.training.adapt import AdaptConfig

    folder, home = tmp_path_factory.mktemp("li-corpus"), tmp_path_factory.mktemp("li-home")
    for doc_id in docs:
        text = scifact_slice["docs"][doc_id]
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSR_ADAPTER_HOME", str(home))
        col = open_collection("docs", encoder=encoder, device="cpu")
        report = col.ingest(folder, adapt=True, with_fallback=True, progress=False,
                            adapt_config=AdaptConfig(min_steps=10, max_steps=10))
    return str(home), report


def test_retriever_over_a_collection_uses_its_model_and_fallback(encoder, docs, collection, monkeypatch):
    home, report = collection
    monkeypatch.setenv("CSR_ADAPTER_HOME", home)
    retriever = li.CSRRetriever.from_collection("docs", device="cpu", share=encoder, similarity_top_k=3)
    try:
        assert retriever.searcher.encoder.model_id == report.adapt["model_id"] != encoder.model_id
        doc_id, text = list(docs.items())[5]
        nodes = retriever.retrieve(text[:300])
        assert len(nodes) == 3 and nodes[0].node.metadata["source"].endswith(f"{doc_id}.txt")
        assert nodes[0].node.get_content() and nodes[0].score == max(n.score for n in nodes)
        assert {n.node.metadata["served_by"] for n in nodes} <= {"sparse", "dense", "fused"}  # fused: the default
        from llama_index.core.schema import MetadataMode

        prompt = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)  # what an LLM is shown (issue 28)
        source = nodes[0].node.metadata["source"]
        assert source not in prompt and f"file_name: {doc_id}.txt" in prompt and "content_hash" not in prompt
        # asking for every chunk: the sparse codes match few of them, the FAISS fallback fills the rest
        retriever.similarity_top_k = report.points
        nodes = retriever.retrieve("qwerty zxcvb")
        assert len(nodes) == report.points and "dense" in {n.node.metadata["served_by"] for n in nodes}
    finally:
        retriever.close()


async def test_retriever_filters_and_async(encoder, docs, collection, monkeypatch):
    home, _ = collection
    monkeypatch.setenv("CSR_ADAPTER_HOME", home)
    doc_id, text = list(docs.items())[2]
    retriever = li.CSRRetriever.from_collection("docs", device="cpu", share=encoder, similarity_top_k=5)
    try:
        source = (await retriever.aretrieve(text[:300]))[0].node.metadata["source"]
        assert source.endswith(f"{doc_id}.txt")
        retriever.filters = li.to_filter(MetadataFilters(filters=[MetadataFilter(key="source", value=source)]))
        nodes = retriever.retrieve("vitamin D")  # an unrelated query: only that file's chunks may answer
        assert nodes and all(n.node.metadata["source"] == source for n in nodes)
    finally:
        retriever.close()
    assert li.to_filter({"source": "a.txt"}) == {"source": "a.txt"}
    either = MetadataFilters(filters=[MetadataFilter(key="chunk", value=[0, 1], operator=FilterOperator.IN)])
    assert li.to_filter(either) == {"chunk": [0, 1]}


def test_readme_snippets_run(readme_snippets, docs, collection, monkeypatch):
    from llama_index.core import Document

    store_snippet, collection_snippet = readme_snippets("LlamaIndex")
    sparse_doc = ("A sparse code represents a signal with only a few active coefficients: most entries of the "
                  "code vector are zero, as in sparse coding with a learned dictionary.")
    namespace = {"documents": [Document(text=t) for t in [*list(docs.values())[:8], sparse_doc]]}
    exec(store_snippet, namespace)
    assert len(namespace["nodes"]) == 5 and namespace["nodes"][0].node.get_content() == sparse_doc
    monkeypatch.setenv("CSR_ADAPTER_HOME", collection[0])
    exec(collection_snippet, namespace)
    try:
        nodes = namespace["nodes"]
        assert len(nodes) == 5 and nodes[0].node.metadata["served_by"] in ("sparse", "dense", "fused")
    finally:
        namespace["retriever"].close()


@pytest.mark.parametrize("filters, message", [
    (MetadataFilters(filters=[MetadataFilter(key="chunk", value=1, operator=FilterOperator.GT)]), "operator '>'"),
    (MetadataFilters(filters=[MetadataFilter(key="a", value=1), MetadataFilter(key="b", value=2)],
                     condition=FilterCondition.OR), "only AND"),
    ("source=a", "MetadataFilters or a dict"),
])
def test_bad_filters_are_one_line_errors(filters, message):
    with pytest.raises((TypeError, ValueError), match=message) as info:
        li.to_filter(filters)
    assert "\n" not in str(info.value)


def test_missing_collection_is_a_one_line_error(tmp_path):
    from csr_adapter.integrations.base import CollectionNotFoundError

    with pytest.raises(CollectionNotFoundError, match="no collection here") as info:
        li.CSRRetriever.from_collection("nope", path=str(tmp_path), device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(CollectionNotFoundError, match="'nope' does not exist"):
        li.CSRSparseFunctions.from_collection("nope", path=str(tmp_path), device="cpu")
