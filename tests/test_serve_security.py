"""Hostile input against a live server (issue 15): bad requests in a shared micro-batch, Host checks
(DNS rebinding), stalled uploads, server paths in /search hits, and the API key kept out of ``ps``."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.cli.serve import read_api_key
from csr_adapter.server import ServeConfig, create_app
from csr_adapter.server.batching import MicroBatcher
from csr_adapter.server.collections import open_collections
from csr_adapter.server.middleware import host_of, normalize_host
from csr_adapter.server.testing import serve_in_thread

LONE = b'{"inputs": ["fine text", "bad \\ud800 text"]}'  # JSON escape of a lone surrogate


def assert_json_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "error_type"} and "Traceback" not in response.text
    assert error_type is None or body["error_type"] == error_type
    return body


@pytest.fixture(scope="module")
def server(encoder):
    config = ServeConfig(max_batch_size=64, max_wait_ms=50, warmup=False, body_timeout_s=0.5)
    with serve_in_thread(create_app(encoder, config=config)) as url:
        yield url


# -- one bad request never fails its micro-batch -------------------------------------------------------
def test_lone_surrogate_fails_only_its_own_request(server):
    def call(i: int) -> httpx.Response:
        if i % 4 == 0:
            body = LONE if i % 8 == 0 else b'{"query": "x\\udfff"}'
            path = "/embed_sparse" if i % 8 == 0 else "/search"
            return httpx.post(server + path, content=body, headers={"content-type": "application/json"}, timeout=60)
        return httpx.post(server + "/embed_sparse", json={"inputs": [f"well formed text {i}", "another"]},
                          timeout=60)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(call, range(32)))
    for i, r in enumerate(responses):
        if i % 4 == 0:
            body = assert_json_error(r, 422, "Validation")
            assert "surrogate" in body["error"]
        else:
            assert r.status_code == 200, r.text
            assert len(r.json()) == 2 and all(r.json())


def test_odd_filter_key_is_a_422_not_a_500(server):
    body = b'{"query": "x", "filter": {"\\ud800": {"a": 1}}}'
    response = httpx.post(server + "/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (422, 503) and "error" in response.json()


async def test_a_failed_batch_is_rerun_one_request_at_a_time():
    def process(items):
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [2 * x for x in items]

    batcher = MicroBatcher(process, max_batch_size=64, max_wait_ms=50)
    await batcher.start()
    try:
        import asyncio

        results = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, -1, 3)), return_exceptions=True)
    finally:
        await batcher.stop()
    assert results[:2] == [2, 4] and results[3] == 6 and isinstance(results[2], ValueError)


# -- Host header (DNS rebinding) ------------------------------------------------------------------------
def test_host_names_are_normalised():
    assert host_of(b"LocalHost:8080") == "localhost" and host_of(b"[::1]:80") == "[::1]"
    assert host_of(b"127.0.0.1") == "127.0.0.1" and host_of(b"example.org.") == "example.org"
    assert normalize_host("::1") == "[::1]"


def test_only_allowed_hosts_are_served(server):
    port = urlsplit(server).port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil.example"):
        body = assert_json_error(httpx.get(server + "/info", headers={"Host": host}), 421, "Misdirected")
        assert "--allowed-host" in body["error"]
        posted = httpx.post(server + "/search", json={"query": "x"}, headers={"Host": host})
        assert_json_error(posted, 421, "Misdirected")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert httpx.get(server + "/info", headers={"Host": host}).status_code == 200


def test_allowed_hosts_are_configurable(encoder):
    config = ServeConfig(warmup=False, allowed_hosts=("api.internal",))
    with serve_in_thread(create_app(encoder, config=config)) as url:
        assert httpx.get(url + "/health", headers={"Host": "api.internal:443"}).status_code == 200
        assert_json_error(httpx.get(url + "/health"), 421)  # 127.0.0.1 was not listed
    with serve_in_thread(create_app(encoder, config=ServeConfig(warmup=False, allowed_hosts=("*",)))) as url:
        assert httpx.get(url + "/health", headers={"Host": "anything"}).status_code == 200


def test_serve_cli_has_the_security_options():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--allowed-host", "--api-key-file", "--body-timeout", "--source-root"):
        assert option in result.output


# -- stalled uploads ------------------------------------------------------------------------------------
def test_a_stalled_body_gets_408_and_the_connection_closes(server):
    url = urlsplit(server)
    started = time.monotonic()
    socks = []
    for _ in range(5):
        s = socket.create_connection((url.hostname, url.port), timeout=10)
        s.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\": ")
        socks.append(s)
    for s in socks:
        data = b""
        while chunk := s.recv(65536):  # the server answers, then closes
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data
        assert json.loads(body)["error_type"] == "RequestTimeout"
    assert time.monotonic() - started < 8
    assert httpx.post(server + "/embed", json={"inputs": "still serving"}).status_code == 200


# -- no absolute server paths in /search ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    pytest.importorskip("qdrant_edge")
    root = tmp_path_factory.mktemp("served")
    corpus, store = root / "docs", root / "store"
    (corpus / "sub dir").mkdir(parents=True)
    (corpus / "vitamin.txt").write_text("Vitamin D supplementation lowers the risk of bone fractures.")
    (corpus / "sub dir" / "notes#1.jsonl").write_text(
        json.dumps({"id": "q1", "text": "Qdrant stores sparse vectors in an inverted index."}) + "\n")
    result = CliRunner().invoke(cli, ["ingest", str(corpus), "--path", str(store), "--collection", "docs",
                                      "--with-fallback", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return root


def test_search_hits_show_paths_relative_to_the_source_root(encoder, ingested):
    searchers = open_collections(encoder, ["docs"], path=str(ingested / "store"))
    try:
        config = ServeConfig(warmup=False, source_root=str(ingested))
        with serve_in_thread(create_app(encoder, searchers, config)) as url:
            hits = httpx.post(url + "/search", json={"query": "sparse vectors", "top_k": 5}).json()["hits"]
            payloads = {h["payload"]["doc_id"]: h["payload"] for h in hits}
            assert payloads["q1"]["source"] == "docs/sub dir/notes#1.jsonl#q1"
            assert payloads["q1"]["file"] == "docs/sub dir/notes#1.jsonl"
            assert payloads["vitamin"]["source"] == payloads["vitamin"]["file"] == "docs/vitamin.txt"
            assert str(ingested) not in json.dumps(hits)
            for key, value in (("source", "docs/sub dir/notes#1.jsonl#q1"), ("file", "docs/vitamin.txt")):
                same = httpx.post(url + "/search", json={"query": "sparse", "filter": {key: value}}).json()["hits"]
                assert same and all(h["payload"][key] == value for h in same)
        with serve_in_thread(create_app(encoder, searchers, ServeConfig(warmup=False))) as url:  # root = cwd
            hits = httpx.post(url + "/search", json={"query": "vitamin", "top_k": 5}).json()["hits"]
            assert {h["payload"]["file"] for h in hits} == {"vitamin.txt", "notes#1.jsonl"}
            assert str(ingested) not in json.dumps(hits)
    finally:
        for searcher in searchers.values():
            searcher.close()


# -- the API key need not be on the command line ----------------------------------------------------------
def test_api_key_from_a_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret-key\n")
    assert read_api_key(None, str(key)) == "s3cret-key"
    assert read_api_key("from-env", None) == "from-env"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for args in (["--api-key-file", str(tmp_path / "missing")], ["--api-key-file", str(empty)],
                 ["--api-key", "x", "--api-key-file", str(key)]):
        result = CliRunner().invoke(cli, ["serve", *args])
        assert result.exit_code == 2 and "--api-key-file" in result.output, result.output
        assert "Traceback" not in result.output
    both = CliRunner().invoke(cli, ["serve", "--api-key-file", str(key)], env={"CSR_ADAPTER_API_KEY": "k"})
    assert both.exit_code == 2 and "not both" in both.output
