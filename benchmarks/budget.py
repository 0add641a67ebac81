"""Pooled sparsity budget vs fixed k at equal average nnz (issue 6): SciFact test nDCG@10 at k̄ ∈ {2, 4, 8}.

    python benchmarks/budget.py [--ks 2,4,8] [--epochs 8] [--threads 0]

For each k̄, two heads are trained on the same data (SciFact corpus + SciFact *train* qrels + Banking77
*train*; frozen all-MiniLM-L6-v2 embeddings from the shared cache; seed 0; CSRv2 settings):

- ``fixed``: top-k̄ per item in training and serving;
- ``pooled``: ``--budget pooled`` (batch top B·k̄ per role with [k_min, k_max], last 10% of steps in
  threshold mode, θ calibrated on the training texts), served two ways: ``threshold`` (documents and
  queries by θ) and ``corpus`` (documents by one cutoff over the corpus, exactly N·k̄ postings;
  queries by θ).

Scored on the SciFact *test* queries, which no row trains or selects on. Finished cells are cached under
benchmarks/.cache/budget/ (an interrupted run resumes). Writes benchmarks/results/budget.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, write_result  # noqa: E402

from csr_adapter.budget import BudgetSpec, nnz_stats, postings_per_query, query_mode  # noqa: E402
from csr_adapter.encoder import CSREncoder  # noqa: E402
from csr_adapter.runtime import set_threads  # noqa: E402
from csr_adapter.training.beir import load_beir  # noqa: E402
from csr_adapter.training.data import load_source  # noqa: E402
from csr_adapter.training.evaluate import code_stats, embed_beir, rank, retrieval_metrics  # noqa: E402
from csr_adapter.training.trainer import TrainConfig, train  # noqa: E402

CACHE = REPO / "benchmarks" / ".cache" / "budget"
SEED = 0
SETTINGS = dict(h=1536, k_init=64, anneal_frac=0.7, batch_size=256, lr=1e-3, contrastive_weight=0.1,
                temperature=0.1, seed=SEED, device="cpu")
# (row label, training budget, document serving mode, query serving mode; None = as the document mode serves)
ROWS = (("fixed k (top-k per text)", "fixed", "fixed", None),
        ("pooled, threshold θ", "pooled", "threshold", None),
        ("pooled, corpus cutoff", "pooled", "corpus", None),
        ("pooled, corpus cutoff, queries top-k̄", "pooled", "corpus", "fixed"),
        ("ablation: pooled-trained, served top-k", "pooled", "fixed", None),
        ("ablation: fixed-trained, corpus cutoff", "fixed", "corpus", None))


def model(budget: str, k: int, epochs: int, threads: int) -> Path:
    """Train (once) and return the model directory for (budget, k)."""
    out = CACHE / "models" / f"{budget}-k{k}-e{epochs}"
    if (out / "config.json").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    sources = [load_source(DATA / "scifact", "beir", seed=SEED)[0],
               load_source(DATA / "banking77" / "train.jsonl.gz", "labelled")[0]]
    cfg = TrainConfig(k=k, epochs=epochs, threads=threads, budget=budget, **SETTINGS)
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    t = time.time()
    train(sources, cfg, work, progress=False, echo=lambda m: None)
    print(f"  trained {budget} k={k} in {time.time() - t:.0f}s", flush=True)
    work.rename(out)
    return out


def score(enc: CSREncoder, docs, queries, test, k: int, doc_mode: str, q_mode: str | None = None) -> dict:
    """Serve docs in ``doc_mode`` and queries as that mode serves them; nDCG, nnz, postings, skew."""
    if q_mode is None:
        q_mode = "fixed" if BudgetSpec.from_config(enc.config) is None else query_mode(enc, doc_mode, k)
    dcodes = enc.sparsify(docs, k=k, budget=doc_mode, role="document")
    qcodes = enc.sparsify(queries, k=k, budget=q_mode, role="query")
    run = rank(qcodes.dot(dcodes), list(test.queries), list(test.corpus), positive_only=True)
    stats = code_stats(dcodes)
    return {"k": k, "doc_mode": doc_mode, "query_mode": q_mode, **retrieval_metrics(run, test.qrels),
            "doc_active": nnz_stats(dcodes), "query_active": nnz_stats(qcodes),
            "index_postings": int(dcodes.nnz.sum()), "postings_per_query": postings_per_query(qcodes, dcodes),
            "posting_sum_p2": stats["posting_sum_p2"], "longest_list": stats["longest_list"],
            "dead_pct": stats["dead_pct"]}


def cell(name: str, fn) -> dict:
    path = CACHE / "cells" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def goals(results: dict, ks: list[int]) -> list[str]:
    out = []
    for k in ks:
        base = results[str(k)]["fixed k (top-k per text)"]
        for label in ("pooled, threshold θ", "pooled, corpus cutoff", "pooled, corpus cutoff, queries top-k̄"):
            r = results[str(k)][label]
            rel = 100 * (r["ndcg@10"] / base["ndcg@10"] - 1)
            size = r["index_postings"] <= base["index_postings"]
            if k == min(ks):
                verdict = "met" if rel >= 5 and size else "MISSED"
                goal = ">= +5% relative"
            else:
                verdict = "met" if rel >= 0 and size else "MISSED"
                goal = "not worse"
            out.append(f"k̄={k} {label} vs fixed ({goal}, index <= fixed): {r['ndcg@10']:.4f} vs "
                       f"{base['ndcg@10']:.4f} ({rel:+.1f}%), index {r['index_postings']} vs "
                       f"{base['index_postings']} postings -> {verdict}")
    return out


def render(result: dict) -> str:
    lines = ["# Pooled sparsity budget vs fixed k (SciFact test, nDCG@10)", "",
             f"Command: `{result['command']}`. Frozen all-MiniLM-L6-v2, h = 1536, seed {SEED}, "
             f"{result['epochs']} epochs per head (CSRv2: k annealed 64 -> k̄, SupCon, AuxK). Data for every head: "
             "SciFact corpus + SciFact train qrels + Banking77 train; the test split is only scored.", "",
             "| k̄ | row | nDCG@10 | R@100 | nnz/doc | nnz/query | index postings | postings/query | Σp² | "
             "doc nnz min-max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k in result["ks"]:
        for label, r in result["results"][str(k)].items():
            d, q = r["doc_active"], r["query_active"]
            lines.append(f"| {k} | {label} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {d['mean']:.2f} | "
                         f"{q['mean']:.2f} | {r['index_postings']} | {r['postings_per_query']:.0f} | "
                         f"{r['posting_sum_p2']:.5f} | {d['min']}-{d['max']} |")
    lines += ["", "## Goals (issue 6)", ""] + [f"- {g}" for g in result["goals"]]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    start = time.time()
    test = load_beir(DATA / "scifact", split="test")
    docs, queries = embed_beir(CSREncoder.from_backbone(device="cpu"), test, show_progress_bar=False)
    results: dict = {}
    for k in ks:
        results[str(k)] = {}
        for label, budget, doc_mode, q_mode in ROWS:
            def fn(budget=budget, doc_mode=doc_mode, q_mode=q_mode, k=k):
                enc = CSREncoder.from_pretrained(model(budget, k, args.epochs, args.threads), device="cpu")
                row = score(enc, docs, queries, test, k, doc_mode, q_mode)
                return row | {"budget": enc.config.extra.get("budget"), "model_id": enc.model_id}
            name = f"{budget}-{doc_mode}{'-q' + q_mode if q_mode else ''}-k{k}-e{args.epochs}"
            results[str(k)][label] = cell(name, fn)
            r = results[str(k)][label]
            print(f"k̄={k} {label}: nDCG@10 {r['ndcg@10']:.4f}  nnz/doc {r['doc_active']['mean']:.2f}  "
                  f"nnz/query {r['query_active']['mean']:.2f}", flush=True)
    command = "python benchmarks/budget.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    result = {"command": command, "ks": ks, "epochs": args.epochs, "results": results, "goals": goals(results, ks),
              "seconds": round(time.time() - start, 1), "notes": [
                  "Pooled training: per step, the items of each role (SciFact documents, SciFact queries, "
                  "Banking77 texts) share a budget of n·k_t activations with k_min <= per item <= k_max "
                  "(defaults k_min = max(1, k̄/2), k_max = 4k̄, scaled with the annealed k_t); θ per role is "
                  "an EMA of the batch cutoff; the last 10% of steps encode by threshold; after training θ "
                  "is re-calibrated on the training texts of each role (SciFact corpus, SciFact train "
                  "queries) so that they average exactly k̄.",
                  "Index size = postings stored for the 5,183 SciFact documents (Σ nnz per document); "
                  "postings/query = mean over test queries of the summed posting-list lengths of the query's "
                  "latents (work a sparse index does per query); Σp² = posting-list skew.",
                  "Corpus cutoff: exactly N·k̄ postings over the corpus; its queries use the query θ "
                  "(queries arrive one at a time). Threshold-mode queries may average slightly off k̄ "
                  "(θ is calibrated on train queries; the test queries are only scored).",
                  "Threshold and corpus rows coincide here: SciFact's test corpus is the training corpus, on "
                  "which θ_document is calibrated (unsupervised; no test query is used), so θ reproduces the "
                  "corpus cutoff exactly.",
                  "Where the budget goes (k̄=2): with k_min = 1 about a third of the documents keep a single "
                  "latent; under cosine scoring every single-latent document on latent j scores the same "
                  "for a query, so rankings among them are ties. On a seeded 20% hold-out of SciFact *train* "
                  "queries (8 epochs) the same pattern held: fixed 0.480 vs pooled threshold 0.402 "
                  "(k_max 8) / 0.406 (k_max 4); ranking the corpus cutoff by activation relative to each "
                  "document's top activation instead of absolute did not fix it (0.427).",
                  "Epochs are fewer than the shipped default's 20 to keep the benchmark under 10 minutes on "
                  "a 2-core CPU; fixed and pooled heads get the same schedule.",
              ]}
    write_result("budget", result, render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
