"""`export`: embedded Qdrant Edge <-> a Qdrant server (qdrant-client's local mode standing in for it), on real
SciFact abstracts with a real adapted model: the copy answers the same top-10, re-runs converge, bad input is one
line and loses nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli

pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")

URL = "http://qdrant.test:6333"  # a --url that the CLI maps to an in-process client (see cli.options.server_client)
N_DOCS = 24


def run(*args, client=None, env: dict | None = None, clients: dict | None = None):
    clients = {**({URL: client} if client is not None else {}), **(clients or {})}
    obj = {"qdrant_clients": clients} if clients else None
    return CliRunner().invoke(cli, [str(a) for a in args], obj=obj, env={"QDRANT_URL": None, **(env or {})})


@pytest.fixture(scope="module")
def source(tmp_path_factory, scifact_slice, encoder):
    """An embedded collection 'docs' (hybrid, IDF) over 24 real abstracts with a head adapted to them."""
    from csr_adapter import open_collection
    from csr_adapter.training.adapt import AdaptConfig

    root = tmp_path_factory.mktemp("export")
    folder = root / "docs"
    folder.mkdir()
    for doc_id, text in list(scifact_slice["docs"].items())[:N_DOCS]:
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    store = root / "store"
    col = open_collection("docs", path=store, encoder=encoder, device="cpu")
    report = col.ingest(folder, adapt=True, hybrid=True, idf=True, progress=False,
                        adapt_config=AdaptConfig(min_steps=25, max_steps=25))
    assert report.adapt["adapted"] and report.points > N_DOCS  # some abstracts span two chunks
    return store, report.adapt["model_id"], report.points


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh $CSR_ADAPTER_HOME: where server collections' models are stored on this machine."""
    monkeypatch.setenv("CSR_ADAPTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    return tmp_path / "home"


def points(col) -> dict[str, tuple]:
    """Every point of a collection: id -> (payload, sparse indices, sparse values, dense vector)."""
    be = col.open_backend()
    try:
        ids = [pid for pid, _ in be.scroll([])]
        return {p.id: (p.payload, p.sparse.indices.tolist(), np.asarray(p.sparse.values, np.float32).tolist(),
                       None if p.dense is None else np.asarray(p.dense, np.float32).tolist())
                for p in be.retrieve(ids, with_vectors=True)}
    finally:
        be.close()


def top10(col, queries: list[str]) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in hits] for hits in col.search_batch(queries, top_k=10, fallback=False)]


def assert_same_answers(a, b, queries) -> None:
    left, right = top10(a, queries), top10(b, queries)
    assert sum(len(r) for r in left) >= 10 * len(queries) // 2  # the test queries do find things
    for x, y in zip(left, right):
        assert [i for i, _ in x] == [i for i, _ in y]
        assert [s for _, s in x] == pytest.approx([s for _, s in y], rel=1e-4, abs=1e-6)


def test_export_to_a_server_answers_the_same_top10_with_no_model_flag(source, home, encoder, scifact_slice):
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    store, model_id, n = source
    client = QdrantClient(":memory:")
    report = export_collection(open_collection("docs", path=store), open_collection("docs", client=client),
                               progress=False)
    assert (report.points, report.written, report.unchanged, report.extra) == (n, n, 0, 0)
    assert report.model_dir == str(home / "models" / model_id)
    assert (home / "models" / model_id / "head.safetensors").is_file()
    assert report.target["meta"] == report.source["meta"] and report.target["meta"]["idf"]

    embedded = open_collection("docs", path=store, share=encoder, device="cpu")
    server = open_collection("docs", client=client, share=encoder, device="cpu")  # no model given
    assert server.encoder.model_id == model_id != encoder.model_id
    assert points(server) == points(embedded)  # ids, payloads, sparse codes and dense vectors
    assert_same_answers(embedded, server, list(scifact_slice["queries"].values()))

    again = export_collection(open_collection("docs", path=store), open_collection("docs", client=client),
                              progress=False)
    assert (again.written, again.unchanged, again.target["points"]) == (0, n, n)


def test_a_partial_or_stale_target_converges_to_exactly_the_source(source, home):
    """What a killed export (or an older export) leaves behind: half the points, one with an old payload, one
    with another code, one the source no longer has. A re-run rewrites exactly what differs; --prune the rest."""
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection
    from csr_adapter.integrations.base import Point
    from csr_adapter.sparse import SparseEmbedding

    store, model_id, n = source
    embedded = open_collection("docs", path=store)
    want = points(embedded)
    be = embedded.open_backend()
    ids = sorted(want)
    half = be.retrieve(ids[: n // 2], with_vectors=True)
    meta = be.meta
    be.close()
    client = QdrantClient(":memory:")
    server = open_collection("docs", client=client)
    target = server.open_backend(meta=meta)
    half[0].payload = {**half[0].payload, "text": "an older version"}
    code = half[1].sparse
    half[1].sparse = SparseEmbedding(code.indices[:2], code.values[:2], code.dim)
    gone = Point("00000000-0000-4000-8000-000000000000", {"text": "removed from the source"}, code, half[1].dense)
    target.upsert([*half, gone])
    target.close()

    report = export_collection(embedded, server, batch_size=7, progress=False)
    assert (report.written, report.unchanged, report.extra, report.pruned) == (n - n // 2 + 2, n // 2 - 2, 1, 0)
    assert set(points(server)) == set(want) | {gone.id}  # kept without --prune
    pruned = export_collection(embedded, server, prune=True, progress=False)
    assert (pruned.written, pruned.extra, pruned.pruned) == (0, 1, 1)
    assert points(server) == want


def test_backup_from_a_server_into_the_embedded_store(source, home, encoder, scifact_slice, tmp_path):
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    store, model_id, n = source
    client = QdrantClient(":memory:")
    export_collection(open_collection("docs", path=store), open_collection("docs", client=client), progress=False)
    backup = tmp_path / "backup"
    report = export_collection(open_collection("docs", client=client), open_collection("kept", path=backup),
                               progress=False)
    assert (report.written, report.target["points"]) == (n, n) and report.source["engine"] == "qdrant-server"
    assert report.model_dir == str(backup / ".models" / model_id)  # the backup folder is self-contained
    restored = open_collection("kept", path=backup, share=encoder, device="cpu")
    assert restored.encoder.model_id == model_id
    assert points(restored) == points(open_collection("docs", path=store))
    queries = list(scifact_slice["queries"].values())[:20]
    assert_same_answers(open_collection("docs", path=store, share=encoder, device="cpu"), restored, queries)


def test_cli_export_then_search_by_url_and_back(source, home, tmp_path):
    """The commands a user runs: export to --url, search --url with no --model, back up with --from-url."""
    from qdrant_client import QdrantClient

    store, model_id, n = source
    client = QdrantClient(":memory:")
    out = run("export", "--path", store, "--collection", "docs", "--url", URL, "--no-progress", client=client)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith(f"exported {n} points from qdrant-edge {store / 'docs'} / docs to qdrant-server")
    assert f"written    {n} points (0 already there)" in out.output and f"model      {model_id} stored in" in out.output

    query = "What causes lung cancer?"
    by_url = run("search", query, "--url", URL, "--collection", "docs", "--json", "--no-fallback", "--top-k", "10",
                 client=client)
    assert by_url.exit_code == 0, by_url.output
    local = run("search", query, "--path", store, "--collection", "docs", "--json", "--no-fallback", "--top-k", "10")
    hits = json.loads(by_url.output)
    assert len(hits) == 10 and [h["id"] for h in hits] == [h["id"] for h in json.loads(local.output)]

    again = run("export", "--path", store, "--collection", "docs", "--url", URL, "--json", client=client)
    assert json.loads(again.output)["written"] == 0

    # a backup into the default embedded store; QDRANT_URL (the server search uses) is not a second target
    back = run("export", "--from-url", URL, "--collection", "docs", "--json", client=client,
               env={"QDRANT_URL": "http://elsewhere.invalid:6333"})
    assert back.exit_code == 0, back.output
    data = json.loads(back.output)
    assert (data["written"], data["target"]["engine"], data["target"]["points"]) == (n, "qdrant-edge", n)
    assert data["target"]["path"] == str((home / "qdrant" / "docs").resolve())
    restored = run("search", query, "--collection", "docs", "--json", "--no-fallback", "--top-k", "10")
    assert [h["id"] for h in json.loads(restored.output)] == [h["id"] for h in hits]

    # server to server, under another name
    url2, other = "http://qdrant-2.test:6333", QdrantClient(":memory:")
    moved = run("export", "--from-url", URL, "--url", url2, "--collection", "docs", "--to-collection", "copy",
                "--json", clients={URL: client, url2: other})
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["written"] == n and other.count("copy").count == n
    by_url2 = run("search", query, "--url", url2, "--collection", "copy", "--json", "--no-fallback", "--top-k", "10",
                  clients={url2: other})
    assert [h["id"] for h in json.loads(by_url2.output)] == [h["id"] for h in hits]


def test_cli_info_by_url_reads_the_exported_collection(source, home):
    """`info --collection --url` goes through the in-process client too: the copy's points, meta, model and fit."""
    from qdrant_client import QdrantClient

    store, model_id, n = source
    client = QdrantClient(":memory:")
    assert run("export", "--path", store, "--collection", "docs", "--url", URL, "--no-progress",
               client=client).exit_code == 0
    by_url = run("info", "--collection", "docs", "--url", URL, "--device", "cpu", "--json", client=client)
    assert by_url.exit_code == 0, by_url.output
    local = run("info", "--collection", "docs", "--path", store, "--device", "cpu", "--json")
    server, embedded = json.loads(by_url.output), json.loads(local.output)
    assert (server["points"], server["meta"]["model_id"], server["adapted"]) == (n, model_id, True)
    assert server["model_dir"] == str(home / "models" / model_id) and server["meta"] == embedded["meta"]
    assert server["fit"]["recon_nmse"] == pytest.approx(embedded["fit"]["recon_nmse"], rel=1e-4)
    text = run("info", "--collection", "docs", "--url", URL, "--device", "cpu", client=client)
    assert text.exit_code == 0 and text.output.startswith(f"collection   docs ({n} points"), text.output
    missing = run("info", "--collection", "nope", "--url", URL, "--device", "cpu", client=client)
    one_line_error(missing, "'nope' does not exist")


def one_line_error(result, *phrases: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_bad_input_is_one_line_and_loses_nothing(source, home, tmp_path, encoder):
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.integrations.base import CollectionMeta, Point

    store, model_id, n = source
    empty = QdrantClient(":memory:")
    one_line_error(run("export", "--path", store, "--collection", "nope", "--url", URL, client=empty),
                   "no collection here")
    assert not empty.get_collections().collections  # nothing created on the target
    one_line_error(run("export", "--path", store, "--collection", "docs", "--url", "http://127.0.0.1:9"),
                   "cannot reach Qdrant at http://127.0.0.1:9")
    one_line_error(run("export", "--from-url", "http://127.0.0.1:9", "--collection", "docs", "--path", tmp_path / "b"),
                   "cannot reach Qdrant")
    assert not (tmp_path / "b" / "docs").exists()  # nothing created for a source that was never read

    client = QdrantClient(":memory:")  # the target holds a collection of that name, built with another k
    other_meta = CollectionMeta(model_id, encoder.h, 4, d=encoder.d)
    other = open_collection("docs", client=client).open_backend(meta=other_meta)
    code = encoder.encode_documents(["a point of the other collection"])[0]
    other.upsert([Point("00000000-0000-4000-8000-000000000001", {"text": "theirs"}, code)])
    other.close()
    one_line_error(run("export", "--path", store, "--collection", "docs", "--url", URL, client=client),
                   "another model or vector config", "k 4 != 8", "--recreate")
    assert open_collection("docs", client=client).count() == 1  # the target's own point is untouched
    assert open_collection("docs", path=store).count() == n  # and the source too
    recreated = run("export", "--path", store, "--collection", "docs", "--url", URL, "--recreate", "--json",
                    client=client)
    assert recreated.exit_code == 0 and json.loads(recreated.output)["extra"] == 0  # --recreate: theirs is gone
    assert open_collection("docs", client=client).count() == n

    usage = run("export", "--path", store)
    assert usage.exit_code == 2 and "give --url URL" in usage.output
    same = run("export", "--from-url", URL, "--url", URL, client=client)
    assert same.exit_code == 2 and "--to-collection" in same.output


def synthetic_source(path, encoder, n: int, seed: int = 0):
    """An embedded collection of ``n`` points with k = 8 codes over the 4,096 latents, skewed like real codes
    (no backbone pass: the size tests stay short), recorded as built with the shipped model; and a code maker."""
    import uuid

    from csr_adapter import open_collection
    from csr_adapter.integrations.base import CollectionMeta, Point
    from csr_adapter.sparse import SparseEmbedding

    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, encoder.h + 1) ** 0.8

    def code() -> SparseEmbedding:
        idx = np.sort(rng.choice(encoder.h, 8, replace=False, p=weights / weights.sum())).astype(np.int32)
        val = rng.random(8).astype(np.float32)
        return SparseEmbedding(idx, val / np.linalg.norm(val), encoder.h)

    source = open_collection("big", path=path)
    be = source.open_backend(meta=CollectionMeta(encoder.model_id, encoder.h, 8))
    be.upsert([Point(str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))), {"text": f"chunk {i}", "source": f"f{i // 3}"},
                     code()) for i in range(n)])
    be.close()
    return source, code


def test_ten_thousand_real_points_move_and_answer_the_same_top10(encoder, home, tmp_path):
    """The issue's goal on real parts: 10,000 real texts (BANKING77 train utterances) ingested through the real
    backbone and the shipped model (k = 8, hybrid) into the embedded store, exported to the server stand-in; a
    re-run writes 0 (every point identical) and each of 50 real test utterances gets the same top-10 (ids and
    scores) from both. (Dense top-10s are not compared: at this size Qdrant
    Edge's optimizer builds an HNSW index for them, approximate and built in parallel, so an order can vary.)"""
    import gzip

    from conftest import BANKING77
    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    def texts(split: str, n: int) -> list[str]:
        with gzip.open(BANKING77 / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            return [json.loads(line)["text"] for line, _ in zip(f, range(n))]

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "banking.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n"
                                                  for i, t in enumerate(texts("train", 10_000))), encoding="utf-8")
    source = open_collection("big", path=tmp_path / "store", encoder=encoder, device="cpu")
    assert source.ingest(folder, adapt=False, hybrid=True, progress=False, batch_size=128).points == 10_000
    client = QdrantClient(":memory:")
    server = open_collection("big", client=client, encoder=encoder, device="cpu")
    report = export_collection(source, server, progress=False)
    assert (report.written, report.target["points"], report.model_dir) == (10_000, 10_000, None)  # shipped model
    again = export_collection(source, server, progress=False)
    assert (again.written, again.unchanged) == (0, 10_000)  # every payload, code and dense vector is identical
    assert_same_answers(source, server, texts("test", 50))  # text -> query code -> each store's top-10


def test_kill_9_mid_export_and_rerun_gives_exactly_the_source(encoder, home, tmp_path):
    """`csr-adapter export` in a subprocess (the server: qdrant-client's on-disk local mode, which survives the
    process) killed with SIGKILL part-way; the re-run writes only the rest and ends with exactly the source."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    from qdrant_client import QdrantClient

    from csr_adapter import open_collection
    from csr_adapter.export import export_collection

    total = 1000
    source, _ = synthetic_source(tmp_path / "store", encoder, total)
    server_dir = tmp_path / "server"
    script = ("import sys; from qdrant_client import QdrantClient; from csr_adapter.cli import cli; "
              f"cli.main(sys.argv[1:], obj={{'qdrant_clients': {{{URL!r}: QdrantClient(path={str(server_dir)!r})}}}})")
    cmd = [sys.executable, "-c", script, "export", "--path", str(tmp_path / "store"), "--collection", "big",
           "--url", URL, "--batch-size", "20"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=os.environ.copy())
    seen: list[int] = []

    def watch() -> None:
        buf = b""
        while chunk := proc.stderr.read1(256):
            buf = (buf + chunk)[-400:]
            seen.extend(int(n) for n in re.findall(rb"\| *(\d+)/\d+ \[", buf))
    threading.Thread(target=watch, daemon=True).start()
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not any(n >= 200 for n in seen):
        time.sleep(0.02)
    assert proc.poll() is None, "export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    client = QdrantClient(path=str(server_dir))
    try:
        target = open_collection("big", client=client)
        partial = target.count()
        assert 200 <= partial < total, f"kill landed at {partial}/{total} points"
        resumed = export_collection(source, target, progress=False)
        assert (resumed.written, resumed.unchanged) == (total - partial, partial)
        assert points(target) == points(source)
    finally:
        client.close()


def test_a_model_missing_here_is_refused_before_anything_is_written_or_given_with_model(source, home, tmp_path):
    import shutil

    from qdrant_client import QdrantClient

    store, model_id, n = source
    bare = tmp_path / "bare"
    shutil.copytree(store, bare, ignore=shutil.ignore_patterns(".models"))  # the store without its model
    client = QdrantClient(":memory:")
    missing = run("export", "--path", bare, "--collection", "docs", "--url", URL, client=client)
    one_line_error(missing, f"built with model {model_id}, which is not stored locally", "--model DIR")
    assert not client.get_collections().collections and not (home / "models").exists()
    given = run("export", "--path", bare, "--collection", "docs", "--url", URL, "--model", store / ".models" / model_id,
                "--json", client=client)
    assert given.exit_code == 0, given.output
    assert json.loads(given.output)["written"] == n and (home / "models" / model_id / "config.json").is_file()
    wrong = run("export", "--path", bare, "--collection", "docs", "--url", URL, "--model", tmp_path / "nope")
    assert wrong.exit_code == 2  # not a directory: a usage error
