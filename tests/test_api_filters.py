"""Filters through the Python API (issue 15): ``Collection.search``, ``FallbackSearcher``, the raw backends and
the LangChain / LlamaIndex retrievers get the CLI's grammar (:mod:`csr_adapter.filters`) and its one-line
``FilterError`` (a ``ValueError``), never a traceback from an engine nor a silently empty answer.

Real parts: the shipped model, a collection ingested into Qdrant Edge with its FAISS fallback, and milvus-lite
for the keys Milvus JSON paths take (skipped when the milvus extra is not installed)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csr_adapter import open_collection
from csr_adapter.filters import FilterError, check_filter

DOCS = {"vitamin.txt": "Vitamin D supplementation lowers the risk of bone fractures in older adults.",
        "qdrant.txt": "Qdrant stores sparse vectors in an inverted index for fast retrieval.",
        "notes#1.txt": "Honey bees communicate the direction of flowers with a waggle dance."}

# the filters each path must refuse up front, and the start of the message every path gives
BAD = [
    ({"a b": "x"}, "filter key 'a b': use letters"),  # the engines take it: a silently empty answer before
    ({'x"]': 1}, "filter key 'x\"]': use letters"),
    ({"": 1}, "filter key '': empty"),
    ({"chunk": 2**70}, "filter 'chunk': integer out of the 64-bit range"),  # an engine overflow before
    ({"chunk": 1.5}, "filter 'chunk': values must be strings"),
    ({"source": []}, "filter 'source': give one value"),
    ({"doc_id": "x\ud800"}, "filter 'doc_id': a value is not valid Unicode"),
    ({"meta.lang": {"gt": 1}}, "filter 'meta.lang': values must be strings"),
    ({1: "x"}, "filter key 1: empty or not a string"),
    ("source=a.txt", "a filter is an object of field: value, not str"),
]
IDS = [repr(f)[:24] for f, _ in BAD]


@pytest.fixture(scope="module")
def collection(encoder, tmp_path_factory):
    pytest.importorskip("qdrant_edge")
    root = tmp_path_factory.mktemp("api-filters")
    for name, text in DOCS.items():
        (root / "docs").mkdir(exist_ok=True)
        (root / "docs" / name).write_text(text)
    col = open_collection("api", path=root / "store", device="cpu", share=encoder, echo=lambda m: None)
    col.ingest(root / "docs", adapt=False, with_fallback=True, progress=False)
    yield col, root
    col.close()


@pytest.fixture
def searcher(collection):
    """A searcher over the collection (the embedded engine admits one open handle: close it after each test)."""
    col, _ = collection
    searcher = col.searcher()
    yield searcher
    searcher.close()


def one_line_refusal(excinfo: pytest.ExceptionInfo, start: str) -> None:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, FilterError) and message.startswith(start), message
    assert "\n" not in message


def test_good_filters_still_answer(collection):
    col, root = collection
    source = str((root / "docs" / "vitamin.txt").resolve())
    for flt in ({"source": source}, {"doc_id": ["vitamin", "nope"]}, {"chunk": 0, "source": source}, {}):
        hits = col.search("bone fractures", top_k=2, filter=flt)
        assert hits and hits[0].payload["source"] == source, flt
    assert col.search("bone fractures", filter={"doc_id": "absent"}) == []
    assert len(col.search("bone", top_k=2, filter={"doc_id": {"qdrant", "vitamin"}})) == 2  # a set is a list too


def test_relative_source_filters_match_as_the_cli_resolves_them(collection, monkeypatch):
    """A ``source``/``file`` value relative to the working directory (``#`` in a file name included) finds the
    stored absolute path through every Python entry point that takes a text query, as ``--filter`` does."""
    import json

    from click.testing import CliRunner

    from csr_adapter.cli import cli

    col, root = collection
    monkeypatch.chdir(root)
    rel, query = "docs/notes#1.txt", "how do bees find flowers?"
    stored = str((root / "docs" / "notes#1.txt").resolve())
    cli_run = CliRunner().invoke(cli, ["search", query, "--path", str(root / "store"), "--collection", "api",
                                       "--filter", f"source={rel}", "--json", "--device", "cpu"])
    assert cli_run.exit_code == 0, cli_run.output
    expected = [h["id"] for h in json.loads(cli_run.output)]
    assert expected and all(h["payload"]["source"] == stored for h in json.loads(cli_run.output))

    def ids(hits) -> list[str]:
        assert all(h.payload["source"] == stored for h in hits)
        return [h.id for h in hits]

    for flt in ({"source": rel}, {"source": [rel, "docs/absent.txt"]}, {"source": {rel}}, {"file": rel},
                {"source": f"./docs/../{rel}"}):
        assert ids(col.search(query, filter=flt)) == expected, flt
        assert [ids(hits) for hits in col.search_batch([query, "bees"], filter=flt)][0] == expected, flt
    assert col.search(query, filter={"source": "notes#1.txt"}) == []  # relative to the working directory only
    searcher = col.searcher()
    try:
        assert ids(searcher.search(query, filter={"source": rel})) == expected
        assert ids(searcher.answer(query, filter={"source": rel}).hits) == expected
        assert ids(searcher.search_batch([query], filter={"source": rel})[0].hits) == expected
        lc = pytest.importorskip("csr_adapter.integrations.langchain")
        docs = lc.CSRRetriever(searcher=searcher, filter={"source": rel}).invoke(query)
        assert [d.id for d in docs] == expected
        assert [d.id for d in lc.CSRRetriever(searcher=searcher).invoke(query, filter={"file": rel})] == expected
        li = pytest.importorskip("csr_adapter.integrations.llamaindex")
        from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

        flt = MetadataFilters(filters=[MetadataFilter(key="source", value=rel)])
        assert [n.node.id_ for n in li.CSRRetriever(searcher, filters=flt).retrieve(query)] == expected
    finally:
        searcher.close()


@pytest.mark.parametrize(("flt", "start"), BAD, ids=IDS)
def test_collection_and_searcher_refuse_bad_filters_in_one_line(collection, flt, start):
    col, _ = collection
    with pytest.raises(FilterError) as excinfo:
        check_filter(flt)
    one_line_refusal(excinfo, start)  # the CLI's and the server's message
    for search in (lambda: col.search("bone fractures", filter=flt),
                   lambda: col.search_batch(["bone", "qdrant"], filter=flt)):
        with pytest.raises(ValueError) as excinfo:
            search()
        one_line_refusal(excinfo, start)
    searcher = col.searcher()
    try:
        for search in (lambda: searcher.search("bone fractures", filter=flt),
                       lambda: searcher.answer("bone fractures", filter=flt),
                       lambda: searcher.search_batch(["bone"], filter=flt)):
            with pytest.raises(ValueError) as excinfo:
                search()
            one_line_refusal(excinfo, start)
    finally:
        searcher.close()


@pytest.mark.parametrize(("flt", "start"), BAD, ids=IDS)
def test_raw_backends_refuse_bad_filters_in_one_line(searcher, encoder, flt, start):
    code = encoder.encode_query(["bone fractures"])[0]
    dense = encoder.encode_dense(["bone fractures"])[0]
    for call in (lambda: searcher.sparse.search(code, top_k=2, filter=flt),
                 lambda: searcher.dense.search(dense, top_k=2, filter=flt)):
        with pytest.raises(ValueError) as excinfo:
            call()
        one_line_refusal(excinfo, start)


@pytest.mark.parametrize(("flt", "start"), BAD[:5], ids=IDS[:5])
def test_langchain_retriever_refuses_bad_filters_in_one_line(searcher, flt, start):
    lc = pytest.importorskip("csr_adapter.integrations.langchain")
    with pytest.raises(ValueError) as excinfo:
        lc.CSRRetriever(searcher=searcher, filter=flt)  # at construction, not at the first query
    one_line_refusal(excinfo, start)
    retriever = lc.CSRRetriever(searcher=searcher, k=2)
    with pytest.raises(ValueError) as excinfo:
        retriever.invoke("bone fractures", filter=flt)
    one_line_refusal(excinfo, start)
    assert retriever.invoke("bone fractures", filter={"doc_id": "vitamin"})[0].metadata["doc_id"] == "vitamin"


@pytest.mark.parametrize(("flt", "start"), BAD[:5], ids=IDS[:5])
def test_llamaindex_retriever_refuses_bad_filters_in_one_line(searcher, flt, start):
    li = pytest.importorskip("csr_adapter.integrations.llamaindex")
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    with pytest.raises(ValueError) as excinfo:
        li.CSRRetriever(searcher, filters=flt)
    one_line_refusal(excinfo, start)
    [(key, value)] = flt.items()
    if isinstance(key, str) and isinstance(value, (str, int, float)):  # the same filter as MetadataFilters
        with pytest.raises(ValueError) as excinfo:
            li.CSRRetriever(searcher, filters=MetadataFilters(filters=[MetadataFilter(key=key, value=value)]))
        one_line_refusal(excinfo, start)
    good = li.CSRRetriever(searcher, similarity_top_k=2, filters={"doc_id": "qdrant"})
    assert [n.node.metadata["doc_id"] for n in good.retrieve("sparse vectors")] == ["qdrant"]


# -- Milvus (milvus-lite): JSON-path keys --------------------------------------------------------------------
@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from csr_adapter.integrations.base import CollectionMeta
    from csr_adapter.integrations.milvus import open_milvus

    backend = open_milvus("keys", path=tmp_path_factory.mktemp("milvus"), meta=CollectionMeta("m", 16, 2))
    yield backend
    backend.close()


def _code():
    import numpy as np

    from csr_adapter.sparse import SparseEmbedding

    return SparseEmbedding(np.array([1, 3], dtype=np.int32), np.array([0.6, 0.8], dtype=np.float32), 16)


def _nested(key: str, value: str) -> dict:
    payload: dict = {"text": "t"}
    node = payload
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return payload


def _milvus_matches(milvus, key: str) -> None:
    """A point whose payload holds ``key`` is found by a filter on it, and not by another value."""
    import uuid

    from csr_adapter.integrations.base import Point

    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
    milvus.upsert([Point(pid, _nested(key, "yes"), sparse=_code())])
    assert [h.id for h in milvus.search(_code(), top_k=5, filter={key: ["yes"], "text": "t"})] == [pid], key
    assert milvus.search(_code(), top_k=5, filter={key: "no"}) == [], key
    milvus.delete([pid])


@pytest.mark.parametrize("key", ["a-b", "meta.lang-code", "文档.章节", "é_1", "1", "x²", "٣", "-", "_", "a.b.c"])
def test_milvus_takes_every_key_the_grammar_allows(milvus, key):
    _milvus_matches(milvus, key)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.lists(st.text(st.characters(categories=["L", "N"]) | st.sampled_from("_-"), min_size=1, max_size=8),
                    min_size=1, max_size=3).map(".".join))
def test_milvus_takes_any_key_the_grammar_allows(milvus, key):
    """The grammar is no wider than Milvus's JSON paths (as test_fuzz checks for Qdrant Edge)."""
    check_filter({key: "yes"})
    _milvus_matches(milvus, key)


@pytest.mark.parametrize("key", ['x"]', "x'", "a b", "x[0]", "a\\b", "$meta", "x\ny", "a..b", ".a", "a)", "é\ud800"])
def test_milvus_refuses_keys_outside_the_grammar_in_one_line(milvus, key):
    from csr_adapter.integrations.milvus import filter_expr

    for call in (lambda: filter_expr({key: "v"}), lambda: milvus.search(_code(), top_k=2, filter={key: "v"})):
        with pytest.raises(FilterError) as excinfo:
            call()
        one_line_refusal(excinfo, "filter key")
