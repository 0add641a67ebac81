"""The default head served as a user serves it: `ingest --no-adapt` into embedded Qdrant Edge, then search, with
and without re-scoring the best code matches by the decoded codes (``config.rescore_depth``).

    python benchmarks/rescore.py --sets med,scifact --threads 2   # -> benchmarks/results/rescore.{json,md}

Per set: nDCG@10 of the collection's answers (a document ranks by its best chunk) and the search time per query
of the already-encoded queries (the backbone pass is the same either way), re-scoring on and off in the same
process, on the same collection, so the ratio is what re-scoring costs. The zero-shot table
(``benchmarks/zeroshot.py``) scores the same codes in memory, one text per document.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))


def run_queries(searcher, encoded, top_k: int) -> tuple[dict[str, dict[str, float]], float]:
    """``({query id: {doc id: score}}, seconds per query)`` (a document's rank is its best chunk's)."""
    run: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    answers = {qid: searcher.answer_encoded(code, dense, top_k).hits for qid, code, dense in encoded}
    seconds = (time.perf_counter() - start) / max(len(encoded), 1)
    for qid, hits in answers.items():
        ranked: dict[str, float] = {}
        for hit in hits:
            ranked.setdefault(hit.payload["doc_id"], float(len(hits) - len(ranked)))
        run[qid] = ranked
    return run, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="med,scifact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=100, help="hits per query for nDCG@10 (documents rank by chunks)")
    ap.add_argument("--time-top-k", type=int, default=10, help="hits per query in the timed passes")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per setting (best kept)")
    args = ap.parse_args()
    from csr_adapter.collection import open_collection
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.beir import corpus_file, load_beir
    from csr_adapter.training.evaluate import retrieval_metrics

    set_threads(args.threads)
    results = {}
    for name in args.sets.split(","):
        data = load_beir(DATA / name, "test")
        with tempfile.TemporaryDirectory() as tmp:
            col = open_collection("rescore", path=Path(tmp) / "store", device="cpu", threads=args.threads,
                                  echo=lambda m: None)
            try:
                report = col.ingest(corpus_file(DATA / name), adapt=False, progress=False)
                searcher = col.searcher(fallback=False)
                try:
                    codes, dense = searcher.encode(list(data.queries.values()))
                    encoded = list(zip(data.queries, codes, dense))
                    config = searcher.encoder.config
                    depth, row = config.rescore_depth, {}
                    for label, setting in (("re-scored", depth), ("codes only", 0)):
                        config.rescore_depth = setting
                        run, _ = run_queries(searcher, encoded, args.top_k)
                        best = min(run_queries(searcher, encoded, args.time_top_k)[1] for _ in range(args.repeats))
                        row[label] = {"ndcg@10": retrieval_metrics(run, data.qrels)["ndcg@10"],
                                      "ms_per_query": 1000 * best}
                    config.rescore_depth = depth
                finally:
                    searcher.close()
            finally:
                col.close()
        results[name] = {"docs": len(data.corpus), "chunks": report.chunks, "queries": len(encoded),
                         "rescore_depth": depth, **row}
        print(name, results[name], flush=True)
    lines = ["# Default head in embedded Qdrant Edge: re-scoring on and off", "",
             f"Command: `python benchmarks/rescore.py --sets {args.sets} --threads {args.threads}` "
             f"(nDCG@10 from the top {args.top_k} chunks; time per already-encoded query at top_k {args.time_top_k}, "
             f"best of {args.repeats} passes; the query's backbone pass, the same either way, not included)", "",
             "| set | docs | chunks | queries | nDCG@10 re-scored | nDCG@10 codes only | ms/query re-scored | "
             "ms/query codes only | time ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a, b = r["re-scored"], r["codes only"]
        lines.append(f"| {name} | {r['docs']:,} | {r['chunks']:,} | {r['queries']} | {a['ndcg@10']:.4f} | "
                     f"{b['ndcg@10']:.4f} | {a['ms_per_query']:.2f} | {b['ms_per_query']:.2f} | "
                     f"{a['ms_per_query'] / b['ms_per_query']:.2f}x |")
    write_result("rescore", {"sets": results, "top_k": args.top_k, "time_top_k": args.time_top_k},
                 "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
