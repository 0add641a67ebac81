"""Search speed and memory on real CSRv2 codes: Qdrant Edge sparse (k = 2, 8, 32) vs FAISS flat and HNSW.

Engines, every one answering the same real queries, top-10, in one run of this script:

- Qdrant Edge, sparse CSR codes at k = 2, 8, 32, and documents at k=8 with queries coded at k=64
  (``--query-ks``; the product's default ``query_k``), through ``EdgeBackend`` (exact inverted index);
- Qdrant Edge, dense HNSW (m=32, its default ef_construct 100), ``hnsw_ef`` swept upward;
- FAISS ``IndexFlatIP`` on 384-d and on 32-d (PCA), exact;
- FAISS ``IndexHNSWFlat`` (M=32, inner product on unit vectors, its default efConstruction 40), efSearch
  swept upward (``--ef``); the first efSearch with recall@10 >= 0.95 against exact dense is the HNSW row;
- Seismic (``pyseismic-lsr``, an approximate inverted index for learned sparse vectors: posting lists cut into
  blocks with summary vectors, blocks skipped when their summary cannot reach the top-10), on the same k=8 codes
  and queries as the Edge rows, ``heap_factor`` swept from fast to exact (``--heap``); posting lists are kept
  whole (``n_postings`` from the longest list), so its only approximation is block skipping. Optional: the row
  is left out when the package is not installed (``pip install pyseismic-lsr==0.5.4``).

Data (``--corpus broad``, the default): the first ``--texts`` distinct texts of a seeded shuffle of the
broad sets in ``shared/data`` (WordNet glosses, FOLDOC, Jargon File, V.E.R.A., GCIDE, 20 Newsgroups),
embedded once through the shared embedding cache, and a head adapted to them with ``CSREncoder.adapt``
(the product path, cached). Queries: the last ``--queries`` texts of the same shuffle (never in the corpus).
``--points`` larger than ``--texts`` adds perturbed copies: a real vector plus Gaussian noise, renormalised,
at cosine ``--copy-cos`` to its source, then coded by the adapted head (so posting lists follow the real
latent usage). ``--corpus scifact``: the 5,183 SciFact abstracts, default head, exact copies (the old run).

Each engine is built in a fresh subprocess (build time, peak RSS, bytes on disk) and served from another
fresh subprocess (load, all queries one at a time with 1 thread for FAISS, then one batch with all
threads; RSS after = resident memory of the loaded index in use), ``--rounds`` times, the engines
interleaved; each engine keeps its faster pass (the box is shared). Memory and disk are measured, not
computed from k. Also reported for sparse codes: sum p^2 of latent usage, postings scanned per query, and
ns per posting against a measured memory read bandwidth.

    python benchmarks/search.py [--points 200000] [--texts 60000] [--ks 2,8,32] [--query-ks 8:64]
                                [--ef 16,32,64,128,256] [--faiss-single 30] [--threads 0]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _common import DATA, SCIFACT, write_result

TOP = 10
GOAL_RECALL = 0.95


# -- measurement helpers ------------------------------------------------------------------------------
def _lat(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"qps": round(len(ms) / (ms.sum() / 1e3), 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "queries": len(ms)}


def _rss() -> dict[str, int]:
    """This process's resident memory in bytes: total, anonymous, file-backed, and the peak."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _disk(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (a file or a directory), write-ahead log excluded."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and "wal" not in f.parts]
    return sum(f.stat().st_blocks * 512 for f in files)


def disk_breakdown(path: Path) -> dict[str, int]:
    """Bytes on disk per file name (segment directories merged), write-ahead log excluded, largest first."""
    sizes: dict[str, int] = {}
    for f in path.rglob("*"):
        if f.is_file() and "wal" not in f.parts:
            parts = f.relative_to(path).parts
            name = "/".join(p for p in parts if p != "segments" and len(p) != 36)  # drop segment uuids
            sizes[name] = sizes.get(name, 0) + f.stat().st_blocks * 512
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def recall(found: list[list[int]], exact: np.ndarray) -> float:
    """Mean share of the exact top-10 ids found."""
    return round(float(np.mean([len(set(f[:TOP]) & set(e.tolist())) / TOP for f, e in zip(found, exact)])), 4)


def exact_topk(score_chunk, n: int, chunk: int = 50_000) -> np.ndarray:
    """Top-10 ids per query over ``n`` points; ``score_chunk(lo, hi)`` gives (hi - lo, queries) scores."""
    best_s, best_i = None, None
    for lo in range(0, n, chunk):
        s = np.asarray(score_chunk(lo, min(n, lo + chunk)), dtype=np.float32).T  # (queries, chunk)
        i = np.broadcast_to(np.arange(lo, lo + s.shape[1]), s.shape)
        if best_s is not None:
            s, i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
        top = np.argpartition(-s, TOP - 1, axis=1)[:, :TOP]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def read_bandwidth() -> float:
    """Single-thread memory read bandwidth in bytes/s (best of 3 sums over 512 MB)."""
    a = np.ones(128 << 20, dtype=np.float32)
    best = min(_timed(a.sum) for _ in range(3))
    return a.nbytes / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def usage_stats(codes, qcodes, h: int) -> dict:
    """Latent usage over the collection: sum p^2, postings per query, bytes per doc (k x 8, for reference)."""
    postings = np.bincount(codes.indices, minlength=h).astype(np.float64)  # docs per latent
    p = postings / postings.sum()
    per_query = [float(postings[q.indices].sum()) for q in qcodes]
    n = len(codes)
    return {"mean_nnz": round(float(codes.nnz.mean()), 2), "code_bytes_per_doc": round(float(codes.nnz.mean()) * 8, 1),
            "sum_p2": float((p ** 2).sum()), "effective_latents": round(float(1 / (p ** 2).sum()), 1),
            "dead_latents": int((postings == 0).sum()), "query_nnz": round(float(qcodes.nnz.mean()), 2),
            "postings_per_query_mean": round(float(np.mean(per_query))),
            "postings_per_query_p99": round(float(np.percentile(per_query, 99))),
            "postings_per_query_share": round(float(np.mean(per_query)) / n, 4)}


# -- data -----------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def broad_texts(seed: int = 0) -> list[str]:
    """Every distinct text of the broad sets, in a seeded shuffle (WordNet, FOLDOC, Jargon, V.E.R.A., GCIDE,
    20 Newsgroups; pairs files as "query: positive")."""
    def pairs(name: str) -> list[str]:
        return [f"{r['query']}: {r['positive']}" for r in _rows(DATA / name / "pairs.jsonl.gz")]

    sources = [[r["text"] for r in _rows(DATA / n / "texts.jsonl.gz")] for n in ("wordnet", "foldoc", "jargon")]
    sources += [pairs("vera"), pairs("gcide")]
    sources += [[r["text"] for s in ("train", "test") for r in _rows(DATA / "20newsgroups" / f"{s}.jsonl.gz")]]
    texts = list(dict.fromkeys(t.strip() for source in sources for t in source if t.strip()))
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order]


def load_data(args, enc) -> tuple:
    """(encoder, distinct doc vectors, query vectors, description) for ``args.corpus``."""
    from csr_adapter.cache import cache_key, cached_dense, default_cache_dir

    if args.corpus == "scifact":
        from csr_adapter.training.beir import load_beir

        data = load_beir(SCIFACT, split="test")
        docs = cached_dense(enc, [data.doc_text(d) for d in data.corpus], prefix=enc.config.document_prefix,
                            desc="docs")
        queries = cached_dense(enc, list(data.queries.values()), prefix=enc.config.query_prefix, desc="queries")
        return enc, docs, queries, "SciFact abstracts (5,183), default head, copies without noise"
    texts = broad_texts(args.seed)
    doc_texts, query_texts = texts[:args.texts], texts[-args.queries:]
    if args.texts + args.queries > len(texts):
        raise SystemExit(f"--texts + --queries exceeds the {len(texts):,} distinct broad texts")
    queries = cached_dense(enc, query_texts, prefix=enc.config.query_prefix, desc="queries")
    docs = cached_dense(enc, doc_texts, prefix=enc.config.document_prefix, desc="docs")
    folder = default_cache_dir().parent / "bench-heads" / hashlib.sha256(
        f"{enc.model_id}|{cache_key(enc, doc_texts, enc.config.document_prefix)}|adapt-k8".encode()).hexdigest()[:24]
    from csr_adapter import CSREncoder

    if (folder / "config.json").exists():
        adapted = CSREncoder.from_pretrained(folder)
        adapt_s = round(float(adapted.config.training.get("adapt_report", {}).get("seconds", float("nan"))), 1)
    else:
        t0 = time.perf_counter()
        adapted = enc.adapt(dense=docs, k=8, progress=True)
        adapt_s = round(time.perf_counter() - t0, 1)
        adapted.save_pretrained(folder)
    desc = (f"{args.texts:,} distinct real texts (broad sets), head adapted to them with CSREncoder.adapt "
            f"(k=8, {adapt_s} s); {args.queries} held-out texts of the same sets as queries")
    return adapted, docs, queries, desc


def make_points(docs: np.ndarray, n: int, copy_cos: float, seed: int) -> tuple[np.ndarray, int]:
    """``n`` unit vectors: every real vector once, then perturbed copies at cosine ~``copy_cos`` to a
    random real one. Returns (vectors, how many are real)."""
    real = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    n_real = min(n, len(real))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[:n_real] = real[:n_real]
    rng = np.random.default_rng([seed, 29])
    sigma = np.sqrt(max(0.0, 1 / copy_cos ** 2 - 1) / real.shape[1])
    for lo in range(n_real, n, 50_000):
        hi = min(n, lo + 50_000)
        x = real[rng.integers(0, len(real), hi - lo)] + sigma * rng.standard_normal((hi - lo, real.shape[1]))
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, n_real


def sparsify(enc, x: np.ndarray, k: int):
    """``enc.sparsify`` in chunks (the (n, h) pre-activations of 1M points do not fit at once)."""
    from csr_adapter.sparse import SparseEmbeddings

    return SparseEmbeddings.concat([enc.sparsify(x[lo:lo + 20_000], k) for lo in range(0, len(x), 20_000)])


def save_codes(folder: Path, name: str, codes) -> str:
    path = folder / name
    np.savez(path, indptr=codes.indptr, indices=codes.indices, values=codes.values, dim=codes.dim)
    return str(path) + ".npz"


def load_codes(path: str):
    from csr_adapter.sparse import SparseEmbeddings

    z = np.load(path)
    return SparseEmbeddings(z["indptr"], z["indices"], z["values"], int(z["dim"]))


def probe_latents(codes, targets: tuple[int, ...] = (5, 100, 1000, 10000)) -> list[tuple[list[int], int]]:
    """Probe queries ``(latents, postings)``: one latent, then two latents, whose posting lists are nearest to
    each target length (what a query costs beyond its postings, and whether a second list changes it)."""
    used = np.bincount(codes.indices, minlength=codes.dim)
    live = np.flatnonzero(used)
    out = []
    for width in (1, 2):
        for t in targets:
            picks = live[np.argsort(np.abs(used[live] - t), kind="stable")[:width]]
            out.append(([int(x) for x in picks], int(used[picks].sum())))
    return out


def write_seismic_bin(path: Path, codes) -> None:
    """``codes`` in Seismic's inner binary format: u32 row count, then per row u32 length, u32 components
    (sorted), f32 values."""
    n, nnz = len(codes), np.diff(codes.indptr)
    rows = np.repeat(np.arange(n), nnz)
    order = np.lexsort((codes.indices, rows))  # components sorted within each row
    out = np.empty(1 + n + 2 * len(order), dtype=np.uint32)
    out[0] = n
    heads = 1 + np.arange(n) + 2 * codes.indptr[:-1]  # where each row's length goes
    out[heads] = nnz
    within = np.arange(len(order)) - codes.indptr[:-1][rows]  # position of each posting inside its row
    comps = heads[rows] + 1 + within
    out[comps] = codes.indices[order]
    out[comps + nnz[rows]] = codes.values[order].view(np.uint32)
    out.tofile(path)


# -- engines (run inside fresh worker processes) ----------------------------------------------------------
def _chunks(n: int, size: int):
    return ((lo, min(n, lo + size)) for lo in range(0, n, size))


def build(spec: dict) -> dict:
    """Build one engine's index from the spec's files and save it to ``spec['index']``."""
    kind, threads, index_path = spec["kind"], spec["threads"], Path(spec["index"])
    if kind.startswith("faiss"):
        import faiss

        before, t0 = _rss(), time.perf_counter()
        faiss.omp_set_num_threads(threads)
        x = np.load(spec["points"], mmap_mode="r")
        index = (faiss.IndexFlatIP(x.shape[1]) if kind == "faiss-flat"
                 else faiss.IndexHNSWFlat(x.shape[1], spec["m"], faiss.METRIC_INNER_PRODUCT))
        for lo, hi in _chunks(len(x), 50_000):
            index.add(np.ascontiguousarray(x[lo:hi], dtype=np.float32))
        n = index.ntotal
        del x
        build_s = time.perf_counter() - t0
        faiss.write_index(index, str(index_path))
    elif kind == "seismic":
        from seismic import SeismicIndexRaw

        codes = load_codes(spec["codes"])
        before, t0 = _rss(), time.perf_counter()
        n = len(codes)
        longest = int(np.bincount(codes.indices, minlength=codes.dim).max())
        source = index_path.with_suffix(".bin")
        write_seismic_bin(source, codes)
        del codes
        # GlobalThreshold keeps n_postings * dim postings, at most 1.5 * n_postings per list: no list is cut
        index = SeismicIndexRaw.build(str(source), n_postings=max(3500, -(-longest * 2 // 3)),
                                      centroid_fraction=0.1, summary_energy=0.4)
        build_s = time.perf_counter() - t0
        index.save(str(index_path))  # a raw index is saved under the exact name given
        source.unlink()
        del index
    elif kind == "edge-sparse":
        from csr_adapter.integrations.base import CollectionMeta, Point
        from csr_adapter.integrations.qdrant_edge import EdgeBackend

        codes = load_codes(spec["codes"])
        before, t0 = _rss(), time.perf_counter()
        n = len(codes)
        be = EdgeBackend(index_path, meta=CollectionMeta(spec["model_id"], codes.dim, spec["k"]), threads=threads)
        for lo, hi in _chunks(n, 20_000):
            be.upsert([Point(str(uuid.UUID(int=i + 1)), {}, codes[i]) for i in range(lo, hi)])
        insert_s = time.perf_counter() - t0
        be.optimize()
        build_s = time.perf_counter() - t0
        be.close()
    else:  # edge-hnsw
        import qdrant_edge as q

        before, t0 = _rss(), time.perf_counter()
        x = np.load(spec["points"], mmap_mode="r")
        n = len(x)
        hnsw = q.HnswIndexConfig(m=spec["m"], ef_construct=spec["ef_construct"], full_scan_threshold=1000)
        config = q.EdgeConfig(vectors={"d": q.EdgeVectorParams(size=x.shape[1], distance=q.Distance.Dot,
                                                                hnsw_config=hnsw)},
                              optimizers=q.EdgeOptimizersConfig(indexing_threshold=1), max_search_threads=threads)
        shard = q.EdgeShard.create(str(index_path), config)
        for lo, hi in _chunks(n, 2_000):
            rows = np.asarray(x[lo:hi], dtype=np.float32).tolist()
            shard.update(q.UpdateOperation.upsert_points([q.Point(i + 1, {"d": v}, None)
                                                          for i, v in zip(range(lo, hi), rows)]))
        insert_s = time.perf_counter() - t0
        shard.optimize()
        build_s = time.perf_counter() - t0
        shard.flush()
        shard.close()
        del x
    gc.collect()
    after = _rss()
    out = {"build_seconds": round(build_s, 1), "disk_bytes": _disk(index_path),
           "build_peak_rss_delta_bytes": after["VmHWM"] - before["VmRSS"], "points": n}
    if kind.startswith("edge"):
        out["insert_seconds"] = round(insert_s, 1)
        out["disk_by_file"] = disk_breakdown(index_path)
        out["segments"] = len(list((index_path / "segments").iterdir()))
    return out


def serve(spec: dict) -> dict:
    """Load one engine's index, answer every query one at a time and in one batch; RSS around it."""
    kind, threads = spec["kind"], spec["threads"]
    settings: list = [None]
    before: dict = {}  # measured after imports and query loading, just before the index is opened
    if kind.startswith("faiss"):
        import faiss

        queries = np.load(spec["queries"])
        before = _rss()
        faiss.omp_set_num_threads(threads)
        index = faiss.read_index(spec["index"])
        faiss.cvar.distance_compute_blas_threshold = 16  # default here 128000: batched flat search 6-8x slower
        if kind == "faiss-hnsw":
            settings = spec["ef"]
        n_single = spec["single"] if kind == "faiss-flat" else len(queries)

        def set_ef(ef):
            if ef is not None:
                index.hnsw.efSearch = ef

        def one(i):
            return index.search(queries[i:i + 1], TOP)[1][0].tolist()

        def batch():
            return index.search(queries, TOP)[1].tolist()

        def single_threads(on: bool):
            faiss.omp_set_num_threads(1 if on else threads)
    elif kind == "seismic":
        from seismic import SeismicIndexRaw

        qcodes = load_codes(spec["query_codes"])
        rows = [(np.asarray(q.indices, dtype=np.int32), np.asarray(q.values, dtype=np.float32)) for q in qcodes]
        query_file = Path(spec["index"] + ".queries.bin")
        write_seismic_bin(query_file, qcodes)
        cut = max(len(c) for c, _ in rows)
        n_single = len(rows)
        before = _rss()
        index = SeismicIndexRaw.load(spec["index"])
        settings = spec["heap"]
        heap: list = [1.0]

        def set_ef(h):
            heap[0] = h

        def one(i):
            comps, vals = rows[i]
            return [int(d) for _, d in index.search(comps, vals, TOP, len(comps), heap[0], 0, True)]

        def batch():
            out = index.batch_search(str(query_file), TOP, cut, heap[0], 0, True, num_threads=threads)
            if len(out) != len(rows):
                raise RuntimeError(f"Seismic answered {len(out)} of {len(rows)} queries")
            return [[int(d) for _, d in r] for r in out]

        def single_threads(on: bool):
            pass
    elif kind == "edge-sparse":
        from csr_adapter.integrations.qdrant_edge import EdgeBackend

        qcodes = load_codes(spec["query_codes"])
        rows = list(qcodes)
        n_single = len(rows)
        before = _rss()
        be = EdgeBackend(spec["index"], create=False, threads=threads)

        def set_ef(ef):
            pass

        def ids(hits):
            return [uuid.UUID(h.id).int - 1 for h in hits]

        def one(i):
            return ids(be.search(rows[i], TOP, with_payload=False))

        def batch():
            return [ids(h) for h in be.search_batch(qcodes, TOP, with_payload=False)]

        def single_threads(on: bool):
            pass
    else:  # edge-hnsw
        import qdrant_edge as q

        queries = np.load(spec["queries"]).tolist()
        n_single = len(queries)
        before = _rss()
        shard = q.EdgeShard.load(spec["index"])
        settings = spec["ef"]
        params: list = [None]

        def set_ef(ef):
            params[0] = q.SearchParams(hnsw_ef=ef)

        def request(v):
            return q.QueryRequest(limit=TOP, query=q.Query.Nearest(v, using="d"), params=params[0],
                                  with_payload=False, with_vector=False)

        def one(i):
            return [p.id - 1 for p in shard.query(request(queries[i]))]

        def batch():
            answers = shard.query_batch(q.QueryBatchRequest([request(v) for v in queries]))
            return [[p.id - 1 for p in r] for r in answers]

        def single_threads(on: bool):
            pass
    loaded = _rss()
    out: dict = {"rss_after_load_bytes": loaded["VmRSS"] - before["VmRSS"], "settings": []}
    set_ef(settings[0])
    batch()  # one warm pass over every query, so no setting pays the first page faults
    for ef in settings:
        set_ef(ef)
        single_threads(True)
        for i in range(min(20, n_single)):
            one(i)
        lat, found = [], []
        for i in range(n_single):
            t0 = time.perf_counter()
            found.append(one(i))
            lat.append(time.perf_counter() - t0)
        single_threads(False)
        batch()
        t0 = time.perf_counter()
        batched = batch()
        t_batch = time.perf_counter() - t0
        out["settings"].append({"ef": ef, "single": _lat(lat), "batch_qps": round(len(batched) / t_batch, 1),
                                "single_ids": found, "batch_ids": batched})
    if kind == "edge-sparse":  # the engine alone, without csr-adapter's Python wrapper
        transport = be.transport
        reqs = [transport._request(be._nearest(r, TOP, None, with_payload=False)) for r in rows]
        lat = []
        for r in reqs:
            t0 = time.perf_counter()
            transport._shard.query(r)
            lat.append(time.perf_counter() - t0)
        out["engine_only_single"] = _lat(lat)
        # one- and two-latent queries over posting lists of growing length: what a query costs beyond its postings
        from csr_adapter.sparse import SparseEmbedding

        out["engine_only_probes"] = []
        for latents, postings in spec["probe_latents"]:
            probe = transport._request(be._nearest(SparseEmbedding(
                np.array(sorted(latents), dtype=np.int32), np.ones(len(latents), dtype=np.float32), qcodes.dim),
                TOP, None, with_payload=False))
            lat = []
            for _ in range(250):
                t0 = time.perf_counter()
                transport._shard.query(probe)
                lat.append(time.perf_counter() - t0)
            out["engine_only_probes"].append({"latents": len(latents), "postings": postings, **_lat(lat[50:])})
    after = _rss()
    out["rss_after_queries_bytes"] = after["VmRSS"] - before["VmRSS"]
    out["rss_anon_after_queries_bytes"] = after["RssAnon"] - before["RssAnon"]
    out["rss_file_after_queries_bytes"] = after["RssFile"] - before["RssFile"]
    return out


def run_phase(spec: dict, folder: Path, phase: str) -> dict:
    """Run ``build`` or ``serve`` for one engine in a fresh process; returns its report."""
    spec_path = folder / f"{spec['name']}.{phase}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    subprocess.run([sys.executable, __file__, "--worker", phase, "--spec", str(spec_path)], check=True, env=env)
    return json.loads(spec_path.with_suffix(".out.json").read_text())


def best_of(first: dict, other: dict) -> dict:
    """Two serve reports of one engine merged: per setting the faster single-query pass and batch (memory
    from the first)."""
    for a, b in zip(first["settings"], other["settings"]):
        if b["single"]["qps"] > a["single"]["qps"]:
            a["single"], a["single_ids"] = b["single"], b["single_ids"]
        if b["batch_qps"] > a["batch_qps"]:
            a["batch_qps"], a["batch_ids"] = b["batch_qps"], b["batch_ids"]
    if "engine_only_single" in other and other["engine_only_single"]["qps"] > first["engine_only_single"]["qps"]:
        first["engine_only_single"] = other["engine_only_single"]
    for i, probe in enumerate(other.get("engine_only_probes", [])):
        if probe["qps"] > first["engine_only_probes"][i]["qps"]:
            first["engine_only_probes"][i] = probe
    return first


# -- the run ------------------------------------------------------------------------------------------------
def summarise(name: str, rep: dict, n: int, exact_own: np.ndarray, exact_dense: np.ndarray) -> dict:
    """One engine's row: per setting recall, and the first setting reaching GOAL_RECALL (else the best)."""
    b, s = rep["build"], rep["serve"]
    rows = []
    for st in s["settings"]:
        rows.append({"ef": st["ef"], "single": st["single"], "batch_qps": st["batch_qps"],
                     "recall_own": recall(st["single_ids"], exact_own[:len(st["single_ids"])]),
                     "recall_batch_own": recall(st["batch_ids"], exact_own),
                     "recall_vs_dense_exact": recall(st["batch_ids"], exact_dense)})
    pick = next((r for r in rows if r["recall_own"] >= GOAL_RECALL), rows[-1])
    out = {"engine": name, **pick, "build_seconds": b["build_seconds"],
           "disk_bytes_per_doc": round(b["disk_bytes"] / n, 1),
           "rss_bytes_per_doc": round(s["rss_after_queries_bytes"] / n, 1),
           "rss_anon_bytes_per_doc": round(s["rss_anon_after_queries_bytes"] / n, 1),
           "rss_file_bytes_per_doc": round(s["rss_file_after_queries_bytes"] / n, 1),
           "rss_after_load_bytes_per_doc": round(s["rss_after_load_bytes"] / n, 1),
           "build_peak_rss_bytes_per_doc": round(b["build_peak_rss_delta_bytes"] / n, 1)}
    if "insert_seconds" in b:
        out["insert_seconds"] = b["insert_seconds"]
        out["segments"] = b["segments"]
        out["disk_bytes_per_doc_by_file"] = {f: round(v / n, 1) for f, v in b["disk_by_file"].items() if v / n >= 1}
    if len(rows) > 1:
        out["sweep"] = rows
    for key in ("engine_only_single", "engine_only_probes"):
        if key in s:
            out[key] = s[key]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--corpus", choices=("broad", "scifact"), default="broad")
    ap.add_argument("--texts", type=int, default=60_000, help="distinct broad texts to embed (cached)")
    ap.add_argument("--queries", type=int, default=500, help="held-out broad texts used as queries")
    ap.add_argument("--copy-cos", type=float, default=0.9, help="cosine of a perturbed copy to its source")
    ap.add_argument("--ks", default="2,8,32")
    ap.add_argument("--query-ks", default="8:64",
                    help="extra asymmetric rows DOC_K:QUERY_K (documents at DOC_K, queries coded wider)")
    ap.add_argument("--ef", default="16,32,64,128,256", help="HNSW efSearch / hnsw_ef values, ascending")
    ap.add_argument("--m", type=int, default=32, help="HNSW M (FAISS) / m (Edge)")
    ap.add_argument("--heap", default="1.0,0.9,0.8,0.7", help="Seismic heap_factor values, fastest first")
    ap.add_argument("--engines", default="edge-sparse,faiss-flat,faiss-hnsw,edge-hnsw,seismic")
    ap.add_argument("--faiss-single", type=int, default=30, help="queries timed one at a time on FAISS flat")
    ap.add_argument("--rounds", type=int, default=2,
                    help="serve passes over all engines, interleaved; the faster pass per engine is kept")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="search", help="result name under benchmarks/results/")
    ap.add_argument("--worker", choices=("build", "serve"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        result = build(spec) if args.worker == "build" else serve(spec)
        Path(args.spec).with_suffix(".out.json").write_text(json.dumps(result))
        return

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads

    threads = set_threads(args.threads)
    engines = set(args.engines.split(","))
    if "seismic" in engines:
        try:
            import seismic  # noqa: F401
        except ImportError:
            print("seismic row left out: pip install pyseismic-lsr==0.5.4", file=sys.stderr)
            engines.discard("seismic")
    base = CSREncoder.from_pretrained()
    enc, docs, queries, data_desc = load_data(args, base)
    points, n_real = make_points(docs, args.points, 1.0 if args.corpus == "scifact" else args.copy_cos, args.seed)
    if args.corpus == "scifact":  # the old run: exact copies, sampled with replacement
        points = points[np.random.default_rng(args.seed).integers(0, len(points), args.points)] \
            if args.points > len(points) else points
    queries = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True), dtype=np.float32)
    n = len(points)
    efs = [int(x) for x in args.ef.split(",")]
    result: dict = {"points": n, "distinct_real_vectors": n_real, "corpus": args.corpus, "data": data_desc,
                    "copy_cos": args.copy_cos if n > n_real and args.corpus == "broad" else None,
                    "queries": len(queries), "top_k": TOP, "m": args.m, "rounds": args.rounds, "threads": threads,
                    "model_id": enc.model_id,
                    "h": enc.h,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "engines": {}}
    bandwidth = read_bandwidth()
    result["read_bandwidth_gb_s_1thread"] = round(bandwidth / 1e9, 2)
    print(data_desc, f"{n:,} points", file=sys.stderr, flush=True)

    folder = Path(tempfile.mkdtemp(prefix="csr-search-", dir=os.environ.get("BENCH_TMP")))
    try:
        np.save(folder / "points.npy", points)
        np.save(folder / "queries.npy", queries)
        t0 = time.perf_counter()
        exact_dense = exact_topk(lambda lo, hi: points[lo:hi] @ queries.T, n)
        result["exact_dense_seconds"] = round(time.perf_counter() - t0, 1)
        common = {"threads": threads, "queries": str(folder / "queries.npy"), "points": str(folder / "points.npy")}

        def engine(name: str, spec: dict, exact_own: np.ndarray) -> None:
            print(name, file=sys.stderr, flush=True)
            spec = {**common, "name": name.replace(" ", "_").replace("=", "").replace(":", "_")
                    .replace("(", "").replace(")", ""), **spec}
            spec["index"] = str(folder / (spec["name"] + ".index"))
            built.append((name, spec, exact_own, {"build": run_phase(spec, folder, "build")}))

        built: list[tuple] = []

        if "edge-sparse" in engines or "seismic" in engines:
            plan = [(int(x), int(x)) for x in args.ks.split(",") if x]
            plan += [tuple(int(v) for v in pair.split(":")) for pair in args.query_ks.split(",") if pair]
            for k, qk in plan:
                codes, qcodes = sparsify(enc, points, k), enc.sparsify(queries, qk)
                name = f"Edge sparse k={k}" if qk == k else f"Edge sparse k={k} query k={qk}"
                exact_sparse = exact_topk(lambda lo, hi, m=codes.to_scipy(), qd=qcodes.to_dense(): m[lo:hi] @ qd.T, n)
                stats = usage_stats(codes, qcodes, enc.h)
                files = {"codes": save_codes(folder, f"codes{k}", codes),
                         "query_codes": save_codes(folder, f"qcodes{k}_{qk}", qcodes)}
                if "edge-sparse" in engines:
                    engine(name, {"kind": "edge-sparse", "k": k, "model_id": enc.model_id, "extra": stats, **files,
                                  "probe_latents": probe_latents(codes)}, exact_sparse)
                if "seismic" in engines and (k, qk) in ((8, 8), (8, 64)):
                    engine(name.replace("Edge sparse", "Seismic"),
                           {"kind": "seismic", "k": k, "heap": [float(x) for x in args.heap.split(",")],
                            "extra": stats, **files}, exact_sparse)
                del codes
                gc.collect()
        if "faiss-flat" in engines or "faiss-hnsw" in engines:
            if "faiss-flat" in engines:
                engine("FAISS flat-384", {"kind": "faiss-flat", "single": args.faiss_single}, exact_dense)
                centered = docs - docs.mean(axis=0)
                basis = np.linalg.svd(centered[:: max(1, len(centered) // 4000)], full_matrices=False)[2][:32]
                p32 = points @ basis.T
                p32 /= np.linalg.norm(p32, axis=1, keepdims=True)
                q32 = queries @ basis.T
                q32 = np.ascontiguousarray(q32 / np.linalg.norm(q32, axis=1, keepdims=True), dtype=np.float32)
                np.save(folder / "points32.npy", p32.astype(np.float32))
                np.save(folder / "queries32.npy", q32)
                exact32 = exact_topk(lambda lo, hi: p32[lo:hi] @ q32.T, n)
                del p32
                engine("FAISS flat-32 (PCA)", {"kind": "faiss-flat", "single": args.faiss_single,
                                               "points": str(folder / "points32.npy"),
                                               "queries": str(folder / "queries32.npy")}, exact32)
            if "faiss-hnsw" in engines:
                engine(f"FAISS HNSW M={args.m}", {"kind": "faiss-hnsw", "m": args.m, "ef": efs,
                                                  "extra": {"ef_construction": 40}}, exact_dense)
        if "edge-hnsw" in engines:
            engine(f"Edge dense HNSW m={args.m}", {"kind": "edge-hnsw", "m": args.m, "ef_construct": 100, "ef": efs,
                                                    "extra": {"ef_construction": 100}}, exact_dense)
        for round_ in range(args.rounds):  # every engine served once per round: rounds interleave engines
            for name, spec, _, report in built:
                print(f"round {round_ + 1}: {name}", file=sys.stderr, flush=True)
                served = run_phase(spec, folder, "serve")
                report["serve"] = best_of(report["serve"], served) if "serve" in report else served
        for name, spec, exact_own, report in built:
            result["engines"][name] = summarise(name, report, n, exact_own, exact_dense) | spec.get("extra", {})
            print({k: v for k, v in result["engines"][name].items() if k != "sweep"}, file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["analysis"] = analyse(result, bandwidth)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(write_result(args.out, result, render(result)))


def analyse(r: dict, bandwidth: float) -> dict:
    """The goal check (k=8 vs FAISS HNSW) and where the sparse engine's time goes."""
    e = r["engines"]
    out: dict = {}
    sparse = [v for k, v in e.items() if k.startswith("Edge sparse") and "engine_only_single" in v]
    if len(sparse) >= 2:  # per-query latency = fixed + per-posting cost, over the k rows of this run
        x = np.array([v["postings_per_query_mean"] for v in sparse], dtype=np.float64)
        y = np.array([v["engine_only_single"]["p50_ms"] for v in sparse]) * 1e3
        slope, fixed = np.polyfit(x, y, 1)
        out["latency_fit"] = {"rows": len(sparse), "fixed_us_per_query": round(float(fixed), 1),
                              "ns_per_posting": round(float(slope) * 1e3, 2),
                              "ns_per_posting_at_read_bandwidth_8B": round(8 / bandwidth * 1e9, 3)}
    hnsw = next((v for k, v in e.items() if k.startswith("FAISS HNSW")), None)
    for name in ("Edge sparse k=8", "Edge sparse k=8 query k=64", "Seismic k=8", "Seismic k=8 query k=64"):
        s = e.get(name)
        if not s:
            continue
        if name.startswith("Edge"):  # an exact scan: its cost per posting against the memory-bandwidth limit
            engine_p50 = s.get("engine_only_single", s["single"])["p50_ms"]
            row = {"postings_per_query": s["postings_per_query_mean"],
                   "wrapper_ms_p50": round(s["single"]["p50_ms"] - engine_p50, 3),
                   "ns_per_posting_p50": round(engine_p50 * 1e6 / max(1, s["postings_per_query_mean"]), 2),
                   "ns_per_posting_at_read_bandwidth_8B": round(8 / bandwidth * 1e9, 3),
                   "engine_only_qps": s.get("engine_only_single", {}).get("qps")}
            row["x_slower_than_bandwidth_limit"] = round(
                row["ns_per_posting_p50"] / row["ns_per_posting_at_read_bandwidth_8B"], 1)
            row["bandwidth_limited_qps_1thread"] = round(bandwidth / (8 * max(1, s["postings_per_query_mean"])), 1)
            for width in (1, 2):  # measured: p50 us of one- and two-latent probe queries by postings
                probes = [p for p in s.get("engine_only_probes", []) if p["latents"] == width]
                if probes:
                    row[f"{width}_latent_probe_us_by_postings"] = {p["postings"]: round(p["p50_ms"] * 1e3, 1)
                                                                   for p in probes}
        else:
            row = {"heap_factor": s["ef"], "recall_own": s["recall_own"]}
        if hnsw:
            row["single_x_faiss_hnsw"] = round(s["single"]["qps"] / hnsw["single"]["qps"], 3)
            row["batch_x_faiss_hnsw"] = round(s["batch_qps"] / hnsw["batch_qps"], 3)
            row["rss_per_doc_x_faiss_hnsw"] = round(s["rss_bytes_per_doc"] / hnsw["rss_bytes_per_doc"], 3)
            row["faiss_hnsw_ef"] = hnsw["ef"]
            row["faiss_hnsw_recall"] = hnsw["recall_own"]
            row["qps_goal_met"] = (row["single_x_faiss_hnsw"] >= 1.0 and hnsw["recall_own"] >= GOAL_RECALL
                                   and s["recall_own"] >= GOAL_RECALL)
            row["memory_goal_met"] = row["rss_per_doc_x_faiss_hnsw"] <= 0.1
        out[name] = row
    return out


def render(r: dict) -> str:
    cmd = shlex.join(["python", "benchmarks/search.py", *sys.argv[1:]])  # quoted: --query-ks ""
    lines = ["# Search benchmark: Qdrant Edge sparse and Seismic (CSR codes) vs FAISS flat / HNSW and Edge dense "
             "HNSW\n",
             f"`{cmd}` ({r.get('date') or time.strftime('%Y-%m-%d %H:%M:%S')}) — {r['points']:,} points, "
             f"{r['queries']} real queries, top-{r['top_k']}, "
             f"{r['threads']} threads.",
             f"Data: {r['data']}. {r['distinct_real_vectors']:,} of the points are distinct real vectors"
             + (f"; the rest are perturbed copies at cosine {r['copy_cos']} to a real one, re-coded by the head."
                if r["copy_cos"] else "."),
             f"Load average at start {r['load_average_at_start']}, at end {r['load_average_at_end']} "
             "(shared 2-core box; QPS ratios come from this one run).\n",
             "Single = one query at a time (FAISS with 1 thread); batch = all queries in one call, all threads; "
             f"each the faster of {r['rounds']} serve passes, engines interleaved. "
             "Recall@10 is against exact search in the engine's own space (sparse: brute-force dot products of the "
             "same codes; dense: exact inner product on the same vectors); \"vs dense\" is against exact 384-d "
             "search (low for sparse codes: their top-10 ranks by the codes, not by the dense vectors). "
             "RSS/doc = resident memory added by loading the index in a fresh process and answering "
             "every query (anon + file-backed mmap pages); disk/doc = bytes allocated by the saved index "
             "(Edge: segments, write-ahead log excluded).\n",
             "| engine | ef | single QPS | p50 ms | p99 ms | batch QPS | recall@10 own | recall@10 vs dense | "
             "build s | RSS B/doc | disk B/doc | sum p^2 | postings/query |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in r["engines"].items():
        s = e["single"]
        sp = f"{e['sum_p2']:.5f}" if "sum_p2" in e else ""
        pq = f"{e['postings_per_query_mean']:,}" if "postings_per_query_mean" in e else ""
        lines.append(f"| {name} | {e['ef'] or ''} | {s['qps']} | {s['p50_ms']} | {s['p99_ms']} | {e['batch_qps']} | "
                     f"{e['recall_own']} | {e['recall_vs_dense_exact']} | {e['build_seconds']} | "
                     f"{e['rss_bytes_per_doc']} | {e['disk_bytes_per_doc']} | {sp} | {pq} |")
    sweeps = [(n, e["sweep"]) for n, e in r["engines"].items() if "sweep" in e]
    if sweeps:
        lines += ["\nSweeps (HNSW efSearch / hnsw_ef, Seismic heap_factor; the row above is the first with recall@10 "
                  ">= 0.95):\n",
                  "| engine | ef | single QPS | p50 ms | batch QPS | recall@10 |", "|---|---|---|---|---|---|"]
        for name, rows in sweeps:
            for x in rows:
                lines.append(f"| {name} | {x['ef']} | {x['single']['qps']} | {x['single']['p50_ms']} | "
                             f"{x['batch_qps']} | {x['recall_own']} |")
    for name, a in r.get("analysis", {}).items():
        if "qps_goal_met" in a:
            met = a["qps_goal_met"] and a["memory_goal_met"]
            lines.append(f"\n**Goal (issue 13) for {name} at {r['points']:,} points: {'met' if met else 'not met'}** — "
                         f"single-query QPS {a['single_x_faiss_hnsw']}x FAISS HNSW at efSearch {a['faiss_hnsw_ef']} "
                         f"(recall@10 {a['faiss_hnsw_recall']}; goal >= 1.0x), resident memory per document "
                         f"{a['rss_per_doc_x_faiss_hnsw']}x (goal <= 0.1x).")
        lines.append(f"\n**{name}**: " + ", ".join(f"{k} = {v}" for k, v in a.items()) + ".")
    for name, e in r["engines"].items():
        if name in ("Edge sparse k=8", f"Edge dense HNSW m={r.get('m', 32)}") and "disk_bytes_per_doc_by_file" in e:
            files = ", ".join(f"{f} {v}" for f, v in list(e["disk_bytes_per_doc_by_file"].items())[:8])
            lines.append(f"\nDisk bytes per document by file, {name} ({e['segments']} segments): {files}.")
    lines.append(f"\nMeasured single-thread read bandwidth: {r['read_bandwidth_gb_s_1thread']} GB/s.\n")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
