"""Simulated outcomes → servelab's request records (the one schema), a run directory, a price.

The table has exactly :data:`servelab.records.SCHEMA`, filled the way the platform's meter and
the load generator fill it, so ``servelab analyze``, ``servelab cost`` and ``servelab report``
read a simulated run like a measured one:

* ``latency_ms`` = completion − scheduled (the simulated client sends on time, so
  ``sent_s = scheduled_s`` and ``send_lag_ms`` is left empty: there is no generator to lag);
* ``start_kind``/``cold`` and the init are the core's accounting (:mod:`servelab.billing.rules`):
  the first request of an environment started on demand is cold and carries its init; a
  request that waited behind someone else's cold start is warm;
* ``platform_ms`` = answer − arrival; ``queue_ms`` = dispatch − arrival, except for a cold
  request, whose wait for its own environment's init is ``init_ms``, not queueing
  (dispatch − max(arrival, ready)), as the platform reports it;
* ``duration_ms`` = the batch's execution time; ``billed_ms`` = the batch's duration rounded up
  once and divided by the batch size, plus the rounded init on the record that carries it
  (:func:`servelab.billing.rules.request_billed_ms`, the meter's formula);
* a request whose latency exceeds the client timeout is ``timeout`` (the load generator's rule).

Built vectorised from :class:`~servelab.sim.outcomes.Outcomes`: about a second per million rows.
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

from servelab.billing.rules import INSTANCE_KINDS, ROUNDING_TOLERANCE, START_KINDS
from servelab.records import INSTANCE_SCHEMA, SCHEMA, STATUSES
from servelab.sim.outcomes import COLD, OK, PROVISIONED, THROTTLED, TIMEOUT, WARM, Outcomes
from servelab.sim.profile import INIT_PARTS

PART_ROWS = 1_000_000  # rows per Parquet part, like RecordWriter's parts


def billed_ms_array(duration_ms: np.ndarray, rounding_ms: float) -> np.ndarray:
    """:func:`servelab.billing.rules.billed_ms` over an array (same formula, vectorised; tested)."""
    return np.ceil(duration_ms / rounding_ms - ROUNDING_TOLERANCE) * rounding_ms


@dataclass(frozen=True)
class RecordFacts:
    """What the records need besides the outcomes."""

    run_id: str
    target: str
    memory_mb: int | None
    billing_rounding_ms: int = 1
    init_parts: dict[str, float] | None = None  # share of init_ms per part
    client_timeout_s: float = 30.0
    bill_init: bool = True  # the records' billed_ms include init (AWS's rule since 2025-08)


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
    inst_kind_of = np.asarray([*out.inst_kind, PROVISIONED], dtype=np.int8)[inst]
    cold = ran & (kind == COLD)
    carries_init = ran & (kind != WARM) & (inst_kind_of != PROVISIONED)  # billing.rules.carries_init

    completed = done + client_overhead_ms / 1000.0
    latency = (completed - sched) * 1000.0
    timed_out = (status == OK) & (latency > facts.client_timeout_s * 1000.0)
    status = np.where(timed_out, TIMEOUT, status).astype(np.int8)
    latency = np.where(timed_out, facts.client_timeout_s * 1000.0, latency)
    completed = np.where(timed_out, sched + facts.client_timeout_s, completed)

    platform_ms = (done - sched) * 1000.0
    queue_from = np.where(cold, np.maximum(sched, ready_of), sched)
    queue_ms = np.where(ran, (dispatch - queue_from) * 1000.0, platform_ms)
    # a batch is one execution: round it once, then split it (totals stay right at any rounding)
    r = facts.billing_rounding_ms
    billed = np.where(ran, billed_ms_array(np.nan_to_num(dur), r) / np.maximum(batch, 1), 0.0)
    if facts.bill_init:
        billed = billed + np.where(carries_init, billed_ms_array(np.nan_to_num(init_of), r), 0.0)
    init_ms = np.where(carries_init, init_of, np.nan)

    def floats(a: np.ndarray) -> pa.Array:
        return pa.array(a, type=pa.float64(), from_pandas=True)  # NaN -> null

    def strings(codes: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> pa.Array:
        idx = pa.array(codes.astype(np.int32), mask=None if valid is None else ~valid)
        return pa.DictionaryArray.from_arrays(idx, pa.array(names)).cast(pa.string())

    errors: list[str | None] = [None] * n
    for i, text in out.error.items():
        errors[i] = text
    for k in np.flatnonzero(timed_out).tolist():
        errors[k] = f"client timeout after {facts.client_timeout_s:g} s"
    throttled = status == THROTTLED
    for k in np.flatnonzero(throttled).tolist():
        errors[k] = errors[k] or "Rate Exceeded."

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
        "start_kind": strings(kind, list(START_KINDS), ran),  # WARM, PREWARMED, COLD index START_KINDS
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


def build_instances(out: Outcomes, facts: RecordFacts) -> pa.Table:
    """The instance lifecycle records of one simulated run (:data:`servelab.records.INSTANCE_SCHEMA`):
    ``started`` and ``ready`` per instance, and ``reclaimed`` or ``died`` for those that ended."""
    rows: list[dict[str, Any]] = []
    parts = facts.init_parts or {}
    for k in range(out.instances):
        base = {"run_id": facts.run_id, "target": facts.target, "instance_id": f"sim-{k:06d}",
                "kind": INSTANCE_KINDS[out.inst_kind[k]], "memory_mb": facts.memory_mb}
        rows.append({**base, "event": "started", "at_s": out.inst_start_s[k]})
        init = out.inst_init_ms[k]
        ready = {**base, "event": "ready", "at_s": out.inst_ready_s[k], "init_ms": init}
        for part in INIT_PARTS:
            if part in parts:
                ready[f"init_{part}_ms"] = init * parts[part]
        rows.append(ready)
        end = out.inst_end_s[k]
        if np.isfinite(end):
            reason = out.inst_end_reason.get(k, "")
            event = "died" if reason in ("timeout", "crash", "oom") else "reclaimed"
            rows.append({**base, "event": event, "at_s": end, "reason": reason})
    cols = {name: [row.get(name) for row in rows] for name in INSTANCE_SCHEMA.names}
    return pa.table(cols, schema=INSTANCE_SCHEMA)


def _write_parts(directory: Path, table: pa.Table) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    for k, start in enumerate(range(0, max(table.num_rows, 1), PART_ROWS), start=1):
        part = directory / f"part-{k:06d}.parquet"
        tmp = part.with_suffix(".tmp")
        pq.write_table(table.slice(start, PART_ROWS), tmp)
        os.replace(tmp, part)


def write_run(out_dir: str | os.PathLike[str], table: pa.Table, *, run_id: str, config: dict[str, Any],
              summary: dict[str, Any] | None = None, instances: pa.Table | None = None) -> Path:
    """``out_dir/run.json`` + ``out_dir/records/part-*.parquet`` (+ ``out_dir/instances/``): a run
    directory like the load generator's, readable by ``servelab analyze`` / ``cost`` / ``report``."""
    out = Path(out_dir)
    _write_parts(out / "records", table)
    if instances is not None:
        _write_parts(out / "instances", instances)
    from servelab.provenance import versions

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    doc = {"run_id": run_id, "status": "completed", "started_at": now, "ended_at": now,
           "simulated": True, "config": config, "versions": versions()}
    if summary is not None:
        doc["result"] = summary
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / "run.json")
    return out
