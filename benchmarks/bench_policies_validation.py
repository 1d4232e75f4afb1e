"""The multi-function simulator against the real platform: 10 functions on one host budget.

    PYTHONPATH=src python benchmarks/bench_policies_validation.py [--duration 240] [--budget-mb 1024]

Starts ``servelab platform up --host-memory-mb B`` (a child process), deploys 10 functions
(256 MB each; a handler that sleeps the requested time) with a fixed keep-alive, plays an
Azure-2019-shaped workload (:mod:`servelab.workload.azure_synth`, time-compressed: each
function's daily rate x ``--compress``, capped at 0.5 req/s) open-loop against it, then runs the
*same* arrivals and sleeps through the simulator's host engine with the init time measured on the
platform, and compares the cold-start rate and idle memory (configured MB x idle seconds, from
the platform's lifecycle and request records). Prints a table, saves the raw numbers under
benchmarks/results/ with the machine and its load.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _servers import PlatformProcess, _http, machine, write_result
from servelab.records import read_instances
from servelab.sim.compare import summarize
from servelab.sim.host_engine import COLD, PREWARMED, WARM, parse_policy, run_host
from servelab.workload.azure_synth import arrivals, durations_ms, synth_functions

HANDLER = "import time\n\ndef h(event, context):\n    time.sleep(event['sleep_ms'] / 1000.0)\n    return {}\n"


def code_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", HANDLER)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--functions", type=int, default=10)
    ap.add_argument("--duration", type=float, default=240.0)
    ap.add_argument("--budget-mb", type=float, default=1024.0)
    ap.add_argument("--keep-alive", type=float, default=30.0)
    ap.add_argument("--compress", type=float, default=96.0)
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    fns = synth_functions(args.functions, rng, max_rate_per_s=1.0)
    fns = [dataclasses.replace(f, memory_mb=256, daily_invocations=min(f.daily_invocations * args.compress,
                                                                         0.5 * 86400)) for f in fns]
    times = [arrivals(f, args.duration, rng) for f in fns]
    sleeps = [np.minimum(durations_ms(f, len(t), rng), 300.0) for f, t in zip(fns, times, strict=True)]
    plan = sorted((float(t), i, float(d)) for i, (ts, ds) in enumerate(zip(times, sleeps, strict=True))
                  for t, d in zip(ts, ds, strict=True))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, PlatformProcess(
            Path(tmp) / "home", extra_args=("--host-memory-mb", str(args.budget_mb), "--no-isolation")) as p:
        zipped = code_zip()
        import base64

        for f in fns:
            env = {"SERVELAB_KEEP_ALIVE_S": str(args.keep_alive), "SERVELAB_MAX_CONCURRENCY": "4",
                   "SERVELAB_START_MODE": "fork"}
            body = {"FunctionName": f.name, "Role": "bench", "MemorySize": 256, "Timeout": 30, "Handler": "app.h",
                    "Code": {"ZipFile": base64.b64encode(zipped).decode()}, "Environment": {"Variables": env}}
            status, _, out = _http("POST", f"{p.url}/2015-03-31/functions", json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
            if status != 201:
                raise SystemExit(f"deploy {f.name}: HTTP {status} {out[:200]!r}")

        def call(item: tuple[float, int, float]) -> tuple[int, dict]:
            _, i, d = item
            req = urllib.request.Request(f"{p.url}/2015-03-31/functions/{fns[i].name}/invocations",
                                         data=json.dumps({"sleep_ms": d}).encode(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return r.status, json.loads(r.headers.get("X-Servelab-Facts") or "{}")
            except urllib.error.HTTPError as e:
                return e.code, {"error": e.read()[:300].decode(errors="replace")}

        t0 = time.monotonic()
        futs = []
        with cf.ThreadPoolExecutor(64) as pool:
            for item in plan:
                delay = item[0] - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
                futs.append(pool.submit(call, item))
            results = [f.result() for f in futs]
        end_unix = time.time()
        time.sleep(1.0)
        inst = read_instances(Path(tmp) / "home" / "instances").to_pylist()
    load_after = os.getloadavg()
    ok = [r for r in results if r[0] == 200]
    cold = sum(1 for _, f in ok if f.get("start_kind") == "cold")
    inits = [f["init_ms"] for _, f in ok if f.get("start_kind") == "cold" and "init_ms" in f]
    busy: dict[str, float] = {}
    for _, f in ok:
        busy[f["instance_id"]] = busy.get(f["instance_id"], 0.0) + f.get("duration_ms", 0.0) / 1000.0
    by_inst: dict[str, dict[str, float]] = {}
    for e in inst:
        by_inst.setdefault(e["instance_id"], {})[e["event"]] = e["at_s"]
    start_unix = min(v.get("started", end_unix) for v in by_inst.values()) if by_inst else end_unix
    horizon = start_unix + args.duration
    idle_gb_s = 0.0
    for iid, ev in by_inst.items():
        if "ready" not in ev:
            continue
        end = min(ev.get("reclaimed", ev.get("died", horizon)), horizon)
        idle_gb_s += max(0.0, end - ev["ready"] - busy.get(iid, 0.0)) * 256 / 1024
    real = {"requests": len(results), "ok": len(ok), "cold": cold, "cold_start_rate": cold / max(1, len(ok)),
            "idle_gb_s": idle_gb_s, "init_ms_median": float(np.median(inits)) if inits else None,
            "evictions": sum(1 for e in inst if e.get("reason") == "evicted"),
            "not_ok": [(s, f.get("error")) for s, f in results if s != 200]}
    # the simulator on the same arrivals, with the platform's measured init and execution overhead
    overhead = [f["duration_ms"] - d for (_, _, d), (s, f) in zip(plan, results, strict=True)
                if s == 200 and "duration_ms" in f]
    extra = float(np.median(overhead)) if overhead else 0.0
    init = real["init_ms_median"] or 100.0
    sim_fns = [dataclasses.replace(f, init_ms=init) for f in fns]
    sim = run_host(sim_fns, times, [s + extra for s in sleeps], parse_policy(f"fixed:{args.keep_alive:g}"),
                   budget_mb=args.budget_mb, horizon_s=args.duration, rng=np.random.default_rng(0),
                   reap_interval_s=0.1, max_instances=4)
    row = summarize("sim", sim, 0.0, 0.0)
    served = int(np.sum((sim.kind == WARM) | (sim.kind == PREWARMED) | (sim.kind == COLD)))
    simd = {"cold_start_rate": row.cold_start_rate, "idle_gb_s": row.idle_gb_s, "cold": row.cold, "served": served,
            "evictions": row.evictions, "throttled": row.throttled}
    print(f"{args.functions} functions x 256 MB on a {args.budget_mb:g} MB host, fixed:{args.keep_alive:g}, "
          f"{args.duration:g} s, {len(plan)} requests; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'':<8}{'cold rate':>10}{'idle GB-s':>11}{'cold':>6}{'evictions':>10}")
    print(f"{'real':<8}{real['cold_start_rate'] * 100:>9.2f}%{real['idle_gb_s']:>11.1f}{real['cold']:>6}"
          f"{real['evictions']:>10}")
    print(f"{'sim':<8}{simd['cold_start_rate'] * 100:>9.2f}%{simd['idle_gb_s']:>11.1f}{simd['cold']:>6}"
          f"{simd['evictions']:>10}")
    print(f"not ok: real {real['not_ok']}; sim throttled {simd['throttled']}")
    print(f"real: {real['ok']}/{real['requests']} ok, init median {init:.0f} ms, execution overhead {extra:.1f} ms")
    path = write_result("policies-validation", {"machine": machine(), "load_before": load_before,
                                                "load_after": load_after, "args": vars(args), "real": real,
                                                "sim": simd})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
