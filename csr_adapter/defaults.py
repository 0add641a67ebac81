"""Defaults shared by the library, the CLI, the server and training, and the one ``k`` check (one source;
no heavy imports, so the CLI and the server can take them without loading torch)."""

from __future__ import annotations

DEFAULT_K = 8  # active latents per code when neither the caller nor the model says otherwise
EVAL_KS = (2, 4, 8, 16, 32)  # the k values `csr-adapter eval` and the benchmarks score by default
DEFAULT_RRF_K = 60  # the RRF paper's constant; qdrant-client's own default (2) lets one list's outlier win
# fused search (codes + BM25), chosen on the development sets (benchmarks/results/fusion_dev.md):
FUSE_DEPTH = 30  # candidates each list brings to the fusion (30 scored as 100 there, at a third of the work)
FUSE_RRF_K = 10  # its RRF constant (10 > 20 > 30 > 60 in mean nDCG@10)
FUSE_RESCORE = 0  # code matches re-scored by the decoded codes beyond the model's own rescore_depth, x FUSE_DEPTH
#                   (2 gained 0.007 mean nDCG@10 there but made fused search 4x slower: off)


def check_k(k: int, h: int) -> int:
    """``k`` if it is an int in ``[1, h]`` (``h``: the model's latents); :class:`TypeError` or
    :class:`ValueError` otherwise."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k <= 0 or k > h:
        raise ValueError(f"k must be in [1, {h}] (h = {h}), got {k}")
    return k
