"""Pooled sparsity budget (SeqTopK / BatchTopK for embeddings): inference modes and selection primitives.

Three ways to turn pre-activations ``pre`` (``(n, h)``) into codes with an average of ``k̄`` active dims:

- ``fixed``: top-k̄ per item (the default; what every model does).
- ``threshold``: ``ReLU(pre) > θ`` per item, clamped to ``[k_min, k_max]`` active dims. Row-wise, so an
  item's code is the same alone or in any batch. θ comes from training (``--budget pooled``).
- ``corpus``: one cutoff over a whole corpus giving exactly ``N·k̄`` postings (``k_min`` per item are
  guaranteed, the rest go to the largest remaining activations, at most ``k_max`` per item).

The calibration (θ per role, ``k_min``, ``k_max``, ``k̄``) lives in ``config.extra["budget"]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .defaults import EVAL_KS
from .errors import CSRAdapterError

MODES = ("fixed", "threshold", "corpus")
ROLES = ("document", "query")
CONFIG_KEY = "budget"


class BudgetError(CSRAdapterError, ValueError):
    """A budget setting that cannot work (bad bounds, uncalibrated model, unknown mode)."""


def default_bounds(avg_k: int, h: int) -> tuple[int, int]:
    """Per-item bounds when none are given: ``[max(1, k̄ // 2), min(h, 4·k̄)]``."""
    return max(1, avg_k // 2), min(h, 4 * avg_k)


def check_bounds(avg_k: float, k_min: int, k_max: int, h: int) -> None:
    """One-line :class:`BudgetError` unless ``1 <= k_min <= k̄ <= k_max <= h``."""
    if k_min < 1:
        raise BudgetError(f"k_min must be >= 1, got {k_min}")
    if k_min > k_max:
        raise BudgetError(f"k_min ({k_min}) > k_max ({k_max})")
    if k_max > h:
        raise BudgetError(f"k_max ({k_max}) exceeds h ({h})")
    if avg_k > k_max:
        raise BudgetError(f"avg-k {avg_k:g} is above k_max ({k_max})")
    if avg_k < k_min:
        raise BudgetError(f"avg-k {avg_k:g} is below k_min ({k_min})")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BudgetError(f"unknown budget mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


@dataclass
class BudgetSpec:
    """A model's pooled-budget calibration: ``k̄``, per-item bounds and θ per role."""

    avg_k: int
    k_min: int
    k_max: int
    theta: dict[str, float] = field(default_factory=dict)
    source: str = ""  # how θ was obtained (e.g. "calibrated on the training texts")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config) -> BudgetSpec | None:
        data = (config.extra or {}).get(CONFIG_KEY)
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["avg_k"]), int(data["k_min"]), int(data["k_max"]),
                       {str(r): float(t) for r, t in (data.get("theta") or {}).items()}, str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BudgetError(f"config.json extra.budget is malformed ({exc})") from None

    def store(self, config) -> None:
        config.extra = dict(config.extra or {}, **{CONFIG_KEY: self.to_dict()})

    def theta_for(self, role: str) -> float:
        """θ of ``role``; a missing query θ falls back to the document θ."""
        for r in (role, "document"):
            value = self.theta.get(r)
            if value is not None and math.isfinite(value):
                return float(value)
        raise BudgetError("threshold mode needs a calibrated θ: this model has none for "
                          f"role {role!r} (train it with budget='pooled')")


def bounds_for(config, h: int, avg_k: int, k_min: int | None = None, k_max: int | None = None) -> tuple[int, int]:
    """Bounds for ``avg_k``: explicit ones win, then the model's calibration (if same k̄), then defaults."""
    spec = BudgetSpec.from_config(config)
    lo, hi = default_bounds(avg_k, h)
    if spec is not None and spec.avg_k == avg_k:
        lo, hi = spec.k_min, spec.k_max
    lo, hi = k_min if k_min is not None else lo, k_max if k_max is not None else hi
    check_bounds(avg_k, lo, hi, h)
    return lo, hi


# -- selection primitives (torch; differentiable through the kept values) --------------------------------
def _scatter(pre: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(pre, dtype=torch.float32).scatter(-1, indices, values.relu() * keep)


def pooled_select(pre: torch.Tensor, total: int, k_min: int, k_max: int) -> tuple[torch.Tensor, float | None]:
    """Top ``total`` activations over all rows of ``pre`` with ``k_min <= per-row <= k_max``.

    Every row keeps its top ``k_min``; the remaining ``total - n·k_min`` slots go to the largest of
    the rows' next ``k_max - k_min`` entries. Returns the dense ReLU'd code and the cutoff θ (midway
    between the last kept and the first dropped flexible entry; ``None`` when nothing was flexible).
    """
    n = pre.shape[0]
    pre32 = pre.float()
    values, indices = pre32.topk(k_max, dim=-1)
    keep = torch.zeros_like(values, dtype=torch.bool)
    keep[:, :k_min] = True
    spare = int(total) - n * k_min
    theta = None
    flexible = values[:, k_min:].detach().reshape(-1)
    if spare > 0 and flexible.numel():
        spare = min(spare, flexible.numel())
        top = flexible.topk(min(spare + 1, flexible.numel()))
        chosen = torch.zeros_like(flexible, dtype=torch.bool)
        chosen[top.indices[:spare]] = True
        keep[:, k_min:] = chosen.view(n, k_max - k_min)
        last = float(top.values[spare - 1])
        after = float(top.values[spare]) if spare < len(top.values) else last
        theta = 0.5 * (last + after)
    return _scatter(pre32, values, indices, keep), theta


def threshold_select(pre: torch.Tensor, theta: float, k_min: int, k_max: int) -> torch.Tensor:
    """``ReLU(pre)·[pre > θ]`` per row, clamped to ``[k_min, k_max]`` active dims (batch-independent)."""
    values, indices = pre.float().topk(k_max, dim=-1)
    count = (values > theta).sum(dim=-1).clamp(min=k_min, max=k_max)
    keep = torch.arange(k_max, device=pre.device)[None, :] < count[:, None]
    return _scatter(pre.float(), values, indices, keep)


# -- encoder-level sparsification ---------------------------------------------------------------------------
def _top(encoder, x: torch.Tensor, k_max: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k_max`` pre-activations per row (sorted, descending), computed in chunks."""
    vals, idx = [], []
    with torch.inference_mode():
        for lo in range(0, x.shape[0], chunk):
            pre = encoder.head.pre_activation(x[lo:lo + chunk].to(encoder.device))
            v, i = pre.topk(k_max, dim=-1)
            vals.append(v.float().cpu().numpy())
            idx.append(i.cpu().numpy())
    if not vals:
        return np.zeros((0, k_max), np.float32), np.zeros((0, k_max), np.int64)
    return np.concatenate(vals), np.concatenate(idx)


def corpus_keep(values: np.ndarray, avg_k: float, k_min: int) -> np.ndarray:
    """Keep mask over sorted top-``k_max`` rows giving exactly ``round(N·k̄)`` entries in all."""
    n, k_max = values.shape
    keep = np.zeros(values.shape, dtype=bool)
    keep[:, :k_min] = True
    spare = min(int(round(n * avg_k)) - n * k_min, n * (k_max - k_min))
    if spare > 0:
        flexible = values[:, k_min:].reshape(-1)
        chosen = np.zeros(flexible.shape, dtype=bool)
        chosen[np.argpartition(-flexible, spare - 1)[:spare]] = True
        keep[:, k_min:] = chosen.reshape(n, k_max - k_min)
    return keep


def sparsify(encoder, x: torch.Tensor, mode: str, k: int | None = None, role: str = "document",
             normalize: bool = True, k_min: int | None = None, k_max: int | None = None):
    """Codes of backbone embeddings ``x`` under a ``threshold`` or ``corpus`` budget.

    ``threshold`` uses the model's calibrated θ for ``role`` (``k``, if given, must be the calibrated
    k̄). ``corpus`` treats all non-empty rows of ``x`` as one corpus with ``N·k`` postings. All-zero
    rows (empty texts) give empty rows and do not count towards ``N``.
    """
    from .sparse import SparseEmbeddings

    check_mode(mode)
    if role not in ROLES:
        raise BudgetError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    spec = BudgetSpec.from_config(encoder.config)
    if mode == "threshold":
        if spec is None:
            raise BudgetError("threshold mode needs a calibrated θ: this model has none (train it with "
                              "budget='pooled')")
        if k is not None and k != spec.avg_k:
            raise BudgetError(f"threshold mode: this model's θ is calibrated for avg k {spec.avg_k}, not {k}")
        avg_k, theta = spec.avg_k, spec.theta_for(role)
        lo, hi = (k_min or spec.k_min), (k_max or spec.k_max)
        check_bounds(avg_k, lo, hi, encoder.h)
    else:
        avg_k = k if k is not None else (spec.avg_k if spec else encoder.k)
        lo, hi = bounds_for(encoder.config, encoder.h, avg_k, k_min, k_max)
    live = ~(x == 0).all(dim=1).cpu().numpy()
    values = np.zeros((x.shape[0], hi), np.float32)
    indices = np.zeros((x.shape[0], hi), np.int64)
    if live.any():
        values[live], indices[live] = _top(encoder, x[torch.from_numpy(live)], hi)
    if not len(x):
        return SparseEmbeddings.empty(encoder.h)
    if mode == "threshold":
        count = np.clip((values > theta).sum(axis=1), lo, hi)
        keep = np.arange(hi)[None, :] < count[:, None]
    elif mode == "corpus":
        keep = np.zeros(values.shape, dtype=bool)
        if live.any():
            keep[live] = corpus_keep(values[live], avg_k, lo)
    else:
        keep = np.arange(hi)[None, :] < avg_k
    keep &= live[:, None]
    return SparseEmbeddings.from_topk(values, indices, encoder.h, keep=keep, normalize=normalize)


# -- statistics ----------------------------------------------------------------------------------------------
def nnz_stats(codes) -> dict:
    """Mean, min, max and histogram (``{active dims: rows}``) of active dims per row."""
    nnz = codes.nnz
    if not len(nnz):
        return {"mean": 0.0, "min": 0, "max": 0, "hist": {}}
    counts = np.bincount(nnz)
    return {"mean": float(nnz.mean()), "min": int(nnz.min()), "max": int(nnz.max()),
            "hist": {str(i): int(c) for i, c in enumerate(counts) if c}}


def postings_per_query(queries, docs) -> float:
    """Mean number of postings a query touches: the sum of its latents' posting-list lengths."""
    if not len(queries):
        return 0.0
    lists = np.bincount(docs.indices, minlength=docs.dim)
    rows = np.repeat(np.arange(len(queries)), queries.nnz)
    return float(np.bincount(rows, weights=lists[queries.indices], minlength=len(queries)).mean())


def format_hist(hist: dict) -> str:
    """``1:12 2:80 3:5`` (active dims: rows)."""
    return " ".join(f"{k}:{v}" for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))


def query_mode(encoder, doc_mode: str, k: int) -> str:
    """How queries are served next to documents in ``doc_mode``: a corpus budget is for documents only,
    so its queries use the calibrated θ when the model has one for this ``k``, else top-k."""
    if doc_mode != "corpus":
        return doc_mode
    spec = BudgetSpec.from_config(encoder.config)
    return "threshold" if spec is not None and spec.avg_k == k and spec.theta else "fixed"


def eval_ks(encoder, mode: str, ks: list[int] | None) -> list[int]:
    """The k values ``csr-adapter eval`` scores: threshold mode only has its calibrated k̄."""
    check_mode(mode)
    spec = BudgetSpec.from_config(encoder.config)
    if mode == "threshold":
        if spec is None:
            raise BudgetError("threshold mode needs a calibrated θ: this model has none (train it with "
                              "budget='pooled')")
        if ks and ks != [spec.avg_k]:
            raise BudgetError(f"threshold mode: this model's θ is calibrated for avg k {spec.avg_k}, not "
                              f"{','.join(map(str, ks))}")
        return [spec.avg_k]
    return ks or list(EVAL_KS)


def format_active(rows: list[dict], mode: str) -> list[str]:
    """Lines for ``csr-adapter eval``: mean and histogram of active dims per document and per query."""
    lines = [f"active dims per text ({mode} budget): mean, histogram active:count"]
    for r in rows:
        if "doc_active" not in r:
            continue
        d, q = r["doc_active"], r["query_active"]
        lines.append(f"  k={r['k']:<3} documents mean {d['mean']:.2f}  {format_hist(d['hist'])}")
        lines.append(f"  {'':5} queries   mean {q['mean']:.2f}  {format_hist(q['hist'])}   "
                     f"postings/query {r['postings_per_query']:.0f}")
    return lines


def encode_corpus(encoder, texts: list[str], avg_k: int, batch_size: int = 32, prefix: str = "",
                  mode: str = "corpus", k_min: int | None = None, k_max: int | None = None,
                  progress: bool = False):
    """Dense vectors and codes of a whole corpus under ``mode`` (``corpus``: exactly ``N·k̄`` postings).

    An empty corpus is a no-op (a warning says so) and gives empty results.
    """
    import warnings

    from .sparse import SparseEmbeddings

    check_mode(mode)
    if mode == "corpus":
        bounds_for(encoder.config, encoder.h, avg_k, k_min, k_max)  # bad bounds fail before encoding
    if not texts:
        warnings.warn("corpus budget: the corpus is empty, nothing to encode", stacklevel=2)
        return np.zeros((0, encoder.d), np.float32), SparseEmbeddings.empty(encoder.h)
    dense = encoder.encode_dense(texts, batch_size=batch_size, show_progress_bar=progress, prefix=prefix)
    x = torch.from_numpy(dense)
    normalize = encoder.config.normalize
    return dense, sparsify(encoder, x, mode, avg_k, "document", normalize, k_min, k_max)


def ingest_k(encoder, mode: str, k: int, avg_k: int | None, k_min: int | None, k_max: int | None) -> int:
    """The (average) k of an ingest; checks ``--avg-k``/``--k-min``/``--k-max`` against ``mode``."""
    if mode == "fixed":
        if avg_k is not None or k_min is not None or k_max is not None:
            raise BudgetError("--avg-k/--k-min/--k-max need --budget corpus")
        return k
    avg_k = k if avg_k is None else avg_k
    if avg_k < 1 or avg_k > encoder.h:
        raise BudgetError(f"avg-k must be in [1, {encoder.h}], got {avg_k}")
    bounds_for(encoder.config, encoder.h, avg_k, k_min, k_max)
    return avg_k
