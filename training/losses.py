"""CSRv2 loss terms as pure functions (no state, no in-place edits of their inputs).

``x`` are L2-normalised backbone embeddings ``(B, d)``, ``pre`` the head's dense pre-activations
``(B, h)``. Nothing here modifies ``pre``: the k-pass, the 4k-pass and AuxK all read the same tensor
(the sentence-transformers CSR module masks it in place and so trains only a bias in its 4k term).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def normalized_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error per row divided by the row's squared norm, averaged (scale-free MSE)."""
    err = (x_hat.float() - x.float()).pow(2).sum(dim=-1)
    return (err / x.float().pow(2).sum(dim=-1).clamp_min(1e-12)).mean()


def annealed_k(step: int, total_steps: int, k_init: int, k_target: int, frac: float = 0.7) -> int:
    """k for optimiser step ``step`` (0-based): linear from ``k_init`` to ``k_target`` over the first
    ``frac`` of ``total_steps``, then ``k_target``. With ``frac == 0`` or ``k_init == k_target``: constant."""
    span = int(round(frac * total_steps))
    if span <= 0 or k_init <= k_target or step >= span:
        return k_target
    return int(round(k_init + (k_target - k_init) * step / span))


def dead_mask(steps_since_fired: torch.Tensor, window: int) -> torch.Tensor:
    """Latents that have not fired for at least ``window`` optimiser steps."""
    return steps_since_fired >= window


def auxk_loss(
    pre: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, dead: torch.Tensor, k_aux: int,
    W: torch.Tensor, b_pre: torch.Tensor,
) -> torch.Tensor:
    """AuxK: the top ``k_aux`` pre-activations among *dead* latents only, decoded, regress the residual.

    Target ``e = x - x_hat.detach()``; prediction ``W^T z_aux`` (no bias: the bias is already in
    ``x_hat``); the loss is the squared error normalised by the residual's variance, NaN-guarded.
    Exactly zero (no gradient) when no latent is dead.
    """
    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux <= 0:
        return pre.new_zeros(())
    masked = torch.where(dead.to(pre.device), pre, torch.full_like(pre, -math.inf))
    values, indices = masked.topk(min(k_aux, n_dead), dim=-1)
    z_aux = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    e = (x.float() - x_hat.detach().float())
    e_hat = z_aux @ W
    var = (e - e.mean(dim=0, keepdim=True)).pow(2).sum()
    loss = (e_hat - e).pow(2).sum() / var.clamp_min(1e-12)
    return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` positives mask from integer labels; a negative label means "no label" (no positives)."""
    labels = labels.view(-1)
    same = labels[:, None] == labels[None, :]
    return same & (labels[:, None] >= 0)


def supcon_loss(z: torch.Tensor, positives: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., "L_out") on L2-normalised codes.

    ``positives[i, j]`` says items i and j share a label. For each anchor with at least one positive,
    the mean over its positives of ``-log softmax`` over every other in-batch item; anchors without
    positives only serve as negatives. Zero if no anchor has a positive.
    """
    z = F.normalize(z.float(), dim=-1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = positives.to(z.device).bool() & ~eye
    logits = (z @ z.T / temperature).masked_fill(eye, -math.inf)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return z.new_zeros(()) * z.sum()
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[anchors] / n_pos[anchors])
    return per_anchor.mean()


def infonce_loss(
    za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.1, ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE: row i of ``za`` and row i of ``zb`` are a positive pair.

    ``ignore[i, j]`` (i != j) drops known false negatives (e.g. the same text twice in a batch).
    """
    za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
    logits = za @ zb.T / temperature
    if ignore is not None:
        off = ignore.to(za.device).bool() & ~torch.eye(len(za), dtype=torch.bool, device=za.device)
        logits = logits.masked_fill(off, -math.inf)
    target = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
