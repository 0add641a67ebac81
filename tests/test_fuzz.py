"""Property-based fuzzing (issue 15, "keep it closed"): the corpus reader and chunker, the filter parser, the
CLI's options (on a real store, which a failed run leaves as it was) and the server's request validation take
any input and answer with a result or a one-line error, never a crash.

Bounded (few examples, no deadline) so the suite keeps its time; real parts throughout: the real tokenizer,
real files, a real Qdrant Edge shard and a live server with a FAISS fallback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from csr_adapter.cli import cli
from csr_adapter.corpus import SUPPORTED, Chunker, CorpusError, ReaderOptions, read_corpus
from csr_adapter.filters import INT64, FilterError, check_filter, check_key, parse_filter_args, path_candidates
from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.collections import open_collections
from csr_adapter.server.schemas import SearchRequest
from csr_adapter.server.testing import serve_in_thread
from csr_adapter.text import blank

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))

no_surrogates = st.characters(exclude_categories=["Cs"])
any_text = st.text(max_size=60)  # lone surrogates included
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), any_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(any_text, inner, max_size=3), max_leaves=8)
key_chars = st.characters(categories=["L", "N"]) | st.sampled_from("_-")
good_keys = st.lists(st.text(key_chars, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


# -- the filter parser ---------------------------------------------------------------------------------------
@FAST
@given(key=st.one_of(any_text, good_keys))
def test_a_key_is_accepted_or_refused_in_one_line(key):
    try:
        assert check_key(key) == key
    except FilterError as exc:
        assert one_line(str(exc))
        return
    assert all(part and all(c.isalnum() or c in "_-" for c in part) for part in key.split("."))


@FAST
@given(flt=st.one_of(json_values, st.dictionaries(st.one_of(good_keys, any_text), json_values, max_size=4)))
def test_any_json_filter_is_valid_or_a_one_line_error(flt):
    try:
        checked = check_filter(flt)
    except FilterError as exc:
        assert one_line(str(exc))
        return
    for value in (checked or {}).values():
        for v in value if isinstance(value, list) else [value]:
            assert isinstance(v, (str, int, bool))
            assert isinstance(v, (str, bool)) or INT64[0] <= v <= INT64[1]


@FAST
@given(items=st.lists(st.one_of(any_text, st.tuples(good_keys, st.text(no_surrogates, max_size=25)).map("=".join)),
                      max_size=4))
def test_cli_filter_arguments_parse_or_fail_in_one_line(items):
    try:
        flt = parse_filter_args(items)
    except FilterError as exc:
        assert one_line(str(exc))
        return
    assert check_filter(flt) == flt  # what the CLI builds is a filter every engine takes
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip()
        assert value in flt[key if key in ("text", "source", "file", "doc_id", "chunk", "n_chunks", "content_hash")
                            or key.startswith("meta.") else f"meta.{key}"]


segment = st.text(st.characters(categories=["L", "N"]) | st.sampled_from("#_-. "), min_size=1, max_size=10).filter(
    lambda s: s not in (".", ".."))


@FAST
@given(parts=st.lists(segment, min_size=1, max_size=3),
       record=st.one_of(st.none(), st.text(no_surrogates, max_size=12)))
@example(parts=["a"], record="\x00")  # a NUL byte: realpath raised ValueError
def test_a_relative_source_with_hashes_finds_its_stored_path(tmp_path_factory, parts, record):
    root = tmp_path_factory.getbasetemp()
    relative = "/".join(parts)
    stored = os.path.realpath(os.path.join(root, relative))
    shown = relative if record is None else f"{relative}#{record}"
    stored = stored if record is None else f"{stored}#{record}"
    assert stored in path_candidates(shown, str(root))


# -- the chunker and the corpus reader ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chunker(encoder):
    return Chunker(encoder.backbone.tokenizer, max_tokens=16, overlap=3, max_chars=48)


@FAST
@given(text=st.text(no_surrogates, max_size=400) | st.from_regex(r"(\S{1,200} ?){1,4}", fullmatch=True))
def test_chunks_are_capped_substrings_and_none_only_for_blank_text(chunker, text):
    [chunks] = list(chunker.split([text]))
    assert bool(chunks) == (not blank(text))  # blank: whitespace, control and zero-width characters only
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip() and len(chunk.text) <= chunker.max_chars
        assert chunk.text in text and chunk.tokens >= 0


file_names = st.text(st.characters(categories=["L", "N", "Zs"], exclude_characters="\x00/") | st.sampled_from("#-_.~"),
                     min_size=1, max_size=20).filter(lambda s: s.strip(".") != "")
records = st.lists(st.dictionaries(st.sampled_from(["text", "title", "id", "_id", "lang", "n"]), json_scalars,
                                   max_size=4), max_size=4)


@st.composite
def file_bytes(draw) -> tuple[str, bytes]:
    ext = draw(st.sampled_from(sorted(SUPPORTED) + [".gz", ".jsonl.gz", ".bin", ""]))
    kind = draw(st.sampled_from(["raw", "utf8", "latin1", "utf16", "jsonl", "json", "csv"]))
    text = draw(st.text(max_size=200))
    if kind == "raw":
        data = draw(st.binary(max_size=300))
    elif kind in ("utf8", "latin1", "utf16"):
        data = text.encode({"utf8": "utf-8", "latin1": "latin-1", "utf16": "utf-16"}[kind], "replace")
    elif kind == "jsonl":
        data = "\n".join(json.dumps(r) for r in draw(records)).encode("utf-8")
    elif kind == "json":
        data = json.dumps(draw(records)).encode("utf-8")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["text", "lang"])
        writer.writerows([[draw(any_text).encode("utf-8", "replace").decode(), "en"] for _ in range(2)])
        data = out.getvalue().encode("utf-8")
    return ext, data


@SLOW
@given(files=st.lists(st.tuples(file_names, file_bytes()), min_size=1, max_size=5))
def test_any_folder_reads_into_documents_or_a_one_line_error(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        (root / "sub#1").mkdir(parents=True)
        written = set()
        for i, (name, (ext, data)) in enumerate(files):
            path = root / ("sub#1" if i % 2 else "") / f"{name}{ext}"
            path.write_bytes(data)
            written.add(os.path.realpath(path))
        try:
            corpus = read_corpus(root, ReaderOptions(max_bytes=10_000))
        except CorpusError as exc:
            assert one_line(str(exc))
            return
        assert corpus.documents and len({d.source for d in corpus.documents}) == len(corpus.documents)
        for doc in corpus.documents:
            doc.text.encode("utf-8")  # storable: no lone surrogates
            json.dumps(doc.meta).encode("utf-8")
            assert doc.text.strip() and doc.source.startswith(doc.file)
        for skip in corpus.skipped:
            assert one_line(skip.reason)
        assert set(corpus.files) <= written and set(corpus.seen) <= written


# -- CLI options on a real store ---------------------------------------------------------------------------
FUZZED_OPTIONS = {  # options whose values only shape the run (not where it reads or writes)
    "ingest": ["--k", "--batch-size", "--text-field", "--max-file-mb", "--overlap", "--budget", "--avg-k",
               "--k-min", "--k-max", "--adapt-steps", "--layout", "--threads", "--runtime"],
    "search": ["--top-k", "--k", "--filter", "--rrf-k", "--budget", "--threads", "--runtime"],
}
option_values = st.one_of(any_text, st.integers(-3, 12).map(str), st.sampled_from(
    [str(10**30), str(2**63), "-1", "0", "nan", "inf", "1e308", "0x10", "", " ", "8.5", "lang=en", "a b=c"]))


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    """A folder ingested into an embedded store with its FAISS fallback (shipped model, no adaptation)."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    (root / "docs").mkdir()
    for i, text in enumerate(["Vitamin D lowers the risk of bone fractures.", "Qdrant stores sparse vectors.",
                              "Honey bees dance to show where flowers are."]):
        (root / "docs" / f"d{i}.txt").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["ingest", str(root / "docs"), "--path", str(root / "store"), "--no-adapt",
                                      "--with-fallback", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return root


def stored_points(store: Path) -> set[tuple[str, str]]:
    from csr_adapter import open_collection

    backend = open_collection("csr", path=store).open_backend()
    try:
        return {(pid, p.get("content_hash", "")) for pid, p in backend.scroll(["content_hash"])}
    finally:
        backend.close()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(sorted(FUZZED_OPTIONS)),
       pairs=st.lists(st.tuples(st.sampled_from(sorted({o for v in FUZZED_OPTIONS.values() for o in v})),
                                option_values), min_size=1, max_size=3))
@example(command="ingest", pairs=[("--k", "4")])  # reaches the store: a config mismatch
@example(command="ingest", pairs=[("--batch-size", "2"), ("--overlap", "3")])  # a run that succeeds
@example(command="search", pairs=[("--top-k", "2"), ("--filter", "source=docs/d0.txt"), ("--k", "4")])
@example(command="search", pairs=[("--filter", "a b=c")])
def test_cli_options_run_or_fail_in_one_line_and_a_failed_run_keeps_the_store(cli_store, command, pairs):
    """`ingest` / `search` with fuzzed option values on a real store: no traceback, a failure is exit 1 or 2
    with one ``Error:`` line, and a failed ingest leaves the store's point set as it was."""
    args = [arg for name, value in pairs if name in FUZZED_OPTIONS[command] for arg in (name, value)]
    store = cli_store / "store"
    target = [str(cli_store / "docs"), "--no-adapt"] if command == "ingest" else ["bone fractures", "--json"]
    before = stored_points(store)
    result = CliRunner().invoke(cli, [command, *target, "--path", str(store), "--device", "cpu", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output
        assert stored_points(store) == before  # a failed run loses and changes nothing


# -- the server's request validation --------------------------------------------------------------------------
search_bodies = st.fixed_dictionaries({"query": st.one_of(any_text, json_values)}, optional={
    "collection": st.one_of(any_text, json_values), "top_k": st.one_of(json_scalars, st.integers()),
    "k": st.one_of(json_scalars, st.integers()),
    "filter": st.one_of(json_values, st.dictionaries(st.one_of(good_keys, any_text), json_values, max_size=3)),
})


@FAST
@given(body=search_bodies)
def test_a_search_body_validates_only_with_a_runnable_filter(body):
    try:
        request = SearchRequest.model_validate(body)
    except ValidationError as exc:
        assert exc.errors()
        return
    check_filter(request.filter)  # a request that validates carries a filter every engine takes
    request.query.encode("utf-8")


@pytest.fixture(scope="module")
def fallback_server(encoder, tmp_path_factory):
    """A live server over a collection with a FAISS fallback (the case where a bad key once gave an empty 200)."""
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "docs"
    (corpus / "sub#1").mkdir(parents=True)
    (corpus / "#lead.txt").write_text("Vitamin D supplementation lowers the risk of bone fractures.")
    (corpus / "sub#1" / "q#2.txt").write_text("Qdrant stores sparse vectors in an inverted index.")
    store = root / "store"
    result = CliRunner().invoke(cli, ["ingest", str(corpus), "--path", str(store), "--with-fallback", "--no-progress",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    searchers = open_collections(encoder, ["csr"], path=str(store))
    try:
        with serve_in_thread(create_app(encoder, searchers, ServeConfig(warmup=False, source_root=str(root)))) as url:
            yield url
    finally:
        for searcher in searchers.values():
            searcher.close()


@SLOW
@given(flt=st.dictionaries(st.one_of(good_keys, any_text), st.one_of(json_scalars, st.lists(json_scalars, max_size=3)),
                           min_size=1, max_size=2))
@example(flt={"\n": None})  # found by this test: the key's line break went into the one-line message
def test_live_search_filters_are_answered_or_refused_never_swallowed(fallback_server, flt):
    body = json.dumps({"query": "vitamin", "filter": flt}).encode("utf-8", "surrogatepass")
    r = httpx.post(fallback_server + "/search", content=body, headers={"content-type": "application/json"}, timeout=60)
    try:
        valid = check_filter(flt) is not None
    except FilterError:
        valid = False
    if valid:
        assert r.status_code == 200, r.text
        assert r.json()["reason"] != "sparse_error"  # the sparse engine took the filter
    else:
        assert r.status_code == 422 and one_line(r.json()["error"]), r.text


def test_relative_sources_with_hashes_filter_the_live_server(fallback_server):
    for source in ("docs/#lead.txt", "docs/sub#1/q#2.txt", "docs/sub#1/../#lead.txt"):
        hits = httpx.post(fallback_server + "/search", json={"query": "vitamin", "filter": {"source": source}}).json()
        assert len(hits["hits"]) == 1, (source, hits)
        assert os.path.normpath(hits["hits"][0]["payload"]["source"]) == os.path.normpath(source)


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    from csr_adapter.integrations.base import CollectionMeta
    from csr_adapter.integrations.qdrant import open_qdrant

    backend = open_qdrant("keys", path=tmp_path_factory.mktemp("edge"), meta=CollectionMeta("m", 16, 2))
    yield backend
    backend.close()


@SLOW
@given(key=good_keys)
def test_every_key_the_grammar_allows_runs_on_qdrant_edge(edge, key):
    """The grammar is no wider than the sparse engine's: a key it allows never fails in Qdrant Edge."""
    from csr_adapter.sparse import SparseEmbedding

    query = SparseEmbedding(np.array([1, 3], dtype=np.int32), np.array([0.6, 0.8], dtype=np.float32), 16)
    assert edge.search(query, top_k=1, filter={key: ["x", 1, True]}) == []
