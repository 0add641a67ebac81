"""Dev experiment: how to score queries against an adapted head's k-sparse document codes.

Rows (nDCG@10 as % of dense, per document k): ``sym_k`` query coded at k; ``q64`` query coded at 64 (the
shipped asymmetric codes); ``adc*`` asymmetric distance computation, the dense query against the decoded
document ``x^ = W^T z + b_pre`` (full h-dim query: not servable by a sparse index; for reference);
``pos{m}_*`` the query's projection ``W x_q`` cut to its m largest positive entries, documents stored as
unit codes, raw codes, or codes scaled by ``1/|x^|`` (``_bias_norm``: plus the ``b_pre`` term).

    python benchmarks/scoring_dev.py scifact-train,adi,time,med '{}' base   # AdaptConfig overrides, tag

Adapted heads are cached under /tmp/csr-scoring-dev (per set and tag). Dev sets only.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA, REPO  # noqa: E402

sys.path.insert(0, str(REPO))
from csr_adapter import CSREncoder  # noqa: E402
from csr_adapter.head import topk_relu  # noqa: E402
from csr_adapter.runtime import set_threads  # noqa: E402
from csr_adapter.training.adapt import AdaptConfig, adapt_head  # noqa: E402
from csr_adapter.training.beir import load_beir  # noqa: E402
from csr_adapter.training.evaluate import embed_beir, evaluate_dense, rank, retrieval_metrics  # noqa: E402

HEADS = Path("/tmp/csr-scoring-dev")
HEADS.mkdir(exist_ok=True)
KS = (2, 4, 8, 16, 32)
set_threads(2)
enc = CSREncoder.from_pretrained(device="cpu")
default_head = enc.head
sets = sys.argv[1].split(",")
over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
tag = sys.argv[3] if len(sys.argv) > 3 else "base"


def unit(a):
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def ndcg(scores, data):
    return retrieval_metrics(rank(scores, list(data.queries), list(data.corpus)), data.qrels)["ndcg@10"]


def codes(head, x, k):
    with torch.no_grad():
        return topk_relu(head.pre_activation(torch.from_numpy(unit(x))), k).numpy()


for name in sets:
    data = load_beir(DATA / name.split("-")[0], "train" if name == "scifact-train" else "test")
    docs, queries = embed_beir(enc, data, show_progress_bar=False)
    dense = evaluate_dense(docs, queries, data)["ndcg@10"]
    path = HEADS / f"{name.split('-')[0]}_{tag}.pt"
    if path.exists():
        head = default_head.__class__(default_head.d, default_head.h)
        head.load_state_dict(torch.load(path))
    else:
        t0 = time.time()
        head, rep = adapt_head(default_head, docs, AdaptConfig(**over), progress=False)
        torch.save(head.state_dict(), path)
        print(f"{name}: adapted in {time.time() - t0:.0f}s", flush=True)
    W = head.W.detach().numpy()
    b = head.b_pre.detach().numpy()
    xq = unit(queries)
    u = xq @ W.T  # (q, h)
    qb = xq @ b
    rows = {}
    for k in KS:
        zd = codes(head, docs, k)
        xh = zd @ W + b
        nrm = np.linalg.norm(xh, axis=1)
        r = {}
        r["sym_k"] = ndcg(unit(codes(head, queries, k)) @ unit(zd).T, data)
        r["q64"] = ndcg(unit(codes(head, queries, max(k, 64))) @ unit(zd).T, data)
        r["adc"] = ndcg((xq @ xh.T) / nrm[None], data)
        r["adc_nonorm"] = ndcg(xq @ xh.T, data)
        r["adc_nobias"] = ndcg((u @ zd.T) / np.linalg.norm(zd @ W, axis=1)[None], data)
        r["adc_norm_nob"] = ndcg((u @ zd.T) / nrm[None], data)
        for m in (32, 64, 128, 256):
            idx = np.argsort(-u, axis=1)[:, :m]
            up = np.zeros_like(u)
            np.put_along_axis(up, idx, np.maximum(np.take_along_axis(u, idx, 1), 0), 1)
            r[f"pos{m}_bias_norm"] = ndcg((up @ zd.T + qb[:, None]) / nrm[None], data)
            r[f"pos{m}_unit"] = ndcg((up @ unit(zd).T), data)
            r[f"pos{m}_raw"] = ndcg((up @ zd.T), data)
            r[f"pos{m}_normx"] = ndcg((up @ zd.T) / nrm[None], data)
        rows[k] = r
    print(name, f"dense={dense:.3f}", flush=True)
    for v in rows[8]:
        print(f"  {v:16s} " + " ".join(f"k{k}={100 * rows[k][v] / dense:5.1f}%" for k in KS), flush=True)
