"""Soak (in-process): repeated ingest / search / delete cycles on a small corpus in an embedded Qdrant Edge
store. ``benchmarks/soak.py`` is the soak of the server (concurrent ingest and search against ``serve``).

Each cycle changes a working folder drawn from ``examples/corpus`` (adds files, edits some, deletes the
oldest), re-ingests it with ``prune`` (sparse index + FAISS fallback), checks that the collection holds
exactly the current chunks, then runs searches: plain queries, a ``source`` filter on a present file (must
hit it) and on a deleted one (must find nothing), and malformed filters (must be refused up front).
Reported, as ratios between the first and last phase (the first and last quarter of the cycles after
the warm-up cycle): RSS growth and latency drift of search and ingest, plus errors by kind.

    python benchmarks/soak_cycles.py [--minutes 10] [--files 60] [--queries 20]

Writes benchmarks/results/soak_cycles.{json,md}.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import REPO, write_result

sys.path.insert(0, str(REPO))

POOL = REPO / "examples" / "corpus"
MALFORMED = [{"a b": "x"}, {"x[": 1}, {"": 1}, {"chunk": 2**70}, {"chunk": 1.5}, {"source": []}]


def rss_mb() -> float:
    """Resident set size now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Folder:
    """The working corpus folder: a rotating window over the pool, with edits."""

    def __init__(self, root: Path, files: int, seed: int) -> None:
        self.root, self.pool = root, sorted(POOL.glob("*.txt"))
        self.rng = random.Random(seed)
        self.next, self.live = 0, []
        root.mkdir(parents=True)
        for _ in range(min(files, len(self.pool))):
            self.add()

    def add(self) -> None:
        src = self.pool[self.next % len(self.pool)]
        name = f"{self.next:05d}#{src.name}"  # '#' in every name: the filter path is exercised too
        shutil.copyfile(src, self.root / name)
        self.live.append(name)
        self.next += 1

    def cycle(self, n: int, adds: int, edits: int, deletes: int) -> list[str]:
        """Add, edit and delete files; the deleted names."""
        gone = self.live[:deletes]
        for name in gone:
            (self.root / name).unlink()
        self.live = self.live[deletes:]
        for name in self.rng.sample(self.live, min(edits, len(self.live))):
            with open(self.root / name, "a", encoding="utf-8") as f:
                f.write(f"\nRevision {n}: this abstract was edited during the soak run.")
        for _ in range(adds):
            self.add()
        return gone


def summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3)}


def ratio(last: float, first: float) -> float | None:
    return round(last / first, 3) if first else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="Run for about this long (at least 5 cycles).")
    ap.add_argument("--files", type=int, default=60, help="Files in the working folder.")
    ap.add_argument("--queries", type=int, default=20, help="Plain queries per cycle.")
    ap.add_argument("--churn", type=int, default=8, help="Files added and deleted per cycle (as many edited / 2).")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="csr-soak-"))
    import os

    os.environ["CSR_ADAPTER_CACHE"] = str(work / "cache")  # a cold vector cache of its own
    from csr_adapter.collection import Collection
    from csr_adapter.filters import FilterError, check_filter, with_absolute_paths
    from csr_adapter.runtime import set_threads

    set_threads(args.threads)
    rng = random.Random(args.seed)
    folder = Folder(work / "docs", args.files, args.seed)
    col = Collection("soak", path=work / "store", device="cpu", echo=lambda m: None)
    errors: Counter = Counter()
    cycles: list[dict] = []
    gone_all: list[str] = []
    start = time.monotonic()
    deadline = start + args.minutes * 60
    n = 0
    try:
        while n < 5 or time.monotonic() < deadline:
            gone = [] if n == 0 else folder.cycle(n, args.churn, args.churn // 2, args.churn)
            gone_all = (gone_all + gone)[-20:]
            t0 = time.perf_counter()
            try:
                report = col.ingest(folder.root, adapt=False, prune=True, with_fallback=True, progress=False)
            except Exception as exc:  # a well-formed ingest must not fail
                errors[f"ingest:{type(exc).__name__}"] += 1
                n += 1
                continue
            ingest_s = time.perf_counter() - t0
            points = col.count()
            if points != report.chunks:
                errors["stale_or_missing_points"] += abs(points - report.chunks)
            search_ms: list[float] = []
            searcher = col.searcher()
            try:
                texts = [(folder.root / name).read_text(encoding="utf-8") for name in rng.sample(
                    folder.live, min(args.queries, len(folder.live)))]
                for text in texts:
                    t1 = time.perf_counter()
                    hits = searcher.search(" ".join(text.split()[:12]), top_k=5)
                    search_ms.append((time.perf_counter() - t1) * 1e3)
                    if not hits:
                        errors["empty_answer"] += 1
                present, absent = rng.choice(folder.live), (gone[0] if gone else None)
                flt = with_absolute_paths(check_filter({"source": f"docs/{present}"}), str(work))
                hits = searcher.search("abstract", top_k=3, filter=flt)
                if not hits or any(not h.payload["source"].endswith(present) for h in hits):
                    errors["filter_missed_present_file"] += 1
                if absent:
                    flt = with_absolute_paths(check_filter({"source": f"docs/{absent}"}), str(work))
                    if searcher.search("abstract", top_k=3, filter=flt):
                        errors["deleted_file_still_searchable"] += 1
                for bad in MALFORMED:
                    try:
                        check_filter(bad)
                        errors["malformed_filter_accepted"] += 1
                    except FilterError:
                        pass
            except Exception as exc:
                errors[f"search:{type(exc).__name__}"] += 1
            finally:
                searcher.close()
            cycles.append({"cycle": n, "files": len(folder.live), "chunks": report.chunks, "points": points,
                           "written": report.written, "deleted": report.deleted + report.pruned,
                           "ingest_s": round(ingest_s, 3), "search_ms": search_ms, "rss_mb": round(rss_mb(), 1)})
            print(f"cycle {n:3d}: {points} points, ingest {ingest_s:.2f} s, search p50 "
                  f"{np.median(search_ms):.1f} ms, rss {cycles[-1]['rss_mb']:.0f} MB", flush=True)
            n += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    elapsed_min = (time.monotonic() - start) / 60
    steady = cycles[1:]  # cycle 0 is the warm-up: the model loads and the whole folder is encoded once
    q = max(1, len(steady) // 4)
    first, last = steady[:q], steady[-q:]

    def phase(rows: list[dict]) -> dict:
        return {"cycles": [r["cycle"] for r in (rows[0], rows[-1])],
                "rss_mb": round(float(np.median([r["rss_mb"] for r in rows])), 1),
                "search_ms": summary([x for r in rows for x in r["search_ms"]]),
                "ingest_s": summary([r["ingest_s"] for r in rows])}

    p1, p2 = phase(first), phase(last)
    result = {
        "settings": vars(args), "cycles": len(cycles), "elapsed_min": round(elapsed_min, 2),
        "operations": {"ingests": len(cycles), "searches": sum(len(r["search_ms"]) + 2 for r in cycles),
                       "files_deleted": sum(r["deleted"] > 0 for r in cycles), "points_written": sum(
                           r["written"] for r in cycles), "points_deleted": sum(r["deleted"] for r in cycles)},
        "first_phase": p1, "last_phase": p2,
        "ratios": {"rss_growth": ratio(p2["rss_mb"], p1["rss_mb"]),
                   "search_p50_drift": ratio(p2["search_ms"]["p50"], p1["search_ms"]["p50"]),
                   "search_p99_drift": ratio(p2["search_ms"]["p99"], p1["search_ms"]["p99"]),
                   "ingest_p50_drift": ratio(p2["ingest_s"]["p50"], p1["ingest_s"]["p50"])},
        "peak_rss_mb": round(peak_rss_mb(), 1), "warmup": {k: v for k, v in cycles[0].items() if k != "search_ms"},
        "errors": dict(errors), "per_cycle": [{**r, "search_ms": summary(r["search_ms"])} for r in cycles],
    }
    r = result["ratios"]
    rss_series = ", ".join(str(round(c["rss_mb"])) for c in cycles)
    md = (f"# Soak: ingest / search / delete cycles (embedded Qdrant Edge + FAISS fallback)\n\n"
          f"`{' '.join(['python', 'benchmarks/soak_cycles.py', *sys.argv[1:]])}`: {len(cycles)} cycles in "
          f"{elapsed_min:.1f} min; each re-ingests a {args.files}-file folder with {args.churn} files added, "
          f"{args.churn // 2} edited and {args.churn} deleted (prune), then {args.queries} queries, 2 source "
          f"filters and {len(MALFORMED)} malformed filters. Phases: the first and last quarter of the cycles after "
          f"the warm-up cycle ({len(first)} cycles each).\n\n"
          f"| | first phase | last phase | last / first |\n|---|---|---|---|\n"
          f"| RSS (MB, median) | {p1['rss_mb']} | {p2['rss_mb']} | {r['rss_growth']} |\n"
          f"| search p50 (ms) | {p1['search_ms']['p50']} | {p2['search_ms']['p50']} | {r['search_p50_drift']} |\n"
          f"| search p99 (ms) | {p1['search_ms']['p99']} | {p2['search_ms']['p99']} | {r['search_p99_drift']} |\n"
          f"| ingest p50 (s) | {p1['ingest_s']['p50']} | {p2['ingest_s']['p50']} | {r['ingest_p50_drift']} |\n\n"
          f"RSS after each cycle (MB): {rss_series}: compare the phases "
          f"against this cycle-to-cycle spread (allocator noise) before reading a ratio as growth.\n\n"
          f"Peak RSS {result['peak_rss_mb']} MB; {result['operations']['searches']} searches, "
          f"{result['operations']['points_written']} points written, {result['operations']['points_deleted']} "
          f"deleted. Errors: {dict(errors) or 'none'} (stale points, deleted files still found, present files "
          f"missed by a filter, malformed filters accepted, and exceptions all count).\n")
    write_result("soak_cycles", result, md)
    print(md)


if __name__ == "__main__":
    main()
