"""The server's memory stays flat under batches of ever-new shapes: issue 15's soak found its RSS growing by a
fifth in a minute of ingest-sized requests, memory that glibc kept after the batches' tensors were freed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from csr_adapter.server.engine import EncodeEngine, EncodeJob, _malloc_trim

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.skipif(_malloc_trim() is None or not Path("/proc/self/status").exists(), reason="glibc on Linux only")
def test_batches_of_new_shapes_leave_memory_flat(encoder):
    # trim after every batch (the server: at most once a second); trim_every_s=None grew +142 MB here and failed
    engine = EncodeEngine(encoder, trim_every_s=0.0)
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.txt"))[:60]).split()
    rng = random.Random(0)

    def batch(n: int, most_words: int) -> None:
        texts = [" ".join(words[(lo := rng.randrange(len(words) - 300)):lo + rng.randrange(20, most_words + 1)])
                 for _ in range(n)]
        engine.process([EncodeJob(texts, k=encoder.k), EncodeJob(texts, dense=True)])

    batch(32, 300)  # warm-up: a full batch of full windows sets up what every later batch reuses
    _malloc_trim()(0)  # what this process held before is not the engine's
    before = rss_mb()
    for _ in range(5):  # a new number of texts and new lengths each batch
        batch(rng.randrange(2, 33), 250)
    assert rss_mb() - before < 40, (before, rss_mb())
