"""Qdrant Edge sparse storage options against resident memory: value datatype and ``on_disk`` for the index.

    python benchmarks/edge_storage.py --points 300000   # -> benchmarks/results/edge_storage.{json,md}

The same k=8 codes (the shipped head's top-k codes of the 60,000 distinct broad texts that
``benchmarks/search.py`` embeds, plus perturbed copies; 500 other texts as queries at 8 latents) go into one
Edge shard per setting, built once; each shard is then loaded in a fresh process that answers every query one
at a time (1 search thread, best of 2 passes). Resident memory per document is what loading and answering added
(anonymous and file-backed pages); top-10 overlap is against float32 values. The question: can a storage
setting bring Edge's resident memory per document under a tenth of FAISS HNSW's (issue 13)?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, write_result
from search import _disk, _rss, broad_texts

sys.path.insert(0, str(REPO))
SETTINGS = ("Float32-ram", "Float16-ram", "Uint8-ram", "Float32-disk", "Uint8-disk")


def build(folder: Path, setting: str) -> None:
    import qdrant_edge as q

    datatype, where = setting.split("-")
    data = np.load(folder / "codes.npz")
    idx, val = data["idx"], data["val"]
    params = q.EdgeSparseVectorParams(datatype=getattr(q.VectorStorageDatatype, datatype), on_disk=where == "disk")
    shard = q.EdgeShard.create(str(folder / setting), q.EdgeConfig(sparse_vectors={"csr": params},
                                                                   max_search_threads=1))
    for lo in range(0, len(idx), 5000):
        shard.update(q.UpdateOperation.upsert_points([
            q.Point(i + 1, {"csr": q.SparseVector(idx[i].tolist(), val[i].tolist())}, None)
            for i in range(lo, min(len(idx), lo + 5000))]))
    shard.optimize()
    shard.flush()
    shard.close()


def serve(folder: Path, setting: str) -> dict:
    import qdrant_edge as q

    data = np.load(folder / "codes.npz")
    requests = [q.QueryRequest(query=q.Query.Nearest(q.SparseVector(i.tolist(), v.tolist()), "csr"), limit=10,
                               with_payload=False, with_vector=False) for i, v in zip(data["qidx"], data["qval"])]
    n = len(data["idx"])
    path = folder / setting
    before = _rss()
    shard = q.EdgeShard.load(str(path))
    best, answers = float("inf"), []
    for _ in range(2):
        start = time.perf_counter()
        answers = [[p.id for p in shard.query(r)] for r in requests]
        best = min(best, time.perf_counter() - start)
    after = _rss()
    disk = _disk(path)
    return {"setting": setting, "qps_single": round(len(requests) / best, 1),
            "rss_per_doc": round((after["VmRSS"] - before["VmRSS"]) / n, 1),
            "anon_per_doc": round((after["RssAnon"] - before["RssAnon"]) / n, 1),
            "file_per_doc": round((after["RssFile"] - before["RssFile"]) / n, 1),
            "disk_per_doc": round(disk / n, 1), "top10": answers}


def make_codes(folder: Path, points: int) -> None:
    import torch

    from csr_adapter import CSREncoder
    from csr_adapter.cache import cached_dense

    torch.set_num_threads(2)
    enc = CSREncoder.from_pretrained(device="cpu")
    texts = broad_texts(0)
    x = cached_dense(enc, texts[:60_000], prefix=enc.config.document_prefix, show_progress_bar=False)
    qx = cached_dense(enc, texts[-500:], prefix=enc.config.query_prefix, show_progress_bar=False)
    rng = np.random.default_rng(0)
    base = x[rng.integers(0, len(x), max(0, points - len(x)))]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    allx = np.concatenate([x, 0.9 * base + np.sqrt(1 - 0.81) * noise])[:points]

    def topk(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            c = enc.head.pre_activation(torch.from_numpy(a)).topk(8, dim=-1)
        values = c.values.clamp_min(0).numpy()
        return c.indices.numpy(), values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)

    idx, val = topk(allx)
    qidx, qval = topk(qx)
    np.savez(folder / "codes.npz", idx=idx, val=val, qidx=qidx, qval=qval)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_build", "_serve"):
        out = (build if sys.argv[1] == "_build" else serve)(Path(sys.argv[2]), sys.argv[3])
        print(json.dumps(out or {}))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=300_000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-storage-") as tmp:
        folder = Path(tmp)
        make_codes(folder, args.points)
        for setting in SETTINGS:
            for phase in ("_build", "_serve"):
                done = subprocess.run([sys.executable, __file__, phase, str(folder), setting], check=True,
                                      capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            ref = rows[0]["top10"]
            rows[-1]["top10_overlap_vs_float32"] = round(float(np.mean(
                [len(set(a) & set(b)) / 10 for a, b in zip(ref, rows[-1]["top10"])])), 4)
            print({k: v for k, v in rows[-1].items() if k != "top10"}, flush=True)
    for r in rows:
        del r["top10"]
    lines = ["# Qdrant Edge sparse storage settings vs resident memory", "",
             f"Command: `python benchmarks/edge_storage.py --points {args.points}` — {args.points:,} k=8 codes "
             "(shipped head, broad texts + perturbed copies), 500 queries at 8 latents, 1 search thread.", "",
             "| datatype-index | single QPS | RSS B/doc | anon B/doc | file-backed B/doc | disk B/doc "
             "| top-10 overlap |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['qps_single']:,} | {r['rss_per_doc']} | {r['anon_per_doc']} | "
              f"{r['file_per_doc']} | {r['disk_per_doc']} | {r['top10_overlap_vs_float32']} |" for r in rows]
    lines += ["", "FAISS HNSW (M=32) held 1,830 B/doc resident at 300k points (`benchmarks/results/search.md`): a "
              "tenth is 183 B/doc."]
    write_result("edge_storage", {"points": args.points, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
