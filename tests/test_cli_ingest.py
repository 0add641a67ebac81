"""`csr-adapter ingest` and `csr-adapter search` as a user runs them (real shipped model, real Qdrant Edge)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli, flag_wording


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


TOPICS = ("photosynthesis in the chloroplasts of plant cells", "the fall of the Roman empire",
          "jazz improvisation on the saxophone", "volcanic eruptions, magma and lava flows",
          "training neural networks with gradient descent")


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(TOPICS):
        (folder / f"doc{i}.txt").write_text(f"Document {i} is about {topic}.")
    (folder / "broken.txt").write_bytes(b"\xff\xfe\x00bin")
    return folder


def test_ingest_summary_reingest_and_search(docs, tmp_path):
    store = tmp_path / "store"
    first = run("ingest", docs, "--path", store, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["files"], report["documents"], report["written"], report["points"]) == (5, 5, 5, 5)
    assert report["skipped"] == [{"path": str(docs / "broken.txt"), "reason": "binary file (NUL bytes)"}]
    assert report["backend"]["engine"] == "qdrant-edge" and report["backend"]["meta"]["k"] == 8
    assert report["chunks_per_s"] > 0 and report["seconds"] <= report["total_seconds"]

    again = run("ingest", docs, "--path", store, "--no-progress")
    assert again.exit_code == 0, again.output
    assert "written    0 points" in again.output and "skipped    1: binary file x1" in again.output
    assert "collection 5 points" in again.output and "chunks/s" in again.output

    found = run("search", "why do volcanoes erupt lava", "--path", store, "--top-k", "3")
    assert found.exit_code == 0, found.output
    lines = found.output.strip().splitlines()
    assert 1 <= len(lines) <= 3 and lines[0].split()[0] == "1"
    assert "doc3.txt" in lines[0] and "Document 3 is about" in lines[0]

    as_json = run("search", "the fall of Rome", "--path", store, "--json", "--filter", "doc_id=doc1")
    hits = json.loads(as_json.output)
    assert [h["payload"]["doc_id"] for h in hits] == ["doc1"] and hits[0]["rank"] == 1 and hits[0]["score"] > 0


def test_stdin_jsonl_and_metadata_filter(tmp_path):
    lines = "\n".join(json.dumps({"_id": f"r{i}", "text": f"record {i} about proteins", "lang": lang})
                      for i, lang in enumerate(["en", "de", "en"]))
    result = run("ingest", "-", "--path", tmp_path, "--collection", "s", "--json", input=lines)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["written"] == 3
    hits = run("search", "proteins", "--path", tmp_path, "--collection", "s", "--filter", "lang=de", "--json")
    assert [h["payload"]["source"] for h in json.loads(hits.output)] == ["<stdin>#r1"]
    bad = run("ingest", "-", "--path", tmp_path, "--collection", "s", input='{"text": "a"}\nnot json\n')
    assert bad.exit_code == 1 and bad.output.strip() == "Error: stdin: line 2: not JSON (Expecting value)"


@pytest.mark.parametrize("args, message", [
    (["ingest", "{tmp}/missing"], "no such file or directory"),
    (["ingest", "{tmp}/empty"], "empty folder, nothing to ingest"),
    (["search", "q", "--path", "{tmp}"], "no collection here"),
    (["search", "q", "--url", "http://127.0.0.1:9"], "cannot reach Qdrant at http://127.0.0.1:9"),
    (["search", "q", "--path", "{tmp}", "--url", "http://127.0.0.1:9"], None),
    (["ingest", "{tmp}/empty", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["search", "q", "--filter", "novalue"], "expected key=value"),
])
def test_bad_input_is_one_line_error(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    if message is None:  # --path wins over --url: the embedded store is used
        assert "no collection here" in result.output
        return
    assert message in result.output
    if "Invalid value" not in result.output and "key=value" not in result.output:
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_other_model_or_config_is_refused(docs, tmp_path):
    from csr_adapter import CSREncoder

    store = tmp_path / "store"
    assert run("ingest", docs, "--path", store, "--no-progress").exit_code == 0
    other = CSREncoder.from_backbone(k=8, seed=1).save_pretrained(tmp_path / "other-model")
    refused = run("ingest", docs, "--path", store, "--model", other)
    assert refused.exit_code == 1 and "built with another model or vector config (model_id" in refused.output
    assert "--recreate" in refused.output and len(refused.output.strip().splitlines()) == 1
    searched = run("search", "cells", "--path", store, "--model", other)
    assert searched.exit_code == 1 and "pass the same --model" in searched.output
    hybrid = run("search", "cells", "--path", store, "--hybrid")
    assert hybrid.exit_code == 1 and "re-ingest with --hybrid" in hybrid.output
    k16 = run("ingest", docs, "--path", store, "--k", "16")
    assert k16.exit_code == 1 and "k 8 != 16" in k16.output
    recreated = run("ingest", docs, "--path", store, "--model", other, "--recreate", "--hybrid", "--json")
    assert recreated.exit_code == 0, recreated.output
    assert json.loads(recreated.output)["backend"]["meta"]["d"] == 384
    fused = run("search", "jazz saxophone", "--path", store, "--model", other, "--hybrid", "--rrf-k", "10", "--json")
    assert fused.exit_code == 0 and json.loads(fused.output)[0]["served_by"] == "hybrid"


def test_emptied_file_and_pruned_file_leave_every_index(docs, tmp_path):
    store = tmp_path / "store"
    assert run("ingest", docs, "--path", store, "--with-fallback", "--no-progress").exit_code == 0
    (docs / "doc3.txt").write_text("")  # emptied in place: its old text must not stay searchable
    emptied = json.loads(run("ingest", docs, "--path", store, "--json").output)
    assert emptied["deleted"] == 1 and emptied["points"] == 4
    (docs / "doc2.txt").unlink()  # pruned without --with-fallback: the FAISS fallback is pruned too
    pruned = json.loads(run("ingest", docs, "--path", store, "--prune", "--json").output)
    assert pruned["pruned"] == 1 and pruned["points"] == 3
    for query in (f"Document 3 is about {TOPICS[3]}", f"Document 2 is about {TOPICS[2]}"):
        hits = json.loads(run("search", query, "--path", store, "--top-k", "5", "--json").output)
        sources = {h["payload"]["source"].rsplit("/", 1)[-1] for h in hits}
        assert sources and not sources & {"doc2.txt", "doc3.txt"}, sources


def test_library_errors_name_parameters_the_cli_its_flags(tmp_path):
    from csr_adapter.integrations.base import CollectionNotFoundError
    from csr_adapter.integrations.registry import open_backend

    with pytest.raises(CollectionNotFoundError) as err:
        open_backend("faiss", "c", path=tmp_path, create=False)
    assert "backend='faiss', or check the path and collection name" in str(err.value)
    assert "--backend" not in str(err.value) and "--path" not in str(err.value)
    out = run("search", "q", "--backend", "faiss", "--path", tmp_path, "--collection", "c")
    assert out.exit_code == 1 and out.output == f"Error: {flag_wording(str(err.value))}\n"
    assert "with --backend faiss, or check --path/--collection)" in out.output


def test_milvus_through_the_cli_ingest_reingest_and_search(docs, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    store = tmp_path / "milvus"
    first = run("ingest", docs, "--backend", "milvus", "--path", store, "--collection", "m", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["written"], report["points"], report["backend"]["engine"]) == (5, 5, "milvus")
    again = json.loads(run("ingest", docs, "--backend", "milvus", "--path", store, "--collection", "m",
                           "--json").output)
    assert (again["written"], again["points"]) == (0, 5)
    found = run("search", "why do volcanoes erupt lava", "--backend", "milvus", "--path", store,
                "--collection", "m", "--top-k", "3", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)[0]["payload"]["doc_id"] == "doc3"


def test_faiss_hybrid_search_is_a_one_line_error(docs, tmp_path):
    assert run("ingest", docs, "--backend", "faiss", "--path", tmp_path, "--collection", "f").exit_code == 0
    out = run("search", "volcanoes", "--backend", "faiss", "--path", tmp_path, "--collection", "f", "--hybrid")
    assert out.exit_code != 0 and out.output.startswith("Error: ") and len(out.output.strip().splitlines()) == 1
    assert "hybrid" in out.output and "Traceback" not in out.output


def test_help_states_the_adaptation_step_bound_in_force():
    from csr_adapter.training.adapt import AdaptConfig

    text = " ".join(run("ingest", "--help").output.split())
    assert f"(bounds its time; default {AdaptConfig().max_steps})" in text
