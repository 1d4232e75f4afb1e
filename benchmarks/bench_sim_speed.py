"""Simulator speed: simulated requests per second of wall time.

- **serverless**, the headline: 1 M Poisson requests at 2,000 rps (500 s) through one function
  with the shipped study profile (cold starts, keep-alive 600 s, AWS's scale-rate limit);
- **a production-scale day**: an MMPP trace of 24 h averaging ~50 rps with bursts to 400 rps
  (~4.5 M requests), keep-alive 600 s;
- **managed** and **server**: 200 k requests each (the pool engine is not the fast path).

Each is run ``--repeat`` times (median reported); simulation and record building are timed
apart. The machine is a shared 2-core VM: the load average is printed with the figures.

    .venv/bin/python benchmarks/bench_sim_speed.py [--repeat 3] [--quick]

Writes ``benchmarks/results/sim-speed-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from servelab.sim import ManagedConfig, ServerConfig, ServerlessConfig, load_profile, simulate
from servelab.workload import generate, load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    prof = load_profile("study-mobilenetv2")
    k = 10 if args.quick else 1
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(1 / 2000, 1_000_000 // k))
    day = generate(load_spec(f"mmpp:rates=20,80,400;sojourn=600,300,20;duration={86400 // k}"), seed=3)
    pool = np.cumsum(rng.exponential(1 / 100, 200_000 // k))
    cases = [
        ("serverless 1M poisson 2000 rps", ServerlessConfig(max_concurrency=3000), poisson),
        ("serverless 24h MMPP day", ServerlessConfig(max_concurrency=3000), day),
        ("managed 200k poisson 100 rps", ManagedConfig(min_instances=2, max_instances=20), pool),
        ("server 200k poisson 100 rps", ServerConfig(instances=3), pool),
    ]
    load0 = os.getloadavg()
    rows = []
    for name, cfg, arrivals in cases:
        sims, recs = [], []
        for _ in range(args.repeat):
            r = simulate(cfg, prof, arrivals, seed=1)
            sims.append(r.sim_s)
            recs.append(r.records_s)
        n = r.requests
        sim_s, rec_s = statistics.median(sims), statistics.median(recs)
        rows.append({"case": name, "requests": n, "sim_s": sim_s, "records_s": rec_s, "sim_rps": n / sim_s,
                     "end_to_end_rps": n / (sim_s + rec_s), "runs_sim_s": sims, "runs_records_s": recs,
                     "cold_starts": r.summary().cold_starts})
        print(f"{name:34s} {n:>10,} req  sim {sim_s:7.3f} s = {n / sim_s:>11,.0f} req/s   "
              f"+ records {rec_s:6.3f} s  (end to end {n / (sim_s + rec_s):>10,.0f} req/s)", flush=True)
    load1 = os.getloadavg()
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f} (shared 2-core VM); median of {args.repeat}")
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"sim-speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps({"rows": rows, "load_average": [load0, load1], "repeat": args.repeat,
                                "quick": args.quick}, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
