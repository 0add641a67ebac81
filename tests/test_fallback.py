"""The fallback policy on a real Qdrant Edge shard + a real FAISS index over a SciFact slice."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pytest

from csr_adapter.integrations.base import CollectionMeta, Point
from csr_adapter.integrations.faiss import FaissBackend, InvalidTopKError
from csr_adapter.integrations.fallback import FallbackConfigError, WithFallback
from csr_adapter.retrieval import Searcher as FallbackSearcher

qdrant_edge = pytest.importorskip("csr_adapter.integrations.qdrant_edge")


def pid(doc_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scifact/{doc_id}"))


@pytest.fixture(scope="module")
def corpus(encoder, scifact_slice, scifact_dense):
    ids, texts = zip(*scifact_slice["docs"].items())
    dense = scifact_dense
    qids = sorted(scifact_slice["queries"])
    return {"ids": [pid(i) for i in ids], "doc_ids": list(ids), "texts": list(texts), "dense": dense,
            "queries": [scifact_slice["queries"][q] for q in qids],
            "qrels": [{pid(d) for d in scifact_slice["qrels"][q]} for q in qids]}


def build(encoder, corpus, root, k: int, drop_dense=()):
    """An Edge shard with codes at ``k`` and a FAISS fallback, written through WithFallback."""
    sparse = qdrant_edge.EdgeBackend(root / f"qdrant-k{k}", meta=CollectionMeta(encoder.model_id, encoder.h, k))
    dense = FaissBackend(root / f"faiss-k{k}", meta=CollectionMeta(encoder.model_id, encoder.h, k, encoder.d))
    codes = encoder.sparsify(corpus["dense"], k=k)
    pts = [Point(i, {"text": t, "source": f"{d}.txt", "chunk": 0}, codes[n], corpus["dense"][n])
           for n, (i, d, t) in enumerate(zip(corpus["ids"], corpus["doc_ids"], corpus["texts"]))]
    both = WithFallback(sparse, dense)
    both.upsert(pts)
    if drop_dense:
        dense.delete(drop_dense)
    return sparse, dense


@pytest.fixture(scope="module")
def k2(encoder, corpus, tmp_path_factory):
    sparse, dense = build(encoder, corpus, tmp_path_factory.mktemp("k2"), 2)
    yield FallbackSearcher(encoder.with_query_k(None), sparse, dense, k=2)  # 2-latent queries: some miss
    sparse.close()
    dense.close()


def test_k2_never_empty_sparse_first_then_dense(k2, corpus):
    k2.merge = "sparse_first"
    try:
        answers = k2.search_batch(corpus["queries"], top_k=10)
    finally:
        k2.merge = "dense"
    assert all(len(a.hits) == 10 and len({h.id for h in a.hits}) == 10 for a in answers)
    few = [a for a in answers if a.reason == "few_hits"]
    assert few, "at k=2 some queries share latents with fewer than 10 docs"
    for a in answers:
        served = [h.served_by for h in a.hits]
        if a.reason == "few_hits":
            assert served == ["sparse"] * a.sparse_positive + ["dense"] * (10 - a.sparse_positive)
        else:
            assert a.reason == "sparse" and served == ["sparse"] * 10 and all(h.score > 0 for h in a.hits)
    sparse_only = [k2.sparse.search(c, top_k=10) for c in k2.encode(corpus["queries"])[0]]
    assert [len(s) for s, a in zip(sparse_only, answers) if a.reason == "few_hits"] == [a.sparse_positive for a in few]


def test_default_merge_ranks_the_union_by_dense_cosine(k2, corpus):
    for a in k2.search_batch(corpus["queries"], top_k=10):
        assert len(a.hits) == 10
        if a.reason == "few_hits":
            scores = [h.score for h in a.hits]
            assert scores == sorted(scores, reverse=True)
            assert sum(h.served_by == "sparse" for h in a.hits) == a.sparse_positive


def test_fallback_recall_at_k2_beats_sparse_alone(k2, corpus):
    codes, dense = k2.encode(corpus["queries"])
    sparse = [[h.id for h in k2.sparse.search(c, top_k=10)] for c in codes]
    merged = [[h.id for h in k2.answer_encoded(c, d, 10).hits] for c, d in zip(codes, dense)]

    def recall(runs):
        return np.mean([len(set(r) & rel) / len(rel) for r, rel in zip(runs, corpus["qrels"])])

    assert recall(merged) >= recall(sparse)


def test_empty_code_and_no_sparse_are_served_dense(k2, encoder, corpus):
    answer = k2.answer("", top_k=5)  # an empty text has an empty code
    assert answer.reason == "empty_code" and len(answer.hits) == 5
    assert all(h.served_by == "dense" for h in answer.hits)
    dense_only = FallbackSearcher(encoder, None, k2.dense)
    answer = dense_only.answer(corpus["queries"][0], top_k=3)
    assert answer.reason == "no_sparse" and [h.served_by for h in answer.hits] == ["dense"] * 3


def test_sparse_failure_warns_once_and_serves_dense(encoder, corpus, tmp_path):
    sparse, dense = build(encoder, corpus, tmp_path, 8)
    searcher = FallbackSearcher(encoder, sparse, dense)
    assert searcher.answer(corpus["queries"][0], top_k=5).reason in ("sparse", "few_hits")
    sparse.close()  # the sparse engine is gone
    with pytest.warns(RuntimeWarning, match="sparse backend failed"):
        first = searcher.answer(corpus["queries"][1], top_k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = searcher.answer(corpus["queries"][2], top_k=5)
    assert first.reason == second.reason == "sparse_error"
    assert [h.served_by for h in first.hits + second.hits] == ["dense"] * 10
    dense.close()


def test_rerank_scores_are_dense_cosines(encoder, corpus, tmp_path):
    sparse, dense = build(encoder, corpus, tmp_path, 8)
    searcher = FallbackSearcher(encoder, sparse, dense, rerank=True, rerank_depth=30)
    codes, qdense = searcher.encode(corpus["queries"][:10])
    for c, q in zip(codes, qdense):
        answer = searcher.answer_encoded(c, q, top_k=5)
        hits = answer.hits
        assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        exact = dense.score_ids(q, [h.id for h in hits])
        assert all(h.score == pytest.approx(exact[h.id], abs=1e-5) for h in hits)
        assert {h.served_by for h in hits} <= {"rerank", "dense"}
    sparse.close()
    dense.close()


def test_ids_missing_from_the_fallback_are_kept_and_reported(encoder, corpus, tmp_path):
    sparse, dense = build(encoder, corpus, tmp_path, 8, drop_dense=corpus["ids"])  # fallback emptied
    searcher = FallbackSearcher(encoder, sparse, dense, rerank=True)
    with pytest.warns(RuntimeWarning, match="not in the dense index"):
        hits = searcher.search(corpus["queries"][0], top_k=5)
    assert hits and all(h.served_by == "sparse" and h.score > 0 for h in hits)
    both = WithFallback(sparse, dense)
    assert list(both.scroll()) == []  # a re-run ingest sees these chunks as missing and re-writes them
    assert both.sync() == {"removed_from_fallback": 0, "missing_from_fallback": len(corpus["ids"])}
    both.close()


def test_with_fallback_writes_both_and_syncs(encoder, corpus, tmp_path):
    sparse, dense = build(encoder, corpus, tmp_path, 4)
    both = WithFallback(sparse, dense)
    assert sparse.count() == dense.count() == len(corpus["ids"]) == both.count()
    both.delete(corpus["ids"][:3])
    assert sparse.count() == dense.count() == len(corpus["ids"]) - 3
    dense.upsert([Point(str(uuid.uuid4()), {"text": "orphan"}, dense=corpus["dense"][0])])
    assert both.sync() == {"removed_from_fallback": 1, "missing_from_fallback": 0}
    with pytest.raises(FallbackConfigError, match="no dense vector"):
        both.upsert([Point(corpus["ids"][0], {}, sparse=encoder.sparsify(corpus["dense"][:1], k=4)[0])])
    assert "fallback" in both.info()
    both.close()


def test_filters_apply_on_both_paths(k2, corpus):
    sources = [f"{d}.txt" for d in corpus["doc_ids"][:4]]
    for q in corpus["queries"][:5]:
        hits = k2.search(q, top_k=10, filter={"source": sources})
        assert 0 < len(hits) <= 4 and all(h.payload["source"] in sources for h in hits)


def test_bad_input(k2, encoder):
    for bad in (0, -3):
        with pytest.raises(InvalidTopKError):
            k2.search("x", top_k=bad)
    with pytest.raises(ValueError, match="filter"):  # the caller's error: raised, not served by the fallback
        k2.search("x", top_k=3, filter={"source": {"gt": 1}})
    with pytest.raises(FallbackConfigError):
        FallbackSearcher(encoder)
    with pytest.raises(FallbackConfigError, match="rerank"):
        FallbackSearcher(encoder, k2.sparse, None, rerank=True)
    empty = FallbackSearcher(encoder, None, FaissBackend(None))
    assert empty.search("anything", top_k=3) == []  # an empty index answers nothing, without error


def test_server_client_path_and_a_server_side_failure(encoder, corpus):
    """qdrant-client (the server code path, against its in-memory mode) as the sparse side."""
    from qdrant_client import QdrantClient

    from csr_adapter.integrations.qdrant import open_qdrant

    client = QdrantClient(":memory:")
    n = 60
    sparse = open_qdrant("fb", client=client, meta=CollectionMeta(encoder.model_id, encoder.h, 2))
    dense = FaissBackend(None)
    codes = encoder.sparsify(corpus["dense"][:n], k=2)
    WithFallback(sparse, dense).upsert([Point(i, {"text": t}, codes[j], corpus["dense"][j])
                                        for j, (i, t) in enumerate(zip(corpus["ids"][:n], corpus["texts"][:n]))])
    searcher = FallbackSearcher(encoder, sparse, dense, k=2)
    answers = searcher.search_batch(corpus["queries"][:5], top_k=10)
    assert all(len(a.hits) == 10 for a in answers) and {a.reason for a in answers} <= {"sparse", "few_hits"}
    client.delete_collection("fb")  # the server lost the collection: sparse raises, dense answers
    with pytest.warns(RuntimeWarning, match="sparse backend failed"):
        answer = searcher.answer(corpus["queries"][0], top_k=4)
    assert answer.reason == "sparse_error" and [h.served_by for h in answer.hits] == ["dense"] * 4


def test_float_filter_is_rejected_like_qdrant_not_served_from_dense() -> None:
    """One filter language: a value Qdrant cannot match is the caller's error on every path."""
    from csr_adapter.integrations.faiss import filter_sql
    from csr_adapter.integrations.qdrant import filter_terms

    for check in (filter_sql, filter_terms):
        with pytest.raises(ValueError, match="values must be strings, integers or booleans"):
            check({"score": 1.5})
