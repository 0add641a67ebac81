"""Pooled sparsity budget: selection primitives, threshold/corpus modes, pooled training, CLI, bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csr_adapter import CSREncoder
from csr_adapter.budget import (
    BudgetError,
    BudgetSpec,
    encode_corpus,
    ingest_k,
    nnz_stats,
    pooled_select,
    postings_per_query,
    threshold_select,
)
from csr_adapter.cli import cli
from csr_adapter.errors import CSRAdapterError
from csr_adapter.training.beir import load_beir
from csr_adapter.training.data import load_source
from csr_adapter.training.trainer import TrainConfig, TrainConfigError, Trainer, train


@pytest.fixture(scope="module")
def cache_dir(tiny_beir_cache) -> str:
    """Training and `eval` here read tiny_beir's backbone vectors (conftest.py) from one shared pass."""
    return tiny_beir_cache


@pytest.fixture(scope="module")
def pooled_model(tiny_beir, cache_dir, tmp_path_factory) -> Path:
    """A head trained with --budget pooled (k̄ = 4) on the tiny slice; frozen backbone."""
    out = tmp_path_factory.mktemp("pooled") / "model"
    cfg = TrainConfig(k=4, k_init=16, epochs=3, batch_size=64, threads=1, device="cpu", budget="pooled",
                      threshold_frac=0.2, cache_dir=cache_dir)
    train([load_source(tiny_beir, "beir")[0]], cfg, out, progress=False, echo=lambda m: None)
    return out


# -- primitives --------------------------------------------------------------------------------------------
def test_pooled_select_budget_bounds_and_threshold_agree():
    pre = torch.randn(32, 128, generator=torch.Generator().manual_seed(0)).abs() + 0.01
    z, theta = pooled_select(pre, 32 * 3, 1, 6)
    nnz = (z > 0).sum(dim=1)
    assert int(nnz.sum()) == 96 and int(nnz.min()) >= 1 and int(nnz.max()) <= 6 and len(set(nnz.tolist())) > 1
    assert torch.equal(threshold_select(pre, theta, 1, 6) > 0, z > 0)  # θ reproduces the pooled choice
    kept = torch.where(z > 0, pre, torch.zeros_like(pre))
    assert torch.equal(kept, z)  # values are the pre-activations themselves (gradient flows through them)


# -- inference modes -----------------------------------------------------------------------------------------
def test_threshold_mode_is_batch_independent_and_stored(pooled_model):
    enc = CSREncoder.from_pretrained(pooled_model, device="cpu")
    spec = BudgetSpec.from_config(enc.config)
    assert spec is not None and spec.avg_k == 4 and spec.k_min <= 4 <= spec.k_max
    assert {"document", "query"} <= set(spec.theta)
    texts = ["Vitamin D deficiency and bone density.", "Aspirin lowers the risk of colorectal cancer.",
             "Mitochondria are the powerhouse of the cell.", ""]
    batch = enc.encode_queries(texts, budget="threshold")
    for i, text in enumerate(texts):
        alone = enc.encode_queries(text, budget="threshold")[0]
        assert np.array_equal(alone.indices, batch[i].indices)
        np.testing.assert_allclose(alone.values, batch[i].values, rtol=1e-5, atol=1e-6)
    assert len(batch[3]) == 0 and all(spec.k_min <= len(batch[i]) <= spec.k_max for i in range(3))
    with pytest.raises(BudgetError, match="calibrated for avg k 4"):
        enc.encode("x", k=2, budget="threshold")


def test_corpus_mode_gives_exactly_n_times_k_postings(pooled_model, tiny_beir):
    enc = CSREncoder.from_pretrained(pooled_model, device="cpu")
    data = load_beir(tiny_beir, "test")
    texts = [data.doc_text(d) for d in list(data.corpus)[:16]]
    dense, codes = encode_corpus(enc, texts, 4)
    assert codes.nnz.sum() == 16 * 4 and codes.nnz.max() <= enc.config.extra["budget"]["k_max"]
    np.testing.assert_allclose(np.linalg.norm(codes.to_dense(), axis=1), 1.0, rtol=1e-5)
    fixed = enc.sparsify(dense, k=4)
    assert postings_per_query(fixed[:5], codes) > 0 and nnz_stats(codes)["mean"] == 4.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, empty = encode_corpus(enc, [], 4)
    assert len(empty) == 0 and "corpus is empty" in str(caught[0].message)


def test_default_model_unchanged_in_fixed_mode(encoder):
    texts = ["sparse codes for retrieval", "a second text"]
    dense = encoder.encode_dense(texts)
    a, b = encoder.sparsify(dense, k=8), encoder.sparsify(dense, k=8, budget="fixed")
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    with pytest.raises(BudgetError, match="needs a calibrated θ"):
        encoder.sparsify(dense, budget="threshold")
    corpus = encoder.sparsify(dense, k=2, budget="corpus")  # any model can do a corpus budget
    assert corpus.nnz.sum() == 4
    out = run("encode", *texts, "--k", "2", "--budget", "corpus", "--json")
    assert out.exit_code == 0, out.output
    assert sum(len(r["indices"]) for r in json.loads(out.output)) == 4
    bad = run("encode", "x", "--budget", "threshold")
    assert bad.exit_code != 0 and "needs a calibrated θ" in bad.output


# -- bad input -----------------------------------------------------------------------------------------------
def test_bad_budget_settings(encoder, tiny_beir, tmp_path):
    src = [load_source(tiny_beir, "beir")[0]]
    for kw, msg in (({"k_min": 5, "k_max": 3}, r"k_min \(5\) > k_max \(3\)"),
                    ({"k_max": 2}, r"avg-k 4 is above k_max \(2\)"),
                    ({"budget": "nope"}, "unknown --budget")):
        cfg = TrainConfig(k=4, k_init=16, epochs=1, batch_size=64, device="cpu", budget=kw.pop("budget", "pooled"),
                          cache_dir=str(tmp_path / "c"), **kw)
        with pytest.raises(TrainConfigError, match=msg):
            Trainer(src, cfg, tmp_path / "m", progress=False)
    with pytest.raises(BudgetError, match=r"avg-k 9 is above k_max \(4\)"):
        ingest_k(encoder, "corpus", 8, 9, None, 4)
    with pytest.raises(BudgetError, match="need --budget corpus"):
        ingest_k(encoder, "fixed", 8, 4, None, None)
    assert issubclass(BudgetError, CSRAdapterError) and issubclass(BudgetError, ValueError)


# -- CLI -----------------------------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_eval_reports_active_dims_per_document_and_query(pooled_model, tiny_beir, cache_dir):
    out = run("eval", "--data", tiny_beir, "--model", pooled_model, "--budget", "threshold", "--no-dense",
              "--cache-dir", cache_dir)
    assert out.exit_code == 0, out.output
    assert "documents mean" in out.output and "queries   mean" in out.output and "postings/query" in out.output
    res = json.loads(run("eval", "--data", tiny_beir, "--model", pooled_model, "--budget", "corpus", "--k", "4",
                         "--no-dense", "--json", "--cache-dir", cache_dir).output)
    row = res["rows"][0]
    assert row["doc_active"]["mean"] == pytest.approx(4.0) and sum(row["doc_active"]["hist"].values()) == res["docs"]
    bad = run("eval", "--data", tiny_beir, "--budget", "threshold")  # shipped model: no θ
    assert bad.exit_code != 0 and "needs a calibrated θ" in bad.output and "Traceback" not in bad.output


def test_ingest_corpus_budget_recomputed_on_reingest(pooled_model, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"d{i}.txt").write_text(f"Document {i} on protein folding and cell signalling. " * (i + 1))
    store = tmp_path / "store"
    args = ("ingest", folder, "--path", store, "--model", pooled_model, "--budget", "corpus", "--avg-k", "4", "--json")
    first = json.loads(run(*args).output)
    assert first["written"] == first["chunks"] and first["backend"]["meta"]["k"] == 4
    (folder / "d6.txt").write_text("A new short note about ribosomes.")
    second = run(*args)
    assert second.exit_code == 0, second.output
    report = json.loads(second.output)
    assert report["written"] == report["chunks"] == report["points"]  # every chunk re-encoded and re-written
    from csr_adapter.integrations.registry import open_backend

    be = open_backend("qdrant", "csr", path=str(store), create=False)
    try:
        points = be.retrieve([pid for pid, _ in be.scroll([])], with_vectors=True)
    finally:
        be.close()
    assert sum(len(p.sparse) for p in points) == 4 * report["chunks"]
    for bad, msg in ((("--k-min", "5", "--k-max", "3"), "k_min (5) > k_max (3)"),
                     (("--k-max", "2"), "avg-k 4 is above k_max (2)")):
        out = run(*args[:-1], *bad)
        assert out.exit_code != 0 and msg in out.output


def test_train_cli_rejects_bad_bounds(tiny_beir, tmp_path):
    out = run("train", tiny_beir, "--out", tmp_path / "m", "--budget", "pooled", "--k", "4", "--k-min", "5",
              "--k-max", "3", "--no-progress", "--threads", "1")
    assert out.exit_code != 0 and "k_min (5) > k_max (3)" in out.output and "Traceback" not in out.output
