"""`ingest/search --backend faiss`, `ingest --with-fallback`, search through the fallback (real model, engines)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    files = sorted(CORPUS.glob("*.txt"))[:6]
    if len(files) < 6:
        pytest.skip("examples/corpus missing")
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def test_faiss_backend_ingest_and_search(docs, tmp_path):
    store = tmp_path / "store"
    first = run("ingest", docs, "--backend", "faiss", "--path", store, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["backend"]["engine"] == "faiss" and report["written"] == report["points"] > 0
    assert (store / "csr" / "store.sqlite").exists() and (store / "csr" / "index.faiss").exists()
    again = json.loads(run("ingest", docs, "--backend", "faiss", "--path", store, "--json").output)
    assert again["written"] == 0 and again["points"] == report["points"]
    name = sorted(docs.glob("*.txt"))[2].name
    title = (docs / name).read_text().split("\n")[0][:80]
    hits = json.loads(run("search", title, "--backend", "faiss", "--path", store, "--json", "--top-k", "2").output)
    assert hits[0]["payload"]["source"].endswith(name) and {h["served_by"] for h in hits} == {"dense"}
    missing = run("search", "x", "--backend", "faiss", "--path", store, "--collection", "nope")
    assert missing.exit_code == 1 and "no FAISS collection" in missing.output


def test_with_fallback_ingest_prune_and_search(docs, tmp_path):
    store = tmp_path / "store"
    first = json.loads(run("ingest", docs, "--path", store, "--with-fallback", "--json").output)
    fallback = store / "csr.faiss"
    assert first["backend"]["fallback"]["count"] == first["points"] > 0 and (fallback / "index.faiss").exists()
    assert first["backend"]["meta"]["d"] is None  # the sparse collection itself stays sparse-only
    hits = json.loads(run("search", "qwerty zxcvb", "--path", store, "--k", "2", "--json", "--top-k", "5").output)
    assert len(hits) == 5 and "dense" in {h["served_by"] for h in hits}  # never empty
    plain = json.loads(run("search", "qwerty zxcvb", "--path", store, "--k", "2", "--json", "--no-fallback",
                           "--mode", "codes").output)
    assert {h["served_by"] for h in plain} <= {"sparse"} and len(plain) < 5
    text = run("search", "qwerty zxcvb", "--path", store, "--k", "2", "--top-k", "5").output
    assert "(dense)" in text
    gone = sorted(docs.glob("*.txt"))[0]
    gone.unlink()
    pruned = json.loads(run("ingest", docs, "--path", store, "--with-fallback", "--prune", "--json").output)
    assert pruned["pruned"] > 0 and pruned["backend"]["fallback"]["count"] == pruned["points"] < first["points"]


def test_fallback_added_to_an_existing_collection_is_filled(docs, tmp_path):
    store = tmp_path / "store"
    plain = json.loads(run("ingest", docs, "--path", store, "--json").output)
    added = json.loads(run("ingest", docs, "--path", store, "--with-fallback", "--json").output)
    assert added["written"] == plain["points"] == added["backend"]["fallback"]["count"]  # synced
    again = json.loads(run("ingest", docs, "--path", store, "--with-fallback", "--json").output)
    assert again["written"] == 0
