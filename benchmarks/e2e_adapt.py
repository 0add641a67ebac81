"""End to end as a user runs it: `ingest` (defaults: adapts) then `search --queries`, scored against the qrels,
beside what `eval --adapt` reports for the same corpus (the adapted head is the same model: same id).

    python benchmarks/e2e_adapt.py --sets med,scifact   # -> benchmarks/results/e2e_adapt.{json,md}

Both at the default k (8): ingest stores documents at the collection's k and search codes queries at
``max(--k, query_k)``, so a ``search --k`` below 64 does not change a default collection's answers.
Search returns chunks; a document's rank is its best chunk's. Documents are read by ingest as
"title\\ntext" and by eval as "title. text", and long documents are several chunks for ingest, one
truncated text for eval: those are the only differences.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))


def cli(*args: str) -> str:
    exe = Path(sys.executable).parent / "csr-adapter"
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True)
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="med,scifact")
    args = ap.parse_args()
    from csr_adapter.training.beir import corpus_file, load_beir
    from csr_adapter.training.evaluate import retrieval_metrics

    results = {}
    for name in args.sets.split(","):
        folder = DATA / name
        ev = json.loads(cli("eval", "--data", folder, "--adapt", "--k", "8", "--no-dense", "--json"))
        data = load_beir(folder, "test")
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            ingest = json.loads(cli("ingest", corpus_file(folder), "--path", store, "--json", "--no-progress"))
            qfile = Path(tmp) / "q.jsonl"
            qfile.write_text("\n".join(json.dumps({"id": q, "text": t}) for q, t in data.queries.items()))
            runs = {}
            for k in (8,):
                lines = cli("search", "--queries", qfile, "--path", store, "--top-k", "100",
                            "--no-fallback").splitlines()
                run: dict[str, dict[str, float]] = {}
                for line in lines:
                    row = json.loads(line)
                    ranked: dict[str, float] = {}
                    for hit in row["hits"]:
                        doc = hit["payload"]["doc_id"]
                        if doc not in ranked:
                            ranked[doc] = float(len(row["hits"]) - len(ranked))  # rank order as score
                    run[row["id"]] = ranked
                runs[k] = retrieval_metrics(run, data.qrels)["ndcg@10"]
        adapted = {r["k"]: r["ndcg@10"] for r in ev["adapted"]["rows"]}
        results[name] = {"eval_model_id": ev["adapted"]["model_id"], "ingest_model_id": ingest["adapt"]["model_id"],
                         "chunks": ingest["chunks"], "docs": ingest["documents"],
                         "eval_adapt": adapted, "end_to_end": runs,
                         "diff": {k: runs[k] - adapted[k] for k in runs}}
        print(name, results[name], flush=True)
    lines = ["# End to end (`ingest` + `search --queries`) vs `eval --adapt` (nDCG@10)", "",
             "Command: `python benchmarks/e2e_adapt.py`", "",
             "| set | docs | chunks | same model | k | eval --adapt | ingest + search | diff |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for k in r["end_to_end"]:
            lines.append(f"| {name} | {r['docs']} | {r['chunks']} | {r['eval_model_id'] == r['ingest_model_id']} | "
                         f"{k} | {r['eval_adapt'][k]:.4f} | {r['end_to_end'][k]:.4f} | {r['diff'][k]:+.4f} |")
    write_result("e2e_adapt", {"sets": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
