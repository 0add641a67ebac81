"""Trainer: data sources, bad inputs, a short end-to-end train on real SciFact, resume, finetuning."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import BANKING77

from csr_adapter.cli import cli
from csr_adapter.errors import CSRAdapterError
from csr_adapter.training.beir import load_beir
from csr_adapter.training.data import chunk_text, detect_kind, load_source, plan_epoch
from csr_adapter.training.evaluate import evaluate_sparse
from csr_adapter.training.trainer import TrainConfig, TrainConfigError, Trainer, train, validate


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cache_dir(tiny_beir_cache) -> str:
    return tiny_beir_cache


def _cfg(cache_dir: str, **kw) -> TrainConfig:
    base = dict(k=8, k_init=32, epochs=3, batch_size=64, lr=1e-3, threads=1, device="cpu", cache_dir=cache_dir)
    return TrainConfig(**(base | kw))


# -- data sources -------------------------------------------------------------------------------------
def test_detect_and_load_each_layout(tmp_path: Path, tiny_beir: Path) -> None:
    assert detect_kind(tiny_beir) == "beir"
    src, held = load_source(tiny_beir, holdout_frac=0.25, seed=1)
    assert held is not None and len(held.qrels) == 10 and len(src.groups) == 30
    n_docs = len(src.segments[0])
    for g in src.groups:  # a query and all its relevant docs share one label
        assert g[0] >= n_docs and all(i < n_docs for i in g[1:]) and len(g) >= 2
    assert not set(held.queries.values()) & {src.texts[g[0]] for g in src.groups}

    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"query": "q1", "positive": "p1"},
                                                    {"query": "q2", "positive": "p2"}])
    assert detect_kind(pairs) == "pairs" and load_source(pairs)[0].pairs == [[0, 1], [2, 3]]
    assert detect_kind(BANKING77 / "train.jsonl.gz") == "labelled"
    lab = load_source(BANKING77 / "train.jsonl.gz")[0]
    assert len(lab.groups) == 77 and sum(map(len, lab.groups)) + len(lab.fill) == 10003
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text(" ".join(f"Sentence number {i} is about sparse codes." for i in range(30)))
    (raw / "b.md").write_text("A short note.")
    assert detect_kind(raw) == "raw"
    src = load_source(raw)[0]
    assert len(src.pairs) == 1 and len(src.fill) == 1
    views = [src.texts[i] for i in src.pairs[0]]
    assert len(views) >= 2 and len(set(views)) == len(views)  # never two identical views


def test_chunks_are_distinct_and_cover_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    chunks = chunk_text(text, chunk_words=64)
    assert len(chunks) >= 2 and len(set(chunks)) == len(chunks)
    assert " ".join(chunks).split() == text.split()
    assert chunk_text("too short to split") == ["too short to split"]


def test_epoch_plan_positives_and_fill(tiny_beir: Path) -> None:
    src, _ = load_source(tiny_beir)
    plan = plan_epoch([src], 32, np.random.default_rng(0), fill_frac=0.5)
    seen_fill = set()
    for b in plan:
        assert len(set(b.items.tolist())) == len(b.items) <= 32
        assert b.positives is not None and b.positives.shape == (len(b.items),) * 2
        seen_fill |= set(b.items.tolist()) & set(src.fill)
        assert b.positives.any()
    assert seen_fill == set(src.fill)  # every corpus doc is reconstructed each epoch


# -- bad inputs: one-line errors before training ---------------------------------------------------------
@pytest.mark.parametrize("rows,message", [
    ([], "empty dataset"),
    ([{"text": "a", "label": "x"}, {"text": "b"}], "label missing"),
    ([{"foo": 1}], "unknown data layout"),
])
def test_bad_data_files(tmp_path: Path, rows: list, message: str) -> None:
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(CSRAdapterError, match=message):
        load_source(path)


def test_unknown_layout_and_unknown_qrels_ids(tmp_path: Path, tiny_beir: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CSRAdapterError, match="unknown data layout"):
        load_source(tmp_path / "empty_dir")
    bad = tmp_path / "bad_beir"
    bad.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (bad / name).write_text((tiny_beir / name).read_text())
    (bad / "qrels").mkdir()
    (bad / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nnope\tmissing-doc\t1\n")
    with pytest.raises(CSRAdapterError, match="unknown ids"):
        load_source(bad)


@pytest.mark.parametrize("kw,message", [
    (dict(k=8, k_init=4), "k_init"),
    (dict(k=512, k_init=512), "h/4"),
    (dict(k=8, k_init=512), "h/4"),
])
def test_bad_k_settings(kw: dict, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        validate(TrainConfig(**kw), d=384)


def test_cli_errors_are_one_line(tmp_path: Path, tiny_beir: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["train", str(tiny_beir), "--out", str(tmp_path / "m"), "--k", "8", "--k-init", "4"])
    assert res.exit_code != 0 and "k_init (4) < k (8)" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli, ["train", str(tiny_beir), "--out", str(tmp_path / "m"), "--batch-size", "10000000"])
    assert res.exit_code != 0 and "out of memory" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "checkpoint").exists()  # nothing trained
    res = runner.invoke(cli, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert res.exit_code != 0 and "no such file" in res.output


# -- training ------------------------------------------------------------------------------------------------
def test_short_train_improves_ndcg_over_untrained_head(tmp_path: Path, tiny_beir: Path, cache_dir: str) -> None:
    from csr_adapter import CSREncoder
    from csr_adapter.training.evaluate import embed_beir

    test = load_beir(tiny_beir, "test")
    untrained = CSREncoder.from_backbone(k=8, device="cpu", seed=0)
    docs, queries = embed_beir(untrained, test, cache_dir, show_progress_bar=False)
    before = evaluate_sparse(untrained, docs, queries, test, ks=[8])[0]["ndcg@10"]
    src, _ = load_source(tiny_beir)
    logs: list[str] = []
    enc = train([src], _cfg(cache_dir, epochs=4), tmp_path / "m", progress=False, echo=logs.append)
    after = evaluate_sparse(enc, docs, queries, test, ks=[8])[0]["ndcg@10"]
    assert after > before + 0.05, (before, after)
    assert len(logs) == 4 and all(w in logs[-1] for w in ("recon=", "recon4k=", "aux=", "contrastive=",
                                                             "k=8", "dead="))
    loaded = CSREncoder.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.h == 1536 and loaded.k == 8 and loaded.config.training["method"] == "CSRv2"
    assert np.allclose(loaded.sparsify(docs[:5]).to_dense(), enc.sparsify(docs[:5]).to_dense())
    card = (tmp_path / "m" / "README.md").read_text()
    assert "CSRv2" in card and "k_init" in card


def test_resume_does_not_repeat_epochs_and_matches_uninterrupted(tmp_path: Path, tiny_beir: Path,
                                                                 cache_dir: str) -> None:
    src, _ = load_source(tiny_beir)
    cfg = _cfg(cache_dir, epochs=3, seed=3)
    full = train([src], cfg, tmp_path / "full", progress=False)
    # an interrupted run: one epoch done and checkpointed, then the process died
    t = Trainer([src], cfg, tmp_path / "cut", progress=False)
    from tqdm import tqdm

    t._run_epoch(0, tqdm)
    t.epoch = 1
    t._save()
    del t
    with pytest.raises(CSRAdapterError, match="--resume"):
        Trainer([src], cfg, tmp_path / "cut", progress=False)
    logs: list[str] = []
    resumed = train([src], cfg, tmp_path / "cut", resume=True, progress=False, echo=logs.append)
    assert logs[0].startswith("resumed") and [m.split(":")[0] for m in logs[1:]] == ["epoch 2/3", "epoch 3/3"]
    assert len(resumed.config.training["history"]) == 3
    for name, tensor in full.head.state_dict().items():
        assert torch.equal(tensor, resumed.head.state_dict()[name]), name
    with pytest.raises(CSRAdapterError, match="settings differ"):
        Trainer([src], _cfg(cache_dir, epochs=3, seed=4), tmp_path / "cut", resume=True, progress=False)


def test_seed_is_deterministic_and_sources_mix(tmp_path: Path, tiny_beir: Path, cache_dir: str) -> None:
    with gzip.open(BANKING77 / "train.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:300]
    lab = _write_jsonl(tmp_path / "lab.jsonl", [{"text": r["text"], "label": r["label"]} for r in rows])
    sources = [load_source(tiny_beir)[0], load_source(lab)[0]]
    a = train(sources, _cfg(cache_dir, epochs=1, seed=5), tmp_path / "a", progress=False)
    b = train(sources, _cfg(cache_dir, epochs=1, seed=5), tmp_path / "b", progress=False)
    assert torch.equal(a.head.W, b.head.W)
    assert "labels" in a.config.training["data"] and "corpus" in a.config.training["data"]


def test_finetune_backbone_smoke(tmp_path: Path, cache_dir: str) -> None:
    """End to end through the sparse code: backbone weights move, the output dir carries them."""
    from csr_adapter import CSREncoder

    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"what is the effect of drug {i} on blood pressure",
         "positive": f"Drug {i} lowered systolic blood pressure in a randomised trial of {10 * i} patients."}
        for i in range(8)])
    cfg = _cfg(cache_dir, epochs=1, batch_size=16, finetune_backbone=True, max_seq_length=32, k_init=8)
    stock = CSREncoder.from_backbone(device="cpu").backbone.model.state_dict()
    enc = train([load_source(pairs)[0]], cfg, tmp_path / "ft", progress=False)
    moved = [n for n, t in enc.backbone.model.state_dict().items() if not torch.equal(t, stock[n])]
    assert moved, "backbone did not train"
    assert (tmp_path / "ft" / "backbone" / "model.safetensors").exists()
    loaded = CSREncoder.from_pretrained(tmp_path / "ft", device="cpu")
    x = ["drug 3 and blood pressure"]
    assert np.allclose(loaded.encode_dense(x), enc.encode_dense(x), atol=1e-5)
