"""Haystack integration on real parts: the components in real Pipelines with qdrant-haystack's
QdrantDocumentStore(":memory:", use_sparse_embeddings=True) and its sparse retriever."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
pytest.importorskip("haystack_integrations.document_stores.qdrant")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.writers import DocumentWriter  # noqa: E402
from haystack.dataclasses import SparseEmbedding  # noqa: E402
from haystack_integrations.components.retrievers.qdrant import QdrantSparseEmbeddingRetriever  # noqa: E402
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore  # noqa: E402

from csr_adapter.integrations import encoders  # noqa: E402
from csr_adapter.integrations import haystack as hs  # noqa: E402
from csr_adapter.sparse import SparseEmbeddings  # noqa: E402

MODULE = "csr_adapter.integrations.haystack"
K = 32  # codes at k=32 overlap enough on 30 documents for every query to get several hits


# components built with no model reuse the session's model (conftest.py)
pytestmark = pytest.mark.usefixtures("shared_integration_encoder")


@pytest.fixture(scope="module")
def documents(small_docs) -> list[Document]:
    return [Document(id=d, content=t, meta={"doc": d}) for d, t in small_docs.items()]


@pytest.fixture(scope="module")
def store(documents):
    """An indexing Pipeline (CSRSparseDocumentEmbedder -> DocumentWriter) into Qdrant :memory:."""
    store = QdrantDocumentStore(":memory:", use_sparse_embeddings=True, recreate_index=True, progress_bar=False)
    index = Pipeline()
    index.add_component("embed", hs.CSRSparseDocumentEmbedder(k=K, batch_size=8))
    index.add_component("write", DocumentWriter(document_store=store))
    index.connect("embed.documents", "write.documents")
    assert index.run({"embed": {"documents": documents}})["write"]["documents_written"] == len(documents)
    return store


def query_pipeline(store, top_k: int = 5) -> Pipeline:
    query = Pipeline()
    query.add_component("embed", hs.CSRSparseTextEmbedder(k=K))
    query.add_component("retrieve", QdrantSparseEmbeddingRetriever(document_store=store, top_k=top_k))
    query.connect("embed.sparse_embedding", "retrieve.query_sparse_embedding")
    return query


def test_text_embedder_returns_the_query_code(encoder):
    out = hs.CSRSparseTextEmbedder(k=16).run(text="vitamin D and fractures")["sparse_embedding"]
    code = encoder.encode_query(["vitamin D and fractures"], k=16)[0]
    assert isinstance(out, SparseEmbedding) and out.indices == code.indices.tolist()
    np.testing.assert_allclose(out.values, code.values, atol=1e-7)
    with pytest.raises(TypeError, match="takes one str"):
        hs.CSRSparseTextEmbedder().run(text=["a list"])


def test_document_embedder_attaches_codes_and_embeds_meta_fields(encoder, documents):
    docs = documents[:3]
    out = hs.CSRSparseDocumentEmbedder(meta_fields_to_embed=["doc"], embedding_separator=" | ").run(docs)["documents"]
    codes = encoder.encode_document([f"{d.meta['doc']} | {d.content}" for d in docs])
    assert [o.id for o in out] == [d.id for d in docs] and all(d.sparse_embedding is None for d in docs)
    assert [o.sparse_embedding.indices for o in out] == [c.indices.tolist() for c in codes]
    assert hs.CSRSparseDocumentEmbedder().run([])["documents"] == []
    with pytest.raises(TypeError, match="list of Documents"):
        hs.CSRSparseDocumentEmbedder().run("a str")


def test_codes_pass_through_with_any_sign_and_length(encoder):
    row = SparseEmbeddings.from_dense(np.where(np.arange(encoder.h) % 2, -1.0, 0.5)[None, :], normalize=False)[0]
    out = hs.to_haystack(row)
    assert len(out.indices) == encoder.h and min(out.values) == -1.0


def test_sparse_retrieval_in_a_real_pipeline(encoder, documents, store):
    query = query_pipeline(store)
    for doc in (documents[4], documents[17]):
        hits = query.run({"embed": {"text": doc.content[:300]}})["retrieve"]["documents"]
        assert 1 <= len(hits) <= 5 and hits[0].id == doc.id  # only documents sharing a latent can match
    # the scores are the plain dot products of the query code with the stored document codes
    text = "protein expression in human cells and tissue"
    hits = query.run({"embed": {"text": text}})["retrieve"]["documents"]
    assert len(hits) >= 2 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    by_id = {d.id: d.content for d in documents}
    expected = encoder.encode_query([text], k=K).dot(encoder.encode_document([by_id[h.id] for h in hits], k=K))[0]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)


def test_components_serialise_and_load_in_a_pipeline(store, documents):
    data = query_pipeline(store).to_dict()
    assert data["components"]["embed"] == {"type": f"{MODULE}.CSRSparseTextEmbedder", "init_parameters": {
        "model": None, "k": K, "device": "auto", "batch_size": 32}}
    embed_only = Pipeline()
    embed_only.add_component("embed", hs.CSRSparseDocumentEmbedder(k=4, meta_fields_to_embed=["doc"]))
    loaded = Pipeline.from_dict(embed_only.to_dict(), allowed_modules=[MODULE])
    out = loaded.run({"embed": {"documents": documents[:2]}})["embed"]["documents"]
    assert all(len(d.sparse_embedding.indices) == 4 for d in out)
    with pytest.raises(ValueError, match="cannot be serialised: pass model=DIR"):
        hs.CSRSparseTextEmbedder(encoder=encoders._ENCODERS[(None, "auto")]).to_dict()
    with pytest.raises(ValueError, match="batch_size must be positive"):
        hs.CSRSparseTextEmbedder(batch_size=0)


SPARSE_DOC = ("A sparse code represents a signal with only a few active coefficients: most entries of the "
              "code vector are zero, as in sparse coding with a learned dictionary.")


def test_readme_snippet_runs(readme_snippets, documents):
    (snippet,) = readme_snippets("Haystack")
    namespace = {"documents": [*documents[:10], Document(id="sparse", content=SPARSE_DOC)]}
    exec(snippet, namespace)
    hits = namespace["hits"]
    assert hits and hits[0].id == "sparse" and hits[0].sparse_embedding is None


def test_collection_retriever_in_a_pipeline(small_docs, tmp_path):
    """`CSRRetriever` over an ingested collection, in a real Pipeline: the one Searcher (fused by default), filters
    and top_k per run, Documents with score and meta."""
    from csr_adapter import open_collection

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in small_docs.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    enc = encoders._ENCODERS[(None, "cpu")]
    open_collection("docs", path=tmp_path / "store", encoder=enc, echo=lambda m: None).ingest(folder, progress=False)
    retriever = hs.CSRRetriever.from_collection("docs", path=str(tmp_path / "store"), device="cpu", top_k=3)
    try:
        pipe = Pipeline()
        pipe.add_component("retrieve", retriever)
        doc_id, text = list(small_docs.items())[4]
        docs = pipe.run({"retrieve": {"query": text[:200]}})["retrieve"]["documents"]
        assert len(docs) == 3 and docs[0].meta["source"].endswith(f"{doc_id}.txt")
        assert {d.meta["served_by"] for d in docs} == {"fused"} and docs[0].score >= docs[-1].score
        assert docs[0].content and "text" not in docs[0].meta
        other = list(small_docs)[7]
        only = retriever.run(text[:200], top_k=5, filters={"source": str(folder / f"{other}.txt")})["documents"]
        assert only and {d.meta["source"] for d in only} == {str(folder / f"{other}.txt")}
    finally:
        retriever.close()
