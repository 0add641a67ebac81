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
    for option in ("--allowed-host", "--api-key-file", "--body-timeout", "--source-root", "--header-timeout",
                   "--keep-alive-timeout", "--max-connections"):
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


# -- stalled request heads, idle and too many connections ------------------------------------------------
def read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything ``s`` receives until the server closes it (or ``limit`` seconds pass), and when it closed."""
    s.settimeout(0.2)
    started, data = time.monotonic(), b""
    while time.monotonic() - started < limit:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            return data, time.monotonic() - started
        data += chunk
    return data, float("inf")


def read_response(s: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from ``s``."""
    import re

    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def guarded(encoder):
    config = ServeConfig(warmup=False, header_timeout_s=0.5, keep_alive_s=0.5, max_connections=8)
    with serve_in_thread(create_app(encoder, config=config)) as url:
        yield urlsplit(url)


def test_a_partial_request_head_is_closed_within_the_header_timeout(guarded):
    """Issue 29.8: connections that send part of a request head (or trickle it, or nothing) stayed open for
    good; each is closed within the header timeout (0.5 s here), with a 408 when part of a head arrived."""
    socks = [socket.create_connection((guarded.hostname, guarded.port), timeout=5) for _ in range(6)]
    for i, s in enumerate(socks[:5]):
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * i)
    trickle = socks[4]
    for _ in range(3):  # bytes keep coming, the head never completes: the deadline is not reset
        time.sleep(0.2)
        trickle.sendall(b"a")
    for s in socks:
        data, closed_after = read_until_closed(s, 5)
        s.close()
        assert closed_after < 2, "still open"
        assert data == b"" if s is socks[5] else data.startswith(b"HTTP/1.1 408"), data
    assert httpx.get(f"http://{guarded.netloc}/health").status_code == 200


def test_kept_alive_connections_close_when_idle_or_stalled(guarded):
    s = socket.create_connection((guarded.hostname, guarded.port), timeout=5)
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    s.sendall(request)
    assert read_response(s).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 1")  # a second head, stalled
    data, closed_after = read_until_closed(s, 5)
    assert closed_after < 2 and data.startswith(b"HTTP/1.1 408"), data
    s.close()
    idle = socket.create_connection((guarded.hostname, guarded.port), timeout=5)
    idle.sendall(request)
    assert read_response(idle).startswith(b"HTTP/1.1 200")
    assert read_until_closed(idle, 5)[1] < 2  # nothing more: closed after the keep-alive timeout
    idle.close()


def test_connections_past_the_cap_get_503_and_are_closed(guarded):
    held = [socket.create_connection((guarded.hostname, guarded.port), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.1)
        extra = socket.create_connection((guarded.hostname, guarded.port), timeout=5)
        data, closed_after = read_until_closed(extra, 2)
        extra.close()
        assert data.startswith(b"HTTP/1.1 503") and closed_after < 1, data
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert httpx.get(f"http://{guarded.netloc}/health").status_code == 200


def test_zero_width_only_inputs_are_empty(server):
    """Issue 29.11 on the server: an input of zero-width/control characters alone is an empty input (400)."""
    response = httpx.post(server + "/embed", json={"inputs": ["fine", "\u200b\u200d\x01"]})
    assert_json_error(response, 400, "Empty")
