"""The backend contract: the same checks, through the :class:`Backend` protocol, on every engine.

Engines: Qdrant Edge (temp dir), qdrant-client ``:memory:`` (the server code path), FAISS (temp dir) and
Milvus (milvus-lite, temp dir). A new engine is one module, one registry line and one entry in ``ENGINES``.
Synthetic codes and vectors, a few dozen points: no backbone, fast.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from csr_adapter.integrations.base import (
    CAPABILITIES,
    Backend,
    BackendError,
    CollectionMeta,
    CollectionMismatchError,
    CollectionNotFoundError,
    InvalidTopKError,
    Point,
    UnsupportedError,
    require_capability,
)
from csr_adapter.integrations.registry import open_backend
from csr_adapter.lexical import BM25, query_vector
from csr_adapter.retrieval import MODES, Query, Searcher
from csr_adapter.sparse import SparseEmbedding

H, K, D, N = 64, 4, 8, 24
META = CollectionMeta("contract-model", H, K, d=D)
LANGS = ("en", "de", "fr")
MISSING_ID = str(uuid.UUID(int=0))


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


ENGINES = [
    pytest.param("edge", marks=pytest.mark.skipif(not _has("qdrant_edge"), reason="extra qdrant not installed")),
    pytest.param("memory", marks=pytest.mark.skipif(not _has("qdrant_client"), reason="extra qdrant not installed")),
    pytest.param("faiss", marks=pytest.mark.skipif(not _has("faiss"), reason="extra faiss not installed")),
    pytest.param("milvus", marks=pytest.mark.skipif(not _has("pymilvus", "milvus_lite"),
                                                    reason="extra milvus (pymilvus + milvus-lite) not installed")),
]


@dataclass
class Engine:
    """How to open one engine's collections, and where it may write."""

    kind: str
    root: Path
    open: Callable[..., Backend]
    client: Any = None


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    kind, root = request.param, tmp_path / "store"
    if kind == "memory":
        from qdrant_client import QdrantClient

        client = QdrantClient(":memory:")
        return Engine(kind, root, lambda name, **kw: open_backend("qdrant", name, client=client, **kw), client)
    registry = {"edge": "qdrant", "faiss": "faiss", "milvus": "milvus"}[kind]
    return Engine(kind, root, lambda name, **kw: open_backend(registry, name, path=root, **kw))


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    """N points: distinct 4-latent codes (so each code's best match is itself), unit dense vectors, payloads."""
    rng = np.random.default_rng(0)
    supports: set[tuple[int, ...]] = set()
    while len(supports) < N:
        supports.add(tuple(sorted(rng.choice(H, K, replace=False).tolist())))
    codes = []
    for support in sorted(supports):
        values = rng.uniform(0.2, 1.0, K).astype(np.float32)
        codes.append(SparseEmbedding(np.asarray(support, np.int32), values / np.linalg.norm(values), H))
    dense = rng.normal(size=(N, D)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(N)]
    payloads = [{"text": f"doc {i}", "lang": LANGS[i % 3], "n": i, "tags": [("even", "odd")[i % 2], f"t{i % 4}"],
                 "meta": {"group": i % 2}} for i in range(N)]
    points = [Point(ids[i], payloads[i], sparse=codes[i], dense=dense[i]) for i in range(N)]
    return {"codes": codes, "dense": dense, "ids": ids, "payloads": payloads, "points": points}


def query(be: Backend, data: dict[str, Any], i: int) -> SparseEmbedding | np.ndarray:
    """Point ``i``'s own sparse code on a sparse engine, its dense vector on a dense-only one."""
    return data["codes"][i] if "sparse" in be.capabilities else data["dense"][i]


@pytest.fixture
def filled(engine: Engine, data: dict[str, Any]) -> Backend:
    be = engine.open("docs", meta=META)
    be.upsert(data["points"])
    yield be
    be.close()


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


# -- writes -----------------------------------------------------------------------------------------------------
def test_create_and_idempotent_upsert(engine: Engine, data: dict[str, Any]) -> None:
    be = engine.open("docs", meta=META)
    try:
        assert isinstance(be, Backend) and be.count() == 0
        be.upsert(data["points"])
        be.upsert(data["points"])  # the same ids again: replaced, not added
        assert be.count() == N
        changed = replace(data["points"][0], payload={**data["payloads"][0], "text": "changed"})
        be.upsert([changed])
        assert be.count() == N and dict(be.scroll(["text"]))[data["ids"][0]] == {"text": "changed"}
        info = be.info()
        assert info["engine"] == be.name and info["points"] == N and info["meta"] == META.to_dict()
    finally:
        be.close()


def test_delete_and_count(filled: Backend, data: dict[str, Any]) -> None:
    ids = data["ids"]
    filled.delete([ids[0], ids[1], MISSING_ID])  # unknown ids are ignored
    assert filled.count() == N - 2
    assert ids[0] not in {h.id for h in filled.search(query(filled, data, 0), top_k=N)}
    filled.delete([])
    assert filled.count() == N - 2 and {pid for pid, _ in filled.scroll([])} == set(ids[2:])


def test_scroll_with_fields(filled: Backend, data: dict[str, Any]) -> None:
    ids, payloads = data["ids"], data["payloads"]
    assert dict(filled.scroll()) == dict(zip(ids, payloads))
    assert dict(filled.scroll(["lang", "n"])) == {i: {"lang": p["lang"], "n": p["n"]} for i, p in zip(ids, payloads)}
    assert dict(filled.scroll([])) == {i: {} for i in ids}


# -- reads ------------------------------------------------------------------------------------------------------
def test_search_finds_each_point_first(filled: Backend, data: dict[str, Any]) -> None:
    for i in (0, 5, 17, N - 1):
        hits = filled.search(query(filled, data, i), top_k=3)
        assert hits and len(hits) <= 3 and hits[0].id == data["ids"][i]
        assert hits[0].payload == data["payloads"][i] and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:])) and all(h.score > 0 for h in hits)
    if "sparse" in filled.capabilities:  # a code sharing no latent with anything finds nothing
        empty = SparseEmbedding(np.zeros(0, np.int32), np.zeros(0, np.float32), H)
        assert filled.search(empty, top_k=5) == []


def test_filters(filled: Backend, data: dict[str, Any]) -> None:
    ids = data["ids"]

    def search(i: int, flt: dict[str, Any]) -> list:
        return filled.search(query(filled, data, i), top_k=N, filter=flt)

    hits = search(4, {"lang": "de"})  # 4 % 3 == 1: a German doc
    assert hits[0].id == ids[4] and {h.payload["lang"] for h in hits} == {"de"}
    hits = search(0, {"lang": ["de", "fr"]})  # a list means any of
    assert ids[0] not in {h.id for h in hits} and {h.payload["lang"] for h in hits} <= {"de", "fr"}
    assert [h.id for h in search(7, {"n": 7})] == [ids[7]]
    hits = search(5, {"tags": "t1"})  # a payload array matches if any element does
    assert hits[0].id == ids[5] and all("t1" in h.payload["tags"] for h in hits)
    hits = search(3, {"meta.group": 1, "lang": "en"})  # dotted keys nest; several keys must all match
    assert hits[0].id == ids[3] and all(h.payload["meta"]["group"] == 1 and h.payload["lang"] == "en" for h in hits)
    assert search(3, {"lang": "xx"}) == []
    with pytest.raises(ValueError):
        search(3, {"lang": 1.5})


def test_top_k_validation(filled: Backend, data: dict[str, Any]) -> None:
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(InvalidTopKError):
            filled.search(query(filled, data, 0), top_k=bad)
    assert len(filled.search(query(filled, data, 0), top_k=np.int64(N + 5))) <= N


# -- opening ------------------------------------------------------------------------------------------------------
def test_reopen_reads_meta_and_refuses_another(engine: Engine, data: dict[str, Any]) -> None:
    be = engine.open("docs", meta=META)
    be.upsert(data["points"])
    be.close()
    again = engine.open("docs", create=False)  # read-only use: no meta given, the stored one is read
    try:
        assert again.meta == META and again.count() == N
        assert again.search(query(again, data, 2), top_k=1)[0].id == data["ids"][2]
    finally:
        again.close()
    with pytest.raises(CollectionMismatchError):
        engine.open("docs", meta=replace(META, model_id="another-model"))
    same = engine.open("docs", meta=META)  # the same meta is fine
    assert same.count() == N
    same.close()


def test_missing_collection_is_not_found_and_not_created(engine: Engine) -> None:
    with pytest.raises(CollectionNotFoundError):
        engine.open("nothing", create=False)
    assert files_under(engine.root) == []
    if engine.client is not None:
        assert not engine.client.collection_exists("nothing")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "bad\0name"])
def test_invalid_collection_names_write_nothing(engine: Engine, name: str) -> None:
    with pytest.raises(BackendError, match="invalid collection name"):
        engine.open(name, meta=META)
    assert files_under(engine.root) == [] and not (engine.root.parent / "escape").exists()


# -- capabilities -------------------------------------------------------------------------------------------------
def test_capabilities_match_behaviour(filled: Backend, data: dict[str, Any]) -> None:
    caps, ids = filled.capabilities, data["ids"]
    assert isinstance(caps, frozenset) and caps <= set(CAPABILITIES) and {"filters", "scroll"} <= caps
    code, vec = data["codes"][6], data["dense"][6]
    checks: dict[str, Callable[[], Any]] = {
        "sparse": lambda: filled.search(code, top_k=2)[0].id == ids[6],
        "dense": lambda: filled.search(vec, top_k=2)[0].id == ids[6],
        "hybrid": lambda: filled.hybrid_search(code, vec, top_k=3)[0].id == ids[6]
        and [h.id for h in filled.hybrid_search(code, vec, top_k=3, filter={"n": [6, 99]})] == [ids[6]],
        "score_ids": lambda: filled.score_ids(vec, [ids[6], MISSING_ID]) == pytest.approx({ids[6]: 1.0}, abs=1e-4),
        "filters": lambda: filled.search(query(filled, data, 6), top_k=2, filter={"n": 6})[0].id == ids[6],
        "scroll": lambda: len(list(filled.scroll([]))) == N,
        "optimize": lambda: filled.optimize() is None,
        "retrieve": lambda: [p.payload for p in filled.retrieve([ids[6], MISSING_ID])] == [data["payloads"][6]],
        "hit_vectors": lambda: [(h.id, sorted(h.code.indices.tolist())) for h in filled.search(
            code, top_k=1, with_vectors=True)] == [(ids[6], sorted(code.indices.tolist()))],
        "batch": lambda: [r[0].id for r in filled.search_batch(
            [code, data["codes"][7]] if "sparse" in caps else np.stack([vec, data["dense"][7]]), top_k=2)]
        == [ids[6], ids[7]],
        # META has no lexical vector: no engine declares it here (test_one_searcher_over_every_engine does)
        "lexical": lambda: filled.lexical_search_batch([query_vector("doc")], top_k=2),
    }
    assert set(checks) == set(CAPABILITIES)
    for cap, check in checks.items():
        if cap in caps:
            require_capability(filled, cap, "the contract")
            assert check(), cap
        else:
            with pytest.raises(UnsupportedError, match=f"'{cap}'"):
                require_capability(filled, cap, "the contract")
            with pytest.raises((UnsupportedError, TypeError, AttributeError)):
                check()
    with pytest.raises(ValueError, match="unknown capability"):
        require_capability(filled, "teleport", "the contract")


def test_sparse_only_collection_declares_no_dense(engine: Engine, data: dict[str, Any]) -> None:
    if engine.kind == "faiss":
        pytest.skip("FAISS is dense-only")
    be = engine.open("sparse_only", meta=replace(META, d=None))
    try:
        be.upsert([replace(p, dense=None) for p in data["points"]])
        assert "sparse" in be.capabilities and not {"dense", "hybrid"} & be.capabilities
        assert be.search(data["codes"][1], top_k=1)[0].id == data["ids"][1]
        with pytest.raises(UnsupportedError, match="'hybrid'"):
            be.hybrid_search(data["codes"][1], data["dense"][1])
        with pytest.raises(UnsupportedError):
            be.search(data["dense"][1])
    finally:
        be.close()


@pytest.mark.skipif(not _has("qdrant_edge", "faiss"), reason="extras qdrant and faiss not installed")
def test_with_fallback_declares_both_sides(tmp_path: Path, data: dict[str, Any]) -> None:
    from csr_adapter.integrations.faiss import FaissBackend
    from csr_adapter.integrations.fallback import WithFallback

    sparse = open_backend("qdrant", "docs", path=tmp_path, meta=META)
    both = WithFallback(sparse, FaissBackend(tmp_path / "docs.faiss", meta=META), keep_dense=True)
    try:
        both.upsert(data["points"])
        assert {"sparse", "dense", "hybrid", "score_ids", "filters", "scroll", "optimize"} <= both.capabilities
        assert both.search(data["codes"][9], top_k=1)[0].served_by == "sparse"
        assert both.search(data["dense"][9], top_k=1)[0].id == data["ids"][9]
        assert both.hybrid_search(data["codes"][9], data["dense"][9], top_k=1)[0].id == data["ids"][9]
        assert both.count() == N and len(list(both.scroll([]))) == N
    finally:
        both.close()


def test_one_searcher_over_every_engine(engine: Engine, data: dict[str, Any]) -> None:
    """The one query pipeline on each engine: every mode the engine can serve finds the queried point first, through
    the engine's own capability (codes, lexical, fused, dense, hybrid); the others are one-line refusals."""
    meta = replace(META, lexical=BM25(avgdl=2.0).to_dict())
    bm25, ids = meta.bm25(), data["ids"]
    be = engine.open("searched", meta=meta)
    try:
        be.upsert([replace(p, lexical=bm25.document(f"word{i} common")) for i, p in enumerate(data["points"])])
        caps = be.capabilities
        searcher = Searcher(None, be, None) if "sparse" in caps else Searcher(None, None, be)
        query = Query(text="word6", vector=data["dense"][6], code=data["codes"][6], lexical=query_vector("word6"))
        served = {"fused": "lexical" in caps, "codes": "sparse" in caps, "lexical": "lexical" in caps,
                  "dense": "dense" in caps, "hybrid": "hybrid" in caps}
        assert set(served) == set(MODES)
        assert served["lexical"] == (engine.kind in ("edge", "memory"))  # engine-side IDF: Qdrant only
        for mode, ok in served.items():
            if not ok:
                with pytest.raises(UnsupportedError, match=mode):
                    searcher.answer_query(query, top_k=3, mode=mode)
                continue
            answer = searcher.answer_query(query, top_k=3, mode=mode, filter={"lang": ["en", "de", "fr"]})
            assert answer.hits[0].id == ids[6], mode
            assert answer.hits[0].payload == data["payloads"][6], mode
        assert searcher.mode == ("fused" if served["lexical"] else "codes" if served["codes"] else "dense")
    finally:
        be.close()
