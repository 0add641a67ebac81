"""Qdrant backends on real engines: Qdrant Edge shards in temp dirs and qdrant-client's ``:memory:`` mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

from csr_adapter import SparseEmbedding, SparseEmbeddings
from csr_adapter.integrations.base import Backend, BackendError, CollectionMeta, CollectionMismatchError, Point
from csr_adapter.integrations.qdrant import open_qdrant
from csr_adapter.integrations.qdrant_edge import EdgeBackend
from csr_adapter.integrations.registry import open_backend, register_backend

H, K, D = 64, 4, 8
META = CollectionMeta("model-a", H, K)
HYBRID = CollectionMeta("model-a", H, K, d=D)


def pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}"))


def code(indices, values) -> SparseEmbedding:
    v = np.asarray(values, np.float32)
    return SparseEmbedding(np.asarray(indices, np.int32), v / np.linalg.norm(v), H)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(200, H)).astype(np.float32)
    codes = SparseEmbeddings.from_dense(np.where(dense > np.sort(dense, axis=1)[:, [-K]], dense, 0) * (dense > 0))
    vecs = rng.normal(size=(200, D)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return codes, vecs


def make_points(data, n=200, dense=False):
    codes, vecs = data
    return [Point(pid(i), {"i": i, "source": f"f{i % 5}.txt", "meta": {"lang": "en" if i % 2 else "fr"}},
                  codes[i], vecs[i] if dense else None) for i in range(n)]


@pytest.fixture(params=["edge", "memory"])
def kind(request):
    return request.param


def open_kind(kind, tmp_path, meta=META, **kw):
    if kind == "edge":
        return open_qdrant("c", path=tmp_path, meta=meta, **kw)
    from qdrant_client import QdrantClient

    client = kw.pop("client", None) or QdrantClient(":memory:")
    return open_qdrant("c", client=client, meta=meta, **kw)


def test_contract_upsert_search_delete_scroll(kind, tmp_path, data):
    be = open_kind(kind, tmp_path)
    assert isinstance(be, Backend)
    be.upsert(make_points(data))
    assert be.count() == 200
    codes = data[0]
    hits = be.search(codes[7], top_k=5)
    assert hits[0].id == pid(7) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["i"] == 7 and hits[0].served_by == "sparse"
    brute = codes.dot(codes[7:8])[:, 0]
    expected = [pid(i) for i in np.argsort(-brute, kind="stable")[:10] if brute[i] > 0]
    got = be.search(codes[7], top_k=10)
    assert {h.id for h in got} == set(expected[:len(got)]) or [h.score for h in got] == pytest.approx(
        sorted(brute[brute > 0], reverse=True)[:len(got)], abs=1e-5)
    be.upsert(make_points(data, 3))  # re-upsert by id: no duplicates
    assert be.count() == 200
    be.delete([pid(0), pid(1), "00000000-0000-0000-0000-000000000000"])
    assert be.count() == 198
    rows = dict(be.scroll(["source"]))
    assert len(rows) == 198 and rows[pid(2)] == {"source": "f2.txt"}
    assert be.info()["points"] == 198 and be.info()["meta"]["model_id"] == "model-a"
    be.close()


def test_sparse_hits_have_positive_scores_only(kind, tmp_path):
    be = open_kind(kind, tmp_path)
    be.upsert([Point(pid(0), {"i": 0}, code([1, 2], [1, 1])), Point(pid(1), {"i": 1}, code([3, 4], [1, 1]))])
    assert [h.id for h in be.search(code([1], [1]), top_k=10)] == [pid(0)]
    assert be.search(code([9], [1]), top_k=10) == []
    assert be.search(SparseEmbedding(np.zeros(0, np.int32), np.zeros(0, np.float32), H)) == []
    be.close()


def test_duplicate_indices_are_merged(kind, tmp_path):
    be = open_kind(kind, tmp_path)
    dup = SparseEmbedding(np.array([5, 5, 2], np.int32), np.array([0.3, 0.3, 0.8], np.float32), H)
    be.upsert([Point(pid(0), {}, dup)])
    (p,) = be.retrieve([pid(0)], with_vectors=True)
    assert p.sparse.indices.tolist() == [2, 5] and p.sparse.values == pytest.approx([0.8, 0.6])
    be.close()


def test_filters_equality_any_of_and_nested(kind, tmp_path, data):
    be = open_kind(kind, tmp_path)
    be.upsert(make_points(data))
    q = data[0][10]
    assert {h.payload["source"] for h in be.search(q, 50, filter={"source": "f3.txt"})} <= {"f3.txt"}
    both = be.search(q, 200, filter={"source": ["f1.txt", "f2.txt"]})
    assert both and {h.payload["source"] for h in both} <= {"f1.txt", "f2.txt"}
    assert all(h.payload["meta"]["lang"] == "en" for h in be.search(q, 50, filter={"meta.lang": "en"}))
    assert all(h.payload["i"] == 10 for h in be.search(q, 50, filter={"i": [10, "10"]}))
    be.close()


def test_hybrid_rrf_and_dense_search(kind, tmp_path, data):
    be = open_kind(kind, tmp_path, meta=HYBRID)
    be.upsert(make_points(data, dense=True))
    codes, vecs = data
    assert be.search(vecs[3], top_k=1)[0].id == pid(3)
    hits = be.hybrid_search(codes[3], vecs[3], top_k=5, rrf_k=60)
    assert hits[0].id == pid(3) and hits[0].served_by == "hybrid"
    assert hits[0].score == pytest.approx(2 / 60, rel=1e-3)  # first in both lists: Qdrant counts ranks from 0
    flt = be.hybrid_search(codes[3], vecs[3], top_k=5, filter={"source": "f1.txt"})
    assert flt and all(h.payload["source"] == "f1.txt" for h in flt)
    be.close()


def test_sparse_only_collection_refuses_dense(kind, tmp_path, data):
    be = open_kind(kind, tmp_path)
    with pytest.raises(BackendError, match="no dense vector"):
        be.upsert(make_points(data, 1, dense=True))
    with pytest.raises(BackendError, match="no dense vector"):
        be.search(data[1][0], top_k=3)
    be.close()


def test_meta_mismatch_refused_then_recreate(tmp_path, data):
    be = open_qdrant("c", path=tmp_path, meta=META)
    be.upsert(make_points(data, 10))
    be.close()
    for other in (CollectionMeta("model-b", H, K), CollectionMeta("model-a", H, K + 1), HYBRID,
                  CollectionMeta("model-a", H, K, idf=True)):
        with pytest.raises(CollectionMismatchError, match="recreate=True") as err:
            open_qdrant("c", path=tmp_path, meta=other)
        assert "\n" not in str(err.value)
    be = open_qdrant("c", path=tmp_path, create=False)  # read-only open takes the stored meta
    assert be.meta == META and be.count() == 10
    be.close()
    be = open_qdrant("c", path=tmp_path, meta=CollectionMeta("model-b", H, K, idf=True), recreate=True)
    assert be.count() == 0 and be.meta.idf
    be.upsert(make_points(data, 20))
    assert be.search(data[0][4], top_k=1)[0].id == pid(4)
    be.close()


def test_memory_meta_mismatch_refused(data):
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    open_qdrant("c", client=client, meta=META).upsert(make_points(data, 5))
    with pytest.raises(CollectionMismatchError, match="model_id model-a != model-b"):
        open_qdrant("c", client=client, meta=CollectionMeta("model-b", H, K))
    be = open_qdrant("c", client=client, meta=CollectionMeta("model-b", H, K), recreate=True)
    assert be.count() == 0
    client.create_collection("foreign", vectors_config={})
    with pytest.raises(BackendError, match="not created by csr-adapter"):
        open_qdrant("foreign", client=client, meta=META)


def test_persisted_and_reopened(tmp_path, data):
    be = EdgeBackend(tmp_path / "c", meta=META)
    be.upsert(make_points(data))
    be.close()
    be = EdgeBackend(tmp_path / "c", create=False)
    assert be.count() == 200 and be.search(data[0][9], top_k=1)[0].id == pid(9)
    with pytest.raises(BackendError, match="open in another process"):
        EdgeBackend(tmp_path / "c", create=False)
    be.close()
    be = EdgeBackend(tmp_path / "c", create=False, threads=1)  # --threads reaches Edge's search pool
    assert json.loads((tmp_path / "c" / "edge_config.json").read_text())["max_search_threads"] == 1
    assert be.count() == 200
    be.close()


def test_missing_collection_and_bad_names(tmp_path):
    with pytest.raises(BackendError, match="no collection here"):
        open_qdrant("nope", path=tmp_path, create=False)
    with pytest.raises(BackendError, match="invalid collection name"):
        open_qdrant("../x", path=tmp_path, meta=META)
    with pytest.raises(BackendError, match="exclusive"):
        open_qdrant("c", path=tmp_path, url="http://localhost:6333", meta=META)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "keep.txt").write_text("user data")
    with pytest.raises(BackendError, match="not a csr-adapter collection"):
        open_qdrant("junk", path=tmp_path, meta=META, recreate=True)
    assert (tmp_path / "junk" / "keep.txt").exists()


def test_unreachable_url_is_one_line_error():
    with pytest.raises(BackendError, match="cannot reach Qdrant at http://127.0.0.1:9") as err:
        open_qdrant("c", url="http://127.0.0.1:9", meta=META, timeout=2)
    assert "\n" not in str(err.value)


def test_registry_is_lazy_and_pluggable(tmp_path):
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        open_backend("nope")
    be = open_backend("qdrant", "reg", path=tmp_path, meta=META)
    assert be.name == "qdrant-edge" and (tmp_path / "reg").is_dir()
    be.close()
    register_backend("qdrant-alias", "qdrant:open_qdrant")
    be = open_backend("qdrant-alias", "reg", path=tmp_path)
    assert be.meta == META
    be.close()
    with pytest.raises(ValueError):
        register_backend("x", "no-colon")


def test_default_path_under_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    be = open_backend("qdrant", meta=META)
    assert be.path.resolve() == (tmp_path / ".csr-adapter" / "qdrant" / "csr").resolve()
    be.close()


def test_disk_full_guard_refuses_before_writing(tmp_path, data):
    be = EdgeBackend(tmp_path / "c", meta=META)
    be.upsert(make_points(data, 10))
    be.min_free = shutil.disk_usage(tmp_path).free + 1e12  # as if the disk were full
    with pytest.raises(BackendError, match="disk full"):
        be.upsert(make_points(data, 50))
    be.min_free = 0
    assert be.count() == 10
    be.close()


def _mount_tmpfs(path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_read_only_storage_dir(tmp_path):
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "ro,size=1m")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root without mount: cannot make a read-only directory")
        ro.mkdir()
        ro.chmod(0o555)
    try:
        with pytest.raises(BackendError, match="not writable"):
            open_qdrant("c", path=ro, meta=META)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)


def test_real_disk_full_during_ingest_keeps_points(tmp_path, data):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=160m"):
        pytest.skip("needs root and mount to make a small filesystem")
    try:
        be = EdgeBackend(disk / "c", meta=META)
        be.upsert(make_points(data, 100))
        free = shutil.disk_usage(disk).free
        filler = disk / "filler"
        with open(filler, "wb") as f:
            f.truncate(0)
            os.posix_fallocate(f.fileno(), 0, free - 64 * 1024 * 1024)  # leave 64 MB < the 128 MB guard
        with pytest.raises(BackendError, match="disk full"):
            be.upsert(make_points(data, 200))
        assert be.count() == 100
        filler.unlink()
        be.upsert(make_points(data, 200))
        assert be.count() == 200
        be.close()
        be = EdgeBackend(disk / "c", create=False)
        assert be.count() == 200
        be.close()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
