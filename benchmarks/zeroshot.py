"""Zero-shot and corpus-adapted quality on every retrieval set in ../shared/data.

Rows per set: dense 384-d MiniLM, dense cut to 32 and 64 dims, the shipped default head and the head
adapted at ingest (``CSREncoder.adapt`` on the set's corpus text only: never its queries or qrels), at
k = 2, 4, 8, 16, 32; plus adaptation time over the time to encode the same corpus (same run). A second
table adapts on sub-corpora of 100 / 300 / 1,000 / 3,000 documents (all relevant documents of the
queries plus random others), to find the corpus size below which adaptation stops paying.

    python benchmarks/zeroshot.py                       # -> benchmarks/results/zeroshot.{json,md}
    python benchmarks/zeroshot.py --sets med,adi --no-sizes
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))

from csr_adapter.training.zeroshot import KS, dense_ndcg, sparse_ndcg  # noqa: E402

SETS = ("scifact", "med", "cacm", "time", "adi", "lisa")
SIZES = (100, 300, 1000, 3000)
HEADS = {"default": "default (as shipped: queries at 64)", "default_sym": "default, queries at k",
         "adapted_sym": "adapted, queries at k", "adapted": "adapted (as shipped: queries at 64)"}


def subset(data, n: int, seed: int = 0):
    """All relevant documents of the judged queries plus random others, ``n`` documents in all."""
    from csr_adapter.training.beir import BeirData

    rel = list(dict.fromkeys(d for r in data.qrels.values() for d, g in r.items() if g > 0))
    others = [d for d in data.corpus if d not in set(rel)]
    rng = np.random.default_rng(seed)
    extra = [others[i] for i in rng.permutation(len(others))[:max(0, n - len(rel))]]
    keep = set(rel[:n] + extra)
    corpus = {d: v for d, v in data.corpus.items() if d in keep}
    qrels = {q: {d: g for d, g in r.items() if d in keep} for q, r in data.qrels.items()}
    qrels = {q: r for q, r in qrels.items() if any(g > 0 for g in r.values())}
    return BeirData(corpus, {q: data.queries[q] for q in qrels}, qrels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sizes", action="store_true", help="skip the corpus-size table")
    ap.add_argument("--cached", action="store_true",
                    help="take corpus vectors from the shared cache (no adapt/encode time ratio)")
    ap.add_argument("--size-sets", default="cacm,lisa,scifact")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the saved .json")
    args = ap.parse_args()
    if args.markdown_only:
        import json

        from _common import RESULTS

        saved = json.loads((RESULTS / "zeroshot.json").read_text())
        saved["sets"] = {n: {**r, **{h: {int(k): v for k, v in r[h].items()}
                                     for h in (*HEADS, "dense_same_bytes") if h in r}}
                         for n, r in saved["sets"].items()}
        (RESULTS / "zeroshot.md").write_text(markdown(saved))
        return

    from csr_adapter import CSREncoder
    from csr_adapter.runtime import set_threads
    from csr_adapter.training.adapt import AdaptConfig
    from csr_adapter.training.beir import load_beir
    from csr_adapter.training.evaluate import embed_beir

    set_threads(args.threads)
    enc = CSREncoder.from_pretrained(device="cpu")
    trained_on = enc.config.training.get("data", "")
    results: dict = {"sets": {}, "sizes": {}, "adapt_config": AdaptConfig().to_dict(),
                     "default_head_training": trained_on, "default_model_id": enc.model_id,
                     "command": " ".join(["python benchmarks/zeroshot.py", *sys.argv[1:]]),
                     "date": time.strftime("%Y-%m-%d")}
    active: set[int] = set()  # latents the default head uses at k=8 over the union of the corpora
    for name in args.sets.split(","):
        data = load_beir(DATA / name, "test")
        texts = [data.doc_text(d) for d in data.corpus]
        t0 = time.perf_counter()
        if args.cached:  # vectors from the shared cache: no encode time to compare with
            docs, queries = embed_beir(enc, data, show_progress_bar=False)
        else:
            docs = enc.encode_dense(texts, batch_size=32)
            _, queries = embed_beir(enc, data, show_progress_bar=False)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        adapted = enc.adapt(texts, dense=docs)  # pseudo-queries cut from texts are encoded inside (timed)
        adapt_s = time.perf_counter() - t0
        row = {"docs": len(texts), "queries": len(data.queries), "encode_s": encode_s, "cached": args.cached,
               "adapt_s": adapt_s,
               "adapt_over_encode": adapt_s / encode_s,
               "default_head_saw_corpus": name in trained_on.lower(),
               "dense": dense_ndcg(docs, queries, data), "dense32": dense_ndcg(docs, queries, data, 32),
               "dense64": dense_ndcg(docs, queries, data, 64),
               "dense_same_bytes": {k: dense_ndcg(docs, queries, data, 2 * k) for k in KS},
               "default": sparse_ndcg(enc, docs, queries, data),
               "default_sym": sparse_ndcg(enc.with_query_k(None), docs, queries, data),
               "adapted_sym": sparse_ndcg(adapted.with_query_k(None), docs, queries, data),
               "adapted": sparse_ndcg(adapted, docs, queries, data)}
        results["sets"][name] = row
        active.update(np.unique(enc.sparsify(docs, 8, role="document").indices).tolist())
        results["default_dead_pct_union_k8"] = 100.0 * (1 - len(active) / enc.h)
        write_result("zeroshot", results, markdown(results))  # partial results survive an interrupted run
        print(f"{name}: dense {row['dense']:.3f}; adapted k=8 {row['adapted'][8]['ndcg@10']:.3f}; default k=8 "
              f"{row['default'][8]['ndcg@10']:.3f}; adapt/encode {row['adapt_over_encode']:.2f}", flush=True)
    if not args.no_sizes:
        for name in args.size_sets.split(","):
            data = load_beir(DATA / name, "test")
            docs_all, q_all = embed_beir(enc, data, show_progress_bar=False)
            index = {d: i for i, d in enumerate(data.corpus)}
            qindex = {q: i for i, q in enumerate(data.queries)}
            for n in SIZES:
                if n >= len(data.corpus):
                    continue
                sub = subset(data, n)
                docs = docs_all[[index[d] for d in sub.corpus]]
                queries = q_all[[qindex[q] for q in sub.queries]]
                adapted = enc.adapt([sub.doc_text(d) for d in sub.corpus], dense=docs)
                dense = dense_ndcg(docs, queries, sub)
                default = sparse_ndcg(enc, docs, queries, sub)
                adapt = sparse_ndcg(adapted, docs, queries, sub)
                results["sizes"].setdefault(name, {})[n] = {
                    "dense": dense, **{f"default_k{k}": default[k]["ndcg@10"] for k in (2, 8)},
                    **{f"adapted_k{k}": adapt[k]["ndcg@10"] for k in (2, 8)}}
                print(f"{name} n={n}: dense {dense:.3f} default k8 {default[8]['ndcg@10']:.3f} "
                      f"adapted k8 {adapt[8]['ndcg@10']:.3f}", flush=True)
    write_result("zeroshot", results, markdown(results))


def pct(x: float, ref: float) -> str:
    return f"{x:.3f} ({100 * x / ref:.0f}%)" if ref else f"{x:.3f}"


def markdown(res: dict) -> str:
    lines = ["# Zero-shot and corpus-adapted quality (nDCG@10, % of dense)", "",
             f"Command: `{res.get('command', 'python benchmarks/zeroshot.py')}` ({res.get('date', '')}; default "
             f"model `{res.get('default_model_id', '?')}`). Adapted heads are trained by `CSREncoder.adapt` on the",
             "set's corpus text only (no queries, no qrels). The default head was trained on: "
             f"{res['default_head_training']}: sets marked * are not unseen for it.", ""]
    sets = res["sets"]
    heads = [h for h in HEADS if all(h in r for r in sets.values())]
    lines += ["Documents are coded at k; queries at k, or at 64 where the row says so (asymmetric codes: the",
              "stored index is the same). *dense, same bytes*: dense cut to 2k float32 dims, the bytes of a",
              "k-entry code (int32 index + float32 value per entry). The default head's rows are scored as it is",
              "served: documents coded by matching pursuit over its rows, the best 100 code matches of each query",
              "re-scored by the cosine of the query vector and the decoded document code (`document_coding`,",
              "`rescore_depth` in its config); adapted heads use their top-k codes and code scores.", "",
              "| set | docs | dense 384 | dense 32 | dense 64 | head | " + " | ".join(f"k={k}" for k in KS)
              + " | adapt s / encode s |", "|" + "---|" * 12]
    for name, r in sets.items():
        d = r["dense"]
        star = "*" if r["default_head_saw_corpus"] else ""
        for i, head in enumerate(heads):
            first = (f"| {name}{star} | {r['docs']} | {d:.3f} | {pct(r['dense32'], d)} | {pct(r['dense64'], d)} "
                     if i == 0 else "| | | | | ")
            ratio = (f"{r['adapt_s']:.0f} / {r['encode_s']:.0f} = {r['adapt_over_encode']:.2f}"
                     if head == "adapted" and not r.get("cached") else f"{r['adapt_s']:.0f} s adapt"
                     if head == "adapted" else "")
            lines.append(first + f"| {HEADS[head]} | " + " | ".join(pct(r[head][k]['ndcg@10'], d) for k in KS)
                         + f" | {ratio} |")
        if "dense_same_bytes" in r:
            lines.append("| | | | | | dense, same bytes | "
                         + " | ".join(pct(r["dense_same_bytes"][k], d) for k in KS) + " | |")
    unseen = {n: r for n, r in sets.items() if not r["default_head_saw_corpus"]}
    if unseen:
        lines += ["", "Mean % of dense over the sets none of whose text the default head saw "
                  f"({', '.join(unseen)}):", "", "| head | " + " | ".join(f"k={k}" for k in KS) + " |",
                  "|---|" + "---|" * len(KS)]
        for head in heads:
            means = [np.mean([r[head][k]["ndcg@10"] / r["dense"] for r in unseen.values()]) for k in KS]
            lines.append(f"| {HEADS[head]} | " + " | ".join(f"{100 * m:.0f}%" for m in means) + " |")
        if all("dense_same_bytes" in r for r in unseen.values()):
            means = [np.mean([r["dense_same_bytes"][k] / r["dense"] for r in unseen.values()]) for k in KS]
            lines.append("| dense, same bytes | " + " | ".join(f"{100 * m:.0f}%" for m in means) + " |")
        if "default_dead_pct_union_k8" in res:
            lines += ["", f"Default head, dead latents at k=8 over the union of these corpora: "
                      f"{res['default_dead_pct_union_k8']:.1f}%"]
        lines += ["", "Dead latents at k=8 (corpus codes): " + ", ".join(
            f"{n} {r['default'][8]['dead_pct']:.0f}% -> {r['adapted'][8]['dead_pct']:.0f}%" for n, r in sets.items())]
    if res["sizes"]:
        lines += ["", "## Corpus size (sub-corpora: relevant docs + random others)", "",
                  "| set | docs | dense | default k=2 | adapted k=2 | default k=8 | adapted k=8 |",
                  "|---|---|---|---|---|---|---|"]
        for name, by_n in res["sizes"].items():
            for n, r in by_n.items():
                d = r["dense"]
                lines.append(f"| {name} | {n} | {d:.3f} | {pct(r['default_k2'], d)} | {pct(r['adapted_k2'], d)} | "
                             f"{pct(r['default_k8'], d)} | {pct(r['adapted_k8'], d)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
