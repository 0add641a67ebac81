"""Micro-batching: coalesce concurrent requests into one call of a blocking ``process`` function.

Requests are queued (bounded, counted in texts); one collector task takes the oldest request, then
keeps taking more until ``max_batch_size`` texts are gathered or ``max_wait_ms`` have passed since
that oldest request arrived, and runs ``process(items)`` on a single worker thread (so the event loop
stays free to accept and answer requests while the model runs). A request waits at most
``timeout_s``; a request that times out before its batch starts is dropped from the queue. When a
batch of several requests fails, each is re-run on its own, so one bad request fails only itself.

``max_batch_size=1`` turns batching off: every request gets its own forward pass, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .metrics import BATCH_BUCKETS, Histogram

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """The queue is full (HTTP 429)."""


class Unavailable(Exception):
    """The batcher is not running (starting up or shutting down; HTTP 503)."""


class BatchTimeout(Exception):
    """The request waited longer than ``timeout_s`` (HTTP 429: the server is overloaded)."""


@dataclass
class _Job(Generic[T]):
    item: T
    size: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters for ``/info`` and the benchmark."""

    batches: int = 0
    items: int = 0
    texts: int = 0
    rejected: int = 0
    timeouts: int = 0
    max_batch_texts: int = 0
    sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))  # texts per batch (/metrics)

    def to_dict(self) -> dict[str, Any]:
        mean = self.texts / self.batches if self.batches else 0.0
        return {"batches": self.batches, "requests": self.items, "texts": self.texts, "rejected": self.rejected,
                "timeouts": self.timeouts, "max_batch_texts": self.max_batch_texts, "mean_batch_texts": mean}


class MicroBatcher(Generic[T, R]):
    """Run ``process(items) -> results`` (same length, same order) over coalesced concurrent submissions."""

    def __init__(
        self, process: Callable[[Sequence[T]], Sequence[R]], *, max_batch_size: int = 32, max_wait_ms: float = 5.0,
        max_queue: int = 1024, timeout_s: float = 30.0,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0, timeout_s > 0")
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.stats = BatchStats()
        self._queue: deque[_Job[T]] = deque()
        self._pending = 0  # texts queued, not yet taken into a batch
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        return self._pending

    async def start(self) -> None:
        """Start the collector task and the worker thread (call from the running event loop)."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csr-batch")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="csr-micro-batcher")

    async def stop(self) -> None:
        """Stop collecting; fail queued requests with :class:`Unavailable`; wait for the running batch."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Unavailable("server is shutting down"))
        self._pending = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, item: T, size: int = 1) -> R:
        """Queue ``item`` (worth ``size`` texts) and wait for its result."""
        if not self.running or self._wakeup is None:
            raise Unavailable("the encoder is not running")
        if self._pending + size > self.max_queue and self._pending > 0:
            self.stats.rejected += 1
            raise Overloaded(f"queue full ({self._pending} texts waiting, limit {self.max_queue}); retry later")
        job = _Job(item, size, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._pending += size
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.timeout_s)
        except asyncio.TimeoutError:
            self.stats.timeouts += 1
            job.future.cancel()  # skipped by the collector if its batch has not started
            raise BatchTimeout(f"no result within {self.timeout_s:g}s; the server is overloaded") from None
        except asyncio.CancelledError:
            job.future.cancel()
            raise

    # -- collector --------------------------------------------------------------------------------
    def _take(self, batch: list[_Job[T]], texts: int) -> int:
        """Move queued jobs into ``batch`` while they fit; return the batch's text count."""
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # timed out or cancelled while queued
                self._queue.popleft()
                self._pending -= job.size
                continue
            if batch and texts + job.size > self.max_batch_size:
                break
            self._queue.popleft()
            self._pending -= job.size
            batch.append(job)
            texts += job.size
        return texts

    async def _next_batch(self) -> tuple[list[_Job[T]], int]:
        assert self._wakeup is not None
        batch: list[_Job[T]] = []
        texts = 0
        while not batch:
            self._wakeup.clear()
            texts = self._take(batch, texts)
            if not batch:
                await self._wakeup.wait()
        deadline = batch[0].enqueued + self.max_wait
        while texts < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            before = len(batch)
            texts = self._take(batch, texts)
            if len(batch) == before and self._queue:  # the next job does not fit
                break
            if texts >= self.max_batch_size:
                break
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                texts = self._take(batch, texts)
                break
        return batch, texts

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch, texts = await self._next_batch()
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.texts += texts
            self.stats.max_batch_texts = max(self.stats.max_batch_texts, texts)
            self.stats.sizes.observe(texts)
            try:
                results = await loop.run_in_executor(self._executor, self.process, [j.item for j in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"process returned {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(Unavailable("server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request(s)
                if len(batch) == 1:
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                else:
                    await self._isolate(batch)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)

    async def _isolate(self, batch: list[_Job[T]]) -> None:
        """Re-run a failed batch one job at a time: each gets its own result or its own error."""
        loop = asyncio.get_running_loop()
        for job in batch:
            if job.future.done():
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.process, [job.item])
                if len(results) != 1:
                    raise RuntimeError(f"process returned {len(results)} results for 1 item")
            except asyncio.CancelledError:
                for rest in batch:
                    if not rest.future.done():
                        rest.future.set_exception(Unavailable("server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - this request's own error
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            if not job.future.done():
                job.future.set_result(results[0])
