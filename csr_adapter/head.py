"""The CSR sparse-autoencoder head.

Math (x is the L2-normalised backbone embedding, shape ``(B, d)``)::

    pre = W (x - b_pre) + b_lat          W: (h, d), b_pre: (d,), b_lat: (h,)
    z   = ReLU(TopK_k(pre))              keep the k largest entries of pre, zero the rest
    x^  = W^T z + b_pre                  tied decoder

``k`` is chosen per call, so one trained head serves any ``1 <= k <= h``. Top-k runs in fp32.
:meth:`CSRHead.pursuit` codes over the same decoder rows by non-negative matching pursuit instead (a closer
reconstruction from the same k rows, at k small matmuls per batch).
Nothing is masked in place: ``pre`` is never modified, so callers may reuse it (e.g. for the 4k
reconstruction and AuxK during training).
"""

from __future__ import annotations

import torch
from torch import nn

from .defaults import check_k  # noqa: F401  (re-exported: one k check for every caller)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """``ReLU(TopK_k(pre))`` along the last dim, as a new dense tensor of ``pre``'s shape."""
    pre32 = pre.float()
    values, indices = pre32.topk(k, dim=-1)
    return torch.zeros_like(pre32).scatter(-1, indices, values.relu())


class CSRHead(nn.Module):
    """Tied sparse autoencoder ``d -> h -> d`` with TopK-then-ReLU activation."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        if d <= 0 or h <= 0:
            raise ValueError(f"d and h must be positive, got d={d}, h={h}")
        self.d, self.h = d, h
        self.W = nn.Parameter(torch.empty(h, d))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.b_lat = nn.Parameter(torch.zeros(h))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random rows (each latent's decoder direction), zero biases."""
        with torch.no_grad():
            self.W.copy_(torch.randn(self.h, self.d, generator=generator))
            self.W.div_(self.W.norm(dim=1, keepdim=True))
            self.b_pre.zero_()
            self.b_lat.zero_()

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Dense pre-activations ``W (x - b_pre) + b_lat``, shape ``(B, h)``, fp32."""
        x = x.float()
        return torch.nn.functional.linear(x - self.b_pre, self.W, self.b_lat)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """k-sparse code ``z`` (dense layout, shape ``(B, h)``)."""
        return topk_relu(self.pre_activation(x), check_k(k, self.h))

    @torch.no_grad()
    def pursuit(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, indices)``, each ``(B, k)``: non-negative orthogonal matching pursuit of ``x - b_pre`` over
        the decoder rows. Each step adds the row most correlated with the residual, then re-fits all chosen
        rows' coefficients by least squares (clipped at 0). Entries are in selection order, so the code at a
        smaller k names a prefix of these rows (with its own re-fitted values)."""
        k = check_k(k, self.h)
        target = x.float() - self.b_pre
        W = self.W.float()
        residual = target
        indices = torch.empty(len(x), 0, dtype=torch.long, device=x.device)
        ridge = 1e-6 * torch.eye(k, device=x.device)
        for step in range(1, k + 1):
            corr = residual @ W.T
            corr.scatter_(1, indices, float("-inf"))  # each row once
            indices = torch.cat([indices, corr.argmax(dim=1, keepdim=True)], dim=1)
            rows = W[indices]  # (B, step, d)
            gram = rows @ rows.transpose(1, 2) + ridge[:step, :step]
            values = torch.linalg.solve(gram, (rows @ target.unsqueeze(-1))).squeeze(-1).clamp_min(0)
            residual = target - (values.unsqueeze(1) @ rows).squeeze(1)
        return values, indices

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``W^T z + b_pre``, shape ``(B, d)``."""
        return z.float() @ self.W + self.b_pre

    def extra_repr(self) -> str:
        return f"d={self.d}, h={self.h}"
