"""The encoding engine behind the HTTP routes: an encoder plus a micro-batcher around its forward pass.

Every route that needs the model (``/embed``, ``/embed_sparse``, ``/v1/embeddings``, ``/search``) submits
an :class:`EncodeJob`; jobs from concurrent requests share one ``encode_dense`` call (one backbone forward
pass per micro-batch and truncation side), then the CSR head sparsifies each ``(k, role)`` group. All
tokenisation happens here, on the batcher's single worker thread (the fast tokenizer is not thread-safe).
Results are turned into plain Python lists on that thread, so the event loop only serialises them.

Batches come in ever-new shapes (texts x tokens), and glibc keeps the memory their tensors freed: the
server's RSS grew by a fifth in a minute of ingest-sized requests (``benchmarks/soak.py``). The worker
therefore hands freed heap memory back (``malloc_trim``, about 2 ms) at most once a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..runtime import glibc
from .batching import MicroBatcher

TRIM_EVERY_S = 1.0  # at most one malloc_trim a second


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None where the C library has none: musl, macOS)."""
    libc = glibc()
    return None if libc is None else libc.malloc_trim


class TooLong(ValueError):
    """A text of a ``truncate=False`` job has more tokens than the model takes (HTTP 413, as in TEI)."""


@dataclass(frozen=True)
class EncodeJob:
    """Texts of one request (prefix already applied) and what it needs back."""

    texts: list[str]
    k: int | None = None  # sparse codes at this k (None: no sparse output)
    role: str = "document"  # "query": the model's wider query codes (config.query_k)
    dense: bool = False  # backbone vectors too
    normalize: bool | None = True  # True: unit length; False: pooled, unnormalised; None: the backbone's output
    raw: bool = False  # keep numpy / SparseEmbedding objects (for /search) instead of JSON-ready lists
    truncate: bool = True  # False: a text over max_seq_length tokens fails this job (TooLong)
    truncation_side: str = "right"  # which end of a too-long text is cut
    count_tokens: bool = False  # fill EncodeResult.tokens (tokens used per text, after truncation)


@dataclass
class EncodeResult:
    """Per-request output: ``sparse`` rows and/or ``dense`` rows, in input order (or ``error``)."""

    sparse: list | None = None
    dense: list | np.ndarray | None = None
    tokens: list[int] | None = None
    error: Exception | None = None


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class EncodeEngine:
    """Own the encoder and its micro-batcher; ``await engine.run(job)`` from request handlers."""

    def __init__(
        self, encoder, *, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 1024,
        timeout_s: float = 30.0, encode_batch_size: int = 32, trim_every_s: float | None = TRIM_EVERY_S,
    ) -> None:
        """``trim_every_s``: hand freed memory back to the OS at most this often (None: never)."""
        self.encoder = encoder
        self.encode_batch_size = encode_batch_size
        self._trim = _malloc_trim() if trim_every_s is not None else None
        self.trim_every_s, self._trimmed = trim_every_s, float("-inf")
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

    def _check_lengths(self, job: EncodeJob, result: EncodeResult) -> bool:
        """Count tokens where the job needs it; False (and ``result.error``) when a text is too long."""
        if job.truncate and not job.count_tokens:
            return True
        backbone = self.encoder.backbone
        limit = backbone.max_seq_length
        counts = backbone.count_tokens(job.texts)
        if not job.truncate:
            for i, n in enumerate(counts):
                if n > limit:
                    result.error = TooLong(f"`inputs` must have less than {limit} tokens. Given: {n} "
                                           f"(inputs[{i}]); send truncate=true to cut it")
                    return False
        result.tokens = [min(n, limit) for n in counts]
        return True

    def process(self, jobs: Sequence[EncodeJob]) -> list[EncodeResult]:
        """One backbone pass per truncation side over every job's texts, then one head pass per
        ``(k, role)`` (worker thread)."""
        results = [EncodeResult() for _ in jobs]
        live = [i for i, job in enumerate(jobs) if self._check_lengths(job, results[i])]
        pooled: dict[int, np.ndarray] = {}
        for side in sorted({jobs[i].truncation_side for i in live}):
            members = [i for i in live if jobs[i].truncation_side == side]
            texts = [t for i in members for t in jobs[i].texts]
            block = self.encoder.encode_dense(texts, batch_size=self.encode_batch_size, truncation_side=side,
                                              normalize=False)
            start = 0
            for i in members:
                pooled[i] = block[start:start + len(jobs[i].texts)]
                start += len(jobs[i].texts)
        unit = {i: _normalize(x) for i, x in pooled.items()}
        model_out = unit if self.encoder.backbone.pooling.normalize else pooled  # what the head was trained on
        for k, role in {(jobs[i].k, jobs[i].role) for i in live if jobs[i].k is not None}:
            members = [i for i in live if jobs[i].k == k and jobs[i].role == role]
            codes = self.encoder.sparsify(np.concatenate([model_out[i] for i in members]), k=k, role=role)
            start = 0
            for i in members:
                n = len(jobs[i].texts)
                part = [codes[j] for j in range(start, start + n)]
                results[i].sparse = part if jobs[i].raw else [_tei_sparse(row) for row in part]
                start += n
        for i in live:
            job = jobs[i]
            if job.dense:
                block = model_out[i] if job.normalize is None else unit[i] if job.normalize else pooled[i]
                results[i].dense = block if job.raw else block.tolist()
        self.release_memory()
        return results

    def release_memory(self) -> None:
        """``malloc_trim(0)`` if the last one is ``trim_every_s`` old (glibc; a no-op elsewhere)."""
        now = time.monotonic()
        if self._trim is not None and now - self._trimmed >= self.trim_every_s:
            self._trimmed = now
            self._trim(0)


def _tei_sparse(row) -> list[dict[str, float | int]]:
    """One code as TEI's ``[{"index": i, "value": v}, ...]`` (indices ascending)."""
    return [{"index": i, "value": v} for i, v in zip(row.indices.tolist(), row.values.tolist())]
