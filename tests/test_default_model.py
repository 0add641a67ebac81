"""The shipped default head: its card lists every training set with its licence, and the builder works."""

from __future__ import annotations

from pathlib import Path

from conftest import SHARED_DATA

from csr_adapter import CSREncoder
from csr_adapter.config import CSRConfig
from csr_adapter.encoder import DEFAULT_MODEL_DIR
from csr_adapter.training.broad import BROAD_SETS, EVAL_SETS
from csr_adapter.training.default_model import (
    COMMAND,
    DEFAULT_SETTINGS,
    DOCUMENT_CODING,
    RECIPE,
    RESCORE_DEPTH,
    card_text,
    train_head,
    training_texts,
)
from csr_adapter.training.zeroshot import score_sets


def test_shipped_default_is_the_builders_head():
    """The shipped head: built by `make default-model` with its settings, frozen stock backbone, scored."""
    conf = CSRConfig.load(DEFAULT_MODEL_DIR)
    t = conf.training
    assert (conf.h, conf.k, conf.query_k) == (DEFAULT_SETTINGS["h"], 8, DEFAULT_SETTINGS["query_k"])
    assert conf.backbone == "all-MiniLM-L6-v2" and t["backbone_finetuned"] is False and t["command"] == COMMAND
    assert t["settings"]["steps"] == DEFAULT_SETTINGS["steps"] and t["settings"]["init"] == "scratch"
    assert {key: t["settings"][key] for key in RECIPE} == RECIPE  # the builder trains with what the head was
    assert (conf.document_coding, conf.rescore_depth) == (DOCUMENT_CODING, RESCORE_DEPTH)
    rows = next(iter(conf.scores.values()))["rows"]
    assert {r["set"] for r in rows} == set(EVAL_SETS) and all(0 < r["k=8"] <= 1 for r in rows)


def test_shipped_card_lists_every_training_set_and_licence(encoder):
    training = encoder.config.training
    known = {s.name: s for s in BROAD_SETS}
    sets = training["sets"]
    assert sets and {s["name"] for s in sets} <= set(known), "trained on a set broad.py does not list"
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    for s in sets:
        assert s["licence"] == known[s["name"]].licence
        assert f"| {s['name']} | {s['what']} | {s['rows']:,} | {s['licence']} |" in card
    assert not set(EVAL_SETS) & {s["name"] for s in sets}
    for name in EVAL_SETS:  # the zero-shot table covers every retrieval set
        assert f"| {name} |" in card


def test_builder_trains_a_head_on_broad_text_and_writes_its_card(encoder, tmp_path: Path):
    texts = training_texts(SHARED_DATA, {"banking77": 100, "vera": 300})
    assert list(texts) == ["vera", "banking77"] and [len(t) for t in texts.values()] == [300, 100]
    enc, report = train_head(encoder, texts, h=256, steps=30, progress=False)
    assert enc.h == 256 and enc.config.query_k == 64 and report["steps"] == 30
    assert (enc.config.document_coding, enc.config.rescore_depth) == (DOCUMENT_CODING, RESCORE_DEPTH)
    scores = score_sets(enc, SHARED_DATA, ["adi"], ks=(8,))
    assert 0 < scores["adi"]["ndcg"][8] <= 1 and scores["adi"]["docs"] == 82
    enc.config.training["card"] = card_text(scores)
    enc.save_pretrained(tmp_path / "m", save_backbone=False)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "| vera | V.E.R.A. computing acronyms and expansions | 300 | GFDL 1.1+ |" in card
    assert "| adi | 82 |" in card
    loaded = CSREncoder.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.model_id == enc.model_id
