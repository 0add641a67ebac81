"""`csr-adapter info` and `csr-adapter encode`, run as a user would (real shipped model)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from csr_adapter.cli import cli


def test_encode_json_prints_at_most_k_unit_norm_pairs() -> None:
    result = CliRunner().invoke(cli, ["encode", "hello world", "--k", "8", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert 0 < len(row["indices"]) <= 8 and len(row["indices"]) == len(row["values"])
    assert abs(np.linalg.norm(row["values"]) - 1.0) < 1e-4


def test_encode_several_texts_and_bad_k() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["encode", "one", "two", "--k", "2", "--json"])
    assert result.exit_code == 0 and len(json.loads(result.output)) == 2
    bad = runner.invoke(cli, ["encode", "x", "--k", "0"])
    assert bad.exit_code != 0 and "k must be in" in bad.output


def test_info_lists_shape_and_files() -> None:
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["d"] == 384 and info["h"] >= 1024 and info["backbone"] == "all-MiniLM-L6-v2"
    assert {f["file"] for f in info["files"]} >= {"config.json", "head.safetensors", "README.md"}


def test_corrupt_model_dir_is_one_line_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "missing key 'd'" in result.output


def test_console_script_help_is_fast_and_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "csr_adapter.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("encode", "info"):
        assert name in out


def test_unavailable_device_is_one_line_error(monkeypatch) -> None:
    import pytest
    import torch

    from csr_adapter.errors import DeviceError
    from csr_adapter.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' was asked for") as err:  # the library names the parameter
        resolve_device("cuda")
    assert isinstance(err.value, DeviceError)
    bad = CliRunner().invoke(cli, ["encode", "x", "--device", "cuda"])
    assert bad.exit_code == 1 and bad.output == "Error: --device cuda was asked for but no CUDA device is available\n"
