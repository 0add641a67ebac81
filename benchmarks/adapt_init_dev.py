"""Dev experiment: adaptation recipes (init, k_init, h, epochs, ...) on development splits, several seeds.

Prints nDCG@10 as % of dense for the adapted head, documents at k = 2..32, queries at 64 (as shipped), per
seed and the mean. Results and the variants tried: ``benchmarks/results/adapt_init_dev.md``.

    python benchmarks/adapt_init_dev.py scifact-train NAME '{"init":"default","k_init":64}' 0 1

SET is ``scifact-train`` (SciFact train queries) or a test collection used for development (adi, med,
time); NAME tags the cached heads (/tmp/csr-adapt-init-dev); the JSON overrides ``AdaptConfig``.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import DATA, REPO

sys.path.insert(0, str(REPO))
from csr_adapter import CSREncoder
from csr_adapter.head import topk_relu
from csr_adapter.runtime import set_threads
from csr_adapter.training.adapt import AdaptConfig, adapt_head
from csr_adapter.training.beir import load_beir
from csr_adapter.training.evaluate import embed_beir, evaluate_dense, rank, retrieval_metrics

HEADS = Path("/tmp/csr-adapt-init-dev")
KS = (2, 4, 8, 16, 32)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def main() -> None:
    HEADS.mkdir(exist_ok=True)
    set_threads(int(os.environ.get("THREADS", "1")))
    enc = CSREncoder.from_pretrained(device="cpu")
    given = enc.head
    name, tag, over = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    seeds = [int(s) for s in sys.argv[4:]] or [0]
    data = load_beir(DATA / name.split("-")[0], "train" if name == "scifact-train" else "test")
    docs, queries = embed_beir(enc, data, show_progress_bar=False)
    dense = evaluate_dense(docs, queries, data)["ndcg@10"]

    def codes(head, x, k):
        with torch.no_grad():
            return topk_relu(head.pre_activation(torch.from_numpy(unit(x))), k).numpy()

    def ndcg(scores):
        return retrieval_metrics(rank(scores, list(data.queries), list(data.corpus)), data.qrels)["ndcg@10"]

    rows = []
    for seed in seeds:
        path = HEADS / f"{name}_{tag}_s{seed}.pt"
        secs = -1.0
        if path.exists():
            state = torch.load(path)
            head = given.__class__(given.d, state["W"].shape[0])
            head.load_state_dict(state)
        else:
            t0 = time.time()
            head, _ = adapt_head(given, docs, AdaptConfig(**{**over, "seed": seed}), progress=False)
            secs = time.time() - t0
            torch.save(head.state_dict(), path)
        row = [100 * ndcg(unit(codes(head, queries, 64)) @ unit(codes(head, docs, k)).T) / dense for k in KS]
        rows.append(row)
        print(f"{name} {tag} s{seed} {secs:4.0f}s " + " ".join(f"k{k}={v:5.1f}" for k, v in zip(KS, row)), flush=True)
    if len(seeds) > 1:
        print(f"{name} {tag} MEAN       " + " ".join(f"k{k}={v:5.1f}" for k, v in zip(KS, np.mean(rows, 0))))


if __name__ == "__main__":
    main()
