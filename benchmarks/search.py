"""Search speed on real CSRv2 codes: embedded Qdrant Edge at k = 2, 8, 32 vs FAISS IndexFlatIP (384-d, 32-d).

Also documents at k=8 with queries coded at k=64 (asymmetric codes, ``config.query_k``: more posting
lists per query, same index).

Encodes SciFact (5,183 docs, 300 test queries; through the shared embedding cache), then scales to
``--points`` points by sampling real codes with replacement (posting-list lengths follow the real
latent usage). Every engine answers the same 300 queries, top-10, in the same process:

- one query at a time (latency p50/p99 and QPS = queries / total time): Edge through ``EdgeBackend``,
  FAISS with 1 thread (its best single-query setting here);
- one batch of all queries (QPS): Edge ``query_batch``, FAISS with all cores and
  ``faiss.cvar.distance_compute_blas_threshold`` lowered so batched flat search uses BLAS.

Also reported: bytes/doc, sum of p^2 of latent usage (1/h when uniform), postings scanned per query,
and a brute-force check of Edge's top-10 scores. Goal at 1M, k=8: >= 10x flat-384 QPS, >= 2x flat-32.

    python benchmarks/search.py [--points 1000000] [--ks 2,8,32] [--query-ks 8:64] [--faiss-single 30] [--threads 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import uuid

import numpy as np
from _common import SCIFACT, write_result

TOP = 10


def _lat(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"qps": round(len(ms) / (ms.sum() / 1e3), 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "queries": len(ms)}


def usage_stats(codes, counts: np.ndarray, qcodes, h: int) -> dict:
    """Latent usage over the sampled collection: sum p^2, postings per query, bytes per doc."""
    rows = np.repeat(np.arange(len(codes)), codes.nnz)
    postings = np.bincount(codes.indices, weights=counts[rows], minlength=h)  # docs per latent
    p = postings / postings.sum()
    per_query = [float(postings[q.indices].sum()) for q in qcodes]
    nnz = float((codes.nnz * counts).sum() / counts.sum())
    return {"mean_nnz": round(nnz, 2), "bytes_per_doc": round(nnz * 8, 1), "sum_p2": float((p ** 2).sum()),
            "effective_latents": round(float(1 / (p ** 2).sum()), 1), "dead_latents": int((postings == 0).sum()),
            "postings_per_query_mean": round(float(np.mean(per_query))),
            "postings_per_query_p99": round(float(np.percentile(per_query, 99))),
            "postings_per_query_share": round(float(np.mean(per_query)) / counts.sum(), 4)}


def bench_edge(enc, codes, qcodes, sample: np.ndarray, k: int, threads: int) -> dict:
    from csr_adapter.integrations.base import CollectionMeta, Point
    from csr_adapter.integrations.qdrant_edge import EdgeBackend

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        be = EdgeBackend(os.path.join(tmp, "c"), meta=CollectionMeta(enc.model_id, enc.h, k), threads=threads)
        rows = list(codes)
        start = time.perf_counter()
        for lo in range(0, len(sample), 20_000):
            be.upsert([Point(str(uuid.UUID(int=int(i) + 1)), {}, rows[j])
                       for i, j in zip(range(lo, lo + 20_000), sample[lo:lo + 20_000])])
        t_insert = time.perf_counter() - start
        start = time.perf_counter()
        be.optimize()
        t_opt = time.perf_counter() - start
        disk = sum(f.stat().st_blocks * 512 for f in be.path.rglob("*") if f.is_file() and "wal" not in f.parts)
        queries = list(qcodes)
        for q in queries[:20]:
            be.search(q, TOP, with_payload=False)
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            be.search(q, TOP, with_payload=False)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        batch = be.search_batch(qcodes, TOP, with_payload=False)
        t_batch = time.perf_counter() - t0
        # brute force over the sampled collection: Edge's top-10 scores must match exactly
        matrix = codes.to_scipy()[sample]
        exact = 0
        for q, hits in zip(queries[:30], batch[:30]):
            scores = np.asarray((matrix @ q.to_dense()).ravel())
            want = np.sort(scores[scores > 0])[::-1][:TOP]
            exact += len(hits) == len(want) and np.allclose([hh.score for hh in hits], want, atol=1e-5)
        be.close()
    return {"insert_seconds": round(t_insert, 1), "insert_points_per_s": round(len(sample) / t_insert),
            "optimize_seconds": round(t_opt, 1), "segments_bytes_per_point": round(disk / len(sample), 1),
            "single": _lat(lat), "batch_qps": round(len(queries) / t_batch, 1),
            "top10_scores_equal_bruteforce": f"{exact}/30"}


def bench_faiss(vectors: np.ndarray, queries: np.ndarray, n_single: int, threads: int) -> dict:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.cvar.distance_compute_blas_threshold = 16  # default here 128000: batched flat search 6-8x slower
    faiss.omp_set_num_threads(1)
    index.search(queries[:5], TOP)
    lat = []
    for q in queries[:n_single]:
        t0 = time.perf_counter()
        index.search(q[None, :], TOP)
        lat.append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index.search(queries, TOP)
    t_batch = time.perf_counter() - t0
    out = {"bytes_per_doc": vectors.shape[1] * 4, "single": _lat(lat), "batch_qps": round(len(queries) / t_batch, 1)}
    del index
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--ks", default="2,8,32")
    ap.add_argument("--query-ks", default="8:64",
                    help="extra asymmetric rows DOC_K:QUERY_K (documents at DOC_K, queries coded wider)")
    ap.add_argument("--faiss-single", type=int, default=30, help="queries timed one at a time on FAISS")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from csr_adapter import CSREncoder
    from csr_adapter.cache import cached_dense
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.beir import load_beir

    threads = set_threads(args.threads)
    enc = CSREncoder.from_pretrained()
    data = load_beir(SCIFACT, split="test")
    doc_ids = list(data.corpus)
    docs = cached_dense(enc, [data.doc_text(d) for d in doc_ids], prefix=enc.config.document_prefix, desc="docs")
    queries = cached_dense(enc, list(data.queries.values()), prefix=enc.config.query_prefix, desc="queries")
    rng = np.random.default_rng(args.seed)
    sample = rng.integers(0, len(doc_ids), args.points)
    counts = np.bincount(sample, minlength=len(doc_ids)).astype(np.float64)
    result: dict = {"points": args.points, "real_docs": len(doc_ids), "queries": len(queries), "top_k": TOP,
                    "threads": threads, "model_id": enc.model_id, "h": enc.h, "edge": {}, "faiss": {}}
    plan = [(int(x), int(x)) for x in args.ks.split(",")]
    plan += [tuple(int(v) for v in pair.split(":")) for pair in args.query_ks.split(",") if pair]
    for k, qk in plan:
        codes, qcodes = enc.sparsify(docs, k), enc.sparsify(queries, qk)
        name = f"k={k}" if qk == k else f"k={k} query k={qk}"
        print(f"{name}: Qdrant Edge, {args.points:,} points", file=sys.stderr, flush=True)
        result["edge"][name] = usage_stats(codes, counts, qcodes, enc.h) | bench_edge(
            enc, codes, qcodes, sample, k, threads)
        print(result["edge"][name], file=sys.stderr, flush=True)
    centered = docs - docs.mean(axis=0)
    basis = np.linalg.svd(centered[:: max(1, len(centered) // 4000)], full_matrices=False)[2][:32]
    for name, dv, qv in (("flat-384", docs, queries), ("flat-32 (PCA)", docs @ basis.T, queries @ basis.T)):
        dv = dv / np.linalg.norm(dv, axis=1, keepdims=True)
        qv = np.ascontiguousarray(qv / np.linalg.norm(qv, axis=1, keepdims=True), dtype=np.float32)
        print(f"FAISS {name}", file=sys.stderr, flush=True)
        result["faiss"][name] = bench_faiss(np.ascontiguousarray(dv[sample], dtype=np.float32), qv,
                                            args.faiss_single, threads)
        print(result["faiss"][name], file=sys.stderr, flush=True)
    goal = result["edge"].get("k=8")
    if goal:
        f384, f32 = result["faiss"]["flat-384"], result["faiss"]["flat-32 (PCA)"]
        result["goal"] = {
            "single_x_flat384": round(goal["single"]["qps"] / f384["single"]["qps"], 2),
            "single_x_flat32": round(goal["single"]["qps"] / f32["single"]["qps"], 2),
            "batch_x_flat384": round(goal["batch_qps"] / f384["batch_qps"], 2),
            "batch_x_flat32": round(goal["batch_qps"] / f32["batch_qps"], 2),
            "target": ">= 10x flat-384 and >= 2x flat-32 QPS at k=8",
        }
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(write_result("search", result, render(result, args)))


def render(r: dict, args) -> str:
    lines = ["# Search benchmark: Qdrant Edge (sparse CSR codes) vs FAISS flat\n",
             f"`{' '.join(['python benchmarks/search.py', *sys.argv[1:]])}` — {r['points']:,} points sampled from "
             f"{r['real_docs']} real SciFact codes, {r['queries']} real queries, top-{r['top_k']}, "
             f"{r['threads']} threads.\n",
             "| engine | bytes/doc | single QPS | p50 ms | p99 ms | batch QPS | sum p^2 | postings/query |",
             "|---|---|---|---|---|---|---|---|"]
    for k, e in r["edge"].items():
        s = e["single"]
        lines.append(f"| Edge {k} | {e['bytes_per_doc']} | {s['qps']} | {s['p50_ms']} | {s['p99_ms']} | "
                     f"{e['batch_qps']} | {e['sum_p2']:.5f} | {e['postings_per_query_mean']:,} |")
    for name, f in r["faiss"].items():
        s = f["single"]
        lines.append(f"| FAISS {name} | {f['bytes_per_doc']} | {s['qps']} | {s['p50_ms']} | {s['p99_ms']} | "
                     f"{f['batch_qps']} | | |")
    if "goal" in r:
        g = r["goal"]
        lines.append(f"\nk=8 vs flat-384: {g['single_x_flat384']}x single, {g['batch_x_flat384']}x batched; "
                     f"vs flat-32: {g['single_x_flat32']}x single, {g['batch_x_flat32']}x batched "
                     f"(target {g['target']}).")
    lines.append(f"\nLoad average at the end: {r['load_average_at_end']} (shared 2-core box).\n")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
