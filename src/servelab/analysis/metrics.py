"""Per-run metrics over request records: latency, success ratio, cold starts, errors, lag.

Everything is computed column-wise with pyarrow and numpy, so a million records take well
under a second. Definitions (each chosen to match a published practice):

- **Success ratio** (the SIGMOD'22 study's SR): requests with status ``ok`` / all requests.
  The runner turns every request that had no answer within its timeout into ``timeout``, so
  ``ok`` already means "ok within the timeout".
- **Latency** percentiles are over ``ok`` requests, measured from the *scheduled* time.
  Percentiles use linear interpolation (numpy's default).
- **Window**: ``window_s`` if given (the run's duration), else from the first scheduled time to
  the last completion. Offered rate = all requests / window. Throughput = ok requests / the
  span from the first scheduled time to the last completion (at least the window): when the
  target fell behind, its queue drains after the schedule ends and throughput shows the rate
  it really served, not the rate it was offered.
- **Decomposition** (as SeBS reports it), for ``ok`` requests that carry server facts:
  client time = latency − ``platform_ms``; platform time = ``queue_ms`` + ``init_ms``;
  function time = ``inference_ms`` (or ``duration_ms`` where only a cloud's figure exists).
- **Generator behind**: the run's p99 send lag is above ``lag_threshold_ms`` — the load that
  reached the target was not the load that was asked for, and the run should be repeated with
  more generator processes.

Units: milliseconds for latencies and lags (``*_ms``), seconds for times (``*_s``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from servelab.errors import ConfigError
from servelab.records import STATUSES, read_records

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
INIT_PARTS: tuple[str, ...] = ("init_ms", "init_process_ms", "init_import_ms", "init_fetch_ms",
                               "init_load_ms")
DEFAULT_LAG_THRESHOLD_MS = 5.0


def column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 numpy, nulls as NaN."""
    col = table.column(name)
    if col.null_count:
        col = pc.fill_null(col.cast(pa.float64()), math.nan)
    return col.to_numpy().astype(np.float64, copy=False)


def mask(table: pa.Table, name: str, value: Any) -> np.ndarray:
    """``table[name] == value`` as a numpy bool array; nulls are False."""
    return pc.fill_null(pc.equal(table.column(name), value), False).to_numpy()


def _stats(values: np.ndarray) -> dict[str, float] | None:
    """mean, p50 … p99, max of the finite values; None when there are none."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    pcts = np.percentile(v, PERCENTILES)
    out = {"mean": float(v.mean())}
    out.update({f"p{p}": float(x) for p, x in zip(PERCENTILES, pcts, strict=True)})
    out["max"] = float(v.max())
    out["n"] = int(v.size)
    return out


def _short(values: np.ndarray) -> dict[str, float] | None:
    v = values[np.isfinite(values)]
    return None if v.size == 0 else {"mean": float(v.mean()), "p50": float(np.median(v)), "n": int(v.size)}


@dataclass
class RunSummary:
    """One run's numbers; :meth:`flat` gives one row for a CSV or a side-by-side table."""

    name: str
    count: int
    window_s: float
    offered_rps: float
    throughput_rps: float
    success_ratio: float | None
    by_status: dict[str, int]
    latency_ms: dict[str, float] | None
    cold_starts: int
    cold_ratio: float | None
    start_kinds: dict[str, int]
    init_ms: dict[str, dict[str, float] | None]
    top_errors: list[dict[str, Any]]
    send_lag_ms: dict[str, float] | None
    generator_behind: bool
    lag_threshold_ms: float
    decomposition_ms: dict[str, dict[str, float] | None]
    instances: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def throttled(self) -> int:
        return self.by_status.get("throttled", 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Scalar metrics only, in a stable order (the CSV columns)."""
        row: dict[str, Any] = {
            "name": self.name, "count": self.count, "window_s": self.window_s,
            "offered_rps": self.offered_rps, "throughput_rps": self.throughput_rps,
            "success_ratio": self.success_ratio,
        }
        row.update({f"n_{s}": self.by_status.get(s, 0) for s in STATUSES})
        for key in ("mean", *(f"p{p}" for p in PERCENTILES), "max"):
            row[f"latency_{key}_ms"] = (self.latency_ms or {}).get(key)
        row["cold_starts"] = self.cold_starts
        row["cold_ratio"] = self.cold_ratio
        for part, s in self.init_ms.items():
            base = part.removesuffix("_ms")
            row[f"{base}_mean_ms"] = (s or {}).get("mean")
            row[f"{base}_p50_ms"] = (s or {}).get("p50")
        for part, s in self.decomposition_ms.items():
            row[f"{part}_mean_ms"] = (s or {}).get("mean")
            row[f"{part}_p50_ms"] = (s or {}).get("p50")
        for key in ("p50", "p99", "max"):
            row[f"send_lag_{key}_ms"] = (self.send_lag_ms or {}).get(key)
        row["generator_behind"] = self.generator_behind
        row["instances"] = self.instances
        return row


def _top_errors(table: pa.Table, ok: np.ndarray, k: int) -> list[dict[str, Any]]:
    bad = table.filter(pa.array(~ok)).select(["status", "error"])
    if bad.num_rows == 0:
        return []
    bad = bad.set_column(1, "error", pc.fill_null(bad.column("error"), ""))
    groups = bad.group_by(["status", "error"]).aggregate([([], "count_all")])
    groups = groups.sort_by([("count_all", "descending"), ("status", "ascending")]).slice(0, k)
    return [{"status": r["status"], "error": r["error"] or None, "count": r["count_all"]}
            for r in groups.to_pylist()]


def _counts(table: pa.Table, name: str) -> dict[str, int]:
    vc = pc.value_counts(table.column(name).drop_null()).to_pylist()
    return {d["values"]: d["counts"] for d in vc}


def summarize(table: pa.Table, *, name: str = "", window_s: float | None = None,
              lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS, top_k: int = 5,
              meta: dict[str, Any] | None = None) -> RunSummary:
    """All per-run metrics of ``table`` (records in :data:`servelab.records.SCHEMA`)."""
    n = table.num_rows
    ok = mask(table, "status", "ok")
    n_ok = int(ok.sum())
    scheduled = column(table, "scheduled_s")
    completed = column(table, "completed_s")
    ends = np.concatenate([completed[np.isfinite(completed)], scheduled])
    span_s = float(ends.max() - scheduled.min()) if n else 0.0
    if window_s is None:
        window_s = span_s
    span_s = max(span_s, window_s)
    latency = column(table, "latency_ms")
    cold = mask(table, "cold", True)
    by_status = dict.fromkeys(STATUSES, 0) | _counts(table, "status")

    init = {p: _short(column(table, p)[cold]) for p in INIT_PARTS}
    lag = _stats(column(table, "send_lag_ms"))

    platform_ms = column(table, "platform_ms")[ok]
    parts = np.stack([column(table, "queue_ms")[ok], column(table, "init_ms")[ok]])
    has_part = np.isfinite(parts).any(axis=0)
    platform_part = np.where(has_part, np.nansum(parts, axis=0), np.nan)
    function = column(table, "inference_ms")[ok]
    function = np.where(np.isfinite(function), function, column(table, "duration_ms")[ok])
    decomposition = {
        "client": _short(latency[ok] - platform_ms),
        "platform": _short(platform_part),
        "function": _short(function),
    }
    return RunSummary(
        name=name, count=n, window_s=window_s,
        offered_rps=n / window_s if window_s > 0 else 0.0,
        throughput_rps=n_ok / span_s if span_s > 0 else 0.0,
        success_ratio=n_ok / n if n else None,
        by_status=by_status,
        latency_ms=_stats(latency[ok]),
        cold_starts=int(cold.sum()),
        cold_ratio=float(cold.sum()) / n if n else None,
        start_kinds=_counts(table, "start_kind"),
        init_ms=init,
        top_errors=_top_errors(table, ok, top_k),
        send_lag_ms=lag,
        generator_behind=bool(lag is not None and lag["p99"] > lag_threshold_ms),
        lag_threshold_ms=lag_threshold_ms,
        decomposition_ms=decomposition,
        instances=pc.count_distinct(table.column("instance_id")).as_py() if n else 0,
        meta=meta or {},
    )


@dataclass
class LoadedRun:
    """Records of one run and its ``run.json`` (empty when the path holds only records)."""

    name: str
    table: pa.Table
    meta: dict[str, Any]

    @property
    def window_s(self) -> float | None:
        """The run's scheduled duration, when ``run.json`` knows it."""
        cfg = self.meta.get("config", {})
        value = cfg.get("duration_s") or cfg.get("schedule_end_s")
        return float(value) if value else None


def load_run(path: str | os.PathLike) -> LoadedRun:
    """A run directory (``run.json`` + ``records/``), a records directory, or one Parquet file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such run directory or records file")
    meta: dict[str, Any] = {}
    if p.is_dir() and (p / "run.json").is_file():
        meta = json.loads((p / "run.json").read_text())
    records = p / "records" if (p / "records").is_dir() else p
    if records.is_dir() and not any(records.glob("part-*.parquet")):
        raise ConfigError(f"{p}: no records found (expected {records}/part-*.parquet)")
    return LoadedRun(name=p.name if p.name != "records" else p.parent.name,
                     table=read_records(records), meta=meta)


def summarize_run(run: LoadedRun, **kwargs: Any) -> RunSummary:
    kwargs.setdefault("window_s", run.window_s)
    return summarize(run.table, name=run.name, meta=run.meta, **kwargs)
