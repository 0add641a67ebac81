"""Quality of a model on retrieval sets as a share of dense: the rows of the zero-shot tables.

For one BEIR-layout set: dense MiniLM (384 floats), dense cut to the same bytes as a k-sparse code
(a code entry is an int32 index + a float32 value = 8 bytes, so k entries = 2k float32 dims) and the
model's codes at each k (documents at k; queries at ``max(k, config.query_k)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .beir import BeirData, load_beir
from .evaluate import code_stats, embed_beir, rank, retrieval_metrics

KS = (2, 4, 8, 16, 32)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def dense_ndcg(docs: np.ndarray, queries: np.ndarray, data: BeirData, dims: int | None = None) -> float:
    """nDCG@10 of cosine similarity on the first ``dims`` dims (all by default)."""
    d, q = (docs, queries) if dims is None else (docs[:, :dims], queries[:, :dims])
    run = rank(_unit(q) @ _unit(d).T, list(data.queries), list(data.corpus))
    return retrieval_metrics(run, data.qrels)["ndcg@10"]


def code_rows(encoder, docs: np.ndarray, queries: np.ndarray, data: BeirData,
              ks: Sequence[int] = KS) -> dict[int, dict]:
    """Per k: nDCG@10, Recall@100 and dead-latent % of the corpus codes."""
    out = {}
    for k in ks:
        dcodes = encoder.sparsify(docs, k, role="document")
        qcodes = encoder.sparsify(queries, k, role="query")
        run = rank(qcodes.dot(dcodes), list(data.queries), list(data.corpus), positive_only=True)
        out[int(k)] = {**retrieval_metrics(run, data.qrels), "dead_pct": code_stats(dcodes)["dead_pct"]}
    return out


def set_rows(encoder, data_dir: str | Path, name: str, ks: Sequence[int] = KS,
             show_progress_bar: bool = False) -> dict:
    """Dense, byte-matched dense and code rows for one set's test split."""
    data = load_beir(Path(data_dir) / name, "test")
    docs, queries = embed_beir(encoder, data, show_progress_bar=show_progress_bar)
    dense = dense_ndcg(docs, queries, data)
    return {"docs": len(data.corpus), "queries": len(data.qrels), "dense": dense,
            "dense_same_bytes": {int(k): dense_ndcg(docs, queries, data, 2 * k) for k in ks},
            "codes": code_rows(encoder, docs, queries, data, ks)}


def share_table(rows: dict[str, dict], ks: Sequence[int] = KS) -> list[str]:
    """Markdown: nDCG@10 (% of dense) per set and k, a mean row, and dense cut to the same bytes."""
    lines = ["| set | docs | dense 384 | " + " | ".join(f"k={k}" for k in ks) + " |",
             "|---|---|---|" + "---|" * len(ks)]
    for name, r in rows.items():
        d = r["dense"]
        lines.append(f"| {name} | {r['docs']} | {d:.3f} | "
                     + " | ".join(f"{r['codes'][k]['ndcg@10']:.3f} ({100 * r['codes'][k]['ndcg@10'] / d:.0f}%)"
                                  for k in ks) + " |")
        lines.append(f"| {name}: dense cut to the same bytes | | | "
                     + " | ".join(f"{r['dense_same_bytes'][k]:.3f} ({100 * r['dense_same_bytes'][k] / d:.0f}%)"
                                  for k in ks) + " |")
    if rows:
        means = [np.mean([r["codes"][k]["ndcg@10"] / r["dense"] for r in rows.values()]) for k in ks]
        cut = [np.mean([r["dense_same_bytes"][k] / r["dense"] for r in rows.values()]) for k in ks]
        lines.append("| **mean % of dense** | | | " + " | ".join(f"**{100 * m:.0f}%**" for m in means) + " |")
        lines.append("| mean, dense cut to the same bytes | | | " + " | ".join(f"{100 * m:.0f}%" for m in cut) + " |")
    return lines
