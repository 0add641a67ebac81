"""Encode throughput: bare backbone vs CSR ``encode_documents``, same documents, same process.

Baselines: sentence-transformers' ``SentenceTransformer.encode`` on the same model directory and our
own ``encode_dense`` (backbone only). Runs are interleaved over several rounds and the best round of
each is kept, so background load hits all of them alike. Goal: CSR encode >= 0.95x the bare backbone.

    python benchmarks/encode.py [--docs 1000] [--rounds 3] [--k 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import time

from _common import scifact_docs, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads

    threads = set_threads(args.threads)
    _, texts = scifact_docs(args.docs)
    enc = CSREncoder.from_pretrained(device=args.device)
    st = SentenceTransformer(str(enc.backbone.path), device=str(enc.device))
    runs = {
        "sentence_transformers_encode": lambda: st.encode(texts, batch_size=args.batch_size),
        "backbone_encode_dense": lambda: enc.encode_dense(texts, batch_size=args.batch_size),
        "csr_encode_documents": lambda: enc.encode_documents(texts, k=args.k, batch_size=args.batch_size),
    }
    enc.encode_documents(texts[:64], k=args.k)  # warm-up
    best = {name: float("inf") for name in runs}
    with tqdm(total=args.rounds * len(runs), desc="encode bench") as bar:
        for _ in range(args.rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
                bar.update()
    docs_per_s = {name: len(texts) / sec for name, sec in best.items()}
    ratio_st = docs_per_s["csr_encode_documents"] / docs_per_s["sentence_transformers_encode"]
    ratio_bb = docs_per_s["csr_encode_documents"] / docs_per_s["backbone_encode_dense"]
    result = {
        "docs": len(texts), "k": args.k, "batch_size": args.batch_size, "threads": threads,
        "device": str(enc.device), "rounds": args.rounds, "best_seconds": best, "docs_per_s": docs_per_s,
        "ratio_csr_vs_sentence_transformers": ratio_st, "ratio_csr_vs_backbone": ratio_bb,
        "goal": "csr_encode_documents >= 0.95x bare backbone", "goal_met": min(ratio_st, ratio_bb) >= 0.95,
    }
    md = ["# Encode throughput (SciFact documents)", "", f"`{result['docs']}` docs, k={args.k}, "
          f"batch {args.batch_size}, {threads} threads, device {enc.device}; best of {args.rounds} rounds.", "",
          "| run | docs/s |", "|---|---|"]
    md += [f"| {name} | {v:.1f} |" for name, v in docs_per_s.items()]
    md += ["", f"CSR / sentence-transformers: **{ratio_st:.3f}x**; CSR / our backbone: **{ratio_bb:.3f}x** "
           f"(goal >= 0.95x)", ""]
    path = write_result("encode", result, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
