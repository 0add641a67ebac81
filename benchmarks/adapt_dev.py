"""Development runs that chose the adaptation recipe (dev sets: SciFact *train* queries, MED, ADI, TIME).

What produced benchmarks/results/adapt_dev.md (2026-12-02, 2 threads on a shared 2-core box)::

    python benchmarks/adapt_dev.py --sets med,adi,time,scifact-train --variants \\
      '{"dist_scr":{"init":"scratch"},"pq_scr":{"init":"scratch","pq":true},"pq_def":{"pq":true},"dist_def":{}}'

Prints nDCG@10 as % of dense per k for the default head and each ``AdaptConfig`` variant (JSON overrides;
``"pq": true`` adds pseudo-query distillation). Every variant adapts on document text only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import DATA, REPO

sys.path.insert(0, str(REPO))
KS = (2, 4, 8, 16, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="med,adi,time,scifact-train")
    ap.add_argument("--variants", default='{"dist_def": {}}')
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from csr_adapter import CSREncoder
    from csr_adapter.dense_store import DenseStore
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.adapt import AdaptConfig, adapt_head, pseudo_queries
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir, evaluate_dense, rank, retrieval_metrics

    set_threads(args.threads)
    enc = CSREncoder.from_pretrained(device="cpu")
    default_head = enc.head

    def score(head, docs, queries, data) -> dict:
        enc.head = head
        out = {}
        for k in KS:
            run = rank(enc.sparsify(queries, k).dot(enc.sparsify(docs, k)), list(data.queries), list(data.corpus),
                       positive_only=True)
            out[k] = retrieval_metrics(run, data.qrels)["ndcg@10"]
        enc.head = default_head
        return out

    for name in args.sets.split(","):
        data = load_beir(DATA / name.split("-")[0], "train" if name == "scifact-train" else "test")
        docs, queries = embed_beir(enc, data, show_progress_bar=False)
        dense = evaluate_dense(docs, queries, data)["ndcg@10"]
        rows = {"default": score(default_head, docs, queries, data)}
        pq = None
        for vname, over in json.loads(args.variants).items():
            over = dict(over)
            use_pq = over.pop("pq", False)
            t0 = time.time()
            if use_pq and pq is None:
                snippets, src = pseudo_queries([data.doc_text(d) for d in data.corpus], 20000, 0)
                with DenseStore(enc, "") as store:
                    pq = (store.encode(snippets, batch_size=64), src)
            head, rep = adapt_head(default_head, docs, AdaptConfig(**over), progress=False,
                                   queries=pq[0] if use_pq else None, query_rows=pq[1] if use_pq else None)
            rows[vname] = {**score(head, docs, queries, data), "sec": round(time.time() - t0, 1),
                           "dead": round(rep.dead_pct, 1)}
        print(name, f"dense={dense:.3f}", flush=True)
        for vname, r in rows.items():
            extra = {x: r[x] for x in ("sec", "dead") if x in r}
            print(f"  {vname:12s} " + " ".join(f"k{k}={100 * r[k] / dense:5.1f}%" for k in KS), extra, flush=True)


if __name__ == "__main__":
    main()
