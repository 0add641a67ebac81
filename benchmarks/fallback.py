"""Dense fallback on SciFact test: how often sparse comes back short, what the fallback buys, what it costs.

For k = 2, 4, 8 (the shipped model, codes from cached backbone embeddings): the SciFact corpus in a
real Qdrant Edge shard (sparse) and one FAISS IndexFlatIP over the 384-d backbone vectors (the
fallback), same point ids. Per query (top 10): sparse-only, sparse + fallback (fill), sparse +
fallback with the default merge (union scored by dense cosine) and with sparse hits first, sparse +
dense rerank of 50 sparse candidates, dense-only 384-d and dense truncated to 32 dims.
Reports nDCG@10, the share of queries with < 10 positive sparse hits, empty results, and latency
(query encoding excluded: it is the same backbone pass for every path).

    python benchmarks/fallback.py [--ks 2 4 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCIFACT, write_result  # noqa: E402


def pid(doc_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scifact/{doc_id}"))


def ms(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "mean_ms": round(float(a.mean()), 4), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4)}


def run_of(hits_per_query, qids, back) -> dict[str, dict[str, float]]:
    """Rank-based scores (the fused list is ordered, not comparable by raw score)."""
    return {q: {back[h.id]: float(len(hits) - r) for r, h in enumerate(hits)} for q, hits in zip(qids, hits_per_query)}


def faiss_settings(faiss, dense, queries: np.ndarray, top_k: int, default_blas: int) -> dict:
    """Why FaissBackend sets 1 thread for single queries and a low BLAS threshold for batches."""
    from csr_adapter.integrations.faiss import DEFAULT_BLAS_THRESHOLD
    from csr_adapter.runtime import available_cores

    index = dense.index.load()
    q = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
    out: dict = {"cores": available_cores(), "blas_threshold_set": DEFAULT_BLAS_THRESHOLD}

    def single(threads: int) -> float:
        faiss.omp_set_num_threads(threads)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for row in q:
                index.search(row[None, :], top_k)
            best = min(best, time.perf_counter() - t0)
        return round(1e3 * best / len(q), 4)

    def batch(threshold: int) -> float:
        faiss.cvar.distance_compute_blas_threshold = threshold
        faiss.omp_set_num_threads(available_cores())
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            index.search(q, top_k)
            best = min(best, time.perf_counter() - t0)
        return round(1e3 * best, 3)

    out["single_query_ms"] = {f"{t}_threads": single(t) for t in sorted({1, available_cores()})}
    out["batch_of_all_queries_ms"] = {f"blas_threshold_{b}": batch(b) for b in (DEFAULT_BLAS_THRESHOLD, default_blas)}
    faiss.cvar.distance_compute_blas_threshold = DEFAULT_BLAS_THRESHOLD
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--rerank-depth", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import faiss

    faiss_default_blas = int(faiss.cvar.distance_compute_blas_threshold)
    from csr_adapter import CSREncoder
    from csr_adapter.integrations.base import CollectionMeta, Point
    from csr_adapter.integrations.faiss import FaissBackend
    from csr_adapter.integrations.qdrant_edge import EdgeBackend
    from csr_adapter.retrieval import Searcher as FallbackSearcher
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir, ndcg_at

    t_start = time.perf_counter()
    enc = CSREncoder.from_pretrained(args.model, device="cpu")
    data = load_beir(SCIFACT, split="test")
    docs, queries = embed_beir(enc, data, show_progress_bar=True)
    doc_ids, qids = list(data.corpus), list(data.queries)
    ids = [pid(d) for d in doc_ids]
    back = dict(zip(ids, doc_ids))
    top_k = args.top_k

    def ndcg(hits_per_query) -> float:
        return round(float(np.mean(list(ndcg_at(run_of(hits_per_query, qids, back), data.qrels, 10).values()))), 4)

    tmp = Path(tempfile.mkdtemp(prefix="csr-fallback-bench-"))
    dense = FaissBackend(tmp / "faiss", meta=CollectionMeta(enc.model_id, enc.h, enc.k, enc.d))
    payloads = [{"doc_id": d} for d in doc_ids]
    dense.upsert([Point(i, p, dense=v) for i, p, v in zip(ids, payloads, docs)])
    dense.flush()

    # dense references, one query at a time (as the fallback runs them)
    dense.search(queries[0], top_k)  # load + warm
    t_dense, dense_hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        dense_hits.append(dense.search(q, top_k))
        t_dense.append(time.perf_counter() - t0)
    unit = docs[:, :32] / np.linalg.norm(docs[:, :32], axis=1, keepdims=True)
    flat32 = faiss.IndexFlatIP(32)
    flat32.add(np.ascontiguousarray(unit, dtype=np.float32))
    q32 = queries[:, :32] / np.linalg.norm(queries[:, :32], axis=1, keepdims=True)
    _, i32 = flat32.search(np.ascontiguousarray(q32, dtype=np.float32), top_k)
    from csr_adapter.integrations.base import SearchHit

    d32_hits = [[SearchHit(ids[j], 0.0) for j in row if j >= 0] for row in i32]
    result = {
        "dataset": "scifact test", "queries": len(qids), "docs": len(doc_ids), "top_k": top_k,
        "model_id": enc.model_id, "h": enc.h, "sparse_engine": "qdrant-edge",
        "fallback_index": "faiss IndexFlatIP 384-d",
        "dense_384": {"ndcg@10": ndcg(dense_hits), "latency": ms(t_dense)},
        "dense_32_truncated": {"ndcg@10": ndcg(d32_hits)},
        "rows": [],
    }

    for k in args.ks:
        codes_d = enc.sparsify(docs, k=k)
        codes_q = enc.sparsify(queries, k=k)
        sparse = EdgeBackend(tmp / f"qdrant-k{k}", meta=CollectionMeta(enc.model_id, enc.h, k))
        sparse.upsert([Point(i, p, sparse=c) for i, p, c in zip(ids, payloads, codes_d)])
        sparse.optimize()
        searchers = {
            "sparse+fallback": FallbackSearcher(enc, sparse, dense, k=k),  # merge="dense" (default)
            "sparse+fallback_sparse_first": FallbackSearcher(enc, sparse, dense, k=k, merge="sparse_first"),
            "sparse+fallback+rerank": FallbackSearcher(enc, sparse, dense, k=k, rerank=True,
                                                       rerank_depth=args.rerank_depth),
        }

        def sparse_only(c, q, sparse=sparse):
            return [h for h in sparse.search(c, top_k) if h.score > 0] if len(c) else []

        modes = {"sparse_only": sparse_only}
        for name, searcher in searchers.items():
            modes[name] = lambda c, q, s=searcher: s.answer_encoded(c, q, top_k)
        for c, q in zip(codes_q[:30], queries[:30]):  # warm both engines
            for fn in modes.values():
                fn(c, q)
        names = list(modes)
        out: dict[str, list] = {}
        times = {name: np.full((args.repeats, len(qids)), np.inf) for name in names}
        for rep in range(args.repeats):  # separate passes per mode, order rotated; per-query minimum
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                fn, res = modes[name], []
                for i, (c, q) in enumerate(zip(codes_q, queries)):
                    t0 = time.perf_counter()
                    res.append(fn(c, q))
                    times[name][rep, i] = time.perf_counter() - t0
                out[name] = res
        best = {name: t.min(axis=0) for name, t in times.items()}
        sparse_hits = out["sparse_only"]
        fill_answers = out["sparse+fallback"]
        short = [len(h) < top_k for h in sparse_hits]
        reasons = {r: sum(a.reason == r for a in fill_answers) for r in ("sparse", "few_hits", "empty_code")}
        trig = np.asarray([a.reason != "sparse" for a in fill_answers])
        extra = best["sparse+fallback"] - best["sparse_only"]
        row = {
            "k": k,
            "share_sparse_lt_topk_positive": round(float(np.mean(short)), 4),
            "share_sparse_empty": round(float(np.mean([len(h) == 0 for h in sparse_hits])), 4),
            "fallback_reasons": reasons,
            "mean_positive_sparse_hits": round(float(np.mean([len(h) for h in sparse_hits])), 3),
            "ndcg@10": {
                "sparse_only": ndcg(sparse_hits),
                **{name: ndcg([a.hits for a in out[name]]) for name in searchers},
                "sparse+fallback_triggered_queries_only": None,
                "dense_only_384": result["dense_384"]["ndcg@10"],
                "dense_32_truncated": result["dense_32_truncated"]["ndcg@10"],
            },
            "empty_results": {"sparse_only": int(sum(len(h) == 0 for h in sparse_hits)),
                              **{name: int(sum(len(a.hits) == 0 for a in out[name])) for name in searchers}},
            "latency": {
                **{name: ms(best[name]) for name in names},
                "triggered_sparse_only": ms(best["sparse_only"][trig]),
                "triggered_sparse+fallback": ms(best["sparse+fallback"][trig]),
                "added_by_fallback_mean_ms_all_queries": round(1e3 * float(extra.mean()), 4),
                "added_by_fallback_mean_ms_when_triggered": round(1e3 * float(extra[trig].mean()), 4)
                if trig.any() else 0.0,
            },
        }
        if trig.any():  # the fallback's effect where it acts
            sub = [i for i in range(len(qids)) if trig[i]]
            sub_q = {qids[i]: data.qrels[qids[i]] for i in sub}

            def sub_ndcg(hits_per_query, sub=sub, sub_q=sub_q):
                run = run_of([hits_per_query[i] for i in sub], [qids[i] for i in sub], back)
                return round(float(np.mean(list(ndcg_at(run, sub_q, 10).values()))), 4)

            row["ndcg@10"]["sparse+fallback_triggered_queries_only"] = {
                "queries": len(sub), "sparse_only": sub_ndcg(sparse_hits),
                **{name: sub_ndcg([a.hits for a in out[name]]) for name in searchers},
                "dense_only_384": sub_ndcg(dense_hits)}
        row["fallback_ge_dense32"] = row["ndcg@10"]["sparse+fallback"] >= result["dense_32_truncated"]["ndcg@10"]
        result["rows"].append(row)
        sparse.close()
        print(f"k={k}: short {row['share_sparse_lt_topk_positive']:.1%}  nDCG sparse {row['ndcg@10']['sparse_only']} "
              f"fallback {row['ndcg@10']['sparse+fallback']} (sparse-first "
              f"{row['ndcg@10']['sparse+fallback_sparse_first']}) rerank {row['ndcg@10']['sparse+fallback+rerank']} "
              f"dense {result['dense_384']['ndcg@10']} d32 {result['dense_32_truncated']['ndcg@10']}  "
              f"+{row['latency']['added_by_fallback_mean_ms_all_queries']} ms/query "
              f"(+{row['latency']['added_by_fallback_mean_ms_when_triggered']} when triggered)", flush=True)
    result["faiss"] = {"version": faiss.__version__, "default_blas_threshold": faiss_default_blas,
                       **faiss_settings(faiss, dense, queries, top_k, faiss_default_blas)}
    dense.close()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    path = write_result("fallback", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
