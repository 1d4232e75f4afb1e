"""The billing meter: every invocation becomes a :class:`RequestRecord` on disk and a few
Prometheus samples; every instance's life becomes :class:`InstanceRecord` rows beside them.

What a record is billed is the accounting rules' (:mod:`servelab.billing.rules`): execution
time rounded up once per batch and shared by its requests, plus the init on the record that
carries it (AWS bills the INIT phase since August 2025).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servelab.records import INSTANCE_SCHEMA, InstanceRecord, RecordWriter, RequestRecord

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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
    """Records (Parquet parts under ``records_dir``; lifecycle records under ``instances_dir``,
    default ``records_dir``'s sibling ``instances``) and Prometheus metrics for the platform."""

    def __init__(self, records_dir: Path, *, run_id: str | None = None, instances_dir: Path | None = None) -> None:
        self.run_id = run_id or f"platform-{uuid.uuid4().hex[:8]}"
        self.writer = RecordWriter(records_dir, prefix=f"{self.run_id}-")
        self.instance_writer = RecordWriter(instances_dir or Path(records_dir).parent / "instances",
                                            prefix=f"{self.run_id}-", schema=INSTANCE_SCHEMA)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("servelab_requests", "Invocations by function and status",
                                ["function", "status"], registry=r)
        self.cold_starts = Counter("servelab_cold_starts",
                                   "First requests of environments started on demand", ["function"], registry=r)
        self.starts = Counter("servelab_instance_starts", "Instances started, by kind",
                              ["function", "kind"], registry=r)
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

    def instance_event(self, rec: InstanceRecord) -> None:
        self.instance_writer.append(rec)
        if rec.event == "started":
            self.starts.labels(rec.target, rec.kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self.writer.close()
        self.instance_writer.close()
