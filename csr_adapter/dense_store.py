"""A persistent per-text cache of backbone embeddings (SQLite), shared by ingest, adaptation and re-adaptation.

Rows are keyed by a hash of (backbone fingerprint, max length, truncation side, prefix, text), so a
vector is computed once per distinct chunk text and reused by every later run: a killed ingest resumes
without re-encoding, and ``ingest --adapt`` re-sparsifies a collection without running the backbone.
Lives under ``$CSR_ADAPTER_CACHE`` (default ``~/.cache/csr-adapter``) in ``dense/``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BATCH = 900  # under SQLite's bound-parameter limit


def default_dir() -> Path:
    root = os.environ.get("CSR_ADAPTER_CACHE") or Path.home() / ".cache" / "csr-adapter"
    return Path(root) / "dense"


class DenseStore:
    """``get``/``put`` float32 vectors of texts for one encoder's backbone and prefix."""

    def __init__(self, encoder, prefix: str = "", directory: str | os.PathLike | None = None) -> None:
        from .cache import vector_key

        self.encoder, self.prefix, self.d = encoder, prefix, encoder.d
        self._salt = (vector_key(encoder, prefix) + "|").encode()
        folder = Path(directory) if directory else default_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{hashlib.sha256(self._salt).hexdigest()[:16]}.sqlite"
        self._db = sqlite3.connect(str(self.path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (key BLOB PRIMARY KEY, v BLOB NOT NULL)")

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self._salt + text.encode("utf-8", "surrogatepass")).digest()[:20]

    def get(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors (n, d), found (n,) bool)``; rows not in the store are zero."""
        keys = [self.key(t) for t in texts]
        out = np.zeros((len(keys), self.d), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        unique = list(where)
        for lo in range(0, len(unique), BATCH):
            part = unique[lo:lo + BATCH]
            rows = self._db.execute(f"SELECT key, v FROM vec WHERE key IN ({','.join('?' * len(part))})", part)
            for k, v in rows:
                vec = np.frombuffer(v, dtype=np.float32)
                if len(vec) == self.d:
                    out[where[k]] = vec
                    found[where[k]] = True
        return out, found

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(self.key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vec (key, v) VALUES (?, ?)", rows)

    def encode(self, texts: Sequence[str], batch_size: int = 32, group: int = 256, progress: bool = False,
               desc: str = "embed") -> np.ndarray:
        """Vectors of ``texts``: cached rows read, missing ones encoded and stored ``group`` at a time."""
        from tqdm.auto import tqdm

        texts = list(texts)
        out, found = self.get(texts)
        todo = np.flatnonzero(~found)
        bar = tqdm(total=len(todo), desc=desc, unit="text", disable=not progress or not len(todo), leave=False)
        for lo in range(0, len(todo), group):
            idx = todo[lo:lo + group]
            vecs = self.encoder.encode_dense([texts[i] for i in idx], batch_size=batch_size, prefix=self.prefix)
            self.put([texts[i] for i in idx], vecs)
            out[idx] = vecs
            bar.update(len(idx))
        bar.close()
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DenseStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
