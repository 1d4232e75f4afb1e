"""The billing meter: every invocation becomes a :class:`RequestRecord` on disk and a few
Prometheus samples, priced the way AWS Lambda prices it.

Billed duration = execution time rounded *up* to ``billing_rounding_ms`` (1 ms on Lambda),
plus the init duration on a cold start (AWS bills the INIT phase since August 2025). A batch
of n requests is one execution: each request is billed duration / n, so totals stay right.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servelab.records import RecordWriter, RequestRecord

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def billed_ms(duration_ms: float, rounding_ms: int) -> float:
    return float(math.ceil(duration_ms / rounding_ms - 1e-9) * rounding_ms)


def report_line(rec: RequestRecord) -> str:
    """AWS Lambda's REPORT line for one invocation."""
    parts = [f"REPORT RequestId: {rec.request_id}",
             f"Duration: {rec.duration_ms or 0.0:.2f} ms",
             f"Billed Duration: {int(rec.billed_ms or 0)} ms",
             f"Memory Size: {rec.memory_mb} MB",
             f"Max Memory Used: {round(rec.max_memory_used_mb or 0)} MB"]
    if rec.cold and rec.init_ms is not None:
        parts.append(f"Init Duration: {rec.init_ms:.2f} ms")
    return "\t".join(parts) + "\t"


class Meter:
    """Records (Parquet parts under ``records_dir``) and Prometheus metrics for the platform."""

    def __init__(self, records_dir: Path, *, run_id: str | None = None) -> None:
        self.run_id = run_id or f"platform-{uuid.uuid4().hex[:8]}"
        self.writer = RecordWriter(records_dir, prefix=f"{self.run_id}-")
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("servelab_requests", "Invocations by function and status",
                                ["function", "status"], registry=r)
        self.cold_starts = Counter("servelab_cold_starts",
                                   "Requests that waited for an instance to start", ["function"], registry=r)
        self.latency = Histogram("servelab_request_latency_seconds", "Platform time per request",
                                 ["function"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.init_time = Histogram("servelab_init_duration_seconds", "Instance init duration",
                                   ["function", "mode"], buckets=LATENCY_BUCKETS_S,
                                   registry=r)
        self.billed_gb_s = Counter("servelab_billed_gb_seconds", "Billed GB-seconds", ["function"],
                                   registry=r)
        self.instances = Gauge("servelab_instances", "Instances by state", ["function", "state"], registry=r)
        self.instance_failures = Counter("servelab_instance_failures", "Instances lost, by cause",
                                         ["function", "cause"], registry=r)

    def record(self, rec: RequestRecord) -> None:
        self.writer.append(rec)
        fn = rec.target
        self.requests.labels(fn, rec.status).inc()
        if rec.cold:
            self.cold_starts.labels(fn).inc()
        if rec.platform_ms is not None:
            self.latency.labels(fn).observe(rec.platform_ms / 1000.0)
        if rec.billed_ms and rec.memory_mb:
            self.billed_gb_s.labels(fn).inc(rec.billed_ms / 1000.0 * rec.memory_mb / 1024.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self.writer.close()
