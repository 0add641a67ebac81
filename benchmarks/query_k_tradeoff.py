"""Queries coded wider than documents (``query_k``): quality side of the speed/quality trade-off.

Adapts a head to each set's corpus text (as ``ingest`` does; cached vectors), codes documents at ``--k``
(default 8) and queries at ``max(k, query_k)`` for several ``query_k``, and prints nDCG@10 as % of dense.
The speed side is ``benchmarks/search.py --engines edge-sparse --ks 8 --query-ks 8:8,8:16,8:32,8:64``.

    python benchmarks/query_k_tradeoff.py --sets adi,med,time,cacm,lisa,scifact
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import DATA, REPO

sys.path.insert(0, str(REPO))
QUERY_KS = (8, 16, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="adi,med,time,cacm,lisa,scifact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=8, help="document k")
    args = ap.parse_args()
    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir
    from csr_adapter.training.zeroshot import dense_ndcg, sparse_ndcg

    set_threads(args.threads)
    enc = CSREncoder.from_pretrained(device="cpu")
    rows = {}
    for name in args.sets.split(","):
        data = load_beir(DATA / name, "test")
        docs, queries = embed_beir(enc, data, show_progress_bar=False)
        dense = dense_ndcg(docs, queries, data)
        adapted = enc.adapt([data.doc_text(d) for d in data.corpus], dense=docs, progress=False)
        rows[name] = [100 * sparse_ndcg(adapted.with_query_k(q), docs, queries, data, ks=(args.k,))[args.k]["ndcg@10"]
                      / dense for q in QUERY_KS]
        print(name, " ".join(f"q{q}={v:.1f}%" for q, v in zip(QUERY_KS, rows[name])), flush=True)
    print("MEAN", " ".join(f"q{q}={v:.1f}%" for q, v in zip(QUERY_KS, np.mean(list(rows.values()), axis=0))))


if __name__ == "__main__":
    main()
