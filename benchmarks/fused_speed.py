"""Search time per query of each mode on one collection, as `Collection.search` runs it after the backbone
(already-encoded queries in, top 10 with payloads out), interleaved rounds in one process.

    python benchmarks/hybrid.py --sets scifact      # builds the store this reads
    python benchmarks/fused_speed.py --set scifact   # -> results/fused_speed.{json,md}
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))

CACHE = REPO / "benchmarks" / ".cache" / "hybrid"
MODES = ("codes", "fused", "lexical")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="scifact")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from csr_adapter import open_collection
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.beir import load_beir

    set_threads(args.threads)
    data = load_beir(DATA / args.set, "test")
    texts = list(data.queries.values())[: args.queries]
    col = open_collection("c", path=CACHE / args.set, threads=args.threads)
    searcher = col.searcher(False)
    encoded = searcher.encode_queries(texts, "fused")
    points = searcher.sparse.count()
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:  # interleaved: load changes hit every mode alike
            t0 = time.perf_counter()
            for q in encoded:
                searcher.answer_query(q, 10, None, mode)
            times[mode].append((time.perf_counter() - t0) / len(encoded))
    searcher.close()
    ms = {m: 1000 * float(np.median(v)) for m, v in times.items()}
    load = os.getloadavg()[0]
    lines = [f"# Search time per query by mode ({args.set}, {points} chunks; top 10 with payloads, query already "
             "encoded)", "", f"Command: `python benchmarks/fused_speed.py --set {args.set} --queries {args.queries} "
             f"--rounds {args.rounds} --threads {args.threads}`  ", f"1-min load average at the end: {load:.1f}", "",
             "| mode | ms/query (median of rounds) | QPS | vs codes |", "|---|---|---|---|"]
    for m in MODES:
        lines.append(f"| {m} | {ms[m]:.3f} | {1000 / ms[m]:.0f} | {ms['codes'] / ms[m]:.2f}x |")
    write_result("fused_speed", {"set": args.set, "points": points, "ms_per_query": ms, "load": load},
                 "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
