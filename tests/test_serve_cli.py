"""`csr-adapter serve` as a command: options, and (slow) the real process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.cli.serve import _is_loopback


def test_serve_is_listed_with_its_options():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--k", "--collection", "--api-key", "--max-batch-size", "--max-wait-ms"):
        assert option in result.output
    assert "127.0.0.1" in result.output


def test_loopback_detection():
    assert all(_is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))


def test_bad_settings_are_usage_errors():
    result = CliRunner().invoke(cli, ["serve", "--max-batch-size", "0"])
    assert result.exit_code == 2 and "max-batch-size" in result.output


@pytest.mark.slow
def test_cli_serves_over_http_with_api_key(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"CSR_ADAPTER_API_KEY": "cli-key", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "csr_adapter.cli", "serve", "--port", str(port), "--k", "4",
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.25)
        assert httpx.get(url + "/info").status_code == 401
        info = httpx.get(url + "/info", headers={"Authorization": "Bearer cli-key"}).json()
        assert info["csr_adapter"]["k"] == 4
        rows = httpx.post(url + "/embed_sparse", json={"inputs": ["a", "b c"]},
                          headers={"Authorization": "Bearer cli-key"}).json()
        assert len(rows) == 2 and all(0 < len(r) <= 4 for r in rows)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
