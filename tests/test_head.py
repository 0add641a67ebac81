"""CSRHead math: TopK then ReLU, tied decoder, any k, no in-place masking."""

from __future__ import annotations

import pytest
import torch

from csr_adapter.head import CSRHead, topk_relu


def test_topk_relu_keeps_k_largest_then_relu() -> None:
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5, -5.0], [-1.0, -2.0, -3.0, -4.0, 1.0]])
    z = topk_relu(pre, 2)
    assert z.tolist() == [[3.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]  # ReLU after TopK
    assert pre[0, 1] == -1.0  # input untouched


def test_forward_matches_formula_and_decode_is_tied() -> None:
    torch.manual_seed(0)
    head = CSRHead(d=6, h=24)
    with torch.no_grad():
        head.b_pre.normal_()
        head.b_lat.normal_()
    x = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    pre = (x - head.b_pre) @ head.W.T + head.b_lat
    torch.testing.assert_close(head.pre_activation(x), pre)
    for k in (1, 3, 24):
        z = head(x, k)
        assert ((z != 0).sum(dim=1) <= k).all()
        assert (z >= 0).all()
    z = head(x, 3)
    torch.testing.assert_close(head.decode(z), z @ head.W + head.b_pre)


def test_identity_head_reconstructs_nonnegative_input_at_full_k() -> None:
    head = CSRHead(d=5, h=5)
    with torch.no_grad():
        head.W.copy_(torch.eye(5))
    x = torch.tensor([[0.1, 0.7, 0.0, 0.2, 0.4]])
    torch.testing.assert_close(head.decode(head(x, 5)), x)
    # k=2 keeps only the two largest coordinates
    torch.testing.assert_close(head.decode(head(x, 2)), torch.tensor([[0.0, 0.7, 0.0, 0.0, 0.4]]))


@pytest.mark.parametrize("k", [0, -1, 33])
def test_bad_k(k: int) -> None:
    head = CSRHead(d=8, h=32)
    with pytest.raises(ValueError, match="k must be in"):
        head(torch.zeros(1, 8), k)


def test_bad_k_type() -> None:
    with pytest.raises(TypeError):
        CSRHead(d=8, h=32)(torch.zeros(1, 8), 2.5)
