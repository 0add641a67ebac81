"""Pooled budget training (``--budget pooled``): batch-level top B·k_t per role with per-item bounds.

Per step, the items of each role in the batch (``document``: a BEIR corpus, ``query``: BEIR queries,
``text``: any other source) share one budget of ``n·k_t`` activations, at least ``k_min_t`` and at most
``k_max_t`` per item (the bounds scale with the annealed ``k_t``). The 4k reconstruction pools ``4·n·k_t``.
θ per role is a running (EMA) estimate of the batch cutoff; the last ``threshold_frac`` of steps encode
with ``ReLU(pre) > θ`` (clamped) instead, so training ends in the mode the model is served in. After
training, θ is re-calibrated exactly on the (frozen, cached) training texts of each role so that serving
gives ``k̄`` active dims on average, and stored in ``config.extra["budget"]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..budget import BudgetSpec, check_bounds, corpus_keep, default_bounds, pooled_select, threshold_select
from ..errors import CSRAdapterError, TrainConfigError
from .data import Batch, Source

BUDGETS = ("fixed", "pooled")
ROLE_NAMES = ("document", "query", "text")


def item_roles(source: Source, items: np.ndarray) -> np.ndarray:
    """Role id per item: 0 document (BEIR corpus), 1 query (BEIR queries), 2 any other text."""
    if source.name.startswith("beir:") and len(source.segments) > 1:
        return np.where(items >= len(source.segments[0]), 1, 0)
    return np.full(len(items), 2)


def resolve_bounds(cfg, h: int) -> tuple[int, int]:
    """``(k_min, k_max)`` of a pooled run (defaults from :func:`~csr_adapter.budget.default_bounds`)."""
    lo, hi = default_bounds(cfg.k, h)
    lo = cfg.k_min if cfg.k_min is not None else lo
    hi = cfg.k_max if cfg.k_max is not None else hi
    try:
        check_bounds(cfg.k, lo, hi, h)
    except CSRAdapterError as exc:
        raise TrainConfigError(str(exc)) from None
    return lo, hi


class PooledBudget:
    """Selection, running θ and the final calibration of one pooled-budget training run."""

    def __init__(self, cfg, h: int, total_steps: int, momentum: float = 0.05) -> None:
        if cfg.budget not in BUDGETS:
            raise TrainConfigError(f"unknown --budget {cfg.budget!r}: use one of {', '.join(BUDGETS)}")
        if not 0.0 <= cfg.threshold_frac <= 1.0 - cfg.anneal_frac:
            raise TrainConfigError(f"threshold_frac ({cfg.threshold_frac}) must lie in [0, 1 - anneal_frac "
                                   f"= {1 - cfg.anneal_frac:g}]: the threshold phase starts after annealing")
        self.cfg, self.h, self.momentum = cfg, h, momentum
        self.k_min, self.k_max = resolve_bounds(cfg, h)
        if 4 * self.k_max > h:
            raise TrainConfigError(f"k_max={self.k_max} > h/4 = {h // 4}: the pooled 4k term needs 4*k_max <= h")
        self.threshold_from = total_steps - int(round(cfg.threshold_frac * total_steps))
        self.theta = torch.full((len(ROLE_NAMES),), math.nan)

    def bounds(self, k_t: int) -> tuple[int, int]:
        """Per-item bounds at annealed ``k_t`` (scaled by ``k_t / k̄``, capped to ``h``)."""
        scale = k_t / self.cfg.k
        return max(1, int(math.floor(self.k_min * scale))), min(self.h, int(math.ceil(self.k_max * scale)))

    def select(self, pre: torch.Tensor, source: Source, batch: Batch, k_t: int,
               step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes at ``k_t`` and ``4·k_t`` (dense layout) for one batch; updates θ."""
        roles = torch.from_numpy(item_roles(source, batch.items)).to(pre.device)
        z = torch.zeros_like(pre, dtype=torch.float32)
        z4 = torch.zeros_like(pre, dtype=torch.float32)
        lo, hi = self.bounds(k_t)
        lo4, hi4 = min(self.h, 4 * lo), min(self.h, 4 * hi)
        for r in roles.unique().tolist():
            rows = roles == r
            part, n = pre[rows], int(rows.sum())
            code, cut = pooled_select(part, n * k_t, lo, hi)
            if cut is not None and n > 1:
                old = float(self.theta[r])
                self.theta[r] = cut if math.isnan(old) else (1 - self.momentum) * old + self.momentum * cut
            if step >= self.threshold_from and not math.isnan(float(self.theta[r])):
                code = threshold_select(part, float(self.theta[r]), lo, hi)
            z[rows] = code
            z4[rows] = pooled_select(part, n * min(4 * k_t, self.h), lo4, hi4)[0]
        return z, z4

    # -- checkpoint -------------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {"budget.theta": self.theta.clone()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if "budget.theta" in tensors:
            self.theta = tensors["budget.theta"].float().clone()

    # -- after training ---------------------------------------------------------------------------------
    def calibrate(self, head, sources: list[Source], embeddings: list[torch.Tensor] | None) -> BudgetSpec:
        """θ per serving role: the cutoff giving exactly ``k̄`` on average over that role's training texts
        (frozen runs), else the running estimate. ``document`` falls back to ``text`` when no corpus."""
        theta, how = {}, "running estimate (EMA of batch cutoffs)"
        running = {name: float(self.theta[i]) for i, name in enumerate(ROLE_NAMES) if not math.isnan(self.theta[i])}
        if embeddings is not None:
            how = "calibrated on the training texts of each role"
            pools: dict[int, list[torch.Tensor]] = {}
            for src, emb in zip(sources, embeddings):
                roles = item_roles(src, np.arange(len(src)))
                for r in np.unique(roles):
                    pools.setdefault(int(r), []).append(emb[torch.from_numpy(roles == r)])
            for r, parts in pools.items():
                theta[ROLE_NAMES[r]] = self._cutoff(head, torch.cat(parts))
        else:
            theta = running
        if "document" not in theta and "text" in theta:
            theta["document"] = theta["text"]
        served = {r: t for r, t in theta.items() if r in ("document", "query")}
        return BudgetSpec(self.cfg.k, self.k_min, self.k_max, served, how)

    @torch.no_grad()
    def _cutoff(self, head, x: torch.Tensor, chunk: int = 4096) -> float:
        vals = []
        for lo in range(0, len(x), chunk):
            pre = head.pre_activation(x[lo:lo + chunk].to(head.W.device))
            vals.append(pre.topk(self.k_max, dim=-1).values.float().cpu().numpy())
        values = np.concatenate(vals)
        keep = corpus_keep(values, self.cfg.k, self.k_min)
        flexible, chosen = values[:, self.k_min:], keep[:, self.k_min:]
        if not chosen.any():  # k̄ == k_min: nothing flexible may pass
            return float(flexible.max()) if flexible.size else 0.0
        last = float(flexible[chosen].min())
        rest = flexible[~chosen]
        return 0.5 * (last + float(rest.max())) if rest.size else last - 1e-6


def make_budget(cfg, h: int, total_steps: int) -> PooledBudget | None:
    """The run's :class:`PooledBudget` (``--budget pooled``), ``None`` for ``fixed``; bad settings raise."""
    if cfg.budget == "fixed":
        if cfg.k_min is not None or cfg.k_max is not None:
            resolve_bounds(cfg, h)  # still reject k_min > k_max etc.
        return None
    return PooledBudget(cfg, h, total_steps)
