"""torch.compile (inductor, dynamic shapes) on the backbone vs eager, per torch runtime: docs/s on SciFact abstracts.

Tried for issue 13 ("try torch's own options"); not shipped: fp32 +15% (bf16 +0.5-15% across two runs) after a
compile of 14-31 s per process (inductor's cache warm / cold), where torch-bf16 alone gives ~3x.

    python benchmarks/torch_compile.py [--docs 300] [--rounds 2] [--threads 2] [--runtimes torch,torch-bf16]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import scifact_docs, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtimes", default="torch,torch-bf16")
    args = ap.parse_args()

    import torch

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads

    threads = set_threads(args.threads)
    _, texts = scifact_docs(args.docs)
    rows = {}
    for runtime in args.runtimes.split(","):
        eager = CSREncoder.from_pretrained(device="cpu", runtime=runtime)
        compiled = CSREncoder.from_pretrained(device="cpu", runtime=runtime)
        compiled.backbone.model = torch.compile(compiled.backbone.model, dynamic=True)
        t0 = time.perf_counter()
        compiled.encode_dense(texts)  # compiles (and recompiles for the first shapes it meets)
        warm = time.perf_counter() - t0
        eager.encode_dense(texts[:64])
        best = {"eager": float("inf"), "compiled": float("inf")}
        for _ in range(args.rounds):
            for name, enc in (("eager", eager), ("compiled", compiled)):
                t0 = time.perf_counter()
                enc.encode_dense(texts)
                best[name] = min(best[name], time.perf_counter() - t0)
        a, b = eager.encode_dense(texts[:50]), compiled.encode_dense(texts[:50])
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        rows[runtime] = {"eager_docs_per_s": round(len(texts) / best["eager"], 1),
                         "compiled_docs_per_s": round(len(texts) / best["compiled"], 1),
                         "speedup": round(best["eager"] / best["compiled"], 3),
                         "first_pass_with_compile_s": round(warm, 1), "min_cosine_to_eager": round(float(cos.min()), 6)}
        print(runtime, rows[runtime], flush=True)
    command = " ".join(["python benchmarks/torch_compile.py", *sys.argv[1:]])
    md = ["# torch.compile on the backbone (CPU)", "",
          f"`{command}` — {len(texts)} SciFact abstracts, {threads} threads, best of {args.rounds} interleaved rounds.",
          "",
          "| runtime | eager docs/s | compiled docs/s | speedup | first pass incl. compile s | min cosine |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r} | {v['eager_docs_per_s']} | {v['compiled_docs_per_s']} | {v['speedup']}x | "
           f"{v['first_pass_with_compile_s']} | {v['min_cosine_to_eager']} |" for r, v in rows.items()]
    result = {"docs": len(texts), "threads": threads, "runtimes": rows}
    print(write_result("torch_compile", result, "\n".join(md) + "\n"))


if __name__ == "__main__":
    main()
