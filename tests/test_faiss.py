"""FaissBackend on real FAISS indexes in temp dirs: ids, persistence, filters, index types, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from csr_adapter.errors import CSRAdapterError
from csr_adapter.integrations.base import CollectionMeta, Point
from csr_adapter.integrations.faiss import (
    DimensionMismatchError,
    FaissBackend,
    FaissIndexError,
    InvalidTopKError,
)

D = 16


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(300, D)).astype(np.float32)


def points(vectors, ids=None, start=0):
    ids = ids if ids is not None else range(start, start + len(vectors))
    return [Point(f"id{i}", {"i": int(i), "tag": ["even", "x"] if i % 2 == 0 else "odd", "meta": {"g": int(i) % 3}},
                  dense=v) for i, v in zip(ids, vectors)]


def top_ids(backend, query, k=3, **kw):
    return [h.id for h in backend.search(query, top_k=k, **kw)]


def test_search_delete_reupsert_and_stable_ids(tmp_path, vectors):
    be = FaissBackend(tmp_path / "c", meta=CollectionMeta("m", 0, 0, D))
    be.upsert(points(vectors))
    hits = be.search(vectors[5], top_k=3)
    assert hits[0].id == "id5" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(h.served_by == "dense" for h in hits) and hits[0].payload["i"] == 5
    iid = be.store.iids(["id7"])["id7"]
    be.upsert(points(vectors[7:8] * -1, ids=[7]))  # replace id7's vector: same int id, old vector gone
    assert be.store.iids(["id7"])["id7"] == iid and be.count() == 300
    assert top_ids(be, -vectors[7], 1) == ["id7"] and "id7" not in top_ids(be, vectors[7], 3)
    be.delete(["id5", "nope"])
    assert be.count() == 299 and "id5" not in top_ids(be, vectors[5], 5)
    be.upsert(points(vectors[5:6], ids=[5]))  # re-ingest after delete
    assert top_ids(be, vectors[5], 1) == ["id5"]
    be.close()


def test_persisted_and_loaded_lazily(tmp_path, vectors):
    with FaissBackend(tmp_path / "c", meta=CollectionMeta("m", 8, 2, D)) as be:
        be.upsert(points(vectors))
    assert (tmp_path / "c" / "index.faiss").exists()
    be = FaissBackend(tmp_path / "c")
    assert be.index.current is None and be.count() == 300 and be.meta == CollectionMeta("m", 8, 2, D)
    assert top_ids(be, vectors[42], 1) == ["id42"] and be.index.current is not None
    assert [p.id for p in be.get(["id3", "zz", "id1"])] == ["id3", "id1"]
    assert dict(be.scroll(["i"]))["id9"] == {"i": 9} and be.ids()[:2] == ["id0", "id1"]
    be.close()


def test_in_memory_and_batch_search(vectors):
    from csr_adapter.integrations.base import Backend

    be = FaissBackend(None)
    assert isinstance(be, Backend)
    assert be.search(vectors[0], top_k=3) == []  # empty index: no hits, no error
    be.upsert(points(vectors))
    batch = be.search_batch(vectors[:20], top_k=4)
    assert [b[0].id for b in batch] == [f"id{i}" for i in range(20)] and all(len(b) == 4 for b in batch)
    assert len(be.search(vectors[0], top_k=1000)) == 300  # top_k above the count: everything, no padding


def test_filters(vectors):
    be = FaissBackend(None)
    be.upsert(points(vectors))
    assert all(h.payload["tag"] == "odd" for h in be.search(vectors[0], top_k=10, filter={"tag": "odd"}))
    assert all(h.payload["i"] % 2 == 0 for h in be.search(vectors[1], top_k=10, filter={"tag": "even"}))  # array
    assert sorted(top_ids(be, vectors[0], 10, filter={"i": [3, 4, 250]})) == ["id250", "id3", "id4"]
    assert all(h.payload["meta"]["g"] == 1 for h in be.search(vectors[0], top_k=10, filter={"meta.g": 1}))
    assert be.search(vectors[0], top_k=5, filter={"i": 10_000}) == []
    with pytest.raises(ValueError):
        be.search(vectors[0], top_k=5, filter={"i": {"gt": 3}})


@pytest.mark.parametrize("spec", ["HNSW16", "IVF8,Flat"])
def test_other_index_types_delete_and_reingest(tmp_path, vectors, spec):
    be = FaissBackend(tmp_path / "c", index_factory=spec)
    be.upsert(points(vectors[:150]))  # IVF: trained at first search on everything stored
    be.upsert(points(vectors[150:], start=150))
    assert top_ids(be, vectors[5], 1) == ["id5"]
    be.delete(["id5"])  # HNSW cannot remove ids: rebuilt from the store on next search
    assert "id5" not in top_ids(be, vectors[5], 10) and be.count() == 299
    be.upsert(points(vectors[5:6], ids=[5]))
    assert top_ids(be, vectors[5], 1) == ["id5"]
    assert sorted(top_ids(be, vectors[5], 10, filter={"i": [1, 2]})) == ["id1", "id2"]
    be.close()
    again = FaissBackend(tmp_path / "c")
    assert again.index_factory == spec and top_ids(again, vectors[9], 1) == ["id9"] and again.count() == 300


def test_crash_before_flush_is_rebuilt(tmp_path, vectors):
    be = FaissBackend(tmp_path / "c")
    be.upsert(points(vectors[:100]))
    be.close()
    be = FaissBackend(tmp_path / "c")
    be.upsert(points(vectors[100:], start=100))
    be.store.db.close()  # "killed": the store committed, the index file was never rewritten
    be = FaissBackend(tmp_path / "c")
    with pytest.warns(UserWarning, match="out of date"):
        assert top_ids(be, vectors[250], 1) == ["id250"]
    assert be.index.current.ntotal == 300


def test_missing_or_corrupt_index_file_is_rebuilt(tmp_path, vectors):
    with FaissBackend(tmp_path / "c") as be:
        be.upsert(points(vectors))
    (tmp_path / "c" / "index.faiss").unlink()
    with pytest.warns(UserWarning, match="missing"):
        assert top_ids(FaissBackend(tmp_path / "c"), vectors[1], 1) == ["id1"]
    (tmp_path / "c" / "index.faiss").write_bytes(b"\0garbage" * 10)
    with pytest.warns(UserWarning, match="corrupt"):
        assert top_ids(FaissBackend(tmp_path / "c"), vectors[2], 1) == ["id2"]


def test_missing_or_corrupt_store_is_an_error(tmp_path, vectors):
    with FaissBackend(tmp_path / "c") as be:
        be.upsert(points(vectors[:10]))
    for f in (tmp_path / "c").glob("store.sqlite*"):
        f.unlink()
    with pytest.raises(FaissIndexError, match="payload store missing"):
        FaissBackend(tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "store.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(FaissIndexError, match="not a readable payload store"):
        FaissBackend(tmp_path / "d")
    assert FaissBackend(tmp_path / "c", recreate=True).count() == 0


def test_dimension_and_model_mismatch(tmp_path, vectors):
    with FaissBackend(tmp_path / "c", meta=CollectionMeta("m1", 0, 0, D)) as be:
        be.upsert(points(vectors[:10]))
        with pytest.raises(DimensionMismatchError, match="dim 8"):
            be.upsert([Point("x", {}, dense=np.ones(8, np.float32))])
        with pytest.raises(DimensionMismatchError):
            be.search(np.ones(8, np.float32))
    with pytest.raises(DimensionMismatchError, match="16-d"):
        FaissBackend(tmp_path / "c", meta=CollectionMeta("m1", 0, 0, 384))
    with pytest.raises(FaissIndexError, match="built with model m1"):
        FaissBackend(tmp_path / "c", meta=CollectionMeta("m2", 0, 0, D))
    assert FaissBackend(tmp_path / "c", meta=CollectionMeta("m2", 0, 0, 384), recreate=True).dim == 384


def test_bad_input(tmp_path, vectors):
    be = FaissBackend(None)
    be.upsert(points(vectors[:5]))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidTopKError):
            be.search(vectors[0], top_k=bad)
    with pytest.raises(CSRAdapterError, match="has none"):
        be.upsert([Point("s", {})])
    with pytest.raises(ValueError, match="NaN"):
        be.upsert([Point("n", {}, dense=np.full(D, np.nan, np.float32))])
    with pytest.raises(ValueError, match="duplicate"):
        be.upsert(points(vectors[:2], ids=[1, 1]))
    from csr_adapter.sparse import SparseEmbedding

    with pytest.raises(TypeError, match="dense-only"):
        be.search(SparseEmbedding(np.array([1], np.int32), np.array([1.0], np.float32), 10))
    with pytest.raises(FaissIndexError, match="bad index_factory"):
        FaissBackend(None, index_factory="NoSuchIndex42").upsert(points(vectors[:2]))
    small = FaissBackend(tmp_path / "ivf", index_factory="IVF64,Flat")
    small.upsert(points(vectors[:10]))
    with pytest.raises(FaissIndexError, match="cannot train"):
        small.search(vectors[0])
    assert be.count() == 5  # nothing was half-written by the failed calls


def test_real_backbone_vectors_find_the_relevant_doc(encoder, scifact_slice, scifact_dense):
    ids, texts = zip(*scifact_slice["docs"].items())
    dense = scifact_dense  # the real backbone's vectors of the slice's docs (one pass per session)
    be = FaissBackend(None, meta=CollectionMeta(encoder.model_id, encoder.h, encoder.k, encoder.d))
    be.upsert([Point(i, {"text": t}, dense=v) for i, t, v in zip(ids, texts, dense)])
    qids = list(scifact_slice["queries"])[:20]
    q = encoder.encode_dense([scifact_slice["queries"][x] for x in qids], prefix=encoder.config.query_prefix)
    found = sum(bool(set(h.id for h in hits) & set(scifact_slice["qrels"][x]))
                for x, hits in zip(qids, be.search_batch(q, top_k=10)))
    assert found >= 14  # dense MiniLM finds a relevant SciFact abstract in the top 10 for most queries
