"""Inputs other than the corpus get the corpus's rules (issue 29): a --queries file that is missing, a folder, a
lone surrogate or JSON nested 100,000 deep is a one-line error before any model loads; deep JSON in a corpus file
skips that file only."""

from __future__ import annotations

import json

from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.corpus import read_corpus


def _search(queries: str):
    return CliRunner().invoke(cli, ["search", "--queries", queries, "--path", "/nonexistent-store"])


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: Invalid value for --queries") and all(n in lines[-1] for n in needles), lines


def test_queries_file_missing_or_a_folder(tmp_path):
    _one_line_error(_search(str(tmp_path / "missing.txt")), "cannot read")
    _one_line_error(_search(str(tmp_path)), "a folder")


def test_queries_file_lone_surrogate_and_deep_json(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": "\\ud800 abc"}\n', encoding="utf-8")
    _one_line_error(_search(str(bad)), "line 2", "lone surrogate")
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": ' + "[" * 100_000 + "}\n", encoding="utf-8")
    _one_line_error(_search(str(deep)), "line 1", "nested too deeply")


def test_deep_json_in_a_corpus_skips_that_file_only(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000, encoding="utf-8")
    (tmp_path / "deep.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + "[" * 100_000 + "\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("a real document", encoding="utf-8")
    corpus = read_corpus(tmp_path)
    assert [d.text for d in corpus.documents] == ["a real document"]
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in corpus.skipped}
    assert "nested too deeply" in reasons["deep.json"] and "line 2" in reasons["deep.jsonl"]


def test_min_free_env_is_checked_and_named(tmp_path, monkeypatch):
    from csr_adapter.integrations.base import BackendError, CollectionMeta
    from csr_adapter.integrations.qdrant_edge import EdgeBackend

    for value in ("abc", "nan", "-1", "inf"):
        monkeypatch.setenv("CSR_ADAPTER_MIN_FREE_MB", value)
        try:
            EdgeBackend(tmp_path / "c", meta=CollectionMeta("m", 16, 4))
        except BackendError as exc:
            assert str(exc).startswith("CSR_ADAPTER_MIN_FREE_MB=") and "\n" not in str(exc)
        else:
            raise AssertionError(f"{value!r} was taken")
    assert not (tmp_path / "c").exists()  # refused before anything was written
    monkeypatch.setenv("CSR_ADAPTER_MIN_FREE_MB", "1")
    EdgeBackend(tmp_path / "c", meta=CollectionMeta("m", 16, 4)).close()


def test_eval_qrels_with_a_non_integer_score(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "a doc"}) + "\n", encoding="utf-8")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n", encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path), "--no-dense"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "test.tsv:2: score 'high' is not an integer" in result.output.strip().splitlines()[-1]
