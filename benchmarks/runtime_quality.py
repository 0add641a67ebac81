"""Quality guard for the backbone runtimes: SciFact test nDCG@10 with the shipped default head, per runtime.

Every runtime embeds the full SciFact corpus and the test queries itself (torch through the shared cache, the
others each in their own under
``benchmarks/.cache/runtime_quality/<runtime>``, so fp32 ONNX never reads torch's vectors; a killed run
resumes), then the same shipped head codes them at each k. Reported per runtime: nDCG@10 at each k and of
the dense vectors, the change against torch fp32 (goal for onnx-int8: within 0.005 at k = 2, 8, 32), and
the dense cosine to torch fp32 per text (goal >= 0.99 for every text).

    python benchmarks/runtime_quality.py [--runtimes torch,torch-bf16,onnx,onnx-int8] [--ks 2,8,32] [--threads 1]
                                         [--other-docs N]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import REPO, SCIFACT, write_result

CACHE = REPO / "benchmarks" / ".cache" / "runtime_quality"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="torch,torch-bf16,onnx,onnx-int8")
    ap.add_argument("--ks", default="2,8,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--other-docs", type=int, default=0,
                    help="Score on a sub-corpus: every document relevant to a test query plus this many others "
                         "(corpus order); 0 = the full corpus.")
    args = ap.parse_args()

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir, evaluate_dense, evaluate_sparse

    threads = set_threads(args.threads)
    data = load_beir(SCIFACT, split="test")
    if args.other_docs:
        relevant = {d for rel in data.qrels.values() for d in rel}
        others = [d for d in data.corpus if d not in relevant][:args.other_docs]
        keep = relevant | set(others)
        data.corpus = {d: v for d, v in data.corpus.items() if d in keep}
    ks = [int(k) for k in args.ks.split(",")]
    runtimes = args.runtimes.split(",")
    if runtimes[0] != "torch":
        runtimes.insert(0, "torch")  # the reference
    vectors, rows = {}, {}
    for runtime in runtimes:
        enc = CSREncoder.from_pretrained(device="cpu", runtime=runtime)
        # torch: the shared user cache (the vectors every other benchmark uses); the others: their own
        docs, queries = embed_beir(enc, data, cache_dir=None if runtime == "torch" else CACHE / runtime)
        vectors[runtime] = (docs, queries)
        rows[runtime] = [evaluate_dense(docs, queries, data)] + evaluate_sparse(enc, docs, queries, data, ks)
    ref_rows = {str(r["k"]): r["ndcg@10"] for r in rows["torch"]}
    label = "scifact test" + (f", sub-corpus (relevant + {args.other_docs} others)" if args.other_docs else "")
    result: dict = {"data": label, "docs": len(data.corpus), "queries": len(data.queries), "ks": ks,
                    "threads": threads, "runtimes": {}}
    for runtime in runtimes:
        ndcg = {str(r["k"]): round(r["ndcg@10"], 4) for r in rows[runtime]}
        cos = np.concatenate([(a * b).sum(axis=1) for a, b in zip(vectors[runtime], vectors["torch"])])
        cos = cos[np.abs(cos) > 0]  # empty texts are zero rows in both
        result["runtimes"][runtime] = {
            "ndcg@10": ndcg, "delta_vs_torch": {k: round(v - ref_rows[k], 4) for k, v in ndcg.items()},
            "dense_cosine_to_torch": {"min": round(float(cos.min()), 5), "p01": round(float(np.percentile(cos, 1)), 5),
                                      "mean": round(float(cos.mean()), 5), "below_0.99": int((cos < 0.99).sum()),
                                      "texts": int(len(cos))}}
    int8 = result["runtimes"].get("onnx-int8")
    if int8:
        worst = max(abs(int8["delta_vs_torch"][str(k)]) for k in ks)
        result["goal"] = {"int8_max_abs_delta": worst, "within_0.005": worst <= 0.005,
                          "min_cosine": int8["dense_cosine_to_torch"]["min"],
                          "cosine_ge_0.99": int8["dense_cosine_to_torch"]["below_0.99"] == 0}
    print(write_result("runtime_quality", result, render(result)))


def render(r: dict) -> str:
    ks = [str(k) for k in r["ks"]]
    lines = ["# Backbone runtimes: quality with the shipped default head (SciFact test)\n",
             f"`{' '.join(['python benchmarks/runtime_quality.py', *sys.argv[1:]])}` — {r['data']}: {r['docs']:,} "
             f"documents, {r['queries']} queries, nDCG@10; each runtime embeds everything itself.\n",
             "| runtime | dense | " + " | ".join(f"k={k}" for k in ks) + " | max abs change vs torch | "
             "dense cosine to torch: min / mean | texts < 0.99 |",
             "|---|---|" + "---|" * len(ks) + "---|---|---|"]
    for name, v in r["runtimes"].items():
        nd, dl, cs = v["ndcg@10"], v["delta_vs_torch"], v["dense_cosine_to_torch"]
        worst = max(abs(dl[k]) for k in ["dense", *ks])
        lines.append(f"| {name} | {nd['dense']:.4f} | " + " | ".join(f"{nd[k]:.4f} ({dl[k]:+.4f})" for k in ks)
                     + f" | {worst:.4f} | {cs['min']:.4f} / {cs['mean']:.4f} | {cs['below_0.99']} of {cs['texts']} |")
    if "goal" in r:
        g = r["goal"]
        lines.append(f"\nGoal (onnx-int8 within 0.005 of torch fp32 at every k): "
                     f"{'met' if g['within_0.005'] else 'missed'} (worst {g['int8_max_abs_delta']:.4f}); dense "
                     f"cosine >= 0.99 for every text: {'met' if g['cosine_ge_0.99'] else 'missed'} "
                     f"(min {g['min_cosine']:.4f}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
