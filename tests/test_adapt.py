"""Corpus adaptation: ingest adapts, the collection owns its model, search/eval/serve pick it up (real parts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli

STEPS = "25"  # adaptation steps in these tests (the default is bounded by epochs, 300..1100)
N_DOCS = 40  # SciFact abstracts in the test corpus: 74 chunks, above MIN_ADAPT_CHUNKS and --sample 60


def run(*args, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, scifact_slice):
    """40 real SciFact abstracts, one file each."""
    folder = tmp_path_factory.mktemp("adapt") / "docs"
    folder.mkdir()
    for doc_id, text in list(scifact_slice["docs"].items())[:N_DOCS]:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    result = run("ingest", corpus, "--path", store, "--adapt", "--adapt-steps", STEPS, "--json")
    assert result.exit_code == 0, result.output
    return store, json.loads(result.output)


def test_encoder_adapt_returns_a_savable_fitted_model(encoder, scifact_slice, tmp_path):
    from csr_adapter import CSREncoder
    from csr_adapter.training.adapt import AdaptConfig

    texts = list(scifact_slice["docs"].values())[:12]
    adapted = encoder.adapt(texts, config=AdaptConfig(min_steps=20, max_steps=20))
    assert adapted.model_id != encoder.model_id and adapted.backbone is encoder.backbone
    report = adapted.config.training["adapt_report"]
    assert report["steps"] == 20 and report["recon_after"] < report["recon_before"]
    assert adapted.config.training["base_model_id"] == encoder.model_id
    codes = adapted.encode_documents(texts[:3], k=8)
    assert codes.mean_nnz == 8 and not np.array_equal(codes.indices, encoder.encode_documents(texts[:3]).indices)
    reloaded = CSREncoder.from_pretrained(adapted.save_pretrained(tmp_path / "m"), device="cpu")
    assert reloaded.model_id == adapted.model_id
    with pytest.raises(ValueError, match="at least 2"):
        encoder.adapt(["only one text"])


def test_adapt_widens_the_head_when_the_corpus_has_more_rows_than_latents(encoder, scifact_slice, tmp_path):
    from csr_adapter import CSREncoder
    from csr_adapter.training.adapt import AdaptConfig

    texts = list(scifact_slice["docs"].values())[:12]
    base = encoder.encode_dense(texts)
    rng = np.random.default_rng(0)  # real vectors, jittered to more rows than the head has latents
    dense = np.repeat(base, -(-(encoder.h + 100) // len(base)), axis=0)
    dense = dense + 0.02 * rng.standard_normal(dense.shape).astype(np.float32)
    adapted = encoder.adapt(dense=dense, config=AdaptConfig(min_steps=3, max_steps=3))
    assert adapted.h == 2 * encoder.h and adapted.config.training["adapt"]["init"] == "data"
    reloaded = CSREncoder.from_pretrained(adapted.save_pretrained(tmp_path / "wide"), device="cpu")
    assert reloaded.h == 2 * encoder.h and reloaded.model_id == adapted.model_id
    codes = reloaded.encode_documents(texts, k=8)
    assert codes.dim == 2 * encoder.h and codes.mean_nnz == 8
    small = encoder.adapt(dense=dense[:50], config=AdaptConfig(min_steps=3, max_steps=3))
    assert small.h == encoder.h


def test_ingest_adapts_and_search_uses_the_collection_model(ingested, corpus, encoder, scifact_slice):
    store, report = ingested
    adapt = report["adapt"]
    assert adapt["adapted"] and adapt["model_id"] != encoder.model_id
    assert report["backend"]["meta"]["model_id"] == adapt["model_id"]
    assert (store / ".models" / adapt["model_id"] / "head.safetensors").is_file()
    doc_id, text = list(scifact_slice["docs"].items())[7]
    found = run("search", text[:300], "--path", store, "--json", "--top-k", "3")  # no --model: the stored one
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["payload"]["source"].endswith(f"{doc_id}.txt")
    again = run("ingest", corpus, "--path", store, "--json")  # re-ingest keeps the stored head
    assert again.exit_code == 0, again.output
    second = json.loads(again.output)
    assert second["written"] == 0 and second["adapt"] is None
    assert second["backend"]["meta"]["model_id"] == adapt["model_id"]


def test_search_queries_file_writes_one_json_line_per_query(ingested, scifact_slice, tmp_path):
    store, _ = ingested
    queries = list(scifact_slice["queries"].items())[:3]
    file = tmp_path / "q.jsonl"
    file.write_text("\n".join(json.dumps({"id": q, "text": t}) for q, t in queries) + "\n", encoding="utf-8")
    result = run("search", "--queries", file, "--path", store, "--top-k", "4")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [r["id"] for r in lines] == [q for q, _ in queries]
    assert all(1 <= len(r["hits"]) <= 4 and r["hits"][0]["rank"] == 1 for r in lines)
    plain = run("search", "--queries", "-", "--path", store, input="vitamin d\n\nbone density\n")
    assert [json.loads(x)["id"] for x in plain.output.strip().splitlines()] == ["1", "3"]
    both = run("search", "q", "--queries", file, "--path", store)
    assert both.exit_code == 2 and "not both" in both.output


def test_adapt_on_existing_collection_rebuilds_beside_and_switches(corpus, tmp_path):
    work = tmp_path / "docs"
    shutil.copytree(corpus, work)
    store = tmp_path / "store"
    first = json.loads(run("ingest", work, "--path", store, "--adapt", "--adapt-steps", STEPS, "--json").output)
    (work / "extra.txt").write_text("Mitochondrial DNA copy number in ageing muscle fibres. " * 3)
    redo = run("ingest", work, "--path", store, "--adapt", "--adapt-steps", "15", "--json")
    assert redo.exit_code == 0, redo.output
    second = json.loads(redo.output)
    assert second["adapt"]["model_id"] != first["adapt"]["model_id"]
    assert second["backend"]["meta"]["model_id"] == second["adapt"]["model_id"]
    assert second["points"] == first["points"] + 1
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["csr"]
    hit = json.loads(run("search", "mitochondrial DNA ageing muscle", "--path", store, "--json").output)[0]
    assert hit["payload"]["source"].endswith("extra.txt")


def test_no_adapt_small_corpus_and_flag_conflict(encoder, tmp_path):
    docs = tmp_path / "small"
    docs.mkdir()
    for i in range(4):
        (docs / f"d{i}.txt").write_text(f"note {i} about enzymes and kinetics " * (i + 1))
    small = json.loads(run("ingest", docs, "--path", tmp_path / "a", "--json").output)
    assert small["adapt"] == {"adapted": False, "chunks": 4, "reason": "corpus too small"}
    assert small["backend"]["meta"]["model_id"] == encoder.model_id
    kept = json.loads(run("ingest", docs, "--path", tmp_path / "b", "--no-adapt", "--json").output)
    assert kept["adapt"] is None and kept["backend"]["meta"]["model_id"] == encoder.model_id
    both = run("ingest", docs, "--path", tmp_path / "c", "--adapt", "--no-adapt")
    assert both.exit_code == 2 and "exclusive" in both.output
    assert not (tmp_path / "c").exists()


def test_full_disk_while_storing_a_readapted_model_loses_nothing(corpus, tmp_path, monkeypatch):
    """``ingest --adapt`` on an existing collection when the disk fills while the new model is written (ENOSPC
    raised after the real write, where save_pretrained meets the disk): one line, no half-written model folder,
    the collection, its model and its answers as before."""
    import errno

    from csr_adapter.encoder import CSREncoder

    store = tmp_path / "store"
    first = json.loads(run("ingest", corpus, "--path", store, "--adapt", "--adapt-steps", STEPS, "--json").output)
    before = json.loads(run("search", "cells", "--path", store, "--json").output)
    real_save = CSREncoder.save_pretrained

    def full_disk(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CSREncoder, "save_pretrained", full_disk)
    redo = run("ingest", corpus, "--path", store, "--adapt", "--adapt-steps", "12")  # a different model id
    monkeypatch.undo()
    lines = redo.output.strip().splitlines()
    assert redo.exit_code == 1 and lines[-1].startswith("Error:") and "No space left on device" in lines[-1]
    assert sum(line.startswith("Error:") for line in lines) == 1
    assert sorted(p.name for p in (store / ".models").iterdir()) == [first["adapt"]["model_id"]]
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["csr"]  # nothing beside
    info = json.loads(run("info", "--collection", "csr", "--path", store, "--json").output)
    assert info["meta"]["model_id"] == first["adapt"]["model_id"] and info["points"] == first["points"]
    assert json.loads(run("search", "cells", "--path", store, "--json").output) == before


def test_ingest_killed_during_adaptation_resumes_to_the_clean_result(corpus, tmp_path):
    """kill -9 while the head is being fitted: nothing is stored yet (no collection, no model folder), and the
    re-run (vectors from the cache) ends with the clean run's model and points."""
    cmd = [sys.executable, "-c", "from csr_adapter.cli import main; main()", "ingest", str(corpus),
           "--path", str(tmp_path / "killed"), "--adapt", "--adapt-steps", "300"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CSR_ADAPTER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    seen = bytearray()

    def watch():
        while chunk := proc.stderr.read1(256):
            seen.extend(chunk)
    threading.Thread(target=watch, daemon=True).start()
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not re.search(rb"adapt: +[1-9]\d*%", bytes(seen)):
        time.sleep(0.05)
    assert proc.poll() is None, "ingest ended before the kill: " + bytes(seen)[-300:].decode(errors="replace")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = tmp_path / "killed"
    assert not list(killed.glob(".models/*")) and not (killed / "csr").exists()
    cmd.append("--json")
    resumed = subprocess.run(cmd, capture_output=True, env=env, text=True)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    clean = subprocess.run(cmd[:6] + [str(tmp_path / "clean")] + cmd[7:], capture_output=True, env=env, text=True)
    a, b = json.loads(resumed.stdout), json.loads(clean.stdout)
    assert a["adapt"]["model_id"] == b["adapt"]["model_id"] and a["points"] == b["points"] == a["chunks"]
    assert sorted(p.name for p in (killed / ".models").iterdir()) == [a["adapt"]["model_id"]]


def test_missing_stored_model_is_a_one_line_error(corpus, tmp_path):
    store = tmp_path / "store"
    report = json.loads(run("ingest", corpus, "--path", store, "--adapt", "--adapt-steps", "10", "--json").output)
    model_dir = store / ".models" / report["adapt"]["model_id"]
    (model_dir / "head.safetensors").write_bytes(b"not a safetensors file")
    corrupt = run("search", "cells", "--path", store)
    assert corrupt.exit_code == 1 and len(corrupt.output.strip().splitlines()) == 1
    assert "stored model is unusable" in corrupt.output and "--model DIR" in corrupt.output
    shutil.rmtree(model_dir)
    result = run("search", "cells", "--path", store)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not stored locally" in lines[0] and "--model DIR" in lines[0]
    assert run("ingest", corpus, "--path", store).exit_code == 1  # nothing re-encoded with another head


def test_client_collection_owns_its_model(corpus, tmp_path, monkeypatch, encoder):
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.training.adapt import AdaptConfig

    monkeypatch.setenv("CSR_ADAPTER_HOME", str(tmp_path / "home"))
    client = QdrantClient(":memory:")
    col = open_collection("docs", client=client, device="cpu")
    report = col.ingest(corpus, adapt=True, adapt_config=AdaptConfig(min_steps=10, max_steps=10), progress=False)
    model_id = report.adapt["model_id"]
    assert (tmp_path / "home" / "models" / model_id / "config.json").is_file()
    fresh = open_collection("docs", client=client, device="cpu")  # a new handle finds the model by its id
    assert fresh.encoder.model_id == model_id and fresh.count() == report.points
    hits = fresh.search("vitamin D", top_k=3, mode="codes")  # the codes path (fused is the default)
    assert 1 <= len(hits) <= 3 and all(h.served_by == "sparse" for h in hits)
    fit = fresh.fit_report(sample=50)
    assert fit["k"] == 8 and 0 <= fit["recon_nmse"] < 1 and 0 <= fit["dead_pct"] <= 100


def test_eval_adapt_trains_on_the_corpus_file_only(corpus, scifact_slice, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {d: t for d, t in list(scifact_slice["docs"].items())[:N_DOCS // 2]}
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "text": t}) for d, t in docs.items()))
    qids = [q for q, rel in scifact_slice["qrels"].items() if set(rel) & set(docs)][:10]
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": scifact_slice["queries"][q]})
                                                  for q in qids))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q in qids for d in scifact_slice["qrels"][q] if d in docs))
    result = run("eval", "--data", beir, "--adapt", "--adapt-steps", "10", "--k", "2,8", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["k"] for r in out["adapted"]["rows"]] == [2, 8] and out["adapted"]["rows"][1]["ndcg@10"] > 0
    # ingest of the corpus file alone (it never sees queries) stores exactly the model eval adapted
    ingest = json.loads(run("ingest", beir / "corpus.jsonl", "--path", tmp_path / "s", "--adapt",
                            "--adapt-steps", "10", "--json").output)
    assert ingest["adapt"]["model_id"] == out["adapted"]["model_id"]


def test_info_on_a_collection_reports_its_model_and_fit(ingested):
    store, report = ingested
    result = run("info", "--collection", "csr", "--path", store, "--json", "--sample", "60")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["adapted"] and data["meta"]["model_id"] == report["adapt"]["model_id"]
    assert data["points"] == report["points"] and data["fit"]["rows"] == 60
    assert 0 <= data["fit"]["recon_nmse"] < 1 and "recon_nmse_at_adaptation" in data["fit"]
    text = run("info", "--collection", "csr", "--path", store, "--sample", "60")
    assert "adapted to its corpus" in text.output and "reconstruction error" in text.output
    missing = run("info", "--collection", "nope", "--path", store)
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_serve_and_langchain_use_the_collection_model(ingested, encoder, scifact_slice):
    import httpx

    from csr_adapter.integrations.langchain import CSRRetriever, CSRSparseEmbeddings
    from csr_adapter.server import create_app
    from csr_adapter.server.collections import open_collections
    from csr_adapter.server.testing import serve_in_thread

    store, report = ingested
    model_id = report["adapt"]["model_id"]
    doc_id, text = list(scifact_slice["docs"].items())[11]
    searchers = open_collections(encoder, ["csr"], path=str(store), own_model=True)
    try:
        assert searchers["csr"].encoder.model_id == model_id
        assert searchers["csr"].encoder.backbone is encoder.backbone  # the adapted head shares the backbone
        with serve_in_thread(create_app(encoder, searchers)) as url:
            body = httpx.post(url + "/search", json={"query": text[:300], "top_k": 3}, timeout=60).json()
            assert body["hits"][0]["payload"]["source"].endswith(f"{doc_id}.txt")
    finally:
        for searcher in searchers.values():
            searcher.close()
    with pytest.raises(Exception, match="pass the same --model"):
        open_collections(encoder, ["csr"], path=str(store))  # without own_model a mismatch is refused
    sparse = CSRSparseEmbeddings.from_collection("csr", path=str(store), device="cpu")
    assert sparse.encoder.model_id == model_id and sparse.k == 8
    retriever = CSRRetriever.from_collection("csr", path=str(store), device="cpu", k=2)
    try:
        docs = retriever.invoke(text[:300])
        assert len(docs) == 2 and docs[0].metadata["source"].endswith(f"{doc_id}.txt")
    finally:
        retriever.searcher.close()


def test_readapting_one_folder_keeps_and_recodes_the_other_folders_points(scifact_slice, encoder, tmp_path):
    """Issue 29.2: ``ingest A --adapt`` on a collection that also holds folder B's documents re-codes B's
    points with the new head (same ids and payloads, fallback too) instead of dropping them, and reports
    what it did drop from the live collection (a pruned file, a changed file's old version)."""
    from csr_adapter.collection import Collection
    from csr_adapter.corpus import read_corpus
    from csr_adapter.integrations.fallback import open_fallback
    from csr_adapter.training.adapt import AdaptConfig

    texts = [t[:400] for t in list(scifact_slice["docs"].values())[:12]]
    for i, text in enumerate(texts):
        folder = tmp_path / ("a" if i < 8 else "b")
        folder.mkdir(exist_ok=True)
        (folder / f"d{i}.txt").write_text(text, encoding="utf-8")
    store = tmp_path / "store"
    col = Collection("c", path=store, encoder=encoder, echo=lambda m: None)
    col.ingest(read_corpus(tmp_path / "a"), adapt=False, with_fallback=True, progress=False)
    col.ingest(read_corpus(tmp_path / "b"), adapt=False, progress=False)
    before = {pid: p for pid, p in _points(col)}
    (tmp_path / "a" / "d0.txt").unlink()
    (tmp_path / "a" / "d1.txt").write_text(texts[1] + " Revised.", encoding="utf-8")
    report = col.ingest(read_corpus(tmp_path / "a"), adapt=True, prune=True, progress=False,
                        adapt_config=AdaptConfig(min_steps=5, max_steps=5))
    assert report.adapt["adapted"] and report.adapt["carried"] == 4
    assert (report.points, report.pruned, report.deleted) == (11, 1, 1)
    after = {pid: p for pid, p in _points(col)}
    b_ids = {pid for pid, p in before.items() if "/b/" in p["file"]}
    assert len(b_ids) == 4 and all(after[pid] == before[pid] for pid in b_ids)
    fallback = open_fallback("c", str(store))
    assert fallback.count() == 11
    fallback.close()
    reopened = Collection("c", path=store)
    assert reopened.encoder.model_id == report.adapt["model_id"] != encoder.model_id
    for i in (8, 11):  # B's documents are found by the new head's codes
        hits = reopened.search(texts[i][:200], top_k=1, fallback=False, mode="codes")
        assert hits[0].payload["source"].endswith(f"d{i}.txt") and hits[0].served_by == "sparse"


def _points(col):
    be = col.open_backend()
    try:
        return list(be.scroll())
    finally:
        be.close()
