"""Scaling from 1 to 2 workers, per framework, with threads per worker set so the total equals the cores.

Two nets on the synthetic blob task (``servelab.train.distributed.synthetic``), weak scaling (a
fixed batch per worker):

- ``compute``: MLP 64-2048-4, 256 rows per worker per step (~0.6 M parameters, ~2.3 MB of gradient):
  the compute-bound case the 1.6x goal is about;
- ``small``: MLP 64-512-4, 64 rows per worker (the net of ``bench_train_frameworks.py``): a step
  of well under a millisecond, where any communication shows.

Frameworks: allreduce with gradients averaged in shared memory (``backend: shm``, the default on
one CPU machine) and over gloo (loopback TCP, the previous default), sync-ps and async-ps (one
separate server process) and Hogwild. ``threads_per_worker`` is ``cores // workers`` (servers get
the same setting), so 1 worker uses every core through intra-op threads and 2 workers use one
each; a ``1 worker, 1 thread`` row gives the per-core baseline as well. Configurations are run
round-robin ``--reps`` times so load drift on a shared machine hits each alike; the table gives
medians and the ratio of the 2-worker median to each 1-worker median. samples/s is counted inside
the training loops (process start-up excluded).

``--profile`` adds a torch.profiler table of one 2-worker all-reduce step of the compute net, over
gloo and over shared memory: where the step's time goes.

    python benchmarks/bench_train_scaling.py [--reps 5] [--profile]     # ~6 minutes on 2 cores

Writes ``train-scaling-<time>.json`` (every run, settings, machine, load average before/after)
to ``--out`` (default benchmarks/results). Times in seconds.
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
NETS = {"compute": {"hidden": 2048, "per_worker_batch": 256, "steps": 100},
        "small": {"hidden": 512, "per_worker_batch": 64, "steps": 300}}
FRAMEWORKS = ["allreduce-shm", "allreduce-gloo", "sync-ps", "async-ps", "hogwild"]


def cluster_for(framework: str, workers: int, threads: int):
    from servelab.train.cluster import ClusterConfig

    common = {"threads_per_worker": threads}
    if framework.startswith("allreduce"):
        return "allreduce", ClusterConfig(nworkers_per_group=workers, backend=framework.split("-")[1], **common)
    if framework == "sync-ps":
        return framework, ClusterConfig(nworkers_per_group=workers, server_worker_separate=True, **common)
    if framework == "async-ps":
        return framework, ClusterConfig(nworker_groups=workers, server_worker_separate=True, **common)
    return framework, ClusterConfig(nworker_groups=workers, **common)


def run_once(net: str, framework: str, workers: int, threads: int, steps: int) -> dict:
    from servelab.train.distributed import launch_spec
    from servelab.train.distributed.synthetic import spec as blob_spec

    cfg = NETS[net]
    spec = blob_spec(steps=steps, batch_size=cfg["per_worker_batch"] * workers, hidden=cfg["hidden"], features=64,
                     lr=0.01, n=8192)
    fw, cluster = cluster_for(framework, workers, threads)
    with tempfile.TemporaryDirectory() as d:
        r = launch_spec(spec, cluster, out_dir=Path(d), framework=fw, timeout_s=600)
    return {"samples_per_s": r.samples_per_s, "train_s": r.train_s, "samples": r.samples,
            "load1": os.getloadavg()[0]}


def profile_step(rank: int, port: int, backend: str, out: dict) -> None:
    """One of two workers: DDP over gloo, or the shared-memory averager; profile 10 steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.profiler import ProfilerActivity, profile

    from servelab.train.distributed.shm import GradientAverager
    from servelab.train.distributed.synthetic import MLP

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = MLP(64, NETS["compute"]["hidden"], 4)
    batch = {"x": torch.randn(NETS["compute"]["per_worker_batch"], 64), "y": torch.randint(0, 4, (256,))}
    averager = None
    if backend == "gloo":
        net = DistributedDataParallel(model)
    else:
        net = model
        averager = GradientAverager(out["shm"], rank, list(model.parameters()))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        loss = net(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        if averager is not None:
            averager.average()
        opt.step()

    for _ in range(5):
        step()
    dist.barrier()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    step_ms = (time.perf_counter() - t0) / 10 * 1e3
    if rank == 0:
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=48)
        out["queue"].put((backend, step_ms, table))
    dist.destroy_process_group()


def profiles() -> list[dict]:
    import torch.multiprocessing as mp

    from servelab.train.distributed.shm import shm_state
    from servelab.train.distributed.synthetic import MLP

    ctx = mp.get_context("spawn")
    numel = sum(p.numel() for p in MLP(64, NETS["compute"]["hidden"], 4).parameters())
    found = []
    for i, backend in enumerate(("gloo", "shm")):
        shared = {"queue": ctx.Queue(), "shm": shm_state(ctx, numel, 2, 60.0)}
        procs = [ctx.Process(target=profile_step, args=(r, 29650 + i, backend, shared)) for r in range(2)]
        for p in procs:
            p.start()
        backend_, step_ms, table = shared["queue"].get(timeout=300)
        for p in procs:
            p.join()
        print(f"\nprofile, worker 0 of 2, allreduce over {backend_}: {step_ms:.1f} ms per step (10 steps, profiled)")
        print(table)
        found.append({"backend": backend_, "step_ms": step_ms, "table": table})
    return found


def cell(row: dict | None) -> str:
    """``median (best)`` samples/s of a configuration."""
    return "-" if row is None else f"{row['samples_per_s_median']:,.0f} ({row['samples_per_s_max']:,.0f})"


def ratio(a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return "-"
    return f"{a['samples_per_s_median'] / b['samples_per_s_median']:.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: compute 100, small 300)")
    ap.add_argument("--reps", type=int, default=5, help="round-robin repetitions (median reported)")
    ap.add_argument("--nets", default="compute,small")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--profile", action="store_true", help="also profile a 2-worker all-reduce step (gloo vs shm)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import torch

    cores = os.cpu_count() or 1
    nets, frameworks = args.nets.split(","), args.frameworks.split(",")
    configs = [(net, fw, w, t) for net in nets for fw in frameworks
               for w, t in ((1, 1), (1, cores), (2, max(1, cores // 2))) if not (w == 1 and t == 1 and cores == 1)]
    configs = list(dict.fromkeys(configs))
    load_before = os.getloadavg()
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for net in nets:  # warm the forkserver and the page cache once per net
        run_once(net, "allreduce-shm", 1, 1, 5)
    for _ in range(args.reps):
        for c in configs:
            runs[c].append(run_once(*c, args.steps or NETS[c[0]]["steps"]))
    load_after = os.getloadavg()

    rows = []
    for (net, fw, w, t), rs in runs.items():
        rows.append({"net": net, "framework": fw, "workers": w, "threads_per_worker": t, "runs": rs,
                     "samples_per_s_median": statistics.median(r["samples_per_s"] for r in rs),
                     "samples_per_s_min": min(r["samples_per_s"] for r in rs),
                     "samples_per_s_max": max(r["samples_per_s"] for r in rs)})
    med = {(r["net"], r["framework"], r["workers"], r["threads_per_worker"]): r for r in rows}
    half = max(1, cores // 2)
    print(f"samples/s, median (best) of {args.reps} round-robin runs ({args.steps or 'compute 100, small 300'} "
          f"steps); {cores} cores; threads per worker = cores / workers, and 1 worker x 1 thread for reference")
    print(f"{'net':8} {'framework':15} {'1w x 1t':>17} {f'1w x {cores}t':>17} {f'2w x {half}t':>17} "
          f"{'2w/1w(1t)':>11} {f'2w/1w({cores}t)':>11}")
    for net in nets:
        for fw in frameworks:
            one1, onec, two = (med.get((net, fw, w, t)) for w, t in ((1, 1), (1, cores), (2, half)))
            print(f"{net:8} {fw:15} {cell(one1):>17} {cell(onec):>17} {cell(two):>17} {ratio(two, one1):>11} "
                  f"{ratio(two, onec):>11}")
    print(f"\nmachine: {platform.node()}, {cores} cpus, {platform.machine()}, shared with other "
          f"engineers' work: load average (1, 5, 15 min) {tuple(round(x, 2) for x in load_before)} before, "
          f"{tuple(round(x, 2) for x in load_after)} after")
    prof = profiles() if args.profile else []

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train-scaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "settings": vars(args) | {"out": str(args.out)}, "nets": NETS, "rows": rows, "profiles": prof,
        "machine": {"node": platform.node(), "cpus": cores, "load_before": load_before, "load_after": load_after,
                    "python": platform.python_version(), "torch": torch.__version__},
    }, indent=1))
    print(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
