"""Analyzer speed on a million synthetic request records.

Builds 1 M records shaped like a real run (Poisson arrivals over ~17 minutes, log-normal
latencies, 2% failures of five kinds, 1% cold starts with init parts, 50 instances), writes
them as Parquet parts the way ``RecordWriter`` lays them out, then times each step: reading,
the per-run summary, and the per-second series. Also times ``RecordWriter`` itself (dict
records to Parquet), the cost the load generator pays per record.

    .venv/bin/python benchmarks/bench_analyzer.py            # 1 M records, 3 repeats
    .venv/bin/python benchmarks/bench_analyzer.py --n 200000

Prints a table (median of the repeats) and writes raw timings to
``benchmarks/results/analyzer-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from servelab.analysis.metrics import summarize
from servelab.analysis.timeseries import per_second
from servelab.records import SCHEMA, RecordWriter, read_records

PART_ROWS = 50_000
ERRORS = ["HTTP 500: instance crashed", "HTTP 502: bad gateway", "function error (Unhandled): OOM",
          "ClientConnectorError: refused", "HTTP 503: no capacity"]


def synthetic(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    scheduled = np.cumsum(rng.exponential(1 / 1000, n))
    lag = rng.exponential(0.05, n)
    latency = rng.lognormal(np.log(20), 0.6, n)
    status = rng.choice(np.array(["ok", "error", "throttled", "timeout"]), n, p=[0.98, 0.012, 0.005, 0.003])
    error = np.where(status == "ok", None, rng.choice(np.array(ERRORS, dtype=object), n))
    cold = rng.random(n) < 0.01
    init = np.where(cold, rng.normal(400, 50, n), np.nan)

    def part(frac: float) -> pa.Array:
        return pa.array(np.where(cold, init * frac, np.nan), from_pandas=True)

    cols = {
        "run_id": pa.array(["bench"] * n),
        "request_id": pa.array(np.arange(n).astype(str)),
        "target": pa.array(["fn"] * n),
        "scheduled_s": scheduled,
        "sent_s": scheduled + lag / 1e3,
        "completed_s": scheduled + latency / 1e3,
        "latency_ms": latency,
        "send_lag_ms": lag,
        "status": pa.array(status),
        "error": pa.array(error, type=pa.string()),
        "http_status": pa.array(np.where(status == "ok", 200, 500)),
        "start_kind": pa.array(np.where(cold, "cold", "warm")),
        "cold": cold,
        "instance_id": pa.array(np.char.add("i-", rng.integers(0, 50, n).astype(str))),
        "platform_ms": latency * 0.9,
        "queue_ms": pa.array(np.where(cold, init + 5, 0.2)),
        "init_ms": pa.array(init, from_pandas=True),
        "init_process_ms": part(0.1), "init_import_ms": part(0.3), "init_fetch_ms": part(0.1),
        "init_load_ms": part(0.45),
        "inference_ms": latency * 0.6,
        "duration_ms": latency * 0.62,
        "billed_ms": np.ceil(latency * 0.62),
        "memory_mb": pa.array(np.full(n, 1024)),
        "max_memory_used_mb": rng.normal(300, 20, n),
        "batch_size": pa.array(np.ones(n, dtype=np.int64)),
    }
    return pa.table(cols).cast(SCHEMA)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writer-n", type=int, default=100_000)
    args = ap.parse_args()

    table = synthetic(args.n)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "records"
        d.mkdir()
        for i, start in enumerate(range(0, args.n, PART_ROWS)):
            pq.write_table(table.slice(start, PART_ROWS), d / f"part-{i + 1:06d}.parquet")
        t_read, loaded = timed(lambda: read_records(d), args.repeats)
        t_sum, summary = timed(lambda: summarize(loaded), args.repeats)
        t_ts, series = timed(lambda: per_second(loaded), args.repeats)
        t_all, _ = timed(lambda: (lambda t: (summarize(t), per_second(t)))(read_records(d)), args.repeats)

        sample = table.slice(0, args.writer_n).to_pylist()
        w_dir = Path(tmp) / "writer"

        def write() -> None:
            with RecordWriter(w_dir, flush_interval_s=1e9) as w:
                w.extend(sample)

        t_write, _ = timed(write, 1)

    n = args.n
    rows = [
        ("read_records (Parquet parts)", t_read, f"{n / t_read / 1e6:.1f} M rows/s"),
        ("summarize (all per-run metrics)", t_sum, f"{n / t_sum / 1e6:.1f} M rows/s"),
        (f"per_second ({series.num_rows} bins)", t_ts, f"{n / t_ts / 1e6:.1f} M rows/s"),
        ("read + summarize + per_second", t_all, f"{n / t_all / 1e6:.1f} M rows/s"),
        (f"RecordWriter, {args.writer_n:,} dict records", t_write,
         f"{args.writer_n / t_write / 1e3:.0f} k records/s"),
    ]
    print(f"analyzer on {n:,} synthetic records (median of {args.repeats}); "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'step':40}{'seconds':>10}  rate")
    for name, t, rate in rows:
        print(f"{name:40}{t:>10.3f}  {rate}")
    print(f"check: SR {summary.success_ratio:.4f}, p99 {summary.latency_ms['p99']:.1f} ms, "
          f"cold {summary.cold_starts:,}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"analyzer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "benchmark": "analyzer speed", "records": n, "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg": os.getloadavg()[0]},
        "seconds": {name: t for name, t, _ in rows}}, indent=2) + "\n")
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
