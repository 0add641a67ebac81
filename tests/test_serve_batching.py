"""MicroBatcher on its own (no model): coalescing, order, bounded queue, timeouts, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from csr_adapter.server.batching import BatchTimeout, MicroBatcher, Overloaded, Unavailable


class Recorder:
    """A ``process`` function that doubles items, records batch sizes, and can be slowed or blocked."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items):
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(list(items))
        return [2 * x for x in items]


async def test_concurrent_submissions_share_a_batch_and_keep_order():
    process = Recorder()
    batcher = MicroBatcher(process, max_batch_size=64, max_wait_ms=50)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    finally:
        await batcher.stop()
    assert results == [2 * i for i in range(40)]
    assert len(process.batches) < 40 and max(map(len, process.batches)) > 1
    assert batcher.stats.items == 40


async def test_batches_respect_max_batch_size_in_texts():
    process = Recorder()
    batcher = MicroBatcher(process, max_batch_size=8, max_wait_ms=20)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i, size=3) for i in range(10)))
    finally:
        await batcher.stop()
    assert results == [2 * i for i in range(10)]
    assert all(len(batch) <= 2 for batch in process.batches)  # 3 + 3 <= 8 < 3 + 3 + 3


async def test_batch_size_one_means_one_item_per_call():
    process = Recorder()
    batcher = MicroBatcher(process, max_batch_size=1, max_wait_ms=20)
    await batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    finally:
        await batcher.stop()
    assert [len(b) for b in process.batches] == [1] * 5


async def test_full_queue_is_rejected_not_queued():
    process = Recorder()
    process.gate.clear()  # the first batch blocks, so later requests pile up in the queue
    batcher = MicroBatcher(process, max_batch_size=1, max_wait_ms=0, max_queue=2)
    await batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # taken by the worker
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit(3)
        process.gate.set()
        assert await first == 0 and [await q for q in queued] == [2, 4]
    finally:
        process.gate.set()
        await batcher.stop()
    assert batcher.stats.rejected == 1


async def test_timeout_drops_the_request_from_the_queue():
    process = Recorder(delay=0.2)
    batcher = MicroBatcher(process, max_batch_size=1, max_wait_ms=0, timeout_s=0.05)
    await batcher.start()
    try:
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    finally:
        await batcher.stop()
    assert all(isinstance(o, BatchTimeout) for o in outcomes)
    assert sum(map(len, process.batches)) < 3  # queued ones that timed out never ran


async def test_process_errors_reach_every_caller_and_the_batcher_survives():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return list(items)

    batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_ms=0)
    await batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 2
    finally:
        await batcher.stop()


async def test_submit_before_start_or_after_stop_is_unavailable():
    batcher = MicroBatcher(Recorder())
    with pytest.raises(Unavailable):
        await batcher.submit(1)
    await batcher.start()
    await batcher.stop()
    with pytest.raises(Unavailable):
        await batcher.submit(1)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=0)
