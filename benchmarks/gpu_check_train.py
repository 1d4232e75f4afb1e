"""GPU training check: the ``device: cuda`` / nccl paths of the distributed frameworks, on a GPU machine.

The development VM has no GPU, so these paths are checked here, by hand, on a lent GPU machine:

1. ``allreduce`` with one worker on cuda over nccl: final parameters equal the CPU reference
   (the same job trained in this process on CPU) within 1e-4.
2. ``allreduce`` with two workers over nccl, when there are two GPUs (two nccl ranks cannot share
   one GPU); with one GPU, two workers on cuda over gloo instead (DDP with CUDA tensors).
3. ``sync-ps`` and ``async-ps`` with two workers on cuda (their traffic goes over gloo, on CPU).
4. Hybrid partitioning (``fc1`` feature-parallel) with two cuda workers over gloo.
5. Throughput: samples/s of a wider MLP, one cuda worker vs one cpu worker.
6. NCCL all-reduce itself: one rank per GPU (``torch.distributed`` with the nccl backend), a
   64 MiB float32 tensor all-reduced 20 times: the sum is checked and the bus bandwidth reported.
   With one GPU the world is one rank (NCCL refuses two ranks on one device), so this exercises
   NCCL's set-up and kernels, not the inter-GPU links.
7. Mixed precision (``servelab.train.precision``): ``examples/train/mlp-synthetic.yaml`` trained
   on cuda in fp32, bf16 (autocast) and fp16 (autocast + GradScaler) to the same accuracy bar, and
   the samples/s of a wide MLP step in each precision.

Needs only torch, pydantic, pyyaml and numpy besides this tree (no scikit-learn, no onnx, and
only PyPI): from the repository root on a fresh GPU machine (a venv that sees a preinstalled
torch, else the system Python)::

    if python3 -m venv --system-site-packages /tmp/v 2>/dev/null; then PY=/tmp/v/bin/python; X=; \
    else PY=python3; X=--break-system-packages; fi; $PY -m pip install -q $X torch pydantic pyyaml numpy \
    && PYTHONPATH=src $PY benchmarks/gpu_check_train.py --out DIR

Prints a table, writes ``gpu-check-train-<time>.json`` to ``--out`` (default benchmarks/results)
and exits non-zero if any check fails. Times in seconds. About 2 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def _reference(spec):
    import torch

    from servelab.train.distributed._common import batches

    torch.manual_seed(spec.seed)
    model = spec.make_model()
    opt = spec.make_optimizer(model.parameters())
    data = batches(spec, 0, 1, torch.device("cpu"))
    for _ in range(spec.steps):
        opt.zero_grad()
        model(next(data))["loss"].backward()
        opt.step()
    return model.state_dict()


def _nccl_rank(rank: int, world: int, port: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0)
    dist.init_process_group("nccl", store=store, rank=rank, world_size=world)
    x = torch.full((16 * 1024 * 1024,), float(rank + 1), device="cuda")  # 64 MiB of float32
    dist.all_reduce(x)  # warm-up, and the value to check
    torch.cuda.synchronize()
    ok = bool((x == world * (world + 1) / 2).all())
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    if rank == 0:
        size = x.numel() * 4
        bus = size / dt * (2 * (world - 1) / world if world > 1 else 1.0) / 1e9  # nccl-tests' bus bandwidth
        queue.put({"ok": ok, "ms": dt * 1e3, "bus_gb_s": bus, "world": world})
    dist.destroy_process_group()


def nccl_check(ngpu: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_nccl_rank, args=(r, ngpu, port, queue)) for r in range(ngpu)]
    for p in procs:
        p.start()
    got = queue.get(timeout=180)
    for p in procs:
        p.join(60)
    links = f"bus {got['bus_gb_s']:.0f} GB/s" if ngpu > 1 else "one rank: NCCL set-up and kernels, no links"
    return {"check": f"nccl all_reduce 64 MiB x {ngpu} rank(s)", "passed": got["ok"],
            "note": f"{got['ms']:.2f} ms per all-reduce; {links}", **got}


def amp_checks() -> list[dict]:
    import torch

    from servelab.train.job import load_job
    from servelab.train.trainer import train_local

    rows = []
    base = load_job(ROOT / "examples" / "train" / "mlp-synthetic.yaml").model_copy(update={"device": "cuda"})
    for precision in ("fp32", "bf16", "fp16"):
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as d:
                r = train_local(base.model_copy(update={"precision": precision}), out_dir=Path(d), progress=False)
            rows.append({"check": f"amp train mlp-synthetic {precision}", "passed": r.test_accuracy >= 0.8,
                         "accuracy": r.test_accuracy, "samples_per_s": r.samples_per_s,
                         "wall_s": time.perf_counter() - t0})
        except Exception as e:
            rows.append({"check": f"amp train mlp-synthetic {precision}", "passed": False,
                         "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    # raw step speed of a wide MLP in each precision (the same step MixedPrecision runs)
    from servelab.train.precision import MixedPrecision

    torch.manual_seed(0)
    for precision in ("fp32", "bf16", "fp16"):
        model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096),
                                    torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        amp = MixedPrecision(precision, torch.device("cuda"), opt)
        x, y = torch.randn(4096, 1024, device="cuda"), torch.randint(0, 10, (4096,), device="cuda")

        def step(model=model, opt=opt, amp=amp, x=x, y=y) -> None:
            opt.zero_grad(set_to_none=True)
            with amp.autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            amp.backward(loss)
            amp.unscale()
            amp.step()

        for _ in range(5):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(30):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / 30
        rows.append({"check": f"amp step wide MLP b4096 {precision}", "passed": True, "samples_per_s": 4096 / dt,
                     "wall_s": dt * 30})
    return rows


def _max_diff(a, b) -> float:
    return max(float((a[k].cpu() - b[k].cpu()).abs().max()) for k in b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import torch

    from servelab.train.cluster import ClusterConfig
    from servelab.train.distributed import launch_spec
    from servelab.train.distributed.synthetic import spec as blob_spec

    if not torch.cuda.is_available():
        print("skipped: torch.cuda.is_available() is False (this check needs an NVIDIA GPU and a CUDA build of torch)")
        return 0
    ngpu = torch.cuda.device_count()
    spec = blob_spec(steps=20, lr=0.3, momentum=0.9)
    ref = _reference(spec)
    two_backend = "nccl" if ngpu >= 2 else "gloo"
    checks = [
        ("allreduce 1 worker nccl", ClusterConfig(device="cuda", backend="nccl"), "allreduce", spec, True),
        (f"allreduce 2 workers {two_backend}", ClusterConfig(nworkers_per_group=2, device="cuda", backend=two_backend),
         "allreduce", spec, True),
        ("sync-ps 2 workers", ClusterConfig(nworkers_per_group=2, nservers_per_group=2, server_worker_separate=True,
                                            device="cuda"), None, spec, True),
        ("async-ps 2 groups", ClusterConfig(nworker_groups=2, nservers_per_group=2, server_worker_separate=True,
                                            device="cuda"), None, blob_spec(steps=80, lr=0.2), False),
        ("hybrid fc1 feature-parallel gloo", ClusterConfig(nworkers_per_group=2, device="cuda", backend="gloo"),
         "allreduce", blob_spec(steps=20, lr=0.3, momentum=0.9, model_parallel=("fc1",)), True),
    ]
    rows, ok = [], True
    for name, cluster, fw, sp, exact in checks:
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as d:
                r = launch_spec(sp, cluster, out_dir=Path(d), framework=fw, timeout_s=300)
            diff = _max_diff(r.final_state, ref) if exact else None
            acc = r.eval_log[-1][2] if r.eval_log else None
            passed = (diff is not None and diff <= TOLERANCE) or (not exact and acc is not None and acc >= 0.75)
            rows.append({"check": name, "framework": r.framework, "passed": passed, "max_abs_diff": diff,
                         "accuracy": acc, "samples_per_s": r.samples_per_s, "wall_s": time.perf_counter() - t0})
        except Exception as e:  # a failed check is reported, the others still run
            rows.append({"check": name, "passed": False, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0})
        ok &= rows[-1]["passed"]

    wide = blob_spec(steps=200, batch_size=1024, hidden=2048, features=256, n=8192, lr=0.05)
    for device in ("cpu", "cuda"):
        with tempfile.TemporaryDirectory() as d:
            r = launch_spec(wide, ClusterConfig(device=device), out_dir=Path(d), timeout_s=300)
        rows.append({"check": f"throughput wide MLP local {device}", "passed": True, "samples_per_s": r.samples_per_s,
                     "wall_s": r.train_s})

    for extra in (lambda: [nccl_check(ngpu)], amp_checks):
        try:
            found = extra()
        except Exception as e:
            found = [{"check": getattr(extra, "__name__", "nccl"), "passed": False, "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()}]
        rows.extend(found)
        ok &= all(r["passed"] for r in found)

    print(f"{'check':40} {'ok':>4} {'max|diff|':>10} {'acc':>6} {'samples/s':>11}  error")
    for row in rows:
        diff = row.get("max_abs_diff")
        print(f"{row['check']:40} {'yes' if row['passed'] else 'NO':>4} "
              f"{'-' if diff is None else f'{diff:.1e}':>10} "
              f"{'-' if row.get('accuracy') is None else format(row['accuracy'], '.3f'):>6} "
              f"{'-' if row.get('samples_per_s') is None else format(row['samples_per_s'], ',.0f'):>11}  "
              f"{row.get('error', row.get('note', ''))}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-check-train-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "machine": platform.node(), "gpu": torch.cuda.get_device_name(0), "gpus": ngpu, "torch": torch.__version__,
        "cuda": torch.version.cuda, "nccl": ".".join(map(str, torch.cuda.nccl.version())), "rows": rows,
    }, indent=1))
    print(f"raw results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
