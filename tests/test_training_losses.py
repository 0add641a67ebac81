"""Each CSRv2 loss term on tiny real inputs (real MiniLM embeddings of real texts)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import BANKING77

from csr_adapter.head import CSRHead, topk_relu
from csr_adapter.training.losses import (
    annealed_k,
    auxk_loss,
    dead_mask,
    infonce_loss,
    label_mask,
    normalized_mse,
    supcon_loss,
)


@pytest.fixture(scope="module")
def banking(encoder):
    """Real Banking77 train texts of 6 intents (12 each), embedded with the real backbone."""
    with gzip.open(BANKING77 / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    labels = sorted({r["label"] for r in rows})[:6]
    picked = [r for lab in labels for r in [r for r in rows if r["label"] == lab][:12]]
    x = torch.from_numpy(encoder.encode_dense([r["text"] for r in picked], batch_size=36))
    y = torch.tensor([labels.index(r["label"]) for r in picked])
    return x, y


def _head(seed: int = 0, d: int = 384, h: int = 1536) -> CSRHead:
    head = CSRHead(d, h)
    head.reset_parameters(torch.Generator().manual_seed(seed))
    return head


def test_annealed_k_sequence() -> None:
    seq = [annealed_k(t, 100, 64, 8, 0.7) for t in range(100)]
    assert seq[0] == 64
    assert all(a >= b for a, b in zip(seq, seq[1:]))  # never rises
    assert seq[35] == 36  # linear: 64 + (8 - 64) * 35 / 70
    assert set(seq[70:]) == {8}
    assert seq[69] > 8
    assert [annealed_k(t, 10, 8, 8) for t in range(10)] == [8] * 10  # k_init == k: constant
    assert [annealed_k(t, 10, 64, 8, 0.0) for t in range(10)] == [8] * 10  # no annealing


def test_recon_terms(banking) -> None:
    x, _ = banking
    head = _head()
    assert float(normalized_mse(x, x)) == 0.0
    pre = head.pre_activation(x)
    with torch.no_grad():
        err_k = float(normalized_mse(x, head.decode(topk_relu(pre, 8))))
        err_4k = float(normalized_mse(x, head.decode(topk_relu(pre, 32))))
    assert np.isfinite(err_k) and np.isfinite(err_4k)
    pre_before = pre.clone()
    _ = topk_relu(pre, 32)
    assert torch.equal(pre, pre_before)  # nothing masks pre in place


def test_auxk_zero_when_no_latent_dead(banking) -> None:
    x, _ = banking
    head = _head()
    pre = head.pre_activation(x)
    x_hat = head.decode(topk_relu(pre, 8))
    none_dead = dead_mask(torch.zeros(1536, dtype=torch.long), window=10)
    assert not none_dead.any()
    assert float(auxk_loss(pre, x, x_hat, none_dead, 512, head.W, head.b_pre)) == 0.0


def test_auxk_trains_dead_latents_only(banking) -> None:
    x, _ = banking
    head = _head()
    pre = head.pre_activation(x)
    x_hat = head.decode(topk_relu(pre, 8))
    steps = torch.zeros(1536, dtype=torch.long)
    steps[:100] = 20  # latents 0..99 have not fired for 20 steps
    dead = dead_mask(steps, window=10)
    assert int(dead.sum()) == 100
    loss = auxk_loss(pre, x, x_hat, dead, 512, head.W, head.b_pre)
    assert float(loss) > 0
    loss.backward()
    rows_with_grad = head.W.grad.abs().sum(dim=1) > 0
    assert rows_with_grad[:100].any() and not rows_with_grad[100:].any()


def test_supcon_with_real_labels_separates_classes(banking) -> None:
    """A head trained only with SupCon on real Banking77 intents puts same-intent codes together."""
    x, y = banking
    train = torch.arange(len(y)) % 3 != 0  # 2/3 train, 1/3 held out
    head = _head(1, h=512)

    def nn_accuracy() -> float:
        with torch.no_grad():
            z = torch.nn.functional.normalize(head(x, 8), dim=-1)
        sim = z[~train] @ z[train].T
        return float((y[train][sim.argmax(dim=1)] == y[~train]).float().mean())

    pos = label_mask(y[train])
    with torch.no_grad():
        before_loss = float(supcon_loss(head(x[train], 8), pos, 0.1))
    before = nn_accuracy()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(40):
        loss = supcon_loss(head(x[train], 8), pos, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after_loss = float(supcon_loss(head(x[train], 8), pos, 0.1))
    assert after_loss < 0.75 * before_loss
    assert nn_accuracy() >= before and nn_accuracy() >= 0.8
    # the labels matter: with every label distinct there are no positives and the term is zero
    assert float(supcon_loss(head(x[train], 8), label_mask(torch.arange(int(train.sum()))), 0.1)) == 0.0


def test_label_mask_unlabelled_rows_have_no_positives() -> None:
    mask = label_mask(torch.tensor([0, 0, -1, -1, 1]))
    assert mask[0, 1] and not mask[2, 3] and not mask[2].any() and not mask[0, 4]


def test_infonce_prefers_true_pairs(encoder, scifact_slice) -> None:
    qids = list(scifact_slice["queries"])[:16]
    queries = [scifact_slice["queries"][q] for q in qids]
    docs = [scifact_slice["docs"][next(iter(scifact_slice["qrels"][q]))] for q in qids]
    xq = torch.from_numpy(encoder.encode_dense(queries))
    xd = torch.from_numpy(encoder.encode_dense(docs))
    head = encoder.head
    with torch.no_grad():
        zq, zd = head(xq, 16), head(xd, 16)
        true = float(infonce_loss(zq, zd, 0.1))
        shuffled = float(infonce_loss(zq, zd.roll(1, dims=0), 0.1))
    assert true < shuffled
    same = torch.ones(16, 16, dtype=torch.bool)  # ignoring every negative leaves only the positive
    assert float(infonce_loss(zq, zd, 0.1, ignore=same)) == pytest.approx(0.0, abs=1e-6)


def test_sparse_gram_and_prefix_decodes_match_the_dense_definitions(banking) -> None:
    from csr_adapter.training.adapt import _dense, _Prefixes, _unit_code, distill_loss, sparse_gram

    x, _ = banking
    x = torch.nn.functional.normalize(x, dim=-1)
    head = _head(h=512)
    pre = head.pre_activation(x)
    tops = _Prefixes(x, head.W, head.b_lat, head.b_pre, [2, 8, 32, 96])
    for k in (2, 8, 32, 96):
        z = topk_relu(pre, k)
        assert torch.allclose(tops.decode(k), head.decode(z), atol=1e-5)
        code = _unit_code(tops.code(k))
        zn = torch.nn.functional.normalize(z, dim=-1)
        assert torch.allclose(sparse_gram(code, code, head.h), zn @ zn.T, atol=1e-5)
        wide = _unit_code(tops.code(96))  # asymmetric: a wide code against k-codes
        assert torch.allclose(sparse_gram(wide, code, head.h), _dense(wide, head.h) @ zn.T, atol=1e-5)
    # the loss the adaptation optimises (sparse path) is the dense reference's, gradients included
    from csr_adapter.training.adapt import _kl_to, _similarity_target

    eye = torch.eye(len(x), dtype=torch.bool)
    w = head.W.detach().clone().requires_grad_(True)
    v, i = torch.nn.functional.linear(x - head.b_pre, w, head.b_lat).topk(8, dim=-1)
    sparse = _kl_to(_similarity_target(x, x, 0.05, eye), sparse_gram(_unit_code((v.relu(), i)),
                                                                    _unit_code((v.relu(), i)), head.h), 0.05, eye)
    (g_sparse,) = torch.autograd.grad(sparse, w)
    v, i = torch.nn.functional.linear(x - head.b_pre, w, head.b_lat).topk(8, dim=-1)
    dense = distill_loss(x, _dense((v.relu(), i), head.h), 0.05)
    (g_dense,) = torch.autograd.grad(dense, w)
    assert torch.allclose(sparse, dense, atol=1e-5) and float(dense) > 0
    assert torch.allclose(g_sparse, g_dense, atol=1e-6, rtol=1e-3)


def test_prefix_codes_and_dead_auxk_give_the_dense_definitions_gradients(banking) -> None:
    """The hand-written backward (K gathered rows per item) and the dead-rows-only AuxK match autograd
    through the dense definitions: ``topk_relu(W (x - b_pre) + b_lat)``, ``W^T z + b_pre``, ``auxk_loss``."""
    from csr_adapter.training.adapt import _dead_auxk, _Prefixes, _unit_code, sparse_gram

    x, _ = banking
    x = torch.nn.functional.normalize(x, dim=-1)
    g = torch.Generator().manual_seed(3)
    head = _head(h=512)
    with torch.no_grad():
        head.b_pre.copy_(0.05 * torch.randn(head.d, generator=g))
        head.b_lat.copy_(0.05 * torch.randn(head.h, generator=g))
    dead = torch.rand(head.h, generator=g) < 0.4
    weights = torch.randn(4, head.d, generator=g)

    def objective(decode, code, aux):  # touches every output: decodes at 3 k, code values, AuxK
        total = sum(((decode(k) - x) * w).pow(2).sum() for k, w in zip((2, 8, 32), weights))
        values, _ = code(8)
        return total + (values * torch.arange(1.0, 9.0)).sum() + aux(decode(8))

    params = [head.W, head.b_lat, head.b_pre]
    tops = _Prefixes(x, head.W, head.b_lat, head.b_pre, [2, 8, 32])
    fast = objective(tops.decode, tops.code,
                     lambda x_hat: _dead_auxk(x, head.W, head.b_lat, head.b_pre,
                                              x_hat, dead, 64))
    g_fast = torch.autograd.grad(fast, params)

    pre = head.pre_activation(x)

    def dense_code(k):
        values, indices = pre.topk(k, dim=-1)
        return values.relu(), indices

    def dense_decode(k):
        return head.decode(topk_relu(pre, k))

    ref = objective(dense_decode, dense_code,
                    lambda x_hat: auxk_loss(pre, x, x_hat, dead, 64, head.W, head.b_pre))
    g_ref = torch.autograd.grad(ref, params)
    assert float(ref) > 0 and torch.allclose(fast, ref, rtol=1e-5)
    for a, b in zip(g_fast, g_ref):
        assert b.abs().max() > 0 and torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    code = _unit_code(tops.code(8))
    assert torch.allclose(sparse_gram(code, code, head.h), sparse_gram(_unit_code(dense_code(8)),
                                                                       _unit_code(dense_code(8)), head.h), atol=1e-5)


def test_data_init_gives_sampled_rows_a_latent_and_widens_for_large_corpora(banking) -> None:
    from csr_adapter.training.adapt import AdaptConfig, adapt_head, adapted_h

    x, _ = banking  # 72 real rows
    given = _head(h=64)
    assert adapted_h(AdaptConfig(), 64, 72) == 128 and adapted_h(AdaptConfig(), 128, 72) == 128
    assert adapted_h(AdaptConfig(init="default"), 64, 72) == 64 and adapted_h(AdaptConfig(h=96), 64, 72) == 96
    frozen = AdaptConfig(lr=0.0, min_steps=1, max_steps=1, extra_ks=[2], k=2)  # lr 0: the init itself
    head, _ = adapt_head(given, x.numpy(), frozen, progress=False)
    assert head.h == 128
    rows = torch.nn.functional.normalize(torch.nn.functional.normalize(x, dim=-1) - given.b_pre, dim=-1)
    atoms = torch.nn.functional.normalize(head.W[:72].detach(), dim=-1)
    assert torch.allclose((atoms @ rows.T).max(dim=1).values, torch.ones(72), atol=1e-5)  # each is a corpus row
    assert len(set((atoms @ rows.T).argmax(dim=1).tolist())) == 72  # ... a different one
    assert torch.equal(head.W[72:].detach(), given.W.detach().repeat(2, 1)[72:])  # the rest: the given head's
    # a row that is a latent codes itself first at k = 1
    z = topk_relu(head.pre_activation(torch.nn.functional.normalize(x, dim=-1)), 1)
    assert (z.argmax(dim=1) == (atoms @ rows.T).argmax(dim=0)).float().mean() > 0.9
    kept, _ = adapt_head(given, x.numpy(), AdaptConfig(init="default", lr=0.0, min_steps=1, max_steps=1, k=2,
                                                       extra_ks=[2]), progress=False)
    assert torch.equal(kept.W.detach(), given.W.detach())
