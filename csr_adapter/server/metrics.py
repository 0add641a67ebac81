"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand (no extra dependency).

Series: ``csr_adapter_requests_total{route,status}``, ``csr_adapter_request_duration_seconds{route}``
(histogram), ``csr_adapter_batch_texts`` (histogram: texts per forward pass), ``csr_adapter_queue_texts``
(gauge: texts waiting for the model), ``csr_adapter_queue_rejected_total`` and
``csr_adapter_queue_timeouts_total``. ``route`` is the route's path, or ``other`` for paths no route
serves (so a scanner cannot grow the label set). Everything is updated on the event loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{_num(bound)}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {_num(self.sum)}", f"{name}_count{suffix} {self.count}"]
        return out


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters and latency histograms per route; the batcher's figures are read when rendered."""

    def __init__(self, routes: Iterable[str] = ()) -> None:
        self.routes = set(routes)
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}

    def route_of(self, path: str) -> str:
        return path if path in self.routes else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = self.route_of(path)
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
        self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self, batch_sizes: Histogram, queue_texts: int, rejected: int, timeouts: int) -> str:
        out = ["# HELP csr_adapter_requests_total HTTP requests answered, by route and status code.",
               "# TYPE csr_adapter_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'csr_adapter_requests_total{{route="{_label(route)}",status="{status}"}} {n}')
        out += ["# HELP csr_adapter_request_duration_seconds Time from request start to the response's last byte.",
                "# TYPE csr_adapter_request_duration_seconds histogram"]
        for route, hist in sorted(self.latency.items()):
            out += hist.lines("csr_adapter_request_duration_seconds", f'route="{_label(route)}"')
        out += ["# HELP csr_adapter_batch_texts Texts per micro-batch (one backbone forward pass each).",
                "# TYPE csr_adapter_batch_texts histogram", *batch_sizes.lines("csr_adapter_batch_texts"),
                "# HELP csr_adapter_queue_texts Texts waiting for the model now.",
                "# TYPE csr_adapter_queue_texts gauge", f"csr_adapter_queue_texts {queue_texts}",
                "# HELP csr_adapter_queue_rejected_total Requests refused because the queue was full (429).",
                "# TYPE csr_adapter_queue_rejected_total counter", f"csr_adapter_queue_rejected_total {rejected}",
                "# HELP csr_adapter_queue_timeouts_total Requests that waited past the timeout (429).",
                "# TYPE csr_adapter_queue_timeouts_total counter", f"csr_adapter_queue_timeouts_total {timeouts}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Count every HTTP response (status and latency per route), errors from inner middleware included."""

    def __init__(self, app: Callable[..., Any], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        recorded = False

        async def counting_send(message: dict) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not recorded:
                recorded = True
                self.metrics.observe(scope["path"], status, time.perf_counter() - start)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not recorded:  # the app raised, or the client went away mid-response
                self.metrics.observe(scope["path"], status, time.perf_counter() - start)
