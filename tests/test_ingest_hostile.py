"""Hostile corpora and store names (issue 15): symlinks out of the folder, gzip bombs, lone surrogates,
unbroken runs, FAISS collection names, store permissions and terminal escapes in `search` output."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tracemalloc

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.cli.safe import printable
from csr_adapter.corpus import Chunker, ReaderOptions, read_corpus, read_stdin
from csr_adapter.integrations.base import BackendError
from csr_adapter.integrations.faiss import open_faiss
from csr_adapter.integrations.qdrant import check_collection_name

SURROGATE_LINE = '{"id": "bad", "text": "broken \\ud800 text"}\n'  # JSON escape of a lone surrogate


def run(*args, input: str | bytes | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def reasons(corpus) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in corpus.skipped}


# -- corpus reading ------------------------------------------------------------------------------------
def test_symlinks_out_of_the_folder_are_skipped_unless_followed(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "root"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("the secret outside the corpus")
    (outside / "dir" / "more.txt").write_text("more secrets")
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "own.txt").write_text("own text")
    os.symlink(outside / "secret.txt", root / "notes.txt")
    os.symlink(outside / "dir", root / "linked")
    os.symlink(root / "sub" / "own.txt", root / "sub" / "alias.txt")  # inside the root: allowed
    corpus = read_corpus(root)
    assert [d.text for d in corpus.documents] == ["own text"]
    r = reasons(corpus)
    assert "--follow-links" in r["notes.txt"] and "--follow-links" in r["linked"]
    assert r["own.txt"].startswith("same file as")  # the in-folder link was followed (read once)
    followed = read_corpus(root, ReaderOptions(follow_links=True))
    assert sorted(d.text for d in followed.documents) == ["more secrets", "own text", "the secret outside the corpus"]


def test_gzip_bomb_is_skipped_without_decompressing_it_whole(tmp_path):
    (tmp_path / "bomb.jsonl.gz").write_bytes(gzip.compress(b" " * 30_000_000, compresslevel=1))
    (tmp_path / "ok.jsonl.gz").write_bytes(gzip.compress(b'{"text": "small"}\n'))
    (tmp_path / "corrupt.txt.gz").write_bytes(gzip.compress(b"text")[:-6] + b"garbage")
    tracemalloc.start()
    try:
        corpus = read_corpus(tmp_path, ReaderOptions(max_bytes=1_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.text for d in corpus.documents] == ["small"]
    r = reasons(corpus)
    assert "decompresses past the 1 MB cap" in r["bomb.jsonl.gz"] and r["corrupt.txt.gz"].startswith("unreadable")
    assert peak < 8_000_000, peak  # bounded by the cap, not the 30 MB the bomb expands to


def test_special_files_and_undecodable_names_are_skipped(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block forever
    fd = os.open(os.fsencode(tmp_path) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"text")
    os.close(fd)
    corpus = read_corpus(tmp_path)
    assert [d.text for d in corpus.documents] == ["fine"]
    r = reasons(corpus)
    assert r["pipe.txt"] == "not a regular file" and r["bad\\udcff.txt"] == "file name is not valid UTF-8"
    json.dumps([s.to_dict() for s in corpus.skipped]).encode("utf-8")  # the report itself encodes


def test_a_record_with_lone_surrogates_is_skipped_alone(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "a1", "text": "first"}\n' + SURROGATE_LINE +
                                      '{"id": "a3", "text": "third", "tag": "x\\udfffy"}\n'
                                      '{"id": "a4", "text": "fourth"}\n')
    (tmp_path / "b.json").write_text('[{"text": "json item"}, {"text": "\\udc80"}]')
    corpus = read_corpus(tmp_path)
    assert [d.doc_id for d in corpus.documents] == ["a1", "a4", "item 1"]
    lines = sorted(s.reason for s in corpus.skipped)
    assert lines == ["item 2: lone surrogate in the record (not valid Unicode); record skipped",
                     "line 2: lone surrogate in the record (not valid Unicode); record skipped",
                     "line 3: lone surrogate in the record (not valid Unicode); record skipped"]
    stdin = read_stdin(ReaderOptions(), io.BytesIO(('{"text": "ok"}\n' + SURROGATE_LINE).encode()))
    assert [d.text for d in stdin.documents] == ["ok"] and "line 2: lone surrogate" in stdin.skipped[0].reason


def test_long_unbroken_runs_are_cut_by_characters(encoder):
    chunker = Chunker.for_encoder(encoder)
    assert chunker.max_chars == 16 * chunker.max_tokens
    run_ = "x" * 200_000
    [chunks] = list(chunker.split([f"a short intro {run_} and the end."]))
    assert max(len(c.text) for c in chunks) <= chunker.max_chars and len(chunks) >= 200_000 // chunker.max_chars
    assert "".join(c.text for c in chunks).replace(" ", "") == f"ashortintro{run_}andtheend."
    words = " ".join(f"w{i}" for i in range(300))  # ordinary text: the token windows, untouched
    [plain] = list(Chunker(encoder.backbone.tokenizer, 20, 5, max_chars=60).split([words]))
    assert all(len(c.text) <= 60 for c in plain) and plain[0].text.startswith("w0 ")
    assert all(not c.text.startswith(" ") and not c.text.endswith(" ") for c in plain)


# -- ingest and search end to end (real model, Qdrant Edge) ------------------------------------------------
def test_ingest_skips_hostile_inputs_and_keeps_going(tmp_path):
    pytest.importorskip("qdrant_edge")
    docs, outside, store = tmp_path / "docs", tmp_path / "outside", tmp_path / "store"
    docs.mkdir()
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash")
    os.symlink(outside / "passwd", docs / "notes.txt")
    (docs / "records.jsonl").write_text('{"id": "r1", "text": "Vitamin D lowers fracture risk."}\n' + SURROGATE_LINE)
    (docs / "bomb.jsonl.gz").write_bytes(gzip.compress(b" " * 3_000_000, compresslevel=1))
    (docs / "escape.txt").write_text("Sparse \x1b[2J\x1b]0;pwned\x07vectors \x1b[31mred\x1b[0m in Qdrant.")
    first = run("ingest", docs, "--path", store, "--max-file-mb", "1", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["documents"], report["points"]) == (2, 2)
    why = {os.path.basename(s["path"]): s["reason"] for s in report["skipped"]}
    assert "--follow-links" in why["notes.txt"] and "decompresses past" in why["bomb.jsonl.gz"]
    assert "line 2: lone surrogate" in why["records.jsonl"]
    assert stat.S_IMODE((store / "csr").stat().st_mode) == 0o700  # the collection is private to its owner

    found = run("search", "sparse vectors qdrant", "--path", store, "--top-k", "2")
    assert found.exit_code == 0, found.output
    assert "\x1b" not in found.output and "\x07" not in found.output and "Sparse vectors red in Qdrant." in found.output
    as_json = json.loads(run("search", "sparse vectors qdrant", "--path", store, "--json").output)
    assert any("\x1b[31m" in h["payload"]["text"] for h in as_json)  # JSON keeps the stored text
    assert not any("root:x" in h["payload"]["text"] for h in as_json)

    followed = run("ingest", docs, "--path", store, "--max-file-mb", "1", "--follow-links", "--json")
    assert followed.exit_code == 0, followed.output
    assert json.loads(followed.output)["points"] == 3


def test_stdin_skips_only_the_bad_lines_and_keeps_their_stored_points(tmp_path):
    """Invalid UTF-8 on one stdin line, or a lone surrogate in one record, skips that line alone (reported);
    the rest is ingested, and the skipped documents' stored versions stay (stdin otherwise replaces its set)."""
    pytest.importorskip("qdrant_edge")
    store = tmp_path / "store"

    def ingest(data: bytes) -> dict:
        result = CliRunner().invoke(cli, ["ingest", "-", "--path", str(store), "--no-adapt", "--device", "cpu",
                                          "--json"], input=data)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    def texts() -> dict[str, str]:
        hits = json.loads(run("search", "text", "--path", store, "--top-k", "10", "--json", "--no-fallback").output)
        return {h["payload"]["doc_id"]: h["payload"]["text"] for h in hits}

    first = ingest(b'{"id": "a", "text": "alpha text"}\n{"id": "b", "text": "beta text"}\n'
                   b'{"id": "c", "text": "gamma text"}\n')
    assert (first["documents"], first["points"], first["skipped"]) == (3, 3, [])
    second = ingest(b'{"id": "a", "text": "alpha text, edited"}\n{"id": "b", "text": "beta \xff text"}\n'
                    b'{"id": "c", "text": "gamma \\ud800 text"}\n{"id": "d", "text": "delta text"}\n')
    assert (second["documents"], second["written"], second["deleted"]) == (2, 2, 1)  # a's old version went
    assert [s["reason"] for s in second["skipped"]] == [
        "line 2: not valid UTF-8 (byte 0xff at column 27); line skipped",
        "line 3: lone surrogate in the record (not valid Unicode); record skipped"]
    assert texts() == {"a": "alpha text, edited", "b": "beta text", "c": "gamma text", "d": "delta text"}
    shown = run("ingest", "-", "--path", store, "--no-adapt", "--device", "cpu", "--no-progress",
                input=b'{"id": "d", "text": "delta text"}\n\xfe not even JSON\n')  # an id it cannot read
    assert shown.exit_code == 0 and "skipped    1: not valid UTF-8 x1" in shown.output, shown.output
    assert "<stdin>: line 2: not valid UTF-8 (byte 0xfe at column 1); line skipped" in shown.output
    assert sorted(texts()) == ["a", "b", "c", "d"]  # nothing of stdin's was deleted
    clean = ingest(b'{"id": "d", "text": "delta text"}\n')  # a clean run replaces stdin's set, as before
    assert (clean["deleted"], clean["points"]) == (3, 1)
    bad_only = run("ingest", "-", "--path", store, "--no-adapt", "--device", "cpu", input=b'{"text": "\xff"}\n')
    assert bad_only.exit_code == 1 and bad_only.output.strip() == (
        "Error: stdin: no documents (expected one JSON object a line with a 'text' field) "
        "(line 1: not valid UTF-8 (byte 0xff at column 11); line skipped)"), bad_only.output


CONTROL = ("\x1b", "\x07", "\x9b", "\u202e")


def test_ingest_lines_carrying_names_are_cleaned_of_terminal_control(tmp_path):
    """Issue 29.7: skipped file names (and reasons naming files), the store path and error lines reach the
    terminal without escape sequences, control characters or bidi overrides; --json keeps the names as they are."""
    evil = "\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a note about enzymes and kinetics")
    (docs / f"{evil}.png").write_bytes(b"png")
    (docs / f"{evil}.txt").write_bytes(b"\0binary")
    os.symlink(docs / "a.txt", docs / f"{evil}-alias.txt")  # its reason names the file it duplicates
    store = tmp_path / f"store{evil}"
    shown = run("ingest", docs, "--path", store, "--no-adapt", "--no-progress")
    assert shown.exit_code == 0, shown.output
    assert not any(c in shown.output for c in CONTROL), repr(shown.output)
    assert "evil.png: unsupported file type .png" in shown.output and "same file as" in shown.output
    as_json = json.loads(run("ingest", docs, "--path", store, "--no-adapt", "--json").output)
    assert any(s["path"].endswith(f"{evil}.png") for s in as_json["skipped"])
    missing = run("ingest", tmp_path / f"nope{evil}", "--path", store)
    assert missing.exit_code == 1 and "no such file or directory" in missing.output
    assert not any(c in missing.output for c in CONTROL), repr(missing.output)


def test_printable_strips_terminal_control():
    assert printable("a\x1b[31mred\x1b[0m\x1b]0;t\x07 \x07b\x9b2J\u202e\tc\ud800") == "ared b c?"
    assert printable("naïve 文档") == "naïve 文档"


# -- store names and permissions -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "x\x1b[0m", "bad\ud800", "a\\b", "n" * 201])
def test_bad_collection_names_are_refused_for_every_backend(tmp_path, name):
    with pytest.raises(BackendError, match="invalid collection name"):
        check_collection_name(name)
    with pytest.raises(BackendError, match="invalid collection name"):
        open_faiss(name, path=tmp_path / "store")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "store").exists()


def test_faiss_collection_escape_is_a_one_line_error(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("some text")
    store = tmp_path / "store"
    for args in (["--backend", "faiss"], ["--with-fallback"]):
        result = run("ingest", tmp_path / "docs", "--path", store, "--collection", "../escape", *args)
        assert result.exit_code == 1 and result.output.startswith("Error: invalid collection name"), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]  # nothing written, in or out of the store


def test_stores_are_created_private(tmp_path, monkeypatch):
    from csr_adapter.integrations.base import CollectionMeta

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CSR_ADAPTER_HOME", raising=False)
    os.umask(old := os.umask(0o022))
    try:
        open_faiss("docs", meta=CollectionMeta("m", 8, 2)).close()  # the default ./.csr-adapter/faiss/docs
    finally:
        os.umask(old)
    home = tmp_path / ".csr-adapter"
    for folder in (home, home / "faiss", home / "faiss" / "docs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
