"""Corpus reading (formats, bad input, folder walking) and token chunking on the real tokenizer."""

from __future__ import annotations

import gzip
import io
import json
import os

import pytest

from csr_adapter.corpus import Chunker, CorpusError, ReaderOptions, html_text, read_corpus, read_stdin


def reasons(corpus) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in corpus.skipped}


def test_formats(tmp_path):
    (tmp_path / "a.txt").write_text("Title line\nbody text", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Heading\n\nMarkdown *text*.")
    (tmp_path / "c.html").write_text("<html><head><style>x{}</style><title>T</title></head>"
                                     "<body><p>Hello &amp; <b>world</b></p><script>var x;</script></body></html>")
    (tmp_path / "d.jsonl").write_text('{"_id": "d1", "title": "T1", "text": "one", "year": 2020, "tags": ["x"]}\n\n'
                                      '{"id": 7, "text": "two", "metadata": {"lang": "en"}, "obj": {"a": 1}}\n')
    (tmp_path / "e.json").write_text(json.dumps([{"text": "first"}, {"text": "second"}]))
    (tmp_path / "f.csv").write_text("id,text,lang\nr1,\"csv, with comma\",de\nr2,other row,fr\n")
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    (tmp_path / "h.txt").write_bytes("\ufeffwith BOM".encode())
    corpus = read_corpus(tmp_path)
    docs = {d.source.replace(str(tmp_path) + os.sep, ""): d for d in corpus.documents}
    assert corpus.skipped == [] and len(corpus.files) == 8
    assert docs["a.txt"].text == "Title line\nbody text" and docs["a.txt"].doc_id == "a"
    assert docs["c.html"].text == "T\nHello & world"
    assert docs["d.jsonl#d1"].text == "T1\none" and docs["d.jsonl#d1"].meta == {"year": 2020, "tags": ["x"]}
    assert docs["d.jsonl#7"].meta == {"lang": "en"} and docs["d.jsonl#7"].file == str(tmp_path / "d.jsonl")
    assert docs["e.json#item 2"].text == "second"
    assert docs["f.csv#r1"].text == "csv, with comma" and docs["f.csv#r1"].meta == {"lang": "de"}
    assert docs["g.jsonl.gz#line 1"].text == "zipped"
    assert docs["h.txt"].text == "with BOM"


def test_bad_files_are_skipped_with_reasons(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "nul.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"text": "good line"}\n{not json}\n')
    (tmp_path / "notext.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "list.jsonl").write_text('[1, 2]\n')
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "nocol.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "big.txt").write_text("x" * 3000)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    corpus = read_corpus(tmp_path, ReaderOptions(max_bytes=2000))
    r = reasons(corpus)
    assert [d.text for d in corpus.documents] == ["fine"]
    assert r["nul.txt"] == "binary file (NUL bytes)"
    assert r["latin1.txt"] == "not valid UTF-8 (byte 0xe9 at offset 3)"
    assert r["bad.jsonl"].startswith("line 2: not JSON")
    assert "no string 'text' field" in r["notext.jsonl"] and "expected a JSON object" in r["list.jsonl"]
    assert r["bad.json"].startswith("not JSON") and r["nocol.csv"].startswith("no 'text' column")
    assert r["empty.txt"] == "empty" and "over the 0 MB cap" in r["big.txt"].replace("0.002", "0")
    assert r["image.png"] == "unsupported file type .png"
    assert r[".hidden.txt"] == "hidden file" and r[".git"] == "hidden directory"
    assert all("\n" not in s.reason for s in corpus.skipped)


def test_symlink_loops_and_duplicates(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("alpha")
    os.symlink(root, root / "sub" / "loop")  # loop back to the root
    os.symlink(root / "sub" / "a.txt", root / "alias.txt")  # same file twice
    os.symlink(tmp_path / "missing.txt", root / "broken.txt")
    corpus = read_corpus(root)
    assert [d.text for d in corpus.documents] == ["alpha"]
    r = reasons(corpus)
    assert r["broken.txt"] == "broken symlink" and r["a.txt"].startswith("same file as")
    assert any("symlink loop" in s.reason for s in corpus.skipped)
    os.symlink(root, tmp_path / "other-name")  # another spelling of the same folder: same sources
    assert [d.source for d in read_corpus(tmp_path / "other-name").documents] == [corpus.documents[0].source]


def test_path_errors(tmp_path):
    with pytest.raises(CorpusError, match="no such file or directory"):
        read_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty folder"):
        read_corpus(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.txt").write_bytes(b"\x00\x01")
    with pytest.raises(CorpusError, match=r"nothing to ingest \(x.txt: binary file"):
        read_corpus(tmp_path / "bin")
    single = tmp_path / "notes.log"
    single.write_text("an explicit file of any extension is read as text")
    assert read_corpus(single).documents[0].text.startswith("an explicit file")


def test_stdin_jsonl():
    corpus = read_stdin(ReaderOptions(), io.BytesIO(b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n'))
    assert [d.source for d in corpus.documents] == ["<stdin>#a"]
    assert corpus.skipped[0].reason == "duplicate id (kept the first)"
    with pytest.raises(CorpusError, match="stdin: line 2: not JSON"):
        read_stdin(ReaderOptions(), io.BytesIO(b'{"text": "x"}\nnope\n'))
    with pytest.raises(CorpusError, match="stdin: no documents"):
        read_stdin(ReaderOptions(), io.BytesIO(b"\n"))


def test_html_text_drops_scripts():
    assert html_text("<div>a<script>b</script><noscript>c</noscript>d</div>") == "ad"


def test_content_hash_tracks_text_meta_and_salt(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x", "k": 1}\n{"text": "x", "k": 2}\n')
    d1, d2 = read_corpus(tmp_path).documents
    assert d1.content_hash() != d2.content_hash() and d1.content_hash("a") != d1.content_hash("b")


def test_chunker_windows(encoder):
    chunker = Chunker.for_encoder(encoder)
    assert chunker.max_tokens == encoder.backbone.max_seq_length - 2 and chunker.overlap == chunker.max_tokens // 8
    small = Chunker(encoder.backbone.tokenizer, 20, 5)
    words = " ".join(f"w{i}" for i in range(60))  # about 2 tokens a word
    short, long_, blank = small.split(["  a short text ", words, " \n "])
    assert [c.text for c in short] == ["a short text"] and blank == []
    assert len(long_) > 3 and all(c.tokens <= 20 for c in long_)
    assert long_[0].text.startswith("w0") and long_[-1].text.endswith("w59")
    for a, b in zip(long_, long_[1:]):  # neighbours share the overlap
        assert a.text.split()[-1] in b.text.split()[:4]
    for c in long_:  # every window fits the encoder without truncation
        assert len(encoder.backbone.tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 21
    with pytest.raises(ValueError):
        Chunker(encoder.backbone.tokenizer, 10, 10)


def test_a_file_swapped_after_its_check_is_never_read_through(tmp_path, monkeypatch):
    """Issue 29.6: a file swapped for a symlink (or another file) between walk()'s check and the read got the
    link's target (/etc/passwd) ingested. The read opens the checked file without following a final link and
    verifies it is the file checked (device, inode): a swap reads nothing from outside."""
    import csr_adapter.corpus as corpus_mod

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET")
    root = tmp_path / "docs"
    (root / "inner").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "keep.txt", "inner/c.txt"):
        (root / name).write_text(f"document {name}")
    os.symlink(root / "inner" / "c.txt", root / "link.txt")  # a link inside the folder: followed
    real_walk = corpus_mod.walk

    def walk_then_swap(*args, **kwargs):  # the adversary acts right after the check
        found = real_walk(*args, **kwargs)
        (root / "a.txt").unlink()
        os.symlink(secret, root / "a.txt")
        copy = tmp_path / "copy.txt"
        copy.write_text(secret.read_text())
        os.replace(copy, root / "b.txt")
        (root / "link.txt").unlink()
        os.symlink(secret, root / "link.txt")
        return found

    monkeypatch.setattr(corpus_mod, "walk", walk_then_swap)
    corpus = read_corpus(root)
    assert not any("SECRET" in d.text for d in corpus.documents)
    r = reasons(corpus)
    assert r["a.txt"] == "changed while it was being read (now a symlink); not read"
    assert r["b.txt"] == "changed while it was being read (replaced by another file); not read"
    assert sorted(d.text for d in corpus.documents) == ["document inner/c.txt", "document keep.txt"]


def test_flipping_a_file_and_a_symlink_during_reads_never_reads_the_target(tmp_path):
    """The same race run for real: a thread flips a.txt between a file and a link to a secret while the folder
    is read again and again (bounded); the secret never comes back."""
    import threading
    import time

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "keep.txt").write_text("stays")
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            tmp = root / "a.tmp"
            tmp.write_text("plain text")
            os.replace(tmp, root / "a.txt")
            link = root / "a.lnk"
            os.symlink(secret, link)
            os.replace(link, root / "a.txt")

    racer = threading.Thread(target=flip, daemon=True)
    racer.start()
    try:
        deadline = time.time() + 3
        runs = 0
        while time.time() < deadline and runs < 400:
            corpus = read_corpus(root, ReaderOptions(follow_links=False))
            assert not any("SECRET" in d.text for d in corpus.documents)
            runs += 1
    finally:
        stop.set()
        racer.join(5)


INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\x01\x7f \t\u00ad\u202e"  # zero-width, control, format, spaces


def test_text_of_only_zero_width_or_control_characters_is_empty(tmp_path, encoder):
    """Issue 29.11: such text was not empty (the tokenizer drops it, so it was embedded as an empty sequence
    and written as a point). Files, records and chunks made of it are empty; real text is untouched."""
    from csr_adapter.text import blank

    assert blank(INVISIBLE) and blank("") and not blank("a" + INVISIBLE) and not blank("\u00e9")
    (tmp_path / "real.txt").write_text("zero\u200bwidth inside real text stays")
    (tmp_path / "invisible.txt").write_text(INVISIBLE)
    (tmp_path / "records.jsonl").write_text(json.dumps({"id": "r1", "text": INVISIBLE}) + "\n"
                                            + json.dumps({"id": "r2", "text": "a record"}) + "\n")
    corpus = read_corpus(tmp_path)
    r = reasons(corpus)
    assert r["invisible.txt"] == "empty" and r["records.jsonl#r1"] == "empty text"
    assert sorted(d.doc_id for d in corpus.documents) == ["r2", "real"]
    chunker = Chunker.for_encoder(encoder)
    assert list(chunker.split([INVISIBLE, "\u200b" * 3000, "ok"]))[:2] == [[], []]
