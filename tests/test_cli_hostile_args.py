"""Hostile command-line input (issue 15): '#' in source filters, malformed filter keys, non-UTF-8 bytes in
arguments and stdin, numbers past 64 bits. Each is a result or a one-line error, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from csr_adapter.cli import COMMANDS, cli
from csr_adapter.cli.options import INT_LIMIT, Float, Int

HUGE = str(10**30)


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def error_line(output: str) -> str:
    """The one ``Error:`` line of a failed command (click's usage lines above it are allowed)."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def hashed(tmp_path_factory):
    """A folder whose paths hold '#' in every position, ingested with a FAISS fallback."""
    root = tmp_path_factory.mktemp("hashed")
    docs = root / "docs"
    (docs / "sub#1").mkdir(parents=True)
    (docs / "#lead.txt").write_text("Vitamin D supplementation lowers the risk of bone fractures.")
    (docs / "sub#1" / "q#2.txt").write_text("Qdrant stores sparse vectors in an inverted index.")
    (docs / "notes#.jsonl").write_text(json.dumps({"id": "r#1", "text": "Pasta is boiled in salted water."}) + "\n")
    result = run("ingest", docs, "--path", root / "store", "--with-fallback", "--no-progress", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return root


def test_source_filters_with_hashes_match_what_search_shows(hashed, monkeypatch):
    monkeypatch.chdir(hashed)
    shown = run("search", "anything", "--path", "store", "--top-k", "5", "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    sources = {"docs/#lead.txt", "docs/sub#1/q#2.txt", "docs/notes#.jsonl#r#1"}
    assert {line.split()[2] for line in shown.output.splitlines()} == sources  # rank, score, source, ...
    for source in [*sources, "./docs/sub#1/../#lead.txt"]:
        hits = run("search", "anything", "--path", "store", "--filter", f"source={source}", "--json",
                   "--device", "cpu")
        assert hits.exit_code == 0, hits.output
        [hit] = json.loads(hits.output)
        assert os.path.relpath(hit["payload"]["source"].partition("#r#1")[0]) == os.path.normpath(
            source.partition("#r#1")[0])


@pytest.mark.parametrize("key", ["a b", "x[", "a..b", "$", "text[0]", "a\"b"])
def test_a_malformed_filter_key_is_a_usage_error_not_an_empty_answer(hashed, key):
    result = run("search", "vitamin", "--path", hashed / "store", "--filter", f"{key}=1", "--device", "cpu")
    assert result.exit_code == 2
    assert "--filter" in error_line(result.output) and "letters, digits" in result.output


@pytest.mark.parametrize("args", [
    [b"encode", b"caf\xe9 au lait"],
    [b"search", b"vitamin", b"--filter", b"lang=\xff"],
    [b"ingest", b"docs\xe9", b"--path", b"store"],
    [b"search", b"q", b"--collection", b"c\x80"],
])
def test_non_utf8_arguments_are_one_line_errors(args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "csr_adapter", *args], capture_output=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert err.strip().startswith("Error: argument") and len(err.strip().splitlines()) == 1, err
    assert "not valid UTF-8 (byte 0x" in err


def test_lone_surrogates_in_arguments_are_refused(tmp_path):
    result = run("encode", "bad \ud800 text")
    assert result.exit_code == 2 and "lone surrogate U+D800" in error_line(result.output)


def test_non_utf8_stdin_queries_are_one_line_errors(tmp_path):
    result = run("search", "--queries", "-", "--path", tmp_path, input=b"good query\n\xff\xfe bad\n")
    assert result.exit_code == 2 and "not UTF-8" in error_line(result.output)


@pytest.mark.parametrize("args", [
    ["encode", "hi", "--k", HUGE],
    ["search", "q", "--top-k", HUGE],
    ["search", "q", "--k", "-" + HUGE],
    ["search", "q", "--rrf-k", HUGE],
    ["ingest", "x", "--batch-size", HUGE],
    ["ingest", "x", "--adapt-steps", HUGE],
    ["ingest", "x", "--overlap", HUGE],
    ["ingest", "x", "--max-file-mb", "1e308"],
    ["ingest", "x", "--max-file-mb", "nan"],
    ["search", "q", "--threads", str(INT_LIMIT)],
    ["train", "x", "--out", "y", "--epochs", HUGE],
    ["train", "x", "--out", "y", "--lr", "inf"],
    ["eval", "--data", "x", "--k", f"2,{HUGE}"],
    ["serve", "--max-queue", HUGE],
    ["info", "--collection", "c", "--sample", HUGE],
])
def test_numbers_past_their_range_are_usage_errors(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in error_line(result.output)


def test_every_numeric_option_is_bounded():
    """Every int/float option of every command is an Int/Float, so none can take 10**30, nan or inf."""
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        for param in command.params:
            if isinstance(param.type, click.types.IntParamType):
                assert isinstance(param.type, Int), (name, param.name)
            if isinstance(param.type, click.types.FloatParamType):
                assert isinstance(param.type, Float), (name, param.name)
