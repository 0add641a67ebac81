"""Corpus adaptation: fit a CSR head to one corpus's dense embeddings (no queries, no labels).

Works on backbone embeddings that ingest computes anyway, so it never runs the backbone. Per step, on a
batch of chunk embeddings ``x`` (L2-normalised) with the annealed ``k_t``::

    L = nMSE(x, x^_{k_t}) + w4 * nMSE(x, x^_{4 k_t}) + a * AuxK                 (a = 0 by default: no gain)
        + c * InfoNCE(chunk, other chunk of the same document)          (c = 0 by default: measured worse)
        + s * sum_{k in {k_t} + extra_ks} KL(softmax(x x^T / tau) || softmax(z_k z_k^T / tau))

The last term ("similarity distillation") trains the codes' in-batch cosine similarities toward the
dense ones, so neighbours in the dense space stay neighbours in code space: what retrieval needs, and
what reconstruction alone does not ask for. The head starts from the given one with its (tied) decoder
rows replaced by a sample of the corpus's own centred rows (``init="data"``; the head doubles its latents
when the corpus has more rows than it has latents): every sampled row is one latent, a code names the rows
it is closest to, and training refines from there. ``k`` anneals from ``k_init`` to ``k`` over the first
``anneal_frac`` of steps (CSRv2). The run is bounded by ``max_steps`` and a sample cap, so its time does
not grow with the corpus beyond ``max_samples`` rows.

A step never builds a dense ``(B, h)`` code or gradient: the pre-activations only select each row's top
latents, and values, reconstructions and Gram matrices are computed from those latents' rows
(:class:`_Prefixes`, :func:`sparse_gram`), so its cost grows with ``k``, not with ``h``, beyond one matmul.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_K
from ..head import CSRHead
from ..runtime import reuse_freed_memory
from .losses import annealed_k, auxk_loss, dead_mask, infonce_loss, normalized_mse


@dataclass
class AdaptConfig:
    """Settings of one corpus adaptation (stored in the adapted model's ``config.json``)."""

    k: int = DEFAULT_K                 # the serving k the head is tuned for (it still serves any k)
    extra_ks: list[int] = field(default_factory=lambda: [2, 4, 16, 32])  # also trained at these k
    k_init: int = 16                   # annealing start (<= h/4); from the data init, 16 beat 64 on SciFact-train
                                       # dev: k=8 92.7 -> 93.9% of dense, k=16 92.6 -> 94.9% (and is cheaper)
    anneal_frac: float = 0.5
    epochs: float = 60.0               # passes over the (sampled) corpus, bounded by min/max_steps; SciFact-train
                                       # dev (5,183 docs), queries at 64: 30 -> 60 epochs lifted k=2/8/16 from
                                       # 66/81/85% to 76/88/90% of dense (49 s -> 93 s; benchmarks/scoring_dev.py)
    min_steps: int = 300
    max_steps: int = 1100              # bounds the time: ~0.1 s per step at h = 8192 on 2 cores
    batch_size: int = 256
    lr: float = 1e-3
    adam_eps: float = 6.25e-10
    recon4k_weight: float = 0.125
    aux_weight: float = 0.0            # AuxK (revives dead latents; 1/32 in CSRv2). Off: on the dev sets (SciFact
                                       # train, ADI, TIME, MED; 2 seeds) mean k=8 99.0% of dense either way, while
                                       # it took a quarter of the time (SciFact train 75 s -> 56 s); dead latents at
                                       # k=8 rose 31 -> 33% on SciFact train, 41 -> 56% on MED (1,033 docs)
    k_aux: int = 512
    dead_window: int = 50
    contrastive_weight: float = 0.0    # chunks of one document as positives (InfoNCE); off: on ingest's chunks
                                       # it lowered nDCG@10 at k=8 on MED 0.743 -> 0.693 and TIME 0.532 -> 0.491
    temperature: float = 0.1
    distill_weight: float = 1.0        # similarity distillation (0 = the plain raw-corpus objective)
    distill_temperature: float = 0.05
    query_k: int | None = 64           # queries are coded at this wider k (None: the document k); on the dev
                                       # sets (ADI, MED, TIME) it lifted k=8 from 91% to 95% of dense, k=2 from
                                       # 70% to 89% (benchmarks/results/query_k_dev.md); documents are unchanged
    query_code_weight: float = 0.0     # distillation of wide-query-code vs document-code similarities (1.0:
                                       # mixed on the dev sets, +50% time; off)
    low_k_weight: float = 1.0          # weight of the extra codes below k (k = 2, 4) in every term
    query_weight: float = 1.0          # pseudo-query -> document similarity distillation (when given)
    pseudo_queries: int = 0            # pseudo-queries cut from the corpus (0 = none: measured no gain when
                                       # warm-started, see benchmarks/results/adapt_dev.md)
    init: str = "data"                 # "data": the given head with its decoder rows replaced by corpus rows
                                       # (centred, unit); "default": the given head as is; "scratch": random.
                                       # SciFact-train dev, mean of 2 seeds, k=2/8: default 74/87%, data 83/93%
                                       # (scratch fell to 64% at k=8); ADI/MED/TIME also gained or held
    h: int | None = None               # latents of the adapted head ("data" init only). None: the given head's,
                                       # doubled when the (sampled) corpus has more rows than that, so that more
                                       # of its rows get a latent (SciFact-train dev, 5,183 docs: 4096 -> 8192
                                       # lifted k=8 from 93.9 to 96.4% of dense; 1.45x the time per step)
    max_samples: int = 200_000         # corpus rows sampled for training (bounded time on huge corpora)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdaptReport:
    """What one adaptation did."""

    rows: int            # corpus rows available
    sampled: int         # rows trained on
    steps: int
    seconds: float
    recon_before: float  # nMSE at k on a held sample: the given head's, then the adapted head's
    recon_after: float
    dead_pct: float      # latents never active at k on that sample, after

    def to_dict(self) -> dict:
        return asdict(self)


_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


def pseudo_queries(texts: list[str], limit: int = 20_000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Query-like snippets cut from ``texts``: one random sentence (4..48 words) of a text with two or more,
    else a random 16-word window of a text of 24+ words. Returns ``(snippets, source rows)``, at most
    ``limit`` (a seeded sample of the texts)."""
    rng = np.random.default_rng([seed, 17])
    order = rng.permutation(len(texts))[:limit] if len(texts) > limit else np.arange(len(texts))
    out, rows = [], []
    for i in order:
        sentences = [s for s in _SENTENCE.split(texts[i]) if 4 <= len(s.split()) <= 48]
        words = texts[i].split()
        if len(sentences) >= 2:
            out.append(sentences[rng.integers(len(sentences))].strip())
        elif len(words) >= 24:
            start = int(rng.integers(len(words) - 16))
            out.append(" ".join(words[start:start + 16]))
        else:
            continue
        rows.append(int(i))
    return out, np.asarray(rows, dtype=np.int64)


def plan_steps(cfg: AdaptConfig, n: int) -> int:
    """Optimiser steps for ``n`` training rows: ``epochs`` passes, clamped to [min_steps, max_steps]."""
    return int(min(cfg.max_steps, max(cfg.min_steps, math.ceil(cfg.epochs * n / cfg.batch_size))))


def adapted_h(cfg: AdaptConfig, h: int, n: int) -> int:
    """Latents of the head adapted from an ``h``-latent head on ``n`` rows (see ``AdaptConfig.h``)."""
    if cfg.init != "data":
        return h
    return cfg.h or (2 * h if n > h else h)


def distill_loss(x: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL between in-batch similarity distributions of the dense vectors (target) and of the codes.

    Row i: ``softmax_j(cos(x_i, x_j) / t)`` vs ``softmax_j(cos(z_i, z_j) / t)`` over ``j != i``.
    """
    xn, zn = F.normalize(x.float(), dim=-1), F.normalize(z.float(), dim=-1)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    target = (xn @ xn.T / temperature).masked_fill(eye, -math.inf).softmax(dim=-1)
    logp = (zn @ zn.T / temperature).masked_fill(eye, -math.inf).log_softmax(dim=-1)
    return F.kl_div(logp.masked_fill(eye, 0.0), target, reduction="batchmean")


def _dense(code: tuple[torch.Tensor, torch.Tensor], h: int) -> torch.Tensor:
    values, indices = code
    return torch.zeros(values.shape[0], h, dtype=values.dtype, device=values.device).scatter(-1, indices, values)


def _unit_code(code: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The code scaled to unit L2 norm (zero rows stay zero)."""
    values, indices = code
    return values / values.norm(dim=-1, keepdim=True).clamp_min(1e-12), indices


def sparse_gram(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], h: int) -> torch.Tensor:
    """``(Ba, Bb)`` inner products ``a_i . b_j`` of sparse codes ``(values, indices)`` in O(Ba Bb k_a), not the
    O(Ba Bb h) of dense codes: row i's k_a latents are looked up in ``b`` laid out latent-major, over the
    latents the two batches use (renumbered), not all ``h``."""
    values, indices = a
    b_values, b_indices = b
    if b_indices is indices:  # a Gram matrix of one batch
        used, a_idx = torch.unique(indices, return_inverse=True)
        b_idx = a_idx
    else:
        used, compact = torch.unique(torch.cat([indices.reshape(-1), b_indices.reshape(-1)]), return_inverse=True)
        a_idx, b_idx = compact[:indices.numel()].view_as(indices), compact[indices.numel():].view_as(b_indices)
    by_latent = torch.zeros(len(used), b_values.shape[0], dtype=b_values.dtype, device=b_values.device).scatter(
        0, b_idx.T, b_values.T)  # (used, Bb)
    looked_up = by_latent.index_select(0, a_idx.reshape(-1)).view(*indices.shape, -1)  # (Ba, k_a, Bb)
    return torch.bmm(values.unsqueeze(1), looked_up).squeeze(1)


class _PrefixCodes(torch.autograd.Function):
    """Values and prefix reconstructions of the latents ``order`` selected for each row of ``x``.

    ``x`` is the centred input ``x - b_pre`` and ``c`` is ``b_lat``. Forward: ``u = W[order] . x + c[order]``,
    ``v = ReLU(u)`` ``(B, K)``; for each bound ``k_j``, ``x^_j = sum_{p < k_j} v_p W[order_p] + b_pre``.
    Backward by hand: the gradients of ``W`` and ``x`` come from the K gathered rows per item (one ``(h, d)``
    buffer, one ``(B, K, d)`` temporary); no ``(B, h)`` gradient and no dense matmul.
    """

    @staticmethod
    def forward(ctx, x, W, c, b_pre, order, bounds):  # noqa: D102
        rows = W.index_select(0, order.reshape(-1)).view(*order.shape, W.shape[1])  # (B, K, d)
        u = torch.bmm(rows, x.unsqueeze(-1)).squeeze(-1) + c[order]
        v = u.clamp_min(0)
        out, acc, lo = [], None, 0
        for hi in bounds:
            part = torch.bmm(v[:, None, lo:hi], rows[:, lo:hi]).squeeze(1)
            acc = part if acc is None else acc + part
            out.append(acc + b_pre)
            lo = hi
        ctx.save_for_backward(x, rows, u, v, order)
        ctx.bounds, ctx.h = bounds, W.shape[0]
        ctx.mark_non_differentiable(order)
        return v, torch.stack(out)

    @staticmethod
    def backward(ctx, grad_v, grad_dec):  # noqa: D102
        x, rows, u, v, order = ctx.saved_tensors
        G = grad_dec.flip(0).cumsum(0).flip(0)  # G_j: the gradient reaching every latent before bound j
        gv = grad_v.clone()
        lo = 0
        for j, hi in enumerate(ctx.bounds):
            gv[:, lo:hi] += torch.bmm(rows[:, lo:hi], G[j].unsqueeze(-1)).squeeze(-1)
            lo = hi
        gu = gv * (u > 0)
        grad_rows = gu.unsqueeze(-1) * x.unsqueeze(1)
        lo = 0
        for j, hi in enumerate(ctx.bounds):
            grad_rows[:, lo:hi].addcmul_(v[:, lo:hi].unsqueeze(-1), G[j].unsqueeze(1))
            lo = hi
        flat = order.reshape(-1)
        grad_W = torch.zeros(ctx.h, x.shape[1], dtype=x.dtype, device=x.device).index_add_(
            0, flat, grad_rows.view(-1, x.shape[1]))
        grad_c = torch.zeros(ctx.h, dtype=x.dtype, device=x.device).index_add_(0, flat, gu.reshape(-1))
        grad_x = torch.bmm(gu.unsqueeze(1), rows).squeeze(1) if ctx.needs_input_grad[0] else None
        return grad_x, grad_W, grad_c, grad_dec.sum(dim=(0, 1)), None, None


class _Prefixes:
    """Codes at several k of a batch ``x`` from one sorted top-K: every k-code is a prefix of the top-K code.

    The dense pre-activations ``W (x - b_pre) + b_lat`` only *select* latents (no graph); the selected
    values are recomputed from the K gathered rows of ``W``, which the tied decoder reuses
    (:class:`_PrefixCodes`), so the backward touches K rows per item instead of a dense ``(B, h)`` gradient
    and two dense matmuls. Reconstructions at every asked k are running sums over the segments between them.
    """

    def __init__(self, x: torch.Tensor, W: torch.Tensor, b_lat: torch.Tensor, b_pre: torch.Tensor,
                 ks: list[int]) -> None:
        bounds = sorted(set(ks))
        centred = x - b_pre
        with torch.no_grad():
            self.indices = torch.addmm(b_lat, centred, W.T).topk(bounds[-1], dim=-1).indices  # selection only
        self.values, decoded = _PrefixCodes.apply(centred, W, b_lat, b_pre, self.indices, bounds)
        self.W, self.b_pre = W, b_pre
        self.decoded = dict(zip(bounds, decoded.unbind(0)))

    def code(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.values[:, :k], self.indices[:, :k]

    def decode(self, k: int) -> torch.Tensor:
        if k not in self.decoded:  # a k that was not asked for up front
            self.decoded[k] = _dense(self.code(k), self.W.shape[0]) @ self.W + self.b_pre
        return self.decoded[k]


def _dead_auxk(x: torch.Tensor, W: torch.Tensor, b_lat: torch.Tensor, b_pre: torch.Tensor, x_hat: torch.Tensor,
               dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """AuxK (see ``losses.auxk_loss``) computed on the dead latents' rows only: same loss and gradients, at
    the cost of the dead fraction of the dense matmuls (``W (x - b_pre)`` written as ``W x - W b_pre``, so
    no ``(B, dead) x (dead, d)`` matmul goes back to ``x``)."""
    dead_idx = dead.nonzero().squeeze(1)
    if not len(dead_idx) or k_aux <= 0:
        return x.new_zeros(())
    Wd = W.index_select(0, dead_idx)
    pre_d = torch.addmm(b_lat[dead_idx] - Wd @ b_pre, x, Wd.T)
    return auxk_loss(pre_d, x, x_hat, torch.ones(len(dead_idx), dtype=torch.bool, device=x.device),
                     k_aux, Wd, b_pre)


def _similarity_target(a: torch.Tensor, b: torch.Tensor, temperature: float, eye: torch.Tensor | None) -> torch.Tensor:
    """Row-wise ``softmax_j(cos(a_i, b_j) / t)`` (over ``j != i`` when ``eye`` is given): the dense
    neighbourhoods to distil."""
    sims = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    return (sims if eye is None else sims.masked_fill(eye, -math.inf)).softmax(dim=-1)


def _kl_to(target: torch.Tensor, sims: torch.Tensor, temperature: float, eye: torch.Tensor | None) -> torch.Tensor:
    """KL(target || softmax(sims / t)) per row, mean over rows; ``eye`` masks self-pairs when given.
    ``sims`` may carry leading dims (several codes' Gram matrices at once): one KL per matrix."""
    logits = sims / temperature
    if eye is not None:
        logits = logits.masked_fill(eye, -math.inf)
    logp = logits.log_softmax(dim=-1)
    if eye is not None:
        logp = logp.masked_fill(eye, 0.0)
    return F.kl_div(logp, target.expand_as(logp), reduction="none").sum(dim=-1).mean(dim=-1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_stats(head: CSRHead, x: np.ndarray, k: int) -> dict[str, float]:
    """How well ``head`` fits rows ``x`` at ``k``: reconstruction nMSE and dead-latent % (never active)."""
    with torch.no_grad():
        xt = torch.from_numpy(_unit(np.asarray(x, dtype=np.float32))).to(head.W.device)
        tops = _Prefixes(xt, head.W, head.b_lat, head.b_pre, [k])  # sparse: no dense (n, h) code
        recon = float(normalized_mse(xt, tops.decode(k)))
        values, indices = tops.code(k)
        active = torch.zeros(head.h, dtype=torch.bool, device=xt.device)
        active[indices[values > 0]] = True
    return {"recon_nmse": recon, "dead_pct": 100.0 * float((~active).float().mean()), "rows": len(x)}


class _Batches:
    """Seeded batches: half drawn as chunk pairs of multi-chunk documents (when any), the rest at random."""

    def __init__(self, n: int, groups: np.ndarray | None, batch_size: int, rng: np.random.Generator) -> None:
        self.n, self.batch_size, self.rng = n, min(batch_size, n), rng
        self.units: list[np.ndarray] = []
        if groups is not None:
            order = np.argsort(groups, kind="stable")
            bounds = np.flatnonzero(np.diff(groups[order])) + 1
            self.units = [u for u in np.split(order, bounds) if len(u) >= 2 and groups[u[0]] >= 0]

    def next(self) -> tuple[np.ndarray, int]:
        """``(items, n_pairs)``: ``items[:n]`` and ``items[n:2n]`` are pairs, the rest fill."""
        n_pairs = min(len(self.units), self.batch_size // 4) if self.units else 0
        pairs_a, pairs_b = [], []
        for u in self.rng.choice(len(self.units), size=n_pairs, replace=False) if n_pairs else []:
            a, b = self.rng.choice(self.units[u], size=2, replace=False)
            pairs_a.append(a)
            pairs_b.append(b)
        fill = self.rng.choice(self.n, size=self.batch_size - 2 * n_pairs, replace=False)
        return np.concatenate([np.asarray(pairs_a + pairs_b, dtype=np.int64), fill]), n_pairs


def adapt_head(
    head: CSRHead, x: np.ndarray, cfg: AdaptConfig, groups: np.ndarray | None = None,
    progress: bool = True, device: str | torch.device = "cpu",
    queries: np.ndarray | None = None, query_rows: np.ndarray | None = None,
) -> tuple[CSRHead, AdaptReport]:
    """Train a copy of ``head`` on dense rows ``x`` ``(n, d)``; ``groups[i]`` = the document of row i.

    ``queries`` ``(m, d)``: optional pseudo-query vectors (e.g. a sentence cut from row ``query_rows[j]``);
    each is trained to rank the batch's rows as the dense vectors do, and to reconstruct.
    Returns the adapted head (on CPU, eval mode) and an :class:`AdaptReport`. ``head`` is not modified.
    Deterministic: the same inputs and settings give the same head (so the same model id).
    """
    was, was_fill = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)  # gather's backward sums in a fixed order
    torch.utils.deterministic.fill_uninitialized_memory = False  # every buffer is written before it is read
    try:
        with reuse_freed_memory():
            return _adapt_head(head, x, cfg, groups, progress, device, queries, query_rows)
    finally:
        torch.use_deterministic_algorithms(was)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


def _adapt_head(head, x, cfg, groups, progress, device, queries, query_rows):
    from tqdm.auto import tqdm

    start = time.perf_counter()
    x = np.asarray(x, dtype=np.float32)
    live = np.flatnonzero(np.abs(x).sum(axis=1) > 0)  # empty texts give zero rows
    if len(live) < 2:
        raise ValueError(f"adaptation needs at least 2 non-empty rows, got {len(live)}")
    rng = np.random.default_rng(cfg.seed)
    if len(live) > cfg.max_samples:
        live = np.sort(rng.choice(live, size=cfg.max_samples, replace=False))
    data = torch.from_numpy(_unit(x[live]))
    grp = np.asarray(groups)[live] if groups is not None and cfg.contrastive_weight else None
    held = data[torch.from_numpy(rng.choice(len(data), size=min(len(data), 2048), replace=False))]
    qdata, qsrc = None, None
    if queries is not None and len(queries):
        position = np.full(len(x), -1, dtype=np.int64)
        position[live] = np.arange(len(live))
        qsrc = position[np.asarray(query_rows, dtype=np.int64)]
        keep = (qsrc >= 0) & (np.abs(np.asarray(queries)).sum(axis=1) > 0)
        qdata, qsrc = torch.from_numpy(_unit(np.asarray(queries, dtype=np.float32)[keep])), qsrc[keep]
        if not len(qsrc):
            qdata, qsrc = None, None

    model = CSRHead(head.d, adapted_h(cfg, head.h, len(data)))
    if cfg.init == "scratch":
        model.reset_parameters(torch.Generator().manual_seed(cfg.seed))
        with torch.no_grad():
            model.b_pre.copy_(data.mean(dim=0))
    elif cfg.init == "default":
        model.load_state_dict({k: v.detach().cpu().clone() for k, v in head.state_dict().items()})
    elif cfg.init == "data":  # the given head, its decoder rows replaced by (centred) corpus rows
        with torch.no_grad():
            reps = -(-model.h // head.h)
            model.W.copy_(head.W.detach().cpu().repeat(reps, 1)[:model.h])
            model.b_lat.copy_(head.b_lat.detach().cpu().repeat(reps)[:model.h])
            model.b_pre.copy_(head.b_pre.detach().cpu())
            n_atoms = min(model.h, len(data))
            rows = torch.from_numpy(rng.choice(len(data), size=n_atoms, replace=False))
            atoms = F.normalize(data[rows] - model.b_pre, dim=-1)
            model.W[:n_atoms] = atoms * model.W.norm(dim=-1).mean()
            model.b_lat[:n_atoms] = model.b_lat.mean()
    else:
        raise ValueError(f"init must be 'default', 'scratch' or 'data', got {cfg.init!r}")
    before = fit_stats(head, held.numpy(), cfg.k)["recon_nmse"]  # the given head: what adapting improves on
    device = torch.device(device)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    total = plan_steps(cfg, len(data))
    k_init = min(cfg.k_init, model.h // 4)
    batches = _Batches(len(data), grp, cfg.batch_size, rng)
    steps_since = torch.zeros(model.h, dtype=torch.long)
    extra = sorted({e for e in cfg.extra_ks if 1 <= e <= model.h})
    bar = tqdm(range(total), desc="adapt", unit="step", disable=not progress, leave=False)
    for step in bar:
        k = annealed_k(step, total, max(k_init, cfg.k), cfg.k, cfg.anneal_frac)
        items, n_pairs = batches.next()
        q_idx = None
        if qdata is not None:  # half of the fill: the documents the pseudo-queries were cut from
            n_q = min(len(qsrc), (len(items) - 2 * n_pairs) // 2)
            q_idx = rng.choice(len(qsrc), size=n_q, replace=False)
            items[2 * n_pairs:2 * n_pairs + n_q] = qsrc[q_idx]
        xb = data[torch.from_numpy(items)].to(device)
        extra_k = [e for e in extra if e != k]
        k4 = min(4 * k, model.h)
        wide = [min(cfg.query_k, model.h)] if cfg.query_code_weight and cfg.query_k else []
        tops = _Prefixes(xb, model.W, model.b_lat, model.b_pre, [k, k4, *extra_k, *wide])
        ck = tops.code(k)
        x_hat = tops.decode(k)
        dead = dead_mask(steps_since, cfg.dead_window).to(device)
        loss = (normalized_mse(xb, x_hat) + cfg.recon4k_weight * normalized_mse(xb, tops.decode(k4))
                + (cfg.aux_weight * _dead_auxk(xb, model.W, model.b_lat, model.b_pre, x_hat, dead, cfg.k_aux)
                   if cfg.aux_weight else 0.0))
        codes, weights = [_unit_code(ck)], [1.0]
        for e in extra_k:
            w = cfg.low_k_weight if e < cfg.k else 1.0
            loss = loss + w * normalized_mse(xb, tops.decode(e))
            codes.append(_unit_code(tops.code(e)))
            weights.append(w)
        eye = torch.eye(len(xb), dtype=torch.bool, device=device)
        if q_idx is not None and len(q_idx):
            xq = qdata[torch.from_numpy(q_idx)].to(device)
            q_tops = _Prefixes(xq, model.W, model.b_lat, model.b_pre, [k, *extra_k])
            loss = loss + normalized_mse(xq, q_tops.decode(k))
            q_target = _similarity_target(xq, xb, cfg.distill_temperature, None)
            for e, zk in zip([k, *extra_k], codes):
                sims = sparse_gram(_unit_code(q_tops.code(e)), zk, model.h)
                loss = loss + cfg.query_weight * _kl_to(q_target, sims, cfg.distill_temperature, None)
        zq = None
        if cfg.query_code_weight and cfg.query_k:
            zq = _unit_code(tops.code(wide[0]))
        target = None
        if cfg.distill_weight or zq is not None:
            target = _similarity_target(xb, xb, cfg.distill_temperature, eye)
        if cfg.distill_weight:  # one batched KL over every code's Gram matrix
            sims = torch.stack([sparse_gram(zk, zk, model.h) for zk in codes])
            kl = _kl_to(target, sims, cfg.distill_temperature, eye)
            loss = loss + cfg.distill_weight * (torch.tensor(weights, device=device) * kl).sum()
        for zk, w in zip(codes, weights):
            if zq is not None:
                loss = loss + w * cfg.query_code_weight * _kl_to(target, sparse_gram(zq, zk, model.h),
                                                                   cfg.distill_temperature, eye)
            if n_pairs and cfg.contrastive_weight:
                zd = _dense(zk, model.h)
                loss = loss + w * cfg.contrastive_weight * infonce_loss(zd[:n_pairs], zd[n_pairs:2 * n_pairs],
                                                                        cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            fired = torch.zeros(model.h, dtype=torch.bool)
            fired[ck[1][ck[0] > 0].cpu()] = True
            steps_since = torch.where(fired, torch.zeros_like(steps_since), steps_since + 1)
        if step % 25 == 0:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"adaptation loss became {value} at step {step}")
            bar.set_postfix(loss=f"{value:.4f}", k=k)
    bar.close()
    model = model.cpu().eval()
    after = fit_stats(model, held.numpy(), cfg.k)
    report = AdaptReport(rows=len(x), sampled=len(data), steps=total, seconds=time.perf_counter() - start,
                         recon_before=before, recon_after=after["recon_nmse"], dead_pct=after["dead_pct"])
    return model, report
