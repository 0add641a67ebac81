"""`ingest --layout langchain`: a server collection that langchain-qdrant's QdrantVectorStore reads as it is
(its default payload keys and sparse vector name), on real parts: the CLI, a real adapted model, qdrant-client's
local mode for the server, and langchain-qdrant itself."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli

pytest.importorskip("langchain_qdrant")
pytest.importorskip("qdrant_client")

URL = "http://qdrant.test:6333"  # mapped to an in-process QdrantClient (see cli.options.server_client)
QUERY = "vitamin D deficiency and bone fractures"


def run(*args, client=None):
    obj = {"qdrant_clients": {URL: client}} if client is not None else None
    return CliRunner().invoke(cli, [str(a) for a in args], obj=obj, env={"QDRANT_URL": None})


@pytest.fixture
def ingested(small_docs, tmp_path, monkeypatch):
    """30 real abstracts and two JSONL records with metadata, ingested with --layout langchain (adapted head)."""
    from qdrant_client import QdrantClient

    monkeypatch.setenv("CSR_ADAPTER_HOME", str(tmp_path / "home"))
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in small_docs.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (folder / "notes.jsonl").write_text(
        json.dumps({"_id": "n1", "text": "Vitamin D supplements and the risk of hip fractures in old age.",
                    "lang": "en", "source": "clinic notes"}) + "\n"
        + json.dumps({"_id": "n2", "text": "Vitamin-D-Mangel und Knochenbrüche.", "lang": "de"}) + "\n",
        encoding="utf-8")
    client = QdrantClient(":memory:")
    result = run("ingest", folder, "--url", URL, "--collection", "docs", "--layout", "langchain", "--adapt",
                 "--adapt-steps", "10", "--device", "cpu", "--json", client=client)
    assert result.exit_code == 0, result.output
    return folder, client, json.loads(result.output)


def test_langchain_qdrant_reads_the_collection_as_is(ingested):
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    from csr_adapter import open_collection
    from csr_adapter.integrations.langchain import CSRSparseEmbeddings

    folder, client, report = ingested
    assert report["adapt"]["adapted"] and report["backend"]["meta"]["layout"] == "langchain"
    info = client.get_collection("docs")
    assert set(info.config.params.sparse_vectors) == {"langchain-sparse", "lexical"}  # + BM25 (issue 26)
    records, _ = client.scroll("docs", limit=100)
    note = next(r.payload for r in records if r.payload.get("doc_id") == "n1")
    assert note["page_content"].startswith("Vitamin D supplements") and "text" not in note and "meta" not in note
    assert note["metadata"] == {"lang": "en", "source": "clinic notes", "doc_id": "n1", "chunk": 0}  # theirs wins
    assert note["source"].endswith("notes.jsonl#n1")  # csr-adapter's own fields stay beside them

    store = QdrantVectorStore(client, "docs", retrieval_mode=RetrievalMode.SPARSE,
                              sparse_embedding=CSRSparseEmbeddings.from_collection("docs", client=client))
    docs = store.similarity_search_with_score(QUERY, k=5)
    hits = open_collection("docs", client=client).search(QUERY, top_k=5, fallback=False, mode="codes")  # = SPARSE
    assert len(docs) == 5 and [d.metadata["_id"] for d, _ in docs] == [h.id for h in hits]
    assert [s for _, s in docs] == pytest.approx([h.score for h in hits], rel=1e-5)
    assert docs[0][0].page_content == hits[0].payload["text"] and "doc_id" in docs[0][0].metadata
    assert "notes.jsonl#n1" in hits[0].payload["source"]  # csr-adapter sees its usual payload (text, meta, ...)
    assert hits[0].payload["meta"] == {"lang": "en", "source": "clinic notes"}

    from csr_adapter.integrations.langchain import CSRRetriever

    retriever = CSRRetriever(searcher=open_collection("docs", client=client).searcher(fallback=False), k=5)
    try:
        assert [d.id for d in retriever.invoke(QUERY)] == [h.id for h in hits]
        assert retriever.invoke(QUERY)[0].page_content == hits[0].payload["text"]
    finally:
        retriever.searcher.close()

    found = run("search", QUERY, "--url", URL, "--collection", "docs", "--filter", "lang=de", "--json", client=client)
    assert found.exit_code == 0, found.output
    assert [h["payload"]["doc_id"] for h in json.loads(found.output)] == ["n2"]  # meta.lang -> metadata.lang

    again = run("ingest", folder, "--url", URL, "--collection", "docs", "--json", client=client)  # layout kept
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["written"] == 0
    other = run("ingest", folder, "--url", URL, "--collection", "docs", "--layout", "csr", client=client)
    assert other.exit_code == 1 and "layout langchain != csr" in other.output and "--recreate" in other.output


def test_the_layout_survives_export_and_backup(ingested, tmp_path):
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    _, client, report = ingested
    backup = open_collection("docs", path=tmp_path / "backup")
    export_collection(open_collection("docs", client=client), backup, progress=False)
    restored = QdrantClient(":memory:")
    copy = export_collection(backup, open_collection("docs", client=restored), progress=False)
    assert copy.written == report["points"] and copy.target["meta"]["layout"] == "langchain"
    assert client.scroll("docs", limit=100, with_vectors=True)[0] == restored.scroll("docs", limit=100,
                                                                                     with_vectors=True)[0]


def test_the_embedded_store_refuses_the_layout(tmp_path):
    result = run("ingest", "-", "--path", tmp_path / "s", "--layout", "langchain", "--no-adapt", "--device", "cpu")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--layout langchain is for Qdrant server collections (--url URL)" in lines[0]


def test_readme_snippet_runs(ingested, readme_snippets):
    (snippet,) = [s for s in readme_snippets("LangChain") if "RetrievalMode.SPARSE" in s]
    _, client, _ = ingested
    line = 'client = QdrantClient(url="http://localhost:6333")\n'
    assert line in snippet
    namespace = {"client": client}
    exec(snippet.replace(line, ""), namespace)
    docs = namespace["docs"]
    assert len(docs) == 5 and docs[0].page_content and docs[0].metadata["source"]


def test_hybrid_mode_reads_a_hybrid_collection(small_docs, tmp_path, monkeypatch, readme_snippets):
    """`--layout langchain --hybrid`: langchain-qdrant's DENSE and HYBRID modes read the stored backbone vectors
    (named `dense`, dot product) with CSREmbeddings; the README's HYBRID snippet runs; without --hybrid,
    langchain-qdrant refuses HYBRID when the store is built, naming the missing vector."""
    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance

    from csr_adapter import open_collection
    from csr_adapter.integrations.langchain import CSREmbeddings, CSRSparseEmbeddings

    monkeypatch.setenv("CSR_ADAPTER_HOME", str(tmp_path / "home"))
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in small_docs.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    client = QdrantClient(":memory:")
    for name, flags in (("docs", ["--hybrid"]), ("plain", [])):
        result = run("ingest", folder, "--url", URL, "--collection", name, "--layout", "langchain", "--no-adapt",
                     "--device", "cpu", *flags, client=client)
        assert result.exit_code == 0, result.output

    sparse = CSRSparseEmbeddings.from_collection("docs", client=client)
    dense = CSREmbeddings(encoder=sparse.encoder)
    named = {"vector_name": "dense", "distance": Distance.DOT}
    by_dense = QdrantVectorStore(client, "docs", retrieval_mode=RetrievalMode.DENSE, embedding=dense, **named)
    got = by_dense.similarity_search_with_score(QUERY, k=5)
    be = open_collection("docs", client=client).open_backend()
    try:
        vec = sparse.encoder.encode_dense([QUERY], prefix=sparse.encoder.config.query_prefix)[0]
        want = be.search(vec, top_k=5)
    finally:
        be.close()
    assert [d.metadata["_id"] for d, _ in got] == [h.id for h in want]  # the same vectors, the same ranking
    assert [s for _, s in got] == pytest.approx([h.score for h in want], rel=1e-5)

    hybrid = QdrantVectorStore(client, "docs", retrieval_mode=RetrievalMode.HYBRID, embedding=dense,
                               sparse_embedding=sparse, **named)
    fused = hybrid.similarity_search(QUERY, k=5)
    by_sparse = QdrantVectorStore(client, "docs", retrieval_mode=RetrievalMode.SPARSE, sparse_embedding=sparse)
    union = {d.metadata["_id"] for d in by_sparse.similarity_search(QUERY, k=5)} | {h.id for h in want}
    assert len(fused) == 5 and {d.metadata["_id"] for d in fused} <= union
    assert all(d.page_content and d.metadata["source"] for d in fused)

    (snippet,) = [s for s in readme_snippets("LangChain") if "RetrievalMode.HYBRID, sparse_embedding" in s]
    namespace = {"client": client, "QdrantVectorStore": QdrantVectorStore, "RetrievalMode": RetrievalMode,
                 "CSRSparseEmbeddings": CSRSparseEmbeddings}
    exec(snippet, namespace)
    readme_query = "does vitamin D prevent fractures?"
    assert [d.id for d in namespace["docs"]] == [d.id for d in hybrid.similarity_search(readme_query, k=5)]

    with pytest.raises(Exception, match="does not contain dense vector named dense"):
        QdrantVectorStore(client, "plain", retrieval_mode=RetrievalMode.HYBRID, embedding=dense,
                          sparse_embedding=sparse, **named)
