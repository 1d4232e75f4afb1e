"""How fast are arrival schedules generated? Arrivals per second at ~10 M arrivals per run.

    .venv/bin/python benchmarks/bench_arrivals.py [--arrivals 10000000] [--runs 5]

Each case generates about ``--arrivals`` arrivals (the duration is set from the spec's mean
rate) ``--runs`` times with different seeds; the table reports the median and the fastest run.
"sort baseline" is the textbook alternative for Poisson (draw the count, sort uniform times), run
side by side to show what the sort-free method buys. Raw timings go to
benchmarks/results/arrivals.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from servelab.workload import PRESETS, generate, load_spec

RESULTS = Path(__file__).parent / "results" / "arrivals.json"

CASES = {
    "poisson": "poisson:rate=1000",
    "mmpp 2 states (preset high)": "high",
    "mmpp 3 states (preset bursty)": "bursty",
    "mmpp 3 states, 1 s sojourns": "mmpp:rates=50,500,2000;sojourn=1,1,1",
    "step, 10 s steps repeating": "step:rates=100,1000,400,10;steps=10;repeat=true",
    "ramp 0 -> 2000 rps": "ramp:start=0;end=2000",
}


def sort_baseline(n: int, seed: int) -> np.ndarray:
    """Poisson arrivals the textbook way: N ~ Poisson(rate x T), then sorted uniform times."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.random(rng.poisson(n)) * (n / 1000.0))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrivals", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    rows = []
    for name, text in CASES.items():
        spec = load_spec(text)
        duration_s = args.arrivals / spec.mean_rate_rps
        times, counts = [], []
        for seed in range(args.runs):
            t0 = time.perf_counter()
            a = generate(spec, duration_s=duration_s, seed=seed)
            times.append(time.perf_counter() - t0)
            counts.append(len(a))
            switches = 0 if a.state_path is None else int(a.state_path[0].size)
            del a
        rows.append(
            {
                "case": name,
                "spec": spec.to_inline(),
                "duration_s": duration_s,
                "seconds": times,
                "arrivals": counts,
                "state_switches": switches,
            }
        )
    times, counts = [], []
    for seed in range(args.runs):
        t0 = time.perf_counter()
        counts.append(sort_baseline(args.arrivals, seed).size)
        times.append(time.perf_counter() - t0)
    rows.append(
        {
            "case": "sort baseline (poisson)",
            "spec": "N ~ Poisson, np.sort(uniform)",
            "seconds": times,
            "arrivals": counts,
            "state_switches": 0,
        }
    )

    table = Table(title=f"arrival generation, ~{args.arrivals:,} arrivals, median of {args.runs} runs")
    for col in ("case", "arrivals", "switches", "median s", "fastest s", "M arrivals/s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        med = statistics.median(r["seconds"])
        r["median_s"] = med
        r["arrivals_per_s"] = statistics.median(r["arrivals"]) / med
        table.add_row(
            r["case"],
            f"{int(statistics.median(r['arrivals'])):,}",
            f"{r['state_switches']:,}",
            f"{med:.3f}",
            f"{min(r['seconds']):.3f}",
            f"{r['arrivals_per_s'] / 1e6:.1f}",
        )
    Console(width=110).print(table)

    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_avg": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "arrivals",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "target_arrivals": args.arrivals,
                "runs": args.runs,
                "machine": machine,
                "presets": {k: v.to_inline() for k, v in PRESETS.items()},
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
