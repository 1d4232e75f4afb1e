"""Throughput of the distributed training frameworks, and time to accuracy for sync vs async.

1. samples/s with 1 and 2 workers in each framework (allreduce, sync-ps, async-ps, hogwild) on
   the synthetic blob task (``servelab.train.distributed.synthetic``), with a fixed batch per
   worker (weak scaling). The PS frameworks run one separate server process. samples/s is
   counted inside the training loops (from the first worker's first step to the last worker's
   last step), so process start-up is excluded.
2. Seconds (and worker-0 steps) until held-out accuracy first reaches ``--target``, with 2
   workers: allreduce and sync-ps (synchronous) against async-ps and hogwild (asynchronous).
   Accuracy is evaluated by worker 0 every ``--eval-every`` of its steps, inside the timed loop.

    python benchmarks/bench_train_frameworks.py [--steps 300] [--reps 3] [--out DIR]

Prints two tables and writes ``train-frameworks-<time>.json`` (every repetition, the settings,
the machine and its load average) to ``--out`` (default benchmarks/results). Times in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cluster_for(framework: str, workers: int):
    from servelab.train.cluster import ClusterConfig

    if framework == "allreduce":
        return ClusterConfig(nworkers_per_group=workers)
    if framework == "sync-ps":
        return ClusterConfig(nworkers_per_group=workers, server_worker_separate=True)
    if framework == "async-ps":
        return ClusterConfig(nworker_groups=workers, server_worker_separate=True)
    return ClusterConfig(nworker_groups=workers)  # hogwild


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="steps per run (throughput)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per configuration (median reported)")
    ap.add_argument("--per-worker-batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--target", type=float, default=0.83, help="held-out accuracy to reach (chance 0.25)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import torch

    from servelab.train.distributed import launch_spec
    from servelab.train.distributed.synthetic import spec as blob_spec

    load_before = os.getloadavg()
    frameworks = ["allreduce", "sync-ps", "async-ps", "hogwild"]
    throughput = []
    for fw in frameworks:
        for workers in (1, 2):
            spec = blob_spec(steps=args.steps, batch_size=args.per_worker_batch * workers, hidden=args.hidden,
                             features=64, lr=0.05, n=8192)
            runs = []
            for _ in range(args.reps):
                with tempfile.TemporaryDirectory() as d:
                    r = launch_spec(spec, cluster_for(fw, workers), out_dir=Path(d), framework=fw, timeout_s=600)
                runs.append({"samples_per_s": r.samples_per_s, "train_s": r.train_s, "samples": r.samples})
            throughput.append({"framework": fw, "workers": workers, "servers": r.nservers, "runs": runs,
                               "samples_per_s_median": statistics.median(x["samples_per_s"] for x in runs)})

    tta = []
    for fw in frameworks:
        # 16 blob features: overlapping classes, so the target takes a few hundred updates
        spec = blob_spec(steps=600, batch_size=2 * 16, hidden=64, features=16, lr=0.05, n=8192,
                         eval_every=args.eval_every)
        runs = []
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as d:
                r = launch_spec(spec, cluster_for(fw, 2), out_dir=Path(d), framework=fw, timeout_s=600)
            hit = next(((t, s) for t, s, m in r.eval_log if m >= args.target), (None, None))
            runs.append({"time_to_target_s": hit[0], "steps_to_target": hit[1], "final_accuracy": r.eval_log[-1][2],
                         "train_s": r.train_s, "staleness": r.staleness})
        times = [x["time_to_target_s"] for x in runs if x["time_to_target_s"] is not None]
        steps = [x["steps_to_target"] for x in runs if x["steps_to_target"] is not None]
        tta.append({"framework": fw, "workers": 2, "runs": runs, "reached": len(times),
                    "time_to_target_s_median": statistics.median(times) if times else None,
                    "steps_to_target_median": statistics.median(steps) if steps else None})
    load_after = os.getloadavg()

    base = {row["framework"]: row["samples_per_s_median"] for row in throughput if row["workers"] == 1}
    print(f"samples/s (median of {args.reps}; {args.steps} steps, {args.per_worker_batch} rows per worker per step, "
          f"MLP 64-{args.hidden}-4)")
    print(f"{'framework':10} {'workers':>7} {'servers':>7} {'samples/s':>10} {'vs 1 worker':>11}")
    for row in throughput:
        ratio = row["samples_per_s_median"] / base[row["framework"]]
        print(f"{row['framework']:10} {row['workers']:>7} {row['servers']:>7} {row['samples_per_s_median']:>10,.0f} "
              f"{ratio:>10.2f}x")
    print(f"\ntime to held-out accuracy {args.target} with 2 workers (MLP 16-64-4, 16 rows each per step, SGD 0.05; "
          f"median of {args.reps})")
    print(f"{'framework':10} {'mode':>5} {'reached':>7} {'seconds':>8} {'w0 steps':>8} {'final acc':>9}")
    for row in tta:
        mode = "sync" if row["framework"] in ("allreduce", "sync-ps") else "async"
        t, s = row["time_to_target_s_median"], row["steps_to_target_median"]
        final = statistics.median(x["final_accuracy"] for x in row["runs"])
        print(f"{row['framework']:10} {mode:>5} {row['reached']:>4}/{args.reps} {'-' if t is None else f'{t:.2f}':>8} "
              f"{'-' if s is None else f'{s:.0f}':>8} {final:>9.3f}")
    print(f"\nmachine: {platform.node()} {os.cpu_count()} cpus, shared with other work: load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train-frameworks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "settings": vars(args) | {"out": str(args.out)}, "throughput": throughput, "time_to_accuracy": tta,
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": load_after, "python": platform.python_version(), "torch": torch.__version__},
    }, indent=1))
    print(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
