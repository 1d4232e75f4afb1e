"""Servers the platform benchmarks compare, each in its own process, plus shared helpers.

- :class:`PlatformProcess` — ``servelab platform up`` as a child process (so the benchmark's
  client and the platform never share a GIL), with deploy / instances / wait-until-gone helpers.
- :class:`ServerProcess` — the hand-written FastAPI + uvicorn server or a Ray Serve deployment,
  both started by running this file (``python benchmarks/_servers.py fastapi|ray ...``).

Both comparison servers run the platform's own request codec (:class:`ModelHandler`: decode
the KServe v2 request, ``session.infer``, encode the response) on a 1-thread onnxruntime session,
so every system does exactly the same work per request and the differences between them are
transport and dispatch only.

FastAPI reads the endpoint's annotations at run time, so this module does not use
``from __future__ import annotations``.

Every child is stopped by its pid (SIGINT, then SIGKILL after a grace period), never by name.
Times are ``time.perf_counter()`` seconds; latencies in milliseconds (``*_ms``).
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
VENV_BIN = Path(sys.executable).parent
ZOO_DIR = Path("/tmp/servelab-zoo")


# ---------------------------------------------------------------------------- shared helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI avg10)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(line.split()[1].split("=")[1])


_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_counters() -> dict[str, int]:
    """The machine's CPU time counters (``/proc/stat``, all CPUs, clock ticks)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return {}
    return dict(zip(_CPU_FIELDS, map(int, first[1:9]), strict=False))


def cpu_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Between two :func:`cpu_counters`: the share of CPU time that was busy, idle, and *stolen*
    (this VM's vCPU was runnable but the hypervisor ran something else: another tenant's load)."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in _CPU_FIELDS}
    total = sum(d.values()) or 1
    return {"busy": (total - d["idle"] - d["iowait"] - d["steal"]) / total,
            "idle": (d["idle"] + d["iowait"]) / total, "steal": d["steal"] / total}


def load_snapshot() -> dict[str, Any]:
    """How busy the shared machine is right now: load averages, CPU pressure, ``uptime``, and the
    CPU counters (steal included) so a later snapshot can say what happened in between."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_avg": list(os.getloadavg()), "cpu_pressure_avg10": cpu_pressure(), "uptime": uptime,
            "cpu_counters": cpu_counters()}


def run_shares(doc: dict[str, Any]) -> dict[str, float]:
    """CPU shares over a whole benchmark run, from its ``load_before`` and ``load_after``."""
    return cpu_shares(doc["load_before"]["cpu_counters"], doc["load_after"]["cpu_counters"])


def describe_load(doc: dict[str, Any]) -> str:
    sh = run_shares(doc)
    return (f"load before: {doc['load_before']['uptime']}\nload after:  {doc['load_after']['uptime']}\n"
            f"CPU over the run: {100 * sh['busy']:.0f}% busy, {100 * sh['idle']:.0f}% idle, "
            f"{100 * sh['steal']:.1f}% stolen by the hypervisor")


def machine() -> dict[str, Any]:
    from servelab.runtimes.bench import machine_info

    info = machine_info()
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("aiohttp", "fastapi", "uvicorn", "uvloop", "httptools", "ray"):
        try:
            info["versions"][pkg] = version(pkg)
        except PackageNotFoundError:
            info["versions"][pkg] = None
    info["note"] = "2-core VM shared with other engineers' work; see load before/after"
    return info


def console() -> Any:
    """A rich console; wide when the output is not a terminal, so tables pasted into docs fit."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def pct(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def mobilenet_path() -> Path:
    """The zoo's MobileNetV2 ONNX file, built on first use (seed 0, opset 17)."""
    path = ZOO_DIR / "mobilenetv2.onnx"
    if not path.is_file():
        from servelab.models import zoo

        path = zoo.build("mobilenetv2", ZOO_DIR)
    return path


def mobilenet_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, 224, 224), dtype=np.float32)


def v2_body(x: np.ndarray, name: str = "input") -> bytes:
    from servelab.tensors import encode_tensor

    return json.dumps({"inputs": [encode_tensor(name, x, binary=True)]}).encode()


def write_result(prefix: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    return path


def _http(method: str, url: str, body: bytes | None = None, timeout_s: float = 30.0,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_http_ready(url: str, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError):
            if _http("GET", url, timeout_s=2.0)[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready at {url} within {timeout_s:.0f} s")


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGINT (graceful: the platform stops its instances), then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- the platform
# What-ifs: proposed platform changes, applied at start-up without editing the platform, so a
# benchmark can measure a patch side by side with the platform as it is. Each is either Python run
# before the CLI (a monkeypatch) or environment variables (inherited by the fork server and every
# instance). Each is the runtime form of a patch proposed in benchmarks/README.md; none is a
# platform option.
@dataclass(frozen=True)
class WhatIf:
    why: str
    code: str = ""
    env: dict[str, str] = field(default_factory=dict)


WHAT_IFS: dict[str, WhatIf] = {
    "malloc": WhatIf(
        "glibc serves allocations above its (dynamic) mmap threshold with fresh mmap()s: every 803 kB "
        "request body, its copies and its base64 decode then fault in new pages. A fixed 16 MB "
        "threshold and no trimming keep them on the reused heap.",
        env={"MALLOC_MMAP_THRESHOLD_": str(16 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}),
    "thp": WhatIf(
        "A first onnxruntime session in a fresh process takes ~15k minor page faults (~57 MB of new "
        "pages); glibc's malloc on 2 MB transparent huge pages cuts that to ~5k.",
        env={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}),
    "fast-records": WhatIf(
        "records.to_table builds rows with dataclasses.asdict (~40 us a record); the meter's "
        "once-a-second flush runs on the gateway's event loop, so at 800 rps it stalls it ~37 ms.",
        code=("import pyarrow as pa, servelab.records as R\n"
              "def _to_table(records):\n"
              "    records = list(records)\n"
              "    cols = {n: [r.get(n) if isinstance(r, dict) else getattr(r, n) for r in records]\n"
              "            for n in R.FIELD_NAMES}\n"
              "    return pa.table(cols, schema=R.SCHEMA)\n"
              "R.to_table = _to_table\n")),
    "socket-buffers": WhatIf(
        "4 MB send/receive buffers on the gateway-instance socket pair: an 803 kB request frame goes "
        "in one send() instead of four partial sends, each waiting for the instance to drain.",
        code=("import socket, servelab.platform.backends.local as B\n"
              "class _Sock:\n"
              "    def __getattr__(self, name):\n"
              "        return getattr(socket, name)\n"
              "    @staticmethod\n"
              "    def socketpair(*a, **k):\n"
              "        pair = socket.socketpair(*a, **k)\n"
              "        if a and a[1] == socket.SOCK_STREAM:\n"
              "            for s in pair:\n"
              "                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)\n"
              "                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)\n"
              "        return pair\n"
              "B.socket = _Sock()\n")),
}


def what_if(*names: str) -> tuple[list[str] | None, dict[str, str]]:
    """The command and environment that start ``servelab`` with the named :data:`WHAT_IFS`."""
    unknown = [n for n in names if n not in WHAT_IFS]
    if unknown:
        raise ValueError(f"unknown what-if {unknown}; known: {sorted(WHAT_IFS)}")
    code = "".join(WHAT_IFS[n].code for n in names)
    env = {k: v for n in names for k, v in WHAT_IFS[n].env.items()}
    if not code:
        return None, env
    run_cli = "import sys\nfrom servelab.cli import main\nsys.argv[0] = 'servelab'\nmain()\n"
    return [sys.executable, "-c", code + run_cli], env


class PlatformProcess:
    """``servelab platform up`` in a child process, on a free loopback port."""

    def __init__(self, home: Path, *, limits: str = "auto", log: Path | None = None,
                 what_ifs: tuple[str, ...] = (), extra_args: tuple[str, ...] = ()) -> None:
        """``what_ifs`` names :data:`WHAT_IFS` to apply (proposed patches, measured side by side)."""
        self.home = Path(home)
        self.limits = limits
        self.what_ifs = what_ifs
        self.extra_args = extra_args  # more `servelab platform up` options (e.g. --no-isolation)
        command, env = what_if(*what_ifs)
        self.env = {**os.environ, **env}  # the fork server and the instances inherit it
        self.command = command or [str(VENV_BIN / "servelab")]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or self.home.parent / f"platform-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "PlatformProcess":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # closed right after Popen: the child has it
        self.proc = subprocess.Popen(
            [*self.command, "platform", "up", "--port", str(self.port), "--home", str(self.home),
             "--limits", self.limits, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        wait_http_ready(f"{self.url}/v2/health/ready", self.proc, 60, "servelab platform")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def info(self) -> dict[str, Any]:
        return json.loads(_http("GET", f"{self.url}/servelab/v1/info")[2])

    def put_model(self, path: Path) -> str:
        from servelab.models.store import open_store

        return open_store(None, home=self.home).put(path.stem, path)

    def deploy(self, name: str, model_ref: str, *, memory_mb: int = 1024, start_mode: str = "fork",
               keep_alive_s: float = 600.0, max_concurrency: int = 4, admission: str = "throttle",
               threads: int | None = None, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Create (or replace) a function through the Lambda CreateFunction API."""
        env = {"SERVELAB_MODEL": model_ref, "SERVELAB_START_MODE": start_mode,
               "SERVELAB_KEEP_ALIVE_S": str(keep_alive_s), "SERVELAB_MAX_CONCURRENCY": str(max_concurrency),
               "SERVELAB_ADMISSION": admission, **(extra_env or {})}
        if threads is not None:
            env["SERVELAB_THREADS"] = str(threads)
        _http("DELETE", f"{self.url}/2015-03-31/functions/{name}")
        body = {"FunctionName": name, "Role": "bench", "MemorySize": memory_mb, "Timeout": 60,
                "Handler": "servelab.model", "Environment": {"Variables": env}}
        status, _, out = _http("POST", f"{self.url}/2015-03-31/functions", json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"deploy {name} failed: HTTP {status} {out[:300]!r}")
        return json.loads(out)

    def set_provisioned(self, name: str, n: int) -> None:
        status, _, out = _http("PUT", f"{self.url}/2019-09-30/functions/{name}/provisioned-concurrency",
                               json.dumps({"ProvisionedConcurrentExecutions": n}).encode())
        if status not in (200, 202):
            raise RuntimeError(f"provisioned concurrency for {name} failed: HTTP {status} {out[:300]!r}")

    def instances(self, name: str) -> dict[str, Any]:
        return json.loads(_http("GET", f"{self.url}/servelab/v1/functions/{name}/instances")[2])

    def wait_instances(self, name: str, *, idle: int, timeout_s: float = 60.0) -> None:
        """Until ``idle`` instances of ``name`` are idle (pre-warmed / provisioned ones)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.instances(name)["by_state"]["idle"] >= idle:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{name}: {idle} idle instance(s) not ready within {timeout_s:.0f} s")

    def wait_no_instances(self, name: str, pids: list[int], timeout_s: float = 30.0) -> float:
        """Until ``name`` has no instance and the given instance pids have exited; seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if not self.instances(name)["instances"] and not any(_alive(p) for p in pids):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"{name}: instances still present {timeout_s:.0f} s after keep-alive 0")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------------------- comparison servers
class ServerProcess:
    """A comparison server (``fastapi``, ``aiohttp`` or ``ray``) serving ``POST /infer`` in a child process."""

    READY_TIMEOUT_S: ClassVar[dict[str, float]] = {"fastapi": 60.0, "aiohttp": 60.0, "ray": 180.0}

    def __init__(self, kind: str, model: Path, *, threads: int = 1, log: Path | None = None) -> None:
        self.kind = kind
        self.model = model
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/infer"
        self.log_path = log or Path(f"/tmp/servelab-bench-{kind}-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None

    def __enter__(self) -> "ServerProcess":
        log = open(self.log_path, "wb")  # closed right after Popen: the child has it
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), self.kind, "--port", str(self.port),
             "--model", str(self.model), "--threads", str(self.threads)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
        log.close()
        try:
            wait_http_ready(f"http://127.0.0.1:{self.port}/healthz", self.proc, self.READY_TIMEOUT_S[self.kind],
                            self.kind)
        except RuntimeError:
            stop_process(self.proc, grace_s=30)
            raise
        self.started_s = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=30)
        if exc[0] is None:  # keep the log only when something went wrong
            self.log_path.unlink(missing_ok=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _handler(model: str, threads: int) -> Any:
    from servelab import runtimes
    from servelab.platform.worker import ModelHandler

    return ModelHandler(runtimes.load(Path(model), runtime="onnxruntime", threads=threads), "bench")


def serve_fastapi(port: int, model: str, threads: int) -> None:
    """A plain FastAPI app under uvicorn (its defaults: uvloop and httptools when installed)."""
    import uvicorn
    from fastapi import FastAPI, Request, Response

    handler = _handler(model, threads)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        # Inline in the event loop, like the platform's worker: one request at a time, no thread hop.
        (ok, payload), = handler.run_batch([await request.body()])[0]
        return Response(payload, media_type="application/json", status_code=200 if ok else 400)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_aiohttp(port: int, model: str, threads: int) -> None:
    """A bare aiohttp app (the platform's HTTP server library, default asyncio loop), no platform."""
    from aiohttp import web

    handler = _handler(model, threads)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def infer(request: web.Request) -> web.Response:
        (ok, payload), = handler.run_batch([await request.read()])[0]
        return web.Response(body=payload, content_type="application/json", status=200 if ok else 400)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_ray(port: int, model: str, threads: int) -> None:
    """One Ray Serve replica (1 CPU) behind Ray Serve's HTTP proxy, on a local Ray started here."""
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
    class Model:
        def __init__(self, model: str, threads: int) -> None:
            self.handler = _handler(model, threads)

        async def __call__(self, request: Request) -> Response:
            if request.url.path.rstrip("/").endswith("healthz"):
                return Response(b'{"ok": true}', media_type="application/json")
            (ok, payload), = self.handler.run_batch([await request.body()])[0]
            return Response(payload, media_type="application/json", status_code=200 if ok else 400)

    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # One deployment at "/": /healthz and /infer reach the same replica, so "ready" means the
        # replica has loaded the model.
        serve.run(Model.bind(model, threads), name="bench", route_prefix="/")
        print("ready", flush=True)
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


SERVERS = {"fastapi": serve_fastapi, "aiohttp": serve_aiohttp, "ray": serve_ray}


def main() -> None:
    ap = argparse.ArgumentParser(description="Run one comparison server (used by the benchmarks).")
    ap.add_argument("kind", choices=list(SERVERS))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    SERVERS[args.kind](args.port, args.model, args.threads)


if __name__ == "__main__":
    main()
