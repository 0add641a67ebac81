"""Zero-shot scoring of a model on the retrieval sets in the data folder (nDCG@10 as % of dense).

Shared by the default-model builder (which writes the table into the model card) and
``benchmarks/zeroshot.py``. Vectors come from the on-disk embedding cache, so a second model scored
on the same sets costs no backbone time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..defaults import EVAL_KS

KS = EVAL_KS


def dense_ndcg(docs: np.ndarray, queries: np.ndarray, data, dims: int | None = None) -> float:
    """nDCG@10 of cosine search over the backbone vectors (first ``dims`` numbers when given)."""
    from .evaluate import evaluate_dense

    return evaluate_dense(docs[:, :dims], queries[:, :dims], data)["ndcg@10"]


def sparse_ndcg(encoder, docs: np.ndarray, queries: np.ndarray, data, ks: Sequence[int] = KS) -> dict[int, dict]:
    """Per k: :func:`~.evaluate.evaluate_sparse`'s row (nDCG@10, Recall@100, corpus-code statistics), documents
    coded at k and queries as queries."""
    from .evaluate import evaluate_sparse

    return {row["k"]: row for row in evaluate_sparse(encoder, docs, queries, data, ks)}


def score_sets(encoder, data_dir: str | Path, names: Iterable[str], ks: Sequence[int] = KS,
               progress: bool = False) -> dict[str, dict]:
    """``{set: {"docs", "dense", "ndcg": {k: nDCG@10}, "dead_pct": {k: %}}}`` on each set's test split."""
    from .beir import load_beir
    from .evaluate import embed_beir

    out = {}
    for name in names:
        data = load_beir(Path(data_dir) / name, "test")
        docs, queries = embed_beir(encoder, data, show_progress_bar=progress)
        rows = sparse_ndcg(encoder, docs, queries, data, ks)
        out[name] = {"docs": len(data.corpus), "dense": dense_ndcg(docs, queries, data),
                     "ndcg": {k: rows[k]["ndcg@10"] for k in ks},
                     "dead_pct": {k: rows[k]["dead_pct"] for k in ks}}
    return out


def dead_pct_union(encoder, data_dir: str | Path, names: Iterable[str], k: int = 8) -> float:
    """% of the head's latents no document of any of the named sets' corpora uses at ``k`` (document codes)."""
    from .beir import load_beir
    from .evaluate import embed_beir

    active = np.zeros(encoder.h, dtype=bool)
    for name in names:
        docs, _ = embed_beir(encoder, load_beir(Path(data_dir) / name, "test"), show_progress_bar=False)
        active[encoder.sparsify(docs, k, role="document").indices] = True
    return 100.0 * float((~active).mean())


def mean_pct(scores: dict[str, dict], names: Iterable[str], k: int) -> float:
    """Mean over ``names`` of nDCG@10 at ``k`` as % of the set's dense nDCG@10."""
    names = list(names)
    return float(np.mean([100 * scores[n]["ndcg"][k] / scores[n]["dense"] for n in names])) if names else 0.0


def markdown_table(scores: dict[str, dict], groups: dict[str, Sequence[str]] | None = None) -> str:
    """One row per set (nDCG@10 and % of dense per k scored), then one mean row per named group of sets."""
    ks = sorted(next(iter(scores.values()))["ndcg"]) if scores else []
    head = "| set | docs | dense | " + " | ".join(f"k={k}" for k in ks) + " |\n"
    head += "|---|---|---|" + "---|" * len(ks) + "\n"
    body = ""
    for name, row in scores.items():
        cells = " | ".join(f"{row['ndcg'][k]:.3f} ({100 * row['ndcg'][k] / row['dense']:.0f}%)" for k in ks)
        body += f"| {name} | {row['docs']:,} | {row['dense']:.3f} | {cells} |\n"
    for label, names in (groups or {}).items():
        names = [n for n in names if n in scores]
        if names:
            cells = " | ".join(f"{mean_pct(scores, names, k):.0f}%" for k in ks)
            body += f"| **mean, {label}** | | | {cells} |\n"
    return head + body
