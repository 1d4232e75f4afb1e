"""GPU serving check: the ``cuda`` device path, run on a machine with an NVIDIA GPU.

CI and the 2-core development VM have no GPU, so the GPU path of the runtimes and the platform is
checked here, by hand, on a lent GPU machine (see benchmarks/README.md for the last run):

1. MobileNetV2 (built from code) loaded by the torch runtime on ``cpu`` and on ``cuda``: outputs
   must agree (max abs diff printed), and latency per batch size on each device.
2. onnxruntime's providers on this machine (the CUDA execution provider needs onnxruntime-gpu).
3. A real platform on loopback with a function deployed with ``SERVELAB_DEVICE=cuda`` (torch
   runtime): a cold start, then warm requests; its facts (init parts, inference time) and the
   answer checked against the in-process CPU result.

    python benchmarks/gpu_check_serving.py [--out DIR] [--n 30]

Prints tables and writes ``gpu-check-serving-<time>.json`` to ``--out`` (default
benchmarks/results). Exits non-zero if any check fails. Latencies in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-2  # of the largest output magnitude
sys.path.insert(0, str(ROOT / "tests"))  # RunningPlatform: a real platform on loopback


def _p50(xs: list[float]) -> float:
    return statistics.median(xs)


def _time_infer(session, feed, n: int) -> list[float]:
    for _ in range(3):
        session.infer(feed)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.infer(feed)  # outputs are copied back to the host: the GPU work is finished
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--n", type=int, default=30, help="timed inferences / requests per configuration")
    args = ap.parse_args()

    import torch

    from servelab import runtimes
    from servelab.models import zoo
    from servelab.tensors import decode_tensors, encode_tensor

    result: dict = {"benchmark": "gpu check serving", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available(), "checks": {}}
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to check here")
        return 2
    result["gpu"] = torch.cuda.get_device_name(0)
    result["cpu_count"] = os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="servelab-gpu-"))
    model = zoo.build("mobilenetv2", work / "models")
    ok = True

    # 1. parity and latency per device
    cpu = runtimes.load(model, runtime="torch", threads=min(8, os.cpu_count() or 1))
    gpu = runtimes.load(model, runtime="torch", device="cuda")
    rows = []
    for batch in (1, 8, 32, 64):
        feed = zoo.sample_inputs("mobilenetv2", batch, seed=batch)
        a, b = cpu.infer(feed), gpu.infer(feed)
        diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        scale = max(float(np.max(np.abs(a[k]))) for k in a)
        t_cpu, t_gpu = _time_infer(cpu, feed, args.n), _time_infer(gpu, feed, args.n)
        rows.append({"batch": batch, "max_abs_diff": diff, "max_abs_output": scale,
                     "cpu_p50_ms": _p50(t_cpu), "gpu_p50_ms": _p50(t_gpu),
                     "cpu_ms": t_cpu, "gpu_ms": t_gpu})
        # cuDNN runs float32 convolutions in TF32 by default on Ampere and later: agreement to ~1e-3
        # of the output's scale is what a GPU server gives, not 1e-6
        ok &= diff <= TOLERANCE * scale
    result["checks"]["torch_cpu_vs_cuda"] = rows
    print(f"GPU: {result['gpu']}; torch {torch.__version__}; CPU threads for the CPU session: {cpu.threads}")
    print(f"{'batch':>5} {'max|diff|':>10} {'cpu p50 ms':>11} {'gpu p50 ms':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['max_abs_diff']:>10.2e} {r['cpu_p50_ms']:>11.2f} {r['gpu_p50_ms']:>11.2f} "
              f"{r['cpu_p50_ms'] / r['gpu_p50_ms']:>8.1f}x")

    # 2. onnxruntime providers
    try:
        import onnxruntime as ort

        result["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        result["onnxruntime"] = None
    print(f"onnxruntime: {result['onnxruntime']}")

    # 3. the platform, device cuda
    from platform_harness import RunningPlatform
    from servelab.models.store import open_store

    feed = zoo.sample_inputs("mobilenetv2", 1, seed=7)
    want = cpu.infer(feed)
    name, arr = next(iter(feed.items()))
    body = json.dumps({"inputs": [encode_tensor(name, arr, binary=True)]}).encode()
    with RunningPlatform(work / "home", limits="none") as p:
        ref = open_store(None, home=p.home).put("mobilenetv2", model)
        p.lambda_client().create_function(
            FunctionName="mnv2-gpu", Role="r", Code={"ZipFile": b""}, MemorySize=4096, Timeout=120,
            Environment={"Variables": {"SERVELAB_MODEL": ref, "SERVELAB_RUNTIME": "torch",
                                       "SERVELAB_DEVICE": "cuda", "SERVELAB_START_MODE": "spawn"}})
        lat, facts = [], []
        for i in range(args.n + 1):
            req = urllib.request.Request(f"{p.url}/2015-03-31/functions/mnv2-gpu/invocations", data=body,
                                         method="POST")
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=300) as r:
                out, h = r.read(), dict(r.headers)
            lat.append((time.perf_counter() - t0) * 1000)
            facts.append(json.loads(h.get("X-Servelab-Facts", "{}")))
            if i == 0:
                got = decode_tensors(json.loads(out)["outputs"])
                diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
                scale = max(float(np.max(np.abs(want[k]))) for k in want)
                ok &= diff <= TOLERANCE * scale and "X-Amz-Function-Error" not in h
        cold = facts[0]
        warm_inf = [f.get("inference_ms") for f in facts[1:] if f.get("inference_ms") is not None]
        result["checks"]["platform_cuda"] = {
            "first": cold, "max_abs_diff_vs_cpu": diff, "cold_latency_ms": lat[0],
            "warm_latency_p50_ms": _p50(lat[1:]), "warm_inference_p50_ms": _p50(warm_inf) if warm_inf else None,
            "warm_latency_ms": lat[1:], "start_kinds": [f.get("start_kind") for f in facts]}
        ok &= cold.get("start_kind") == "cold" and all(f.get("start_kind") == "warm" for f in facts[1:])
    pc = result["checks"]["platform_cuda"]
    print(f"platform, device cuda: cold request {pc['cold_latency_ms']:.0f} ms (init {cold.get('init_ms')} ms: "
          f"process {cold.get('init_process_ms')}, import {cold.get('init_import_ms')}, fetch "
          f"{cold.get('init_fetch_ms')}, load {cold.get('init_load_ms')}); warm p50 {pc['warm_latency_p50_ms']:.2f} "
          f"ms (inference {pc['warm_inference_p50_ms']} ms); |diff| vs CPU {pc['max_abs_diff_vs_cpu']:.1e}")
    result["ok"] = bool(ok)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-check-serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{'OK' if ok else 'FAILED'}; raw results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
