"""Generator precision: the highest rate at which 99% of requests leave within 1 ms of schedule.

For each configuration — the null target (no I/O: the harness's own overhead) and a trivial
aiohttp server on loopback in its own process, with 1 and 2 generator processes — it runs
Poisson schedules at rising rates (``--run-s`` seconds each) and reports two figures: the
highest rate at which 99% of requests left within 1 ms of their scheduled time ("precise"),
and the highest rate the generator sustained at all (the whole rate sent, median lag under
1 ms; the ladder stops at the first rate it cannot sustain). Prints a table and writes every
run's raw numbers to ``benchmarks/results/loadgen-<time>.json``.

    .venv/bin/python benchmarks/bench_loadgen.py                 # full ladder, ~3 minutes
    .venv/bin/python benchmarks/bench_loadgen.py --quick         # 3 rates per configuration

The machine is shared: the load average and the CPU pressure (Linux PSI: the share of time some
runnable task waited for a CPU) before each run are saved with it. Read them before trusting a
figure: a generator that waits for a CPU cannot send on time, whatever its code does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from servelab.loadgen import TargetSpec, run
from servelab.records import read_records

RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000)
QUICK_RATES = (500, 2000, 8000)
WITHIN_MS = 1.0
PASS_FRACTION = 0.99
SUSTAIN_LAG_MS = 1.0  # median send lag under this and the full rate sent: the generator keeps up

SERVER = """
import asyncio, sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok")
async def main():
    app = web.Application()
    app.router.add_post("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()  # printed once the socket listens: our readiness signal
    if not port:
        raise RuntimeError("benchmark server did not start")
    return proc, f"http://127.0.0.1:{port}/"


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(line.split()[1].split("=")[1])


def keeps_up(r: dict) -> bool:
    return r["lag_p50_ms"] < SUSTAIN_LAG_MS and r["sent_rps"] >= 0.97 * r["scheduled_rps"]


def one_run(spec: TargetSpec, rate: float, procs: int, run_s: float, spin_ms: float, seed: int) -> dict:
    times = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, int(rate * run_s * 1.2)))
    times = times[times < run_s]
    out = Path(tempfile.mkdtemp(prefix="bench-loadgen-"))
    load = os.getloadavg()[0]
    pressure = cpu_pressure()
    try:
        res = run(spec, times, [b"{}"], out_dir=out, run_id="bench", procs=procs, spin_s=spin_ms / 1e3,
                  timeout_s=10.0)
        t = read_records(out / "records")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    lag = t.column("send_lag_ms").to_numpy()
    lat = t.column("latency_ms").to_numpy()
    sent = t.column("sent_s").to_numpy()
    sched = t.column("scheduled_s").to_numpy()
    ok = np.asarray(t.column("status").to_pylist()) == "ok"
    return {
        "target": spec.kind, "procs": procs, "rate_rps": rate, "spin_ms": spin_ms,
        "requests": int(t.num_rows),
        "within_1ms": float(np.mean(lag <= WITHIN_MS)),
        "lag_p50_ms": float(np.percentile(lag, 50)), "lag_p99_ms": float(np.percentile(lag, 99)),
        "lag_max_ms": float(lag.max()),
        "sent_rps": float((sent.size - 1) / (sent.max() - sent.min())) if sent.size > 1 else 0.0,
        "scheduled_rps": float((sched.size - 1) / (sched.max() - sched.min())) if sched.size > 1 else 0.0,
        "ok_ratio": float(ok.mean()),
        "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
        "loadavg_before": load, "cpu_pressure_before": pressure, "status": res.status,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-s", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--spin-ms", type=float, nargs="+", default=[0.5])
    ap.add_argument("--targets", nargs="+", default=["null", "http"])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    rates = QUICK_RATES if args.quick else RATES
    server, url = start_server()
    rows: list[dict] = []
    best: list[dict] = []
    try:
        for kind in args.targets:
            spec = TargetSpec("null") if kind == "null" else TargetSpec("http", url=url)
            for procs in args.procs:
                for spin in args.spin_ms:
                    highest = sustained = None
                    for k, rate in enumerate(rates):
                        r = one_run(spec, rate, procs, args.run_s, spin, seed=k)
                        rows.append(r)
                        print(f"  {kind:4} procs={procs} spin={spin:g}ms {rate:>6} rps: "
                              f"{100 * r['within_1ms']:6.2f}% within 1 ms, "
                              f"lag p50 {r['lag_p50_ms']:6.3f} p99 {r['lag_p99_ms']:7.3f} ms, "
                              f"sent {r['sent_rps']:7.0f}/s, ok {r['ok_ratio']:.3f}, "
                              f"cpu pressure {r['cpu_pressure_before']}%", flush=True)
                        if r["within_1ms"] >= PASS_FRACTION:
                            highest = rate
                        if not keeps_up(r):
                            break
                        sustained = rate
                    best.append({"target": kind, "procs": procs, "spin_ms": spin, "highest_rps": highest,
                                 "sustained_rps": sustained})
    finally:
        server.kill()
        server.wait()

    print(f"\n{args.run_s:g} s Poisson runs; 'precise': highest rate with >= {100 * PASS_FRACTION:g}% of "
          f"sends within {WITHIN_MS:g} ms of schedule; 'sustained': highest rate sent in full with a "
          f"median lag under {SUSTAIN_LAG_MS:g} ms")
    print(f"{'target':8}{'procs':>6}{'spin ms':>9}{'precise rps':>13}{'sustained rps':>15}")
    for b in best:
        precise = b["highest_rps"] or "none"
        sustained = b["sustained_rps"] or f"< {rates[0]}"
        print(f"{b['target']:8}{b['procs']:>6}{b['spin_ms']:>9g}{precise:>13}{sustained:>15}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"loadgen-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "benchmark": "loadgen precision", "run_s": args.run_s, "within_ms": WITHIN_MS,
        "pass_fraction": PASS_FRACTION, "sustain_lag_ms": SUSTAIN_LAG_MS,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_model()},
        "best": best, "runs": rows}, indent=2) + "\n")
    print(f"raw results: {path}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
