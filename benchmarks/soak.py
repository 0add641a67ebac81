"""Soak of a shared server: concurrent ingest and search against ``csr-adapter serve``, malformed requests mixed in.

The real CLI server runs in a subprocess on loopback over a collection ingested first (embedded Qdrant Edge
+ FAISS fallback, from ``examples/corpus``). For ``--seconds``, closed-loop client threads share it:

- search: ``POST /search`` with a phrase from a corpus file; every third one filtered to that file's
  ``source`` (as hits show it, relative): 200 with hits, all from that file when filtered;
- ingest: the embedded engine admits one open handle (the server's), so the ingest load is a remote
  ingest: batches of new documents encoded by the server (``POST /embed_sparse`` and ``POST /embed``,
  as a TEI-client pipeline does) and indexed by the client into a second Qdrant Edge collection; at the
  end that collection must hold every chunk, each found by its own code;
- malformed: a rotating catalogue (lone surrogates, invalid JSON and UTF-8, bad filter keys and values,
  integers past 64 bits, oversized bodies, a foreign Host header, ...): each must get a 4xx with a
  one-line JSON error, never a 5xx nor a dropped connection.

Reported: requests served by route and status, errors by kind (any failed well-formed request, any
malformed one not refused cleanly), latency p50/p99 per route, and the server's memory (RSS sampled every
second: first vs last quarter of the run, and its peak). Goals (issue 15): 0 failed well-formed requests,
memory flat.

    python benchmarks/soak.py [--seconds 60] [--search-clients 3] [--ingest-clients 2] [--malformed-clients 2]

Writes benchmarks/results/soak.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from _common import REPO, write_result

sys.path.insert(0, str(REPO))

POOL = REPO / "examples" / "corpus"
BAD_UTF8 = b'{"inputs": "caf\xc3 \xff"}'
# (case, route, body: dict | bytes, extra headers): each must be refused with a 4xx and a one-line error
MALFORMED: list[tuple[str, str, object, dict]] = [
    ("lone surrogate in inputs", "/embed_sparse", b'{"inputs": ["fine text", "broken \\ud800 text"]}', {}),
    ("lone surrogate in query", "/search", b'{"query": "vitamin \\udc80"}', {}),
    ("lone surrogate in filter", "/search", b'{"query": "x", "filter": {"doc_id": "\\ud800"}}', {}),
    ("invalid UTF-8 body", "/embed", BAD_UTF8, {}),
    ("invalid JSON", "/embed_sparse", b'{"inputs": ["unterminated', {}),
    ("empty inputs", "/embed_sparse", {"inputs": []}, {}),
    ("wrong type", "/v1/embeddings", {"input": 123}, {}),
    ("k = 0", "/embed_sparse", {"inputs": "x", "k": 0}, {}),
    ("k past 64 bits", "/embed_sparse", {"inputs": "x", "k": 2**70}, {}),
    ("filter key with a space", "/search", {"query": "x", "filter": {"a b": "x"}}, {}),
    ("filter key with quote and bracket", "/search", {"query": "x", "filter": {'x"]': 1}}, {}),
    ("filter integer past 64 bits", "/search", {"query": "x", "filter": {"chunk": 2**70}}, {}),
    ("filter float value", "/search", {"query": "x", "filter": {"chunk": 1.5}}, {}),
    ("filter empty list", "/search", {"query": "x", "filter": {"source": []}}, {}),
    ("top_k too large", "/search", {"query": "x", "top_k": 10**9}, {}),
    ("empty query", "/search", {"query": "   "}, {}),
    ("unknown collection", "/search", {"query": "x", "collection": "nope"}, {}),
    ("too long, no truncation", "/embed_sparse", {"inputs": "word " * 30_000, "truncate": False}, {}),
    ("body over the cap", "/embed", b'{"inputs": "' + b"a" * 5_000_000 + b'"}', {}),
    ("foreign Host header", "/search", {"query": "x"}, {"host": "attacker.example"}),
    ("not JSON content", "/embed", b"inputs=hello", {"content-type": "text/plain"}),
]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set size now (``VmHWM``: its peak), in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def one_line_error(response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    message = body.get("error") if isinstance(body, dict) else None
    if isinstance(message, dict):  # OpenAI's shape
        message = message.get("message")
    return isinstance(message, str) and bool(message) and "\n" not in message and "Traceback" not in message


class Stats:
    """Thread-safe counters: requests by route and status, latencies of well-formed requests, errors by kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: Counter = Counter()
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter = Counter()
        self.malformed: dict[str, Counter] = defaultdict(Counter)

    def record(self, route: str, status: int | str, ms: float | None = None) -> None:
        with self.lock:
            self.served[f"{route} {status}"] += 1
            if ms is not None:
                self.latency_ms[route].append(ms)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1


def start_server(port: int, store: Path, root: Path, threads: int) -> subprocess.Popen:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "csr_adapter.cli", "serve", "--port", str(port), "--log-level", "warning",
           "--threads", str(threads), "--device", "cpu", "--collection", "soak", "--path", str(store),
           "--source-root", str(root)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="Length of the load phase.")
    ap.add_argument("--warmup", type=float, default=5.0, help="Load before latencies and memory count.")
    ap.add_argument("--files", type=int, default=60, help="Corpus files ingested before serving.")
    ap.add_argument("--search-clients", type=int, default=3)
    ap.add_argument("--ingest-clients", type=int, default=2)
    ap.add_argument("--malformed-clients", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="Documents per ingest request.")
    ap.add_argument("--malformed-gap", type=float, default=0.1,
                    help="Seconds each malformed client waits between requests (mixed in, not a flood).")
    ap.add_argument("--threads", type=int, default=1, help="Server torch threads.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import httpx
    from serve import free_port, wait_healthy

    from csr_adapter.integrations.base import CollectionMeta, Point
    from csr_adapter.integrations.qdrant import open_qdrant
    from csr_adapter.sparse import SparseEmbedding

    work = Path(tempfile.mkdtemp(prefix="csr-soak-"))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                        "CSR_ADAPTER_CACHE": str(work / "cache")}
    os.environ.update(env)
    docs, store = work / "docs", work / "store"
    docs.mkdir()
    pool = sorted(POOL.glob("*.txt"))
    for src in pool[:args.files]:
        shutil.copyfile(src, docs / src.name)
    phrases = []
    for path in sorted(docs.iterdir()):
        words = path.read_text(encoding="utf-8").split()
        phrases += [(path.name, " ".join(words[i:i + 8])) for i in range(0, max(1, len(words) - 8), 40)]
    chunks = []  # new documents for the ingest clients, in 100-word chunks
    for path in pool[args.files:]:
        words = path.read_text(encoding="utf-8").split()
        chunks += [" ".join(words[i:i + 100]) for i in range(0, len(words), 100)]

    t_ingest = time.perf_counter()
    first = subprocess.run([sys.executable, "-m", "csr_adapter.cli", "ingest", str(docs), "--path", str(store),
                            "--collection", "soak", "--with-fallback", "--no-adapt", "--device", "cpu", "--threads",
                            str(args.threads), "--no-progress", "--json"], cwd=REPO, env=env, capture_output=True,
                           text=True)
    if first.returncode != 0:
        raise SystemExit(f"initial ingest failed: {first.stderr[-2000:]}")
    initial = json.loads(first.stdout)
    initial_s = time.perf_counter() - t_ingest

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, store, work, args.threads)
    stats, rss, index = Stats(), [], None
    index_lock, ingested = threading.Lock(), []
    try:
        wait_healthy(url, proc)
        info = httpx.get(url + "/info", timeout=10).json()["csr_adapter"]
        h, k, d = info["h"], info["k"], info["d"]
        index = open_qdrant("ingested", path=work / "client", meta=CollectionMeta(info["model_id"], h, k, d=d))
        t_start = time.monotonic()
        warm_end, end = t_start + args.warmup, t_start + args.warmup + args.seconds

        def post(client: httpx.Client, route: str, body: object, headers: dict | None = None):
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return client.post(url + route, content=content,
                               headers={"content-type": "application/json", **(headers or {})})

        def timed(client: httpx.Client, route: str, body: object):
            """The response, recorded with its latency (after the warm-up), or None after a transport error."""
            t0 = time.perf_counter()
            try:
                resp = post(client, route, body)
            except httpx.HTTPError as exc:
                stats.record(route, type(exc).__name__)
                stats.error(f"{route} {type(exc).__name__}")
                return None
            ms = (time.perf_counter() - t0) * 1e3
            stats.record(route, resp.status_code, ms if resp.status_code == 200 and time.monotonic() > warm_end
                         else None)
            if resp.status_code != 200:
                reason = resp.json().get("error", "") if one_line_error(resp) else resp.text[:80]
                stats.error(f"{route} {resp.status_code}: {str(reason)[:80]}")
                return None
            return resp

        def search_client(i: int) -> None:
            rng = random.Random(args.seed * 1000 + i)
            with httpx.Client(timeout=120) as client:
                n = 0
                while time.monotonic() < end:
                    name, phrase = rng.choice(phrases)
                    body: dict = {"query": phrase, "top_k": 5}
                    if n % 3 == 0:
                        body["filter"] = {"source": f"docs/{name}"}
                    resp = timed(client, "/search", body)
                    if resp is not None:
                        hits = resp.json()["hits"]
                        if not hits:
                            stats.error("/search: no hits")
                        elif "filter" in body and any(h["payload"]["source"] != f"docs/{name}" for h in hits):
                            stats.error("/search: a filtered search returned another file")
                    n += 1

        def ingest_client(i: int) -> None:
            with httpx.Client(timeout=120) as client:
                n = 0
                while time.monotonic() < end:
                    lo = (i * 7919 + n * args.batch) % len(chunks)
                    texts = [f"{chunks[(lo + j) % len(chunks)]} (copy {i}.{n}.{j})" for j in range(args.batch)]
                    n += 1
                    sparse = timed(client, "/embed_sparse", {"inputs": texts})
                    dense = timed(client, "/embed", {"inputs": texts})
                    if sparse is None or dense is None:
                        continue
                    codes, vectors = sparse.json(), np.asarray(dense.json(), dtype=np.float32)
                    if len(codes) != len(texts) or vectors.shape != (len(texts), d) or any(
                            not 0 < len(c) <= k or max(e["index"] for e in c) >= h for c in codes):
                        stats.error("ingest: a code or vector of the wrong shape")
                        continue
                    points = [Point(str(uuid.uuid4()), {"text": t},
                                    sparse=SparseEmbedding(np.array([e["index"] for e in c], dtype=np.int32),
                                                           np.array([e["value"] for e in c], dtype=np.float32), h),
                                    dense=v) for t, c, v in zip(texts, codes, vectors)]
                    with index_lock:
                        index.upsert(points)
                        ingested.extend((p.id, p.sparse) for p in points)

        def malformed_client(i: int) -> None:
            with httpx.Client(timeout=120) as client:
                n = i * 5
                while time.monotonic() < end:
                    case, route, body, headers = MALFORMED[n % len(MALFORMED)]
                    n += 1
                    time.sleep(args.malformed_gap)
                    try:
                        resp = post(client, route, body, headers)
                    except httpx.HTTPError as exc:
                        stats.malformed[case][type(exc).__name__] += 1
                        stats.error(f"malformed ({case}): {type(exc).__name__}")
                        continue
                    stats.malformed[case][resp.status_code] += 1
                    stats.record("malformed", resp.status_code)
                    if not 400 <= resp.status_code < 500:
                        stats.error(f"malformed ({case}): answered {resp.status_code}")
                    elif not one_line_error(resp):
                        stats.error(f"malformed ({case}): error body not one line of JSON")

        def sample_memory() -> None:
            while time.monotonic() < end and proc.poll() is None:
                rss.append((round(time.monotonic() - t_start, 1), round(rss_mb(proc.pid), 1)))
                time.sleep(1.0)

        workers = ([threading.Thread(target=search_client, args=(i,)) for i in range(args.search_clients)]
                   + [threading.Thread(target=ingest_client, args=(i,)) for i in range(args.ingest_clients)]
                   + [threading.Thread(target=malformed_client, args=(i,)) for i in range(args.malformed_clients)]
                   + [threading.Thread(target=sample_memory)])
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - t_start
        peak_mb = rss_mb(proc.pid, "VmHWM")
        alive = proc.poll() is None
        # the client-side index holds every chunk, each found first by its own code
        if index.count() != len(ingested):
            stats.error(f"ingest: the index holds {index.count()} of {len(ingested)} chunks")
        for pid, code in random.Random(args.seed).sample(ingested, min(30, len(ingested))):
            if pid not in [hit.id for hit in index.search(code, top_k=3)]:
                stats.error("ingest: a chunk is not found by its own code")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if index is not None:
            index.close()
        shutil.rmtree(work, ignore_errors=True)

    load = [mb for t, mb in rss if t >= args.warmup]
    q = max(1, len(load) // 4)
    first_q, last_q = float(np.median(load[:q])), float(np.median(load[-q:]))
    by_route: dict[str, Counter] = defaultdict(Counter)
    for key, n in stats.served.items():
        route, status = key.split(" ", 1)
        by_route[route][status] += n
    failed_well_formed = sum(n for kind, n in stats.errors.items() if not kind.startswith("malformed"))
    refused = sum(n for kind, n in stats.errors.items() if kind.startswith("malformed"))
    result = {
        "settings": vars(args), "elapsed_s": round(elapsed, 1), "server_alive_at_end": alive,
        "initial_ingest": {"files": initial["files"], "points": initial["points"], "seconds": round(initial_s, 1)},
        "served": dict(sorted(stats.served.items())),
        "requests_by_route": {route: sum(c.values()) for route, c in by_route.items()},
        "latency_ms": {route: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)}
                       for route, v in sorted(stats.latency_ms.items())},
        "ingested_chunks": len(ingested), "errors": dict(stats.errors.most_common()),
        "failed_well_formed": failed_well_formed, "malformed_not_refused_cleanly": refused,
        "malformed_cases": {case: dict(c) for case, c in stats.malformed.items()},
        "memory_mb": {"first_quarter_median": round(first_q, 1), "last_quarter_median": round(last_q, 1),
                      "last_over_first": round(last_q / first_q, 3), "peak": round(peak_mb, 1), "samples": rss},
    }
    total = sum(stats.served.values())

    def row(route: str) -> str:
        lat = result["latency_ms"].get(route, {})
        statuses = ", ".join(f"{status} x{n}" for status, n in sorted(by_route[route].items()))
        return (f"| {route} | {sum(by_route[route].values())} | {statuses} | {lat.get('p50', '-')} | "
                f"{lat.get('p99', '-')} |")

    rows = "\n".join(row(route) for route in ("/search", "/embed_sparse", "/embed", "malformed"))
    cases = "; ".join(f"{case}: {', '.join(f'{s} x{n}' for s, n in sorted(c.items(), key=str))}"
                      for case, c in stats.malformed.items())
    series = ", ".join(f"{mb:.0f}" for t, mb in rss[::5])
    md = (f"# Soak: a shared server under concurrent ingest and search, malformed requests mixed in\n\n"
          f"`{' '.join(['python', 'benchmarks/soak.py', *sys.argv[1:]])}`: `csr-adapter serve` (subprocess, "
          f"loopback, {args.threads} torch thread, micro-batching on) over a collection of {initial['points']} "
          f"points ({initial['files']} files of examples/corpus; Qdrant Edge + FAISS fallback); then "
          f"{args.search_clients} search, {args.ingest_clients} ingest and {args.malformed_clients} malformed "
          f"(one request per {args.malformed_gap:g} s each) clients for {args.seconds:.0f} s after a "
          f"{args.warmup:.0f} s warm-up. Ingest = batches of "
          f"{args.batch} new chunks encoded by the server (`/embed_sparse` + `/embed`) and indexed client-side "
          f"into a second Qdrant Edge collection (the served embedded collection admits one open handle, the "
          f"server's). Malformed: {len(MALFORMED)} cases in rotation (see the script).\n\n"
          f"**{total} requests served; {failed_well_formed} failed well-formed requests; "
          f"{refused} malformed requests not refused cleanly** (4xx with a one-line JSON error); "
          f"{len(ingested)} chunks ingested (index count checked, 30 found by their own code). Server alive at "
          f"the end: {alive}.\n\n"
          f"| route | requests | by status | p50 ms | p99 ms |\n|---|---|---|---|---|\n{rows}\n\n"
          f"Latency: well-formed requests answered 200 after the warm-up (ingest: per request of {args.batch} "
          f"texts).\n\n"
          f"Server memory (RSS): median {first_q:.0f} MB over the first quarter of the load, {last_q:.0f} MB over "
          f"the last ({last_q / first_q:.3f}x); peak {peak_mb:.0f} MB. Every 5 s (MB): {series}.\n\n"
          f"Errors by kind: {dict(stats.errors.most_common()) or 'none'}.\n\n"
          f"Malformed cases and their answers: {cases}.\n")
    write_result("soak", result, md)
    print(md)


if __name__ == "__main__":
    main()
