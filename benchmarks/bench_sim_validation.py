"""Simulator validation: the same workloads on the real local platform and in the simulator.

1. ``servelab profile`` measures the model first (cold starts, warm batch-1 times, overheads).
2. For each workload, one function is deployed on a fresh local platform (loopback, fork start)
   and driven by the open-loop load generator; then the simulator runs the *same arrival times*
   with the *same configuration* and the measured profile.
3. Both record sets go through the same analyzer and cost model (AWS Lambda x86 prices); the
   table shows p50 / p95 / p99, success ratio, cold starts and cost side by side, with the
   prediction's relative error. Target: p50 and p95 within 10 %, cost within 5 %.

Workloads (defaults ~3.5 minutes in all on the 2-core VM):

- ``steady``: Poisson 8 rps, 40 s, keep-alive 600 s (one cold start, then warm);
- ``bursty``: MMPP 2/20 rps (sojourns 8 s / 4 s), 45 s, keep-alive 3 s, at most 3 instances,
  admission ``queue`` (cold starts when load returns, queueing in bursts);
- ``sparse``: Poisson 1.5 rps, 40 s, keep-alive 0.3 s (mostly cold starts).

    .venv/bin/python benchmarks/bench_sim_validation.py [--model mobilenetv2] [--workloads steady,bursty]

Writes ``benchmarks/results/sim-validation-<time>.json`` (profile, both sides, errors) and keeps
the raw runs under ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from servelab.calibrate.measure import measure_profile, resolve_model
from servelab.calibrate.realrun import Deployer, local_platform
from servelab.calibrate.validate import METRICS, compare_on_platform
from servelab.loadgen.payloads import from_model
from servelab.sim import ServerlessConfig
from servelab.workload import generate, load_spec

WORKLOADS = {
    "steady": ("poisson:rate=8;duration=40", ServerlessConfig(keep_alive_s=600, max_concurrency=4)),
    "bursty": ("mmpp:rates=2,20;sojourn=8,4;duration=45",
               ServerlessConfig(keep_alive_s=3, max_concurrency=3, admission="queue", max_queue=100)),
    "sparse": ("poisson:rate=1.5;duration=40", ServerlessConfig(keep_alive_s=0.3, max_concurrency=4)),
}
console = Console()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--host-cpus", type=float, default=float(len(os.sched_getaffinity(0))),
                    help="cores the simulated instances share, as on the local platform (0: one CPU each, "
                         "the cloud's model); default: this machine's usable cores")
    args = ap.parse_args()
    host_cpus = args.host_cpus or None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sim-validation-"))
    t0 = time.perf_counter()
    name, path = resolve_model(args.model, work / "models")
    load0 = os.getloadavg()
    with local_platform(work) as url:
        console.print(f"[bold]profiling {name}[/] on {url} …")
        profile = measure_profile(path, model_name=name, batch_sizes=(1,), cold=8, warm=60, work_dir=work / "profile",
                                  url=url, log=console.print)
        profile.save(work / "profile.yaml")
        dep = Deployer(url, path)
        payloads = from_model(path, count=4)
        comparisons = []
        for wname in args.workloads.split(","):
            spec_text, cfg = WORKLOADS[wname]
            arr = generate(load_spec(spec_text), seed=args.seed)
            console.print(f"[bold]{wname}[/]: {spec_text}, {len(arr)} requests …")
            comparisons.append(compare_on_platform(wname, url, dep, cfg, profile, arr.times_s, arr.duration_s,
                                                   payloads, work / wname, seed=args.seed, host_cpus=host_cpus))
    load1 = os.getloadavg()
    t = Table(title=f"simulator vs local platform · {name} · predicted (measured) · error")
    t.add_column("workload")
    for m in METRICS:
        t.add_column(m, justify="right")
    for c in comparisons:
        cells = []
        for m in METRICS:
            p, r = getattr(c.predicted, m), getattr(c.measured, m)
            fmt = "{:.4f}" if m == "success_ratio" else "{:.3g}" if m == "cost_usd" else "{:.1f}"
            cells.append(f"{fmt.format(p)} ({fmt.format(r)}) {c.error(m):+.0%}")
        t.add_row(c.name, *cells)
    console.print(t)
    if host_cpus is not None:
        t2 = Table(title="the same predictions without host sharing (one CPU per instance, the cloud's model)")
        t2.add_column("workload")
        for m in ("p50_ms", "p95_ms", "p99_ms", "cold_starts", "cost_usd"):
            t2.add_column(m, justify="right")
        for c in comparisons:
            cc = c.predicted_cloud
            if cc is None:
                continue
            row = []
            for m in ("p50_ms", "p95_ms", "p99_ms", "cold_starts", "cost_usd"):
                p, r = getattr(cc, m), getattr(c.measured, m)
                rel = p / r - 1 if r else float("nan")
                row.append(f"{p:.3g} ({r:.3g}) {rel:+.0%}")
            t2.add_row(c.name, *row)
        console.print(t2)
    console.print(f"host sharing: {host_cpus or 'off'} core(s)")
    console.print(f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end (2-core VM shared with other work); "
                  f"{time.perf_counter() - t0:.0f} s in all; runs under {work}")
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"sim-validation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps({"model": name, "profile": profile.to_yaml_dict(), "load_average": [load0, load1],
                                "host_cpus": host_cpus,
                                "workloads": {k: WORKLOADS[k][0] for k in args.workloads.split(",")},
                                "comparisons": [c.to_dict() for c in comparisons]}, indent=2, default=str))
    console.print(f"wrote {dest}")


if __name__ == "__main__":
    main()
