"""Reciprocal Rank Fusion, the one formula search, ``eval`` and the benchmarks fuse ranked lists with."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def rrf_scores(lists: Sequence[Sequence[Hashable]], rrf_k: int, weights: Sequence[float] | None = None,
               depth: int | None = None) -> dict[Hashable, float]:
    """``{item: sum of weight / (rrf_k + rank)}`` over ranked ``lists`` (ranks from 0, as Qdrant's RRF), each cut to
    its best ``depth``; items in first-seen order (a stable sort by score keeps that order among ties)."""
    scores: dict[Hashable, float] = {}
    for n, ranked in enumerate(lists):
        weight = 1.0 if weights is None else weights[n]
        for rank, item in enumerate(ranked[:depth]):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
    return scores
