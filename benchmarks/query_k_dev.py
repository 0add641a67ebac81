"""Development runs that chose asymmetric codes (documents at k, queries coded wider) for adapted heads.

Dev sets only (ADI, MED, TIME): CACM, LISA and SciFact test were not looked at. Per head and document k,
nDCG@10 as % of dense for queries coded at k (``sym``), 32, 64, all positive pre-activations (``qrelu``),
and for reference signed projections of the dense query on the dictionary (``adc_*``: the query ``W x``
scored against the decoded document; close to exact, but signed query weights, which Milvus rejects and
every backend's score > 0 rule would cut, so not shipped).

    THREADS=1 python benchmarks/query_k_dev.py adi,med,time '{"base":{},"qc64":{"query_code_weight":1.0}}'

Output pasted into benchmarks/results/query_k_dev.md.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from _common import DATA, REPO

sys.path.insert(0, str(REPO))
DOC_KS = (2, 4, 8, 16)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def main() -> None:
    from csr_adapter import CSREncoder
    from csr_adapter.head import topk_relu
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.adapt import AdaptConfig, adapt_head
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir, rank, retrieval_metrics

    set_threads(int(os.environ.get("THREADS", "1")))
    enc = CSREncoder.from_pretrained(device="cpu")
    variants = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {"base": {}}

    def codes(head, x, k):
        with torch.no_grad():
            pre = head.pre_activation(torch.from_numpy(unit(x)).float())
            return topk_relu(pre, k).numpy(), pre.numpy()

    def ndcg(scores, data):
        return retrieval_metrics(rank(scores, list(data.queries), list(data.corpus)), data.qrels)["ndcg@10"]

    for name in sys.argv[1].split(","):
        data = load_beir(DATA / name, "test")
        docs, queries = embed_beir(enc, data, show_progress_bar=False)
        dense = ndcg(unit(queries) @ unit(docs).T, data)
        print(name, f"dense={dense:.3f}", flush=True)
        heads = {}
        for vname, over in variants.items():
            t0 = time.time()
            heads[vname], _ = adapt_head(enc.head, docs, AdaptConfig(**over), progress=False)
            print(f"  adapt {vname} {time.time() - t0:.0f}s", flush=True)
        for hname, head in heads.items():
            W, b_pre = head.W.detach().numpy(), head.b_pre.detach().numpy()
            for k in DOC_KS:
                zd, _ = codes(head, docs, k)
                zdn = unit(zd)
                zq, pre_q = codes(head, queries, k)
                r = {"sym": ndcg(unit(zq) @ zdn.T, data)}
                for kq in (32, 64):
                    if kq >= k:
                        r[f"q{kq}"] = ndcg(unit(codes(head, queries, kq)[0]) @ zdn.T, data)
                r["qrelu"] = ndcg(np.maximum(pre_q, 0) @ zdn.T, data)
                r["adc_cos"] = ndcg(unit(queries) @ unit(zd @ W + b_pre).T, data)
                wq = unit(queries) @ W.T
                r["adc_nob"] = ndcg(wq @ (zd / np.maximum(np.linalg.norm(zd @ W, axis=1, keepdims=True),
                                                          1e-12)).T, data)
                r["adc_zn"] = ndcg(wq @ zdn.T, data)
                print(f"  {hname:8s} k={k:2d} " + " ".join(f"{n}={100 * v / dense:5.1f}" for n, v in r.items()),
                      flush=True)


if __name__ == "__main__":
    main()
