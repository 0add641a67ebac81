"""/search on a real ingested collection: `csr-adapter ingest --with-fallback` (Qdrant Edge + FAISS), then serve."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.integrations.base import BackendError
from csr_adapter.server import create_app
from csr_adapter.server.collections import open_collections
from csr_adapter.server.testing import serve_in_thread

DOCS = {
    "vitamin.txt": "Vitamin D supplementation lowers the risk of bone fractures in older adults.",
    "sae.txt": "Sparse autoencoders learn interpretable latent features of language models.",
    "qdrant.txt": "Qdrant stores sparse vectors and searches them with an inverted index.",
}


def ingest_docs(tmp_path_factory) -> str:
    """Ingest DOCS into collection ``docs`` (Qdrant Edge + FAISS fallback); return the store path."""
    pytest.importorskip("qdrant_edge")
    corpus, store = tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("store")
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    result = CliRunner().invoke(cli, ["ingest", str(corpus), "--path", str(store), "--collection", "docs",
                                      "--with-fallback", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return str(store)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ingest_docs(tmp_path_factory)


def test_search_over_http_on_an_ingested_collection(encoder, store):
    searchers = open_collections(encoder, ["docs"], path=store)
    assert searchers["docs"].dense is not None  # the FAISS fallback written by --with-fallback
    try:
        with serve_in_thread(create_app(encoder, searchers)) as url:
            info = httpx.get(url + "/info").json()
            assert info["csr_adapter"]["collections"] == ["docs"]
            body = httpx.post(url + "/search", json={"query": "vitamin D and fractures", "top_k": 2}).json()
            assert body["collection"] == "docs" and body["hits"]
            assert body["hits"][0]["payload"]["source"].endswith("vitamin.txt")
            assert {h["served_by"] for h in body["hits"]} <= {"sparse", "dense", "rerank", "fused"}
            three = httpx.post(url + "/search", json={"query": "sparse", "top_k": 3}).json()
            assert len(three["hits"]) == 3  # sparse short of top_k: the dense fallback fills
            sources = httpx.post(url + "/search", json={"query": "vectors", "top_k": 3,
                                                        "filter": {"doc_id": "qdrant"}}).json()["hits"]
            assert sources and all(h["payload"]["source"].endswith("qdrant.txt") for h in sources)
            bad = httpx.post(url + "/search", json={"query": "x", "filter": {"doc_id": []}})
            assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"
    finally:
        for searcher in searchers.values():
            searcher.close()


def test_unknown_collection_fails_at_startup(encoder, store):
    with pytest.raises(BackendError):
        open_collections(encoder, ["nope"], path=store)
