"""Resumable on-disk cache of backbone embeddings (frozen-backbone training, eval, benchmarks).

Keyed by the backbone's fingerprint, its max length, the prefix and the exact texts, so a cache hit is
always the same numbers. Work is saved in chunks: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHUNK = 1024


def default_cache_dir() -> Path:
    root = os.environ.get("CSR_ADAPTER_CACHE") or Path.home() / ".cache" / "csr-adapter"
    return Path(root) / "embeddings"


def vector_key(encoder, prefix: str = "") -> str:
    """What fixes a text's backbone vector besides the text: backbone weights, length settings, prefix, and
    the runtime when it changes the numbers (``onnx-int8`` with its quantization recipe, ``torch-bf16``; torch and
    fp32 onnx agree up to rounding)."""
    from .onnx_backbone import EXACT_RUNTIMES, EXPORT_VERSION

    bb = encoder.backbone
    key = f"{bb.fingerprint()}|{bb.max_seq_length}|{bb.truncation_side}|{prefix}"
    runtime = getattr(bb, "runtime", "torch")
    if runtime in EXACT_RUNTIMES:
        return key
    return f"{key}|{runtime}-{EXPORT_VERSION}" if runtime.startswith("onnx") else f"{key}|{runtime}"


def cache_key(encoder, texts: Sequence[str], prefix: str = "") -> str:
    digest = hashlib.sha256()
    digest.update(f"{vector_key(encoder, prefix)}|{len(texts)}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def cached_dense(
    encoder, texts: Sequence[str], prefix: str = "", cache_dir: str | Path | None = None,
    batch_size: int = 64, show_progress_bar: bool = True, desc: str = "embed",
) -> np.ndarray:
    """``encoder.encode_dense(texts)`` through the cache; returns ``(n, d)`` float32."""
    texts = list(texts)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(encoder, texts, prefix)
    final = folder / f"{key}.npy"
    if final.exists():
        return np.load(final, allow_pickle=False)
    parts = folder / f"{key}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    chunks = range(0, len(texts), CHUNK)
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress_bar)
    out = []
    for start in chunks:
        part = parts / f"{start:09d}.npy"
        if part.exists():
            arr = np.load(part, allow_pickle=False)
        else:
            arr = encoder.encode_dense(texts[start:start + CHUNK], batch_size=batch_size, prefix=prefix)
            tmp = part.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            tmp.replace(part)
        out.append(arr)
        bar.update(len(arr))
    bar.close()
    dense = np.concatenate(out) if out else np.zeros((0, encoder.d), np.float32)
    tmp = final.with_suffix(".tmp.npy")
    np.save(tmp, dense)
    tmp.replace(final)
    for part in parts.glob("*.npy"):
        part.unlink()
    parts.rmdir()
    return dense
