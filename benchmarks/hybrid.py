"""Fused codes + BM25 against BM25, dense and their fusion, through `ingest` + `search --queries` as a user runs them.

    python benchmarks/hybrid.py                              # six sets, test queries -> results/hybrid.{json,md}
    python benchmarks/hybrid.py --split dev --sets scifact,adi,med,time --out hybrid_dev  # then fusion_dev.py

Per set: `csr-adapter ingest corpus.jsonl.gz --hybrid` into an embedded store kept under benchmarks/.cache/hybrid
(adapted head, lexical vector, and the dense vector only so the dense rows can be served from the same chunks;
re-runs reuse it), then `csr-adapter search --queries` per mode, documents ranked by their best chunk
(`--per-document`). Rows: BM25 (bm25s 0.3, Lucene variant, English stop words, Snowball stemmer, title + text:
the reference our lexical vector must agree with within 0.01), our lexical mode, dense (the backbone vector of
the same chunks), codes, fused codes + BM25 (the default), and RRF(dense, BM25): the incumbent hybrid that stores
a 1,536-byte vector per chunk, fused here from the chunk lists of both (RRF constant 30, its best on the
development sets). With ``--sweep`` the
fused row is also recomputed offline from the codes and lexical chunk lists for other RRF constants and depths
(choose on dev splits only). ``dev``: SciFact's train queries; the other sets have test queries only (ADI, MED
and TIME are the named development sets).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import DATA, REPO, write_result

sys.path.insert(0, str(REPO))

SETS = ("scifact", "med", "cacm", "time", "adi", "lisa")
CACHE = REPO / "benchmarks" / ".cache" / "hybrid"
DENSE_RRF_K = 30  # the incumbent's best constant on the development sets (10: 0.7041, 30: 0.7056, 60: 0.7003)


def cli(*args: str) -> str:
    exe = Path(sys.executable).parent / "csr-adapter"
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"csr-adapter {' '.join(map(str, args))} failed: {out.stderr.strip()[-2000:]}")
    return out.stdout


def search_runs(store: Path, qfile: Path, mode: str, per_document: bool, top_k: int = 100) -> dict[str, list]:
    """``{query id: [hit dicts]}`` from `search --queries`."""
    flag = "--per-document" if per_document else "--per-chunk"
    lines = cli("search", "--queries", qfile, "--path", store, "--collection", "c", "--top-k", top_k,
                "--mode", mode, flag, "--no-fallback").splitlines()
    return {row["id"]: row["hits"] for row in map(json.loads, lines)}


def doc_run(hits_by_query: dict[str, list]) -> dict[str, dict[str, float]]:
    """Rank order as score, one entry per document (its best chunk)."""
    run = {}
    for qid, hits in hits_by_query.items():
        ranked: dict[str, float] = {}
        for hit in hits:
            doc = str(hit["payload"].get("doc_id"))
            if doc not in ranked:
                ranked[doc] = float(len(hits) - len(ranked))
        run[qid] = ranked
    return run


def fuse(lists: list[dict[str, list]], rrf_k: int, depth: int) -> dict[str, list]:
    """RRF of chunk lists (ranks from 0, as Qdrant), each cut to ``depth``; hits keep their payloads."""
    from csr_adapter.fusion import rrf_scores

    out = {}
    for qid in lists[0]:
        ranked = [lst.get(qid, []) for lst in lists]
        scores = rrf_scores([[hit["id"] for hit in hits] for hits in ranked], rrf_k, depth=depth)
        payload = {hit["id"]: hit["payload"] for hits in ranked for hit in hits[:depth]}
        out[qid] = [{"id": i, "payload": payload[i]} for i in sorted(scores, key=lambda i: -scores[i])]
    return out


def bm25s_run(data, top_k: int = 100) -> dict[str, dict[str, float]]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = list(data.corpus)
    texts = [f"{data.corpus[i].get('title') or ''} {data.corpus[i].get('text') or ''}" for i in ids]
    model = bm25s.BM25(method="lucene")
    model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    qids = list(data.queries)
    tokens = bm25s.tokenize([data.queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = model.retrieve(tokens, k=min(top_k, len(ids)), show_progress=False, n_threads=1)
    return {q: {ids[d]: float(s) for d, s in zip(docs[n], scores[n])} for n, q in enumerate(qids)}


def vector_bytes(store: Path) -> dict[str, float]:
    """Mean stored entries per chunk of each vector, as bytes at 8 per sparse entry (u32 index + f32 value) and 4
    per dense float (the engine's own index overhead not included)."""
    from csr_adapter import open_collection

    col = open_collection("c", path=store)
    be = col.open_backend()
    try:
        meta = be.meta
        texts = [str(p.get("text", "")) for _, p in be.scroll(["text"])]
    finally:
        be.close()
    bm25 = meta.bm25()
    lexical = sum(len(bm25.document(t)) for t in texts) / max(1, len(texts))
    return {"codes": 8.0 * meta.k, "lexical": 8.0 * lexical, "dense": 4.0 * (meta.d or 384), "chunks": len(texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--sweep", default="", help="RRF constants to also try offline, e.g. 10,30,60,100")
    ap.add_argument("--depths", default="100", help="fusion depths to try offline with --sweep, e.g. 50,100,200")
    ap.add_argument("--out", default="hybrid")
    args = ap.parse_args()
    from csr_adapter.training.beir import corpus_file, load_beir
    from csr_adapter.training.evaluate import retrieval_metrics

    results: dict = {}
    for name in args.sets.split(","):
        folder = DATA / name
        split = "train" if args.split == "dev" and name == "scifact" else "test"
        data = load_beir(folder, split)
        store = CACHE / name
        t0 = time.perf_counter()
        report = json.loads(cli("ingest", corpus_file(folder), "--path", store, "--collection", "c", "--hybrid",
                                "--json", "--no-progress"))
        ingest_s = time.perf_counter() - t0
        qfile = CACHE / f"{name}.{split}.queries.jsonl"
        qfile.write_text("\n".join(json.dumps({"id": q, "text": t}) for q, t in data.queries.items()) + "\n")
        rows: dict[str, dict] = {}

        def score(label: str, run: dict, rows: dict = rows, data=data) -> None:
            m = retrieval_metrics(run, data.qrels)
            rows[label] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}

        t0 = time.perf_counter()
        score("BM25 (bm25s)", bm25s_run(data))
        bm25s_s = time.perf_counter() - t0
        chunk = {}
        for mode in ("lexical", "dense", "codes"):
            chunk[mode] = search_runs(store, qfile, mode, per_document=False)
        t0 = time.perf_counter()
        fused = search_runs(store, qfile, "fused", per_document=True)
        fused_s = time.perf_counter() - t0
        score("lexical (ours, BM25)", doc_run(search_runs(store, qfile, "lexical", per_document=True)))
        score("dense", doc_run(search_runs(store, qfile, "dense", per_document=True)))
        score("codes", doc_run(search_runs(store, qfile, "codes", per_document=True)))
        score("fused codes + BM25 (default)", doc_run(fused))
        score("RRF(dense, BM25)", doc_run(fuse([chunk["dense"], chunk["lexical"]], DENSE_RRF_K, 100)))
        for rrf_k in [int(x) for x in args.sweep.split(",") if x]:
            for depth in [int(x) for x in args.depths.split(",") if x]:
                score(f"sweep codes+BM25 rrf_k={rrf_k} depth={depth}",
                      doc_run(fuse([chunk["codes"], chunk["lexical"]], rrf_k, depth)))
                score(f"sweep dense+BM25 rrf_k={rrf_k} depth={depth}",
                      doc_run(fuse([chunk["dense"], chunk["lexical"]], rrf_k, depth)))
        results[name] = {"split": split, "queries": len(data.queries), "docs": report["documents"],
                         "chunks": report["chunks"], "adapt": bool(report.get("adapt")), "ingest_s": round(ingest_s, 1),
                         "bm25s_s": round(bm25s_s, 1), "fused_search_s": round(fused_s, 1),
                         "bytes_per_chunk": vector_bytes(store), "rows": rows}
        print(name, json.dumps(rows), flush=True)
    labels = list(next(iter(results.values()))["rows"])
    lines = [f"# Fused codes + BM25 vs BM25, dense and RRF(dense, BM25) — nDCG@10 / Recall@100 ({args.split})", "",
             f"Command: `python benchmarks/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`  ",
             f"Load while running: `{os.getloadavg()[0]:.1f}` (1-min load average at the end).  ",
             "Path: `csr-adapter ingest corpus.jsonl.gz --hybrid` (adapted head, trained on each corpus's own text, "
             "never its queries) + `csr-adapter search --queries --mode M --per-document --top-k 100`. BM25 (bm25s) is "
             "the reference implementation on whole documents; every other row ranks documents by their best chunk.",
             "", "| row | " + " | ".join(results) + " | mean |", "|---|" + "---|" * (len(results) + 1)]
    for label in labels:
        vals = [results[s]["rows"][label]["ndcg@10"] for s in results]
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {sum(vals) / len(vals):.3f} |")
    lines += ["", "Recall@100:", "", "| row | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{results[s]['rows'][label]['recall@100']:.3f}"
                                                  for s in results) + " |")
    lines += ["", "Bytes per chunk (stored entries x 8 B per sparse entry, 4 B per dense float; engine overhead "
              "not included):", "", "| set | chunks | codes | lexical | dense |", "|---|---|---|---|---|"]
    for s, r in results.items():
        b = r["bytes_per_chunk"]
        lines.append(f"| {s} | {b['chunks']} | {b['codes']:.0f} | {b['lexical']:.0f} | {b['dense']:.0f} |")
    write_result(args.out, {"sets": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
