"""Matching-pursuit document codes and decoded-code re-scoring (the shipped default head serves both)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csr_adapter import CSREncoder
from csr_adapter.config import CSRConfig
from csr_adapter.sparse import SparseEmbedding
from csr_adapter.training.adapt import AdaptConfig


def _recon_error(enc: CSREncoder, x: np.ndarray, values: torch.Tensor, indices: torch.Tensor) -> float:
    W = enc.head.W.detach()
    with torch.no_grad():
        recon = (values.unsqueeze(1) @ W[indices]).squeeze(1) + enc.head.b_pre
        return float(((recon - torch.from_numpy(x)) ** 2).sum(1).mean())


def test_pursuit_reconstructs_real_text_closer_than_the_top_k_from_the_same_rows(encoder, scifact_dense):
    x = scifact_dense[:64]
    head = encoder.head
    for k in (2, 8, 16):
        values, indices = head.pursuit(torch.from_numpy(x), k)
        assert values.shape == indices.shape == (64, k)
        assert (values >= 0).all()
        assert all(len(set(row.tolist())) == k for row in indices)  # each row once
        top_values, top_indices = head.pre_activation(torch.from_numpy(x)).topk(k, dim=-1)
        assert _recon_error(encoder, x, values, indices) < _recon_error(encoder, x, top_values.relu(), top_indices)
    small, _ = head.pursuit(torch.from_numpy(x), 4)
    _, wide = head.pursuit(torch.from_numpy(x), 8)
    _, narrow = head.pursuit(torch.from_numpy(x), 4)
    assert torch.equal(wide[:, :4], narrow)  # a smaller k names a prefix of the rows (values re-fitted)
    assert small.shape == (64, 4)


def test_the_default_model_codes_documents_by_pursuit_and_queries_by_top_k(encoder, scifact_dense):
    assert encoder.config.document_coding == "pursuit" and encoder.config.rescore_depth > 0
    x = scifact_dense[:16]
    docs = encoder.sparsify(x, 8, role="document")
    values, indices = encoder.head.pursuit(torch.from_numpy(x), 8)
    assert [sorted(r.indices.tolist()) for r in docs] == [sorted(r.tolist()) for r in indices]
    topk = CSREncoder(encoder.backbone, encoder.head,
                      CSRConfig.from_dict({**encoder.config.to_dict(), "document_coding": "topk"}), device="cpu")
    assert topk.model_id != encoder.model_id  # stored documents differ, so collections must not mix them
    assert [r.indices.tolist() for r in topk.sparsify(x, 8, role="document")] != [r.indices.tolist() for r in docs]
    queries = encoder.sparsify(x, 8, role="query")
    assert np.array_equal(queries.indices, topk.sparsify(x, 8, role="query").indices)
    wide = encoder.sparsify(x, 100, role="document")  # above PURSUIT_MAX_K: the top-k
    assert np.array_equal(wide.indices, topk.sparsify(x, 100, role="document").indices)


def test_score_matrix_re_scores_the_best_code_matches_by_the_decoded_cosine(encoder, scifact_dense):
    docs, queries = scifact_dense[:60], scifact_dense[60:70]
    dcodes = encoder.sparsify(docs, 8, role="document")
    qcodes = encoder.sparsify(queries, 8, role="query")
    plain = qcodes.dot(dcodes)
    scores = encoder.score_matrix(queries, qcodes, dcodes)
    depth = encoder.config.rescore_depth
    for i in range(len(queries)):
        picked = np.argsort(-plain[i])[:depth]
        picked = picked[plain[i, picked] > 0]
        expect = encoder.rescore(queries[i], [dcodes[j] for j in picked])
        np.testing.assert_allclose(scores[i, picked], 2.0 + expect, rtol=1e-5, atol=1e-5)
        decoded = dcodes.to_dense()[picked] @ encoder.head.W.detach().numpy()
        cos = decoded @ queries[i] / np.linalg.norm(decoded, axis=1) / np.linalg.norm(queries[i])
        np.testing.assert_allclose(expect, cos, rtol=1e-4, atol=1e-5)
    empty = SparseEmbedding(np.zeros(0, np.int32), np.zeros(0, np.float32), encoder.h)
    mixed = encoder.rescore(queries[0], [empty, dcodes[0], empty])
    assert mixed[0] == mixed[2] == 0.0 and mixed[1] == pytest.approx(encoder.rescore(queries[0], [dcodes[0]])[0])
    off = CSREncoder(encoder.backbone, encoder.head,
                     CSRConfig.from_dict({**encoder.config.to_dict(), "rescore_depth": 0}), device="cpu")
    np.testing.assert_array_equal(off.score_matrix(queries, qcodes, dcodes), plain)


def test_adapted_heads_keep_top_k_codes_and_plain_scores(encoder, scifact_dense):
    adapted = encoder.adapt(dense=scifact_dense[:120],
                            config=AdaptConfig(min_steps=2, max_steps=2, pseudo_queries=0))
    assert adapted.config.document_coding == "topk" and adapted.config.rescore_depth == 0


@pytest.mark.parametrize("value", ["omp", "", None, 3])
def test_a_bad_document_coding_is_refused(value):
    with pytest.raises(ValueError, match="document_coding"):
        CSRConfig(document_coding=value)


@pytest.mark.parametrize("value", [-1, 1.5, True, "100"])
def test_a_bad_rescore_depth_is_refused(value):
    with pytest.raises(ValueError, match="rescore_depth"):
        CSRConfig(rescore_depth=value)


class _WithoutHitVectors:
    """A real backend seen through the contract of an engine that cannot return codes with its hits."""

    def __init__(self, backend):
        self.backend, self.meta = backend, backend.meta
        self.capabilities = backend.capabilities - {"hit_vectors"}

    def search(self, query, top_k=10, filter=None):
        return self.backend.search(query, top_k=top_k, filter=filter)

    def retrieve(self, ids, with_vectors=False):
        return self.backend.retrieve(ids, with_vectors=with_vectors)


def test_search_serves_the_re_scored_order_from_a_real_embedded_collection(encoder, scifact_slice, tmp_path):
    pytest.importorskip("qdrant_edge")
    from csr_adapter.collection import open_collection
    from csr_adapter.retrieval import Searcher as FallbackSearcher

    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(list(scifact_slice["docs"].values())[:80]):
        (folder / f"d{i:03d}.txt").write_text(text[:700])
    col = open_collection("pursuit", path=tmp_path / "store", device="cpu", share=encoder, echo=lambda m: None)
    try:
        col.ingest(folder, adapt=False, progress=False)
        query = next(iter(scifact_slice["queries"].values()))
        searcher = col.searcher(fallback=False, mode="codes")  # the codes path (fused is the default)
        try:
            hits = searcher.search(query, top_k=5)
            codes, dense = searcher.encode([query])
            raw = searcher.sparse.search(codes[0], top_k=encoder.config.rescore_depth)
            stored = {p.id: p.sparse for p in searcher.sparse.retrieve([h.id for h in raw], with_vectors=True)}
            with_codes = searcher.sparse.search(codes[0], top_k=encoder.config.rescore_depth, with_vectors=True)
            assert [h.id for h in with_codes] == [h.id for h in raw] and all(h.code is not None for h in with_codes)
            for h in with_codes:  # the codes that come with the hits are the stored ones
                assert h.code.indices.tolist() == stored[h.id].indices.tolist()
                np.testing.assert_allclose(h.code.values, stored[h.id].values)
            assert all(h.code is None for h in raw)
            # an engine without hit_vectors (e.g. Milvus): the codes are read by id, same answers
            plain_engine = _WithoutHitVectors(searcher.sparse)
            via_ids = FallbackSearcher(encoder, plain_engine).answer_encoded(codes[0], dense[0], 5).hits
            assert [(h.id, h.payload) for h in via_ids] == [(h.id, h.payload) for h in hits]
            np.testing.assert_allclose([h.score for h in via_ids], [h.score for h in hits], rtol=1e-6)
        finally:
            searcher.close()
        expect = encoder.rescore(dense[0], [stored[h.id] for h in raw if h.score > 0])
        best = sorted(zip(expect, [h.id for h in raw if h.score > 0]), reverse=True)[:5]
        assert [h.id for h in hits] == [i for _, i in best]
        np.testing.assert_allclose([h.score for h in hits], [s for s, _ in best], rtol=1e-5)
        assert [h.id for h in hits] != [h.id for h in raw[:5]]  # the re-scoring changed the order here
        plain = {h.id: h.payload for h in raw}
        assert all(h.payload == plain[h.id] and h.payload["text"] for h in hits)  # payloads read for the kept hits
    finally:
        col.close()
