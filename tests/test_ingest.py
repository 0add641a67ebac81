"""End-to-end ingest with the shipped model: real SciFact docs, real Qdrant Edge, real qdrant-client :memory:."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from csr_adapter.corpus import read_corpus
from csr_adapter.ingest import IndexState, ingest_corpus, point_id
from csr_adapter.integrations.base import CollectionMeta, CollectionMismatchError
from csr_adapter.integrations.qdrant import open_qdrant
from csr_adapter.retrieval import Searcher as FallbackSearcher

N_QUERIES = 20


@pytest.fixture(scope="module")
def small_scifact(scifact_slice, tmp_path_factory):
    """The relevant docs of 20 SciFact test queries plus 30 others, one .txt file per doc."""
    qids = list(scifact_slice["queries"])[:N_QUERIES]
    rel = sorted({d for q in qids for d in scifact_slice["qrels"][q]})
    others = [d for d in scifact_slice["docs"] if d not in rel][:30]
    folder = tmp_path_factory.mktemp("scifact")
    for doc_id in rel + others:
        (folder / f"{doc_id}.txt").write_text(scifact_slice["docs"][doc_id], encoding="utf-8")
    return folder, {q: scifact_slice["queries"][q] for q in qids}, {q: scifact_slice["qrels"][q] for q in qids}


def meta_for(encoder, hybrid=False):
    return CollectionMeta(encoder.model_id, encoder.h, encoder.k, d=encoder.d if hybrid else None)


@pytest.fixture(scope="module")
def ingested(encoder, small_scifact, tmp_path_factory):
    folder = small_scifact[0]
    store = tmp_path_factory.mktemp("store")
    be = open_qdrant("sci", path=store, meta=meta_for(encoder, hybrid=True))
    report = ingest_corpus(encoder, be, read_corpus(folder), hybrid=True, progress=False)
    be.close()
    return store, report


def ranked_doc_ids(hits) -> list[str]:
    out = []
    for h in hits:
        if h.payload["doc_id"] not in out:
            out.append(h.payload["doc_id"])
    return out


def test_ingest_then_search_finds_the_relevant_documents(encoder, small_scifact, ingested):
    store, report = ingested
    assert report.files == report.documents == len(os.listdir(small_scifact[0]))
    assert report.written == report.chunks == report.points > report.documents  # long abstracts: 2+ chunks
    assert report.unchanged == report.deleted == 0 and report.skipped == []
    _, queries, qrels = small_scifact
    be = open_qdrant("sci", path=store, create=False)
    found = sparse_mrr = hybrid_found = 0
    dense = encoder.encode_dense(list(queries.values()))
    codes = encoder.sparsify(dense, encoder.k, role="query")
    searcher = FallbackSearcher(encoder, be)  # ranked as search ranks (the default head re-scores its best matches)
    for qid, code, vec in zip(queries, codes, dense):
        docs = ranked_doc_ids(searcher.answer_encoded(code, vec, 20).hits)[:5]
        found += any(d in qrels[qid] for d in docs)
        sparse_mrr += next((1 / r for r, d in enumerate(docs, 1) if d in qrels[qid]), 0)
        hybrid = ranked_doc_ids(be.hybrid_search(code, vec, top_k=20))[:5]
        hybrid_found += any(d in qrels[qid] for d in hybrid)
    be.close()
    assert found >= 0.8 * len(queries), f"relevant doc in top 5 for only {found}/{len(queries)} queries"
    assert hybrid_found >= found - 1
    assert sparse_mrr / len(queries) > 0.6


def test_reingest_unchanged_adds_nothing(encoder, small_scifact, ingested):
    store, first = ingested
    be = open_qdrant("sci", path=store, meta=meta_for(encoder, hybrid=True))
    again = ingest_corpus(encoder, be, read_corpus(small_scifact[0]), hybrid=True, progress=False)
    assert (again.written, again.deleted, again.pruned) == (0, 0, 0)
    assert again.unchanged == again.chunks == first.chunks and again.points == first.points
    assert again.encode_seconds == 0
    with pytest.raises(CollectionMismatchError):  # the same store without --hybrid is another config
        be.close()
        open_qdrant("sci", path=store, meta=meta_for(encoder))


def small_corpus(folder, n=6):
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(f"Document {i} is about topic number {i}: " + "cells " * (i + 1))
    (folder / "recs.jsonl").write_text('{"_id": "r1", "text": "first record", "lang": "en"}\n'
                                       '{"_id": "r2", "text": "second record", "lang": "de"}\n')


def sources(be) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pid, payload in be.scroll(["source"]):
        out.setdefault(os.path.basename(payload["source"]), set()).add(pid)
    return out


def test_changed_files_replace_and_prune_removes(encoder, tmp_path):
    folder = tmp_path / "docs"
    small_corpus(folder)
    be = open_qdrant("c", path=tmp_path / "store", meta=meta_for(encoder))
    first = ingest_corpus(encoder, be, read_corpus(folder), progress=False)
    assert first.written == first.points == 8
    before = sources(be)
    (folder / "doc1.txt").write_text("Document 1 now talks about something else entirely.")
    (folder / "doc2.txt").unlink()
    (folder / "new.txt").write_text("a brand new document")
    (folder / "recs.jsonl").write_text('{"_id": "r1", "text": "first record", "lang": "en"}\n')
    (folder / "doc3.txt").write_bytes(b"\x00 now binary")  # skipped: its points are kept
    second = ingest_corpus(encoder, be, read_corpus(folder), progress=False)
    after = sources(be)
    assert second.written == 2 and second.deleted == 2 and second.pruned == 0  # doc1 + new; old doc1, recs#r2
    assert after["doc1.txt"].isdisjoint(before["doc1.txt"]) and len(after["doc1.txt"]) == 1
    assert "recs.jsonl#r2" not in after and after["recs.jsonl#r1"] == before["recs.jsonl#r1"]
    assert after["doc2.txt"] == before["doc2.txt"] and after["doc3.txt"] == before["doc3.txt"]
    assert [s.reason for s in second.skipped] == ["binary file (NUL bytes)"]
    third = ingest_corpus(encoder, be, read_corpus(folder), prune=True, progress=False)
    assert third.written == 0 and third.pruned == 1 and "doc2.txt" not in sources(be)
    assert "doc3.txt" in sources(be)  # still on disk (unreadable now), so not pruned
    hit = be.search(encoder.encode_documents(["first record"])[0], top_k=1, filter={"meta.lang": "en"})
    assert hit[0].payload["doc_id"] == "r1"
    be.close()


def test_client_path_against_memory_mode(encoder, tmp_path):
    from qdrant_client import QdrantClient

    folder = tmp_path / "docs"
    small_corpus(folder)
    client = QdrantClient(":memory:")
    be = open_qdrant("c", client=client, meta=meta_for(encoder, hybrid=True))
    first = ingest_corpus(encoder, be, read_corpus(folder), hybrid=True, progress=False)
    again = ingest_corpus(encoder, be, read_corpus(folder), hybrid=True, progress=False)
    assert first.written == 8 and again.written == 0 and be.count() == 8
    edge = open_qdrant("c", path=tmp_path / "store", meta=meta_for(encoder, hybrid=True))
    ingest_corpus(encoder, edge, read_corpus(folder), hybrid=True, progress=False)
    assert dict(edge.scroll()) == dict(be.scroll())  # same ids and payloads on both engines
    dense = encoder.encode_dense([(folder / "doc4.txt").read_text()])  # a document's own text finds it
    code = encoder.sparsify(dense, encoder.k)[0]
    mem_hits, edge_hits = be.search(code, top_k=5), edge.search(code, top_k=5)
    assert [h.id for h in mem_hits] == [h.id for h in edge_hits] and mem_hits[0].payload["doc_id"] == "doc4"
    assert [h.score for h in mem_hits] == pytest.approx([h.score for h in edge_hits], abs=1e-5)
    assert all(h.score > 0 for h in mem_hits)
    assert be.hybrid_search(code, dense[0], top_k=3)[0].payload["doc_id"] == "doc4"
    edge.close()
    with pytest.raises(CollectionMismatchError, match="model_id"):
        open_qdrant("c", client=client, meta=CollectionMeta("another-model", encoder.h, encoder.k, d=encoder.d))


def test_point_ids_are_deterministic(tmp_path, encoder):
    folder = tmp_path / "docs"
    small_corpus(folder, 2)
    doc = read_corpus(folder).documents[0]
    assert point_id(doc.source, 0, "h") == point_id(doc.source, 0, "h") != point_id(doc.source, 1, "h")


def _points(be) -> dict[str, tuple]:
    ids = [pid for pid, _ in be.scroll([])]
    return {p.id: (p.payload, p.sparse) for p in be.retrieve(ids, with_vectors=True)}


def _open(backend: str, path, meta):
    if backend == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        from csr_adapter.integrations.milvus import open_milvus

        return open_milvus("c", path=path, meta=meta)
    return open_qdrant("c", path=path, meta=meta)


@pytest.mark.parametrize("backend", ["qdrant", "milvus"])
def test_kill_and_resume_equals_clean_run(encoder, small_scifact, tmp_path, backend):
    """kill -9 an ingest subprocess mid-way; resuming must end with exactly the clean run's points."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for f in sorted(small_scifact[0].iterdir())[:14]:
        (folder / f.name).write_text(f.read_text())
    corpus = read_corpus(folder)
    clean = _open(backend, tmp_path / "clean", meta_for(encoder))
    ingest_corpus(encoder, clean, corpus, batch_size=2, progress=False)
    total = clean.count()

    cmd = [sys.executable, "-c", "from csr_adapter.cli import main; main()", "ingest", str(folder),
           "--path", str(tmp_path / "killed"), "--collection", "c", "--batch-size", "2", "--backend", backend]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1",  # an empty vector cache: really encode
                                 "CSR_ADAPTER_CACHE": str(tmp_path / "cache")})
    seen = []

    def watch():
        buf = b""
        while chunk := proc.stderr.read1(256):
            buf = (buf + chunk)[-400:]
            seen.extend(int(n) for n in re.findall(rb"\| *(\d+)/\d+ \[", buf))
    threading.Thread(target=watch, daemon=True).start()
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not any(n >= 16 for n in seen):
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    killed = _open(backend, tmp_path / "killed", meta_for(encoder))
    partial = killed.count()
    assert 16 <= partial < total, f"kill landed at {partial}/{total} points"  # groups of 8 * batch_size
    resumed = ingest_corpus(encoder, killed, read_corpus(folder), batch_size=2, progress=False)
    assert resumed.written == total - partial and resumed.unchanged == partial
    a, b = _points(clean), _points(killed)
    assert a.keys() == b.keys() and len(a) == total
    for pid, (payload, sparse) in a.items():
        assert b[pid][0] == payload
        assert b[pid][1].indices.tolist() == sparse.indices.tolist()
        np.testing.assert_allclose(b[pid][1].values, sparse.values, atol=1e-5)
    state = IndexState.read(killed)
    assert sum(len(v) for v in state.points.values()) == total
    clean.close()
    killed.close()


def test_prune_keeps_points_under_an_unreadable_folder(encoder, tmp_path):
    """walk() reports a folder it cannot list as "unreadable directory"; prune must not treat its files as gone.
    (chmod 000 does not stop root, so the skip walk() would add is added here by hand.)"""
    from csr_adapter.corpus import Skip

    folder, sub = tmp_path / "docs", tmp_path / "docs" / "sub"
    sub.mkdir(parents=True)
    (folder / "a.txt").write_text("alpha document about enzymes")
    (sub / "b.txt").write_text("beta document about kinases")
    be = open_qdrant("p", path=tmp_path / "store", meta=meta_for(encoder))
    assert ingest_corpus(encoder, be, read_corpus(folder), progress=False).points == 2
    (sub / "b.txt").unlink()
    corpus = read_corpus(folder)
    corpus.skipped.append(Skip(str(sub), "unreadable directory (Permission denied)"))
    kept = ingest_corpus(encoder, be, corpus, prune=True, progress=False)
    assert (kept.pruned, kept.points) == (0, 2)
    gone = ingest_corpus(encoder, be, read_corpus(folder), prune=True, progress=False)  # readable and empty now
    assert (gone.pruned, gone.points) == (1, 1)
    be.close()


def read_corpus_unprivileged(folder):
    """``read_corpus(folder)`` as a user that file modes apply to: in-process, or as uid/gid 65534 in a
    subprocess when the tests run as root (root reads through any mode)."""
    import dataclasses
    import json

    from csr_adapter.corpus import Corpus, Document, Skip

    if os.geteuid() != 0:
        return read_corpus(folder)
    code = ("import dataclasses, json, sys; from csr_adapter.corpus import read_corpus; "
            "print(json.dumps(dataclasses.asdict(read_corpus(sys.argv[1]))))")
    import shutil

    setpriv = shutil.which("setpriv")  # util-linux; drops uid, gid and groups, then runs the reader
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot read as a user that file modes apply to")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
    probe = subprocess.run([*drop, "import csr_adapter.corpus"], capture_output=True, text=True, cwd="/", timeout=120)
    if probe.returncode != 0:  # a checkout (and its .venv) under a folder only root may enter, e.g. mktemp -d
        pytest.skip(f"uid 65534 cannot import this checkout: {probe.stderr.strip().splitlines()[-1][-200:]}")
    out = subprocess.run([*drop, code, str(folder)], capture_output=True, text=True, cwd="/", timeout=120)
    if out.returncode != 0 and "Permission denied" in out.stderr and "Traceback" not in out.stderr:
        pytest.skip(f"cannot run the reader unprivileged here: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr[-800:]
    data = json.loads(out.stdout)
    assert {f.name for f in dataclasses.fields(Corpus)} == set(data)
    return Corpus([Document(**d) for d in data["documents"]], data["files"], data["seen"],
                  [Skip(**s) for s in data["skipped"]], data["root"])


def test_prune_keeps_the_points_of_files_it_cannot_reach_and_says_why(encoder, tmp_path):
    """Issue 29.3: ``chmod 644 sub`` (listable, not searchable): its files were reported as "broken symlink"
    and pruned. They are "unreadable (Permission denied)" and keep their points; once readable and deleted,
    they are pruned."""
    import tempfile

    top = tempfile.mkdtemp(prefix="csr-prune-")  # reachable by the unprivileged reader (tmp_path is root's)
    try:
        os.chmod(top, 0o755)
        folder = os.path.join(top, "docs")
        sub = os.path.join(folder, "sub")
        os.makedirs(sub)
        for path, text in ((os.path.join(folder, "a.txt"), "alpha document about enzymes"),
                           (os.path.join(sub, "b.txt"), "beta document about kinases")):
            with open(path, "w") as f:
                f.write(text)
        be = open_qdrant("p", path=tmp_path / "store", meta=meta_for(encoder))
        assert ingest_corpus(encoder, be, read_corpus(folder), progress=False).points == 2
        os.chmod(sub, 0o644)
        corpus = read_corpus_unprivileged(folder)
        assert [(s.path, s.reason) for s in corpus.skipped] == [(os.path.join(sub, "b.txt"),
                                                                 "unreadable (Permission denied)")]
        kept = ingest_corpus(encoder, be, corpus, prune=True, progress=False)
        assert (kept.pruned, kept.points) == (0, 2)
        os.chmod(sub, 0o755)
        os.unlink(os.path.join(sub, "b.txt"))
        gone = ingest_corpus(encoder, be, read_corpus_unprivileged(folder), prune=True, progress=False)
        assert (gone.pruned, gone.points) == (1, 1)
        be.close()
    finally:
        os.chmod(os.path.join(top, "docs", "sub"), 0o755)
        import shutil

        shutil.rmtree(top)


def test_prune_removes_only_files_that_are_not_there(encoder, tmp_path):
    """A file skipped for any reason while it is still there (here: it became a symlink out of the folder)
    is not pruned; a deleted one is."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha document about enzymes")
    (folder / "b.txt").write_text("beta document about kinases")
    (tmp_path / "outside.txt").write_text("gamma document about lipids")
    be = open_qdrant("p", path=tmp_path / "store", meta=meta_for(encoder))
    assert ingest_corpus(encoder, be, read_corpus(folder), progress=False).points == 2
    (folder / "b.txt").unlink()
    (folder / "b.txt").symlink_to(tmp_path / "outside.txt")
    kept = ingest_corpus(encoder, be, read_corpus(folder), prune=True, progress=False)
    assert (kept.pruned, kept.points) == (0, 2)
    (folder / "b.txt").unlink()
    gone = ingest_corpus(encoder, be, read_corpus(folder), prune=True, progress=False)
    assert (gone.pruned, gone.points) == (1, 1)
    be.close()
