"""Encode throughput: bare backbone vs CSR ``encode_documents`` per backbone runtime, same documents, same process.

Baselines: sentence-transformers' ``SentenceTransformer.encode`` on the same model directory and our
own ``encode_dense`` (backbone only, torch). CSR ``encode_documents`` runs once per runtime (torch, onnx,
onnx-int8; see ``csr_adapter/onnx_backbone.py``). Runs are interleaved over several rounds and the best
round of each is kept, so background load hits all of them alike. Goals: CSR encode (torch) >= 0.95x the
bare backbone; the best runtime >= 2.0x torch.

    python benchmarks/encode.py [--docs 1000] [--rounds 3] [--k 8] [--threads 0] [--runtimes torch,onnx,onnx-int8]
"""

from __future__ import annotations

import argparse
import os
import sys
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
    ap.add_argument("--runtimes", default="torch,onnx,onnx-int8")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads

    threads = set_threads(args.threads)
    _, texts = scifact_docs(args.docs)
    enc = CSREncoder.from_pretrained(device=args.device)
    st = SentenceTransformer(str(enc.backbone.path), device=str(enc.device))
    runtimes = [r for r in args.runtimes.split(",") if r != "torch"]
    others = {r: CSREncoder.from_pretrained(device="cpu", runtime=r) for r in runtimes}
    runs = {
        "sentence_transformers_encode": lambda: st.encode(texts, batch_size=args.batch_size),
        "backbone_encode_dense": lambda: enc.encode_dense(texts, batch_size=args.batch_size),
        "csr_encode_documents": lambda: enc.encode_documents(texts, k=args.k, batch_size=args.batch_size),
    }
    for r, other in others.items():
        runs[f"csr_encode_documents[{r}]"] = (
            lambda other=other: other.encode_documents(texts, k=args.k, batch_size=args.batch_size))
    for other in (enc, *others.values()):
        other.encode_documents(texts[:64], k=args.k)  # warm-up (and the ONNX export, once per machine)
    best = {name: float("inf") for name in runs}
    with tqdm(total=args.rounds * len(runs), desc="encode bench") as bar:
        for _ in range(args.rounds):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
                bar.update()
    docs_per_s = {name: len(texts) / sec for name, sec in best.items()}
    torch_csr = docs_per_s["csr_encode_documents"]
    ratio_st = torch_csr / docs_per_s["sentence_transformers_encode"]
    ratio_bb = torch_csr / docs_per_s["backbone_encode_dense"]
    vs_torch = {r: docs_per_s[f"csr_encode_documents[{r}]"] / torch_csr for r in others}
    vs_st = {r: docs_per_s[f"csr_encode_documents[{r}]"] / docs_per_s["sentence_transformers_encode"]
             for r in others}
    best_rt = max(vs_torch, key=vs_torch.get) if vs_torch else "torch"
    result = {
        "docs": len(texts), "k": args.k, "batch_size": args.batch_size, "threads": threads,
        "device": str(enc.device), "rounds": args.rounds, "best_seconds": best, "docs_per_s": docs_per_s,
        "ratio_csr_vs_sentence_transformers": ratio_st, "ratio_csr_vs_backbone": ratio_bb,
        "ratio_runtime_vs_torch": vs_torch, "ratio_runtime_vs_sentence_transformers": vs_st,
        "goal": "csr_encode_documents >= 0.95x bare backbone; best runtime >= 2.0x torch",
        "goal_met": min(ratio_st, ratio_bb) >= 0.95 and vs_torch.get(best_rt, 1.0) >= 2.0,
    }
    md = ["# Encode throughput (SciFact documents)", "", f"`{' '.join(['python benchmarks/encode.py', *sys.argv[1:]])}`"
          f" — {result['docs']} docs, k={args.k}, batch {args.batch_size}, {threads} threads, device {enc.device}; "
          f"best of {args.rounds} interleaved rounds, one process.", "",
          "| run | runtime | docs/s | vs CSR torch |", "|---|---|---|---|"]
    for name, v in docs_per_s.items():
        runtime = name.split("[")[1].rstrip("]") if "[" in name else "torch"
        md.append(f"| {name.split('[')[0]} | {runtime} | {v:.1f} | {v / torch_csr:.2f}x |")
    md += ["", f"CSR / sentence-transformers: **{ratio_st:.3f}x**; CSR / our backbone: **{ratio_bb:.3f}x** "
           f"(goal >= 0.95x)."]
    if vs_torch:
        md.append("Runtimes vs torch: " + ", ".join(f"{r} **{v:.2f}x**" for r, v in vs_torch.items())
                  + " (goal: best >= 2.0x); vs sentence-transformers (torch): "
                  + ", ".join(f"{r} {v:.2f}x" for r, v in vs_st.items()) + ".")
    md += [f"Load average at the end: {[round(x, 2) for x in os.getloadavg()]} (shared 2-core box).", ""]
    path = write_result("encode", result, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
