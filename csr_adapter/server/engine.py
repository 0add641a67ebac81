"""The encoding engine behind the HTTP routes: an encoder plus a micro-batcher around its forward pass.

Every route that needs the model (``/embed``, ``/embed_sparse``, ``/search``) submits an
:class:`EncodeJob`; jobs from concurrent requests share one ``encode_dense`` call (one backbone forward
pass per micro-batch), then the CSR head sparsifies each ``k`` group. Results are turned into plain
Python lists on the worker thread, so the event loop only serialises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .batching import MicroBatcher


@dataclass(frozen=True)
class EncodeJob:
    """Texts of one request (prefix already applied) and what it needs back."""

    texts: list[str]
    k: int | None = None  # sparse codes at this k (None: no sparse output)
    dense: bool = False  # backbone vectors too
    normalize: bool = True  # L2-normalise the dense vectors
    raw: bool = False  # keep numpy / SparseEmbedding objects (for /search) instead of JSON-ready lists


@dataclass
class EncodeResult:
    """Per-request output: ``sparse`` rows and/or ``dense`` rows, in input order."""

    sparse: list | None = None
    dense: list | np.ndarray | None = None


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class EncodeEngine:
    """Own the encoder and its micro-batcher; ``await engine.run(job)`` from request handlers."""

    def __init__(
        self, encoder, *, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024,
        timeout_s: float = 30.0, encode_batch_size: int = 32,
    ) -> None:
        self.encoder = encoder
        self.encode_batch_size = encode_batch_size
        self.batcher: MicroBatcher[EncodeJob, EncodeResult] = MicroBatcher(
            self.process, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
            timeout_s=timeout_s,
        )

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def run(self, job: EncodeJob) -> EncodeResult:
        return await self.batcher.submit(job, size=max(1, len(job.texts)))

    def process(self, jobs: Sequence[EncodeJob]) -> list[EncodeResult]:
        """One backbone pass over every job's texts, then one head pass per distinct ``k`` (worker thread)."""
        texts = [t for job in jobs for t in job.texts]
        dense = self.encoder.encode_dense(texts, batch_size=self.encode_batch_size)
        bounds = np.cumsum([0] + [len(job.texts) for job in jobs])
        results = [EncodeResult() for _ in jobs]
        for k in {job.k for job in jobs if job.k is not None}:
            members = [i for i, job in enumerate(jobs) if job.k == k]
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in members])
            codes = self.encoder.sparsify(dense[rows], k=k)
            start = 0
            for i in members:
                n = len(jobs[i].texts)
                part = [codes[j] for j in range(start, start + n)]
                results[i].sparse = part if jobs[i].raw else [_tei_sparse(row) for row in part]
                start += n
        for i, job in enumerate(jobs):
            if job.dense:
                block = dense[bounds[i]:bounds[i + 1]]
                block = _normalize(block) if job.normalize else block
                results[i].dense = block if job.raw else block.tolist()
        return results


def _tei_sparse(row) -> list[dict[str, float | int]]:
    """One code as TEI's ``[{"index": i, "value": v}, ...]`` (indices ascending)."""
    return [{"index": i, "value": v} for i, v in zip(row.indices.tolist(), row.values.tolist())]
