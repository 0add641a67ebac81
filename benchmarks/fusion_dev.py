"""How fused search's settings were chosen: on the development sets only (SciFact train queries, ADI, MED, TIME).

    python benchmarks/hybrid.py --split dev --sets adi,time,med,scifact   # builds the stores this reads
    python benchmarks/fusion_dev.py                                      # -> results/fusion_dev.{json,md}

In process, on the stores benchmarks/hybrid.py ingested (adapted head, lexical vector, dense vector): for every
dev query the code list (optionally re-scored by the decoded codes over a deeper candidate list), the BM25 list
(the stored lexical vector, engine IDF) and the dense list, each over chunks; documents ranked by their best chunk.
Variants: the RRF constant, a weight on the BM25 list, the re-scoring depth of the code list, the lists' depth
(100 unless said); and the incumbent RRF(dense, BM25) for the same constants. Shipped (csr_adapter.defaults):
rrf_k 10, weight 1, no extra re-scoring (re-scoring 200 gained 0.007 but made fused search 4x slower,
benchmarks/fused_speed.py), depth 30.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))

CACHE = REPO / "benchmarks" / ".cache" / "hybrid"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="adi,time,med,scifact")
    args = ap.parse_args()
    from csr_adapter import open_collection
    from csr_adapter.fusion import rrf_scores
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import retrieval_metrics

    table: dict[str, dict[str, float]] = {}
    for name in args.sets.split(","):
        data = load_beir(DATA / name, "train" if name == "scifact" else "test")
        searcher = open_collection("c", path=CACHE / name).searcher(False, mode="codes")
        qids = list(data.queries)
        encoded = searcher.encode_queries([data.queries[q] for q in qids], "fused")
        docof: dict[str, str] = {}

        def ids(hits, docof=docof) -> list[str]:
            docof.update({h.id: str(h.payload.get("doc_id")) for h in hits if h.payload})
            return [h.id for h in hits]

        lists: dict[str, dict[str, list[str]]] = {"lexical": {}, "dense": {}}
        for depth in (0, 100, 200):
            lists[f"codes rescore {depth}"] = {}
        for qid, q in zip(qids, encoded):
            lists["lexical"][qid] = ids(searcher.sparse.lexical_search_batch([q.lexical], 200)[0])
            lists["dense"][qid] = ids(searcher.sparse.search(q.vector, top_k=200))
            for depth in (0, 100, 200):
                hits = searcher._codes(q, max(100, depth), None, fill=False, rescore=depth or None)
                lists[f"codes rescore {depth}"][qid] = ids(hits.hits)
        missing = {i for lst in lists.values() for ranked in lst.values() for i in ranked} - set(docof)
        if missing:
            docof.update({p.id: str(p.payload.get("doc_id")) for p in searcher.sparse.retrieve(sorted(missing))})
        searcher.close()

        def ndcg(ranked: dict[str, list[str]], docof=docof, data=data) -> float:
            run = {}
            for qid, chunk_ids in ranked.items():
                docs: dict[str, float] = {}
                for i in chunk_ids:
                    docs.setdefault(docof[i], float(1000 - len(docs)))
                run[qid] = docs
            return retrieval_metrics(run, data.qrels)["ndcg@10"]

        def rrf(a: list[str], b: list[str], k: int, w: float, depth: int = 100) -> list[str]:
            scores = rrf_scores([a, b], k, weights=(1.0, w), depth=depth)
            return sorted(scores, key=lambda item: -scores[item])

        row = {name: ndcg(lst) for name, lst in lists.items()}
        for k in (5, 10, 20, 30, 60):
            for depth in (0, 100, 200):
                for w in (0.8, 1.0, 1.25):
                    codes = lists[f"codes rescore {depth}"]
                    row[f"codes(rescore {depth}) + BM25, rrf_k {k}, BM25 weight {w}"] = ndcg(
                        {q: rrf(codes[q], lists["lexical"][q], k, w) for q in qids})
            row[f"RRF(dense, BM25), rrf_k {k}"] = ndcg({q: rrf(lists["dense"][q], lists["lexical"][q], k, 1.0)
                                                        for q in qids})
        for depth in (20, 30, 50):  # the lists' depth, for the shipped setting (rescore 0, rrf_k 10, weight 1)
            codes = lists["codes rescore 0"]
            row[f"codes(rescore 0) + BM25, rrf_k 10, BM25 weight 1.0, depth {depth}"] = ndcg(
                {q: rrf(codes[q], lists["lexical"][q], 10, 1.0, depth) for q in qids})
        table[name] = row
        print(name, flush=True)
    sets = list(table)
    keys = sorted(table[sets[0]], key=lambda key: -np.mean([table[s][key] for s in sets]))
    lines = ["# Fusion settings on the development sets (nDCG@10; documents by their best chunk)", "",
             f"Command: `python benchmarks/fusion_dev.py --sets {args.sets}` (stores from "
             f"`python benchmarks/hybrid.py --split dev --sets {args.sets}`). SciFact: train queries.", "",
             "| variant | mean | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for key in keys:
        vals = [table[s][key] for s in sets]
        lines.append(f"| {key} | {np.mean(vals):.4f} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    write_result("fusion_dev", {"sets": table}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
