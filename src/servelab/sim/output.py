"""Simulated outcomes → servelab's request records (the one schema), a run directory, a price.

The table has exactly :data:`servelab.records.SCHEMA`, filled the way the platform's meter and
the load generator fill it, so ``servelab analyze``, ``servelab cost`` and ``servelab report``
read a simulated run like a measured one:

* ``latency_ms`` = completion − scheduled (the simulated client sends on time, so
  ``sent_s = scheduled_s`` and ``send_lag_ms`` is left empty: there is no generator to lag);
* ``platform_ms`` = answer − arrival; ``queue_ms`` = dispatch − max(arrival, instance ready),
  so the wait for an init is ``init_ms``, not queueing (as the platform reports it);
* ``duration_ms`` = the batch's execution time; ``billed_ms`` = the batch's duration rounded up
  (``meter.billed_ms``'s rounding) divided by the batch size, plus, on a cold start, the rounded
  init (AWS bills INIT since August 2025). The platform's meter rounds each request's *share*
  instead, which bills a batch up to n times over at 100 ms rounding; the simulator follows the
  meter's stated intent ("each request is billed duration / n, so totals stay right");
* a request whose latency exceeds the client timeout is ``timeout`` (the load generator's rule).

Built vectorised from :class:`~servelab.sim.core.Outcomes`: about a second per million rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from servelab.records import SCHEMA, STATUSES
from servelab.sim.core import COLD, OK, THROTTLED, TIMEOUT, Outcomes
from servelab.sim.profile import INIT_PARTS

START_KINDS = ("warm", "prewarmed", "cold")
PART_ROWS = 1_000_000  # rows per Parquet part, like RecordWriter's parts
# meter.billed_ms rounds ceil(d / r - 1e-9) * r; the vectorised form below must agree (tested).
_METER_TOLERANCE = 1e-9


def billed_ms_array(duration_ms: np.ndarray, rounding_ms: int) -> np.ndarray:
    """:func:`servelab.platform.meter.billed_ms` over an array (same formula, vectorised)."""
    return np.ceil(duration_ms / rounding_ms - _METER_TOLERANCE) * rounding_ms


@dataclass(frozen=True)
class RecordFacts:
    """What the records need besides the outcomes."""

    run_id: str
    target: str
    memory_mb: int | None
    billing_rounding_ms: int = 1
    init_parts: dict[str, float] | None = None  # share of init_ms per part
    client_timeout_s: float = 30.0
    cold_starts: bool = True  # False for managed endpoints and servers: a wait for a start is queueing


def build_table(times_s: np.ndarray, out: Outcomes, client_overhead_ms: np.ndarray, facts: RecordFacts) -> pa.Table:
    """The records of one simulated run, in :data:`servelab.records.SCHEMA`."""
    n = out.n
    sched = np.asarray(times_s, dtype=np.float64)
    status = np.asarray(out.status, dtype=np.int8)
    dispatch = np.asarray(out.dispatch_s, dtype=np.float64)
    done = np.asarray(out.done_s, dtype=np.float64)
    inst = np.asarray(out.instance, dtype=np.int64)
    batch = np.asarray(out.batch, dtype=np.int64)
    dur = np.asarray(out.duration_ms, dtype=np.float64)
    kind = np.asarray(out.kind, dtype=np.int8)
    ran = inst >= 0
    if out.hold_ms is not None:  # the fast path leaves done_s of one-request batches to compute here
        fill = ran & np.isnan(done)
        done = np.where(fill, dispatch + (dur + out.hold_ms) / 1000.0, done)

    ready_of = np.asarray([*out.inst_ready_s, np.nan], dtype=np.float64)[inst]  # -1 -> nan
    init_of = np.asarray([*out.inst_init_ms, np.nan], dtype=np.float64)[inst]
    cold = ran & (kind == COLD)

    completed = done + client_overhead_ms / 1000.0
    latency = (completed - sched) * 1000.0
    timed_out = (status == OK) & (latency > facts.client_timeout_s * 1000.0)
    status = np.where(timed_out, TIMEOUT, status).astype(np.int8)
    latency = np.where(timed_out, facts.client_timeout_s * 1000.0, latency)
    completed = np.where(timed_out, sched + facts.client_timeout_s, completed)

    platform_ms = (done - sched) * 1000.0
    queue_from = np.where(ran, np.maximum(sched, ready_of), sched) if facts.cold_starts else sched
    queue_ms = np.where(ran, (dispatch - queue_from) * 1000.0, platform_ms)
    # a batch is one execution: round it once, then split it (totals stay right at any rounding)
    r = facts.billing_rounding_ms
    billed = np.where(ran, billed_ms_array(np.nan_to_num(dur), r) / np.maximum(batch, 1), 0.0)
    billed = billed + np.where(cold, billed_ms_array(np.nan_to_num(init_of), r), 0.0)
    init_ms = np.where(cold, init_of, np.nan)

    def floats(a: np.ndarray) -> pa.Array:
        return pa.array(a, type=pa.float64(), from_pandas=True)  # NaN -> null

    def strings(codes: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> pa.Array:
        idx = pa.array(codes.astype(np.int32), mask=None if valid is None else ~valid)
        return pa.DictionaryArray.from_arrays(idx, pa.array(names)).cast(pa.string())

    errors = [None] * n
    for i, text in out.error.items():
        errors[i] = text
    for i in np.flatnonzero(timed_out):
        errors[int(i)] = f"client timeout after {facts.client_timeout_s:g} s"
    throttled = status == THROTTLED
    for i in np.flatnonzero(throttled):
        errors[int(i)] = errors[int(i)] or "Rate Exceeded."

    n_inst = out.instances
    inst_names = [f"sim-{k:06d}" for k in range(n_inst)] or ["-"]
    http = np.where(throttled, 429, 200)
    parts = facts.init_parts or {}
    cols: dict[str, pa.Array] = {
        "run_id": pa.array([facts.run_id] * n, pa.string()) if n < 1000 else
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([facts.run_id])).cast(pa.string()),
        "request_id": pa.array(np.char.add("r", np.arange(n).astype(str)) if n else [], pa.string()),
        "target": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                 pa.array([facts.target])).cast(pa.string()),
        "scheduled_s": floats(sched),
        "sent_s": floats(sched),
        "completed_s": floats(completed),
        "latency_ms": floats(latency),
        "send_lag_ms": pa.nulls(n, pa.float64()),
        "status": strings(status, list(STATUSES)),
        "error": pa.array(errors, pa.string()),
        "http_status": pa.array(http, pa.int64()),
        "start_kind": strings(kind, list(START_KINDS), ran),
        "cold": pa.array(cold, mask=~ran),
        "instance_id": strings(np.where(ran, inst, 0), inst_names, ran),
        "platform_ms": floats(platform_ms),
        "queue_ms": floats(queue_ms),
        "init_ms": floats(init_ms),
    }
    for part in INIT_PARTS:
        cols[f"init_{part}_ms"] = floats(init_ms * parts[part]) if part in parts else pa.nulls(n, pa.float64())
    cols.update({
        "inference_ms": floats(np.where(ran, dur, np.nan)),
        "duration_ms": floats(np.where(ran, dur, np.nan)),
        "billed_ms": floats(billed),
        "memory_mb": pa.array(np.full(n, facts.memory_mb or 0), pa.int64(),
                              mask=np.full(n, facts.memory_mb is None)),
        "max_memory_used_mb": pa.nulls(n, pa.float64()),
        "batch_size": pa.array(batch, pa.int64(), mask=~ran),
    })
    return pa.table([cols[name] for name in SCHEMA.names], schema=SCHEMA)


def write_run(out_dir: str | os.PathLike, table: pa.Table, *, run_id: str, config: dict[str, Any],
              summary: dict[str, Any] | None = None) -> Path:
    """``out_dir/run.json`` + ``out_dir/records/part-*.parquet``: a run directory like the load
    generator's, readable by ``servelab analyze`` / ``cost`` / ``report``."""
    out = Path(out_dir)
    records = out / "records"
    records.mkdir(parents=True, exist_ok=True)
    for old in records.glob("part-*.parquet"):
        old.unlink()
    for k, start in enumerate(range(0, max(table.num_rows, 1), PART_ROWS), start=1):
        part = records / f"part-{k:06d}.parquet"
        tmp = part.with_suffix(".tmp")
        pq.write_table(table.slice(start, PART_ROWS), tmp)
        os.replace(tmp, part)
    from servelab.loadgen.runner import versions

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    doc = {"run_id": run_id, "status": "completed", "started_at": now, "ended_at": now,
           "simulated": True, "config": config, "versions": versions()}
    if summary is not None:
        doc["result"] = summary
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / "run.json")
    return out
