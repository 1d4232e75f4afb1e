"""``servelab demo``: the whole path on this machine in about two minutes.

Build MobileNetV2 from code → put it in the model store → start the serverless platform →
deploy it as a function → drive it with bursty (MMPP) open-loop load → analyze latency,
success ratio and cold starts → price the run as AWS Lambda, Cloud Functions and an EC2 server,
next to the same model run in-process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from servelab.errors import PlatformError, RuntimeNotAvailableError

console = Console()
DEMO_WORKLOAD = "mmpp:rates=2,20;sojourn=8,4"
DEMO_DURATION_S = 45.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PlatformError(f"the platform exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise PlatformError(f"the platform did not become ready within {timeout_s:.0f} s")


def _build_model(models_dir: Path) -> tuple[str, Path]:
    from servelab.models import zoo

    for name in ("mobilenetv2", "tiny-cnn"):
        try:
            with console.status(f"building {name} from code (seeded weights, exported to ONNX)…"):
                t0 = time.perf_counter()
                path = zoo.build(name, models_dir)
            console.print(f"[green]built[/] {name}: {path.stat().st_size / 1e6:.1f} MB in "
                          f"{time.perf_counter() - t0:.1f} s")
            return name, path
        except RuntimeNotAvailableError as e:
            console.print(f"[yellow]{e}[/] — the demo falls back to the tiny CNN")
    raise AssertionError("unreachable")


def _in_process_ms(path: Path, batch: int = 1, n: int = 100) -> float:
    import numpy as np

    from servelab import runtimes

    sess = runtimes.load(path, runtime="onnxruntime", threads=1)
    x = {s.name: s.random(batch) for s in sess.inputs}
    for _ in range(5):
        sess.infer(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.infer(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def run_demo(home: str | None = None) -> None:
    from servelab.analysis.cli import summary_table
    from servelab.analysis.cost import price_run
    from servelab.analysis.metrics import load_run, summarize_run
    from servelab.loadgen import TargetSpec, from_model, run
    from servelab.models.store import open_store
    from servelab.platform.client import PlatformClient
    from servelab.workload import generate, load_spec

    root = Path(home) if home else Path(tempfile.mkdtemp(prefix="servelab-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    platform_home = root / "platform"
    console.rule("[bold]servelab demo")
    console.print(f"working directory: {root}")

    model_name, path = _build_model(root / "models")
    ref = open_store(None, home=platform_home).put(model_name, path)
    console.print(f"stored as [bold]{ref[:len(model_name) + 20]}…[/]")
    in_proc = _in_process_ms(path)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "platform.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "servelab.cli", "platform", "up", "--port", str(port),
                             "--home", str(platform_home)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with console.status("starting the platform…"):
            _wait_ready(url, proc)
        client = PlatformClient(url)
        fn = model_name
        client.create({"FunctionName": fn, "Role": "demo", "MemorySize": 1769, "Timeout": 30,
                       "Environment": {"Variables": {
                           "SERVELAB_MODEL": ref, "SERVELAB_START_MODE": "fork", "SERVELAB_KEEP_ALIVE_S": "3",
                           "SERVELAB_MAX_CONCURRENCY": "2", "SERVELAB_ADMISSION": "queue"}}})
        console.print(f"deployed function [bold]{fn}[/] on {url}: 1769 MB (1 vCPU), fork start, "
                      "keep-alive 3 s, at most 2 instances")

        spec = load_spec(DEMO_WORKLOAD)
        arrivals = generate(spec, duration_s=DEMO_DURATION_S, seed=1)
        console.print(f"workload: MMPP, calm 2 req/s ↔ bursts of 20 req/s, {arrivals.times_s.size} requests "
                      f"over {DEMO_DURATION_S:.0f} s (open loop: latency counts from the scheduled time)")
        out = root / "run"
        run(TargetSpec("lambda", url=url, name=fn), arrivals, from_model(path, 1, count=8),
            out_dir=out, run_id="demo", timeout_s=30, progress=sys.stdout.isatty(),
            config={"workload": spec.to_inline(), "model": model_name})
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()

    loaded = load_run(out)
    summary = summarize_run(loaded)
    console.print(summary_table([summary]))
    t = Table("price catalog entry", "USD per 1M requests", title="the same run, priced")
    for entry, kwargs in (("aws-lambda-x86-us-east-1", {}), ("gcp-cloudfunctions-gen1-us-central1", {}),
                          ("aws-ec2-c5.large-us-east-1", {"instances": 1})):
        c = price_run(loaded.table, entry, memory_mb=1769, duration_s=DEMO_DURATION_S, **kwargs)
        t.add_row(f"{c.entry_id} ({c.catalog_date})", f"{c.per_million_usd:,.2f}")
    console.print(t)
    f = summary.flat()
    console.print(f"in-process inference, same model, 1 thread: median {in_proc:.1f} ms; through the "
                  f"platform: median {f.get('latency_p50_ms', float('nan')):.1f} ms end to end")
    console.print(f"records: {out / 'records'} — try [bold]servelab analyze {out} --timeseries[/]")
