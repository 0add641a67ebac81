"""The search benchmark's pure helpers: chunked exact top-10, recall, perturbed copies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import search  # noqa: E402


def test_exact_topk_matches_full_sort() -> None:
    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((1_234, 16)), rng.standard_normal((7, 16))
    got = search.exact_topk(lambda lo, hi: x[lo:hi] @ q.T, len(x), chunk=100)
    want = np.argsort(-(q @ x.T), axis=1)[:, :search.TOP]
    assert (got == want).all()
    assert search.recall(got.tolist(), want) == 1.0
    assert search.recall([row[:5] for row in got.tolist()], want) == 0.5


def test_make_points_keeps_real_vectors_and_copy_cosine() -> None:
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((50, 384)).astype(np.float32)
    points, n_real = search.make_points(docs, 2_000, copy_cos=0.9, seed=0)
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    assert n_real == 50 and np.allclose(points[:50], unit)
    assert np.allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-5)
    best = (points[50:] @ unit.T).max(axis=1)  # each copy's cosine to its source
    assert abs(float(best.mean()) - 0.9) < 0.01
