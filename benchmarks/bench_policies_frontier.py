"""Keep-alive policies on 100 Azure-2019-shaped functions sharing one simulated host: the
cold-start / idle-memory frontier of each policy, swept over the host budget (and, for fixed,
over the keep-alive).

    PYTHONPATH=src python benchmarks/bench_policies_frontier.py [--functions 100] [--duration 7200]

Prints a table and saves the raw rows (with the machine and its load) under benchmarks/results/.
Every run is the same seeded workload; seeds 1-3 by default (medians across seeds in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from servelab.sim.compare import gb_s_price, summarize
from servelab.sim.host_engine import parse_policy, run_host
from servelab.workload.azure_synth import arrivals, durations_ms, synth_functions

BUDGETS_MB = (8192, 12288, 16384, 24576, 65536)
POLICIES = ("fixed:60", "fixed:600", "hybrid", "faascache", "faascache-inst", "layered:60")
FIXED_UNBOUNDED = ("fixed:10", "fixed:30", "fixed:120", "fixed:300", "fixed:1800")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=100)
    ap.add_argument("--duration", type=float, default=7200.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    price = gb_s_price()
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        fns = synth_functions(args.functions, rng)
        times = [arrivals(f, args.duration, rng) for f in fns]
        durs = [durations_ms(f, len(t), rng) for f, t in zip(fns, times, strict=True)]
        grid = [(p, b) for b in BUDGETS_MB for p in POLICIES] + [(p, BUDGETS_MB[-1]) for p in FIXED_UNBOUNDED]
        for pol, budget in grid:
            t1 = time.perf_counter()
            run = run_host(fns, times, durs, parse_policy(pol), budget_mb=budget, horizon_s=args.duration,
                           rng=np.random.default_rng(seed + 1))
            r = summarize(pol, run, price, time.perf_counter() - t1)
            rows.append({"seed": seed, "budget_mb": budget, **asdict(r)})
    wall = time.perf_counter() - t0
    load = os.getloadavg()
    print(f"{args.functions} functions, {args.duration:.0f} s, seeds {args.seeds}; {wall:.0f} s wall; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {platform.node()} {os.cpu_count()} CPUs")
    print(f"{'policy':<12}{'budget MB':>10}{'cold %':>9}{'idle GB-s':>12}{'p99 ms':>9}{'cold wait ms':>13}"
          f"{'p99 wait ms':>12}{'evictions':>10}")
    keys = sorted({(r["policy"], r["budget_mb"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for pol, budget in keys:
        sel = [r for r in rows if r["policy"] == pol and r["budget_mb"] == budget]

        def med(col: str, sel: list[dict] = sel) -> float:
            return float(np.median([r[col] for r in sel]))

        print(f"{pol:<12}{budget:>10}{med('cold_start_rate') * 100:>9.2f}{med('idle_gb_s'):>12,.0f}"
              f"{med('p99_ms'):>9,.0f}{med('mean_cold_wait_ms'):>13,.0f}"
              f"{med('p99_wait_ms'):>12,.0f}{med('evictions'):>10,.0f}")
    out = Path(__file__).parent / "results" / f"policies-frontier-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": {"node": platform.node(), "cpus": os.cpu_count(), "loadavg": load},
                               "functions": args.functions, "duration_s": args.duration, "seeds": args.seeds,
                               "wall_s": wall, "rows": rows}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
