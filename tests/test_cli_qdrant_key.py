"""`--qdrant-api-key` (env QDRANT_API_KEY) names the Qdrant key in ingest, search and info; `--api-key` is
its deprecated alias there (in `serve`, `--api-key` is the server's own Bearer key). The key is checked
where it ends up: the `api-key` header qdrant-client sends to a (recording) server on loopback."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli

pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


@pytest.fixture(scope="module")
def recorder():
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.headers.get("api-key"))
            body = b'{"status": {"error": "Not found: recording server"}, "time": 0}'
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def run(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, args, env={"QDRANT_API_KEY": None, "QDRANT_URL": None, **(env or {})})


@pytest.mark.parametrize("command", [["search", "hello"], ["info", "--collection", "csr"]])
def test_qdrant_key_reaches_qdrant_under_its_new_name_its_env_and_its_old_name(recorder, command):
    pytest.importorskip("qdrant_client")
    url, seen = recorder
    for args, env, key, warned in [(["--qdrant-api-key", "new-key"], None, "new-key", False),
                                   ([], {"QDRANT_API_KEY": "env-key"}, "env-key", False),
                                   (["--api-key", "old-key"], {"QDRANT_API_KEY": "env-key"}, "old-key", True)]:
        seen.clear()
        result = run([*command, "--url", url, "--device", "cpu", *args], env)
        assert result.exit_code != 0 and "Traceback" not in result.output  # the recorder has no collection
        assert seen and set(seen) == {key}, (args, seen)
        assert ("--api-key is deprecated" in result.output) is warned


def test_both_names_at_once_is_a_usage_error():
    result = run(["search", "x", "--qdrant-api-key", "a", "--api-key", "b"])
    assert result.exit_code == 2 and "not both" in result.output


def test_serve_keeps_api_key_for_its_bearer_key():
    out = run(["serve", "--help"]).output
    assert "--api-key" in out and "--qdrant-api-key" in out and "Bearer" in out
