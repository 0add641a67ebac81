"""Retrieval evaluation with TREC definitions (graded nDCG@10, Recall@100) and sparse-code statistics.

Rankings break score ties as trec_eval does (score descending, then document id descending), so the
numbers equal ir-measures / pytrec_eval on the same run. A query whose run is empty counts as 0 (a
sparse index returns nothing for a code that overlaps no document); trec_eval would drop it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..defaults import EVAL_KS
from ..sparse import SparseEmbeddings
from .beir import BeirData

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def _ordered(docs: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def ndcg_at(run: Run, qrels: Qrels, cutoff: int = 10) -> dict[str, float]:
    """Per-query nDCG@cutoff, gain = graded relevance, discount log2(rank + 1) (trec_eval ``ndcg_cut``)."""
    out = {}
    for qid, judged in qrels.items():
        ranked = _ordered(run.get(qid, {}))[:cutoff]
        dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:cutoff]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        out[qid] = dcg / idcg if idcg > 0 else 0.0
    return out


def recall_at(run: Run, qrels: Qrels, cutoff: int = 100) -> dict[str, float]:
    """Per-query Recall@cutoff: relevant (grade > 0) documents in the top ``cutoff`` / all relevant."""
    out = {}
    for qid, judged in qrels.items():
        relevant = {d for d, g in judged.items() if g > 0}
        ranked = _ordered(run.get(qid, {}))[:cutoff]
        out[qid] = len(relevant.intersection(ranked)) / len(relevant) if relevant else 0.0
    return out


def rank(scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], depth: int = 100,
         positive_only: bool = False) -> Run:
    """Top ``depth`` documents per query from a ``(n_queries, n_docs)`` score matrix, trec_eval tie order."""
    doc_ids = list(doc_ids)
    order_of = np.empty(len(doc_ids), dtype=np.int64)
    order_of[np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
    run: Run = {}
    depth = min(depth, len(doc_ids))
    for qi, qid in enumerate(query_ids):
        row = scores[qi]
        if depth < len(row):
            cut = np.partition(row, len(row) - depth)[len(row) - depth]
            cand = np.flatnonzero(row >= cut)
        else:
            cand = np.arange(len(row))
        if positive_only:
            cand = cand[row[cand] > 0]
        cand = cand[np.lexsort((-order_of[cand], -row[cand]))][:depth]
        run[qid] = {doc_ids[i]: float(row[i]) for i in cand}
    return run


def code_stats(codes: SparseEmbeddings) -> dict[str, float]:
    """Mean active dims, dead-latent % (never active), posting-list skew (sum p^2, longest list)."""
    counts = np.bincount(codes.indices, minlength=codes.dim).astype(np.float64)
    total = counts.sum()
    p = counts / total if total else counts
    return {
        "mean_active": codes.mean_nnz,
        "dead_pct": 100.0 * float((counts == 0).mean()),
        "posting_sum_p2": float((p ** 2).sum()),
        "longest_list": int(counts.max()) if len(counts) else 0,
    }


def retrieval_metrics(run: Run, qrels: Qrels) -> dict[str, float]:
    nd, rc = ndcg_at(run, qrels, 10), recall_at(run, qrels, 100)
    return {"ndcg@10": float(np.mean(list(nd.values()))), "recall@100": float(np.mean(list(rc.values())))}


def embed_beir(encoder, data: BeirData, cache_dir: str | Path | None = None, show_progress_bar: bool = True):
    """Dense ``(docs, queries)`` embeddings through the shared on-disk cache (corpus in file order)."""
    from ..cache import cached_dense

    doc_ids, query_ids = list(data.corpus), list(data.queries)
    docs = cached_dense(encoder, [data.doc_text(d) for d in doc_ids], prefix=encoder.config.document_prefix,
                        cache_dir=cache_dir, show_progress_bar=show_progress_bar, desc="corpus")
    queries = cached_dense(encoder, [data.queries[q] for q in query_ids], prefix=encoder.config.query_prefix,
                           cache_dir=cache_dir, show_progress_bar=show_progress_bar, desc="queries")
    return docs, queries


def evaluate_dense(docs: np.ndarray, queries: np.ndarray, data: BeirData) -> dict[str, float]:
    """Dense-backbone reference: cosine similarity of the backbone embeddings."""
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    run = rank(unit(queries) @ unit(docs).T, list(data.queries), list(data.corpus))
    return {"k": "dense", **retrieval_metrics(run, data.qrels), "mean_active": float(docs.shape[1])}


def evaluate_sparse(encoder, docs: np.ndarray, queries: np.ndarray, data: BeirData,
                    ks: Sequence[int] = EVAL_KS, budget: str = "fixed") -> list[dict]:
    """One row per k: nDCG@10, Recall@100, the corpus codes' statistics and active dims per doc/query.

    ``budget``: ``fixed`` (top-k), ``threshold`` (calibrated θ) or ``corpus`` (a cutoff over the corpus
    giving ``N·k`` postings; queries then use θ if calibrated for k, else top-k).
    """
    from ..budget import nnz_stats, postings_per_query, query_mode

    rows = []
    for k in ks:
        dcodes = encoder.sparsify(docs, k=k, budget=budget, role="document")
        qcodes = encoder.sparsify(queries, k=k, budget=query_mode(encoder, budget, k), role="query")
        run = rank(encoder.score_matrix(queries, qcodes, dcodes), list(data.queries), list(data.corpus),
                   positive_only=True)
        rows.append({"k": int(k), "budget": budget, **retrieval_metrics(run, data.qrels), **code_stats(dcodes),
                     "doc_active": nnz_stats(dcodes), "query_active": nnz_stats(qcodes),
                     "postings_per_query": postings_per_query(qcodes, dcodes)})
    return rows


def bm25_scores(data: BeirData) -> np.ndarray:
    """``(n_queries, n_docs)`` BM25 scores as a collection's lexical vector gives them (:mod:`csr_adapter.lexical`:
    the same terms and weights, and Qdrant's IDF over these documents), on whole documents (title, text)."""
    import scipy.sparse as sp

    from ..lexical import BM25, query_vector

    texts = [data.doc_text(d) for d in data.corpus]
    bm = BM25.fit(texts)

    def matrix(vectors) -> sp.csr_matrix:
        indptr = np.cumsum([0] + [len(v) for v in vectors])
        idx = np.concatenate([v.indices for v in vectors]) if vectors else np.zeros(0, np.int32)
        val = np.concatenate([v.values for v in vectors]) if vectors else np.zeros(0, np.float32)
        return idx, val, indptr

    didx, dval, dptr = matrix(bm.documents(texts))
    qidx, qval, qptr = matrix([query_vector(q) for q in data.queries.values()])
    vocab, inverse = np.unique(np.concatenate([didx, qidx]), return_inverse=True)
    docs = sp.csr_matrix((dval, inverse[:len(didx)], dptr), shape=(len(texts), len(vocab)))
    queries = sp.csr_matrix((qval, inverse[len(didx):], qptr), shape=(len(data.queries), len(vocab)))
    n, df = len(texts), np.bincount(docs.indices, minlength=len(vocab))
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    return np.asarray((queries @ sp.diags(idf) @ docs.T).todense(), dtype=np.float32)


def fuse_runs(runs: Sequence[Run], rrf_k: int = 60, depth: int | None = None) -> Run:
    """Reciprocal Rank Fusion of runs as search fuses its lists: ``sum 1 / (rrf_k + rank)``, ranks from 0, each run
    cut to its best ``depth``."""
    from ..fusion import rrf_scores

    return {qid: rrf_scores([_ordered(run.get(qid, {})) for run in runs], rrf_k, depth=depth) for qid in runs[0]}


def evaluate_lexical(encoder, docs: np.ndarray, queries: np.ndarray, data: BeirData,
                     ks: Sequence[int] = EVAL_KS) -> list[dict]:
    """The BM25 row (``k="bm25"``) and, per k, the codes fused with it (``k="8+bm25"``), as search's fused mode
    ranks them (the best ``FUSE_DEPTH`` of each, the codes' deeper candidates re-scored, RRF with ``FUSE_RRF_K``)."""
    from ..defaults import FUSE_DEPTH, FUSE_RESCORE, FUSE_RRF_K

    qids, dids = list(data.queries), list(data.corpus)
    lexical = rank(bm25_scores(data), qids, dids, positive_only=True)
    rows = [{"k": "bm25", **retrieval_metrics(lexical, data.qrels)}]
    for k in ks:
        dcodes = encoder.sparsify(docs, k=k, role="document")
        qcodes = encoder.sparsify(queries, k=k, role="query")
        depth = max(encoder.config.rescore_depth, FUSE_RESCORE * FUSE_DEPTH)
        codes = rank(encoder.score_matrix(queries, qcodes, dcodes, depth), qids, dids, positive_only=True)
        fused = fuse_runs([codes, lexical], FUSE_RRF_K, FUSE_DEPTH)
        rows.append({"k": f"{k}+bm25", **retrieval_metrics(fused, data.qrels)})
    return rows


def evaluate_beir(encoder, data: BeirData, ks: Sequence[int] = EVAL_KS, dense: bool = True,
                  cache_dir: str | Path | None = None, show_progress_bar: bool = True,
                  budget: str = "fixed") -> list[dict]:
    """Sparse rows for each k (and the dense reference row first) on a loaded BEIR split."""
    docs, queries = embed_beir(encoder, data, cache_dir, show_progress_bar)
    rows = [evaluate_dense(docs, queries, data)] if dense else []
    return rows + evaluate_sparse(encoder, docs, queries, data, ks, budget)
