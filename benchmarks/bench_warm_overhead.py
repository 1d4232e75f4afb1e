"""Warm-request overhead: MobileNetV2 batch 1 in-process vs the platform vs FastAPI vs Ray Serve.

Every system runs the same ONNX file on a 1-intra-op-thread onnxruntime session and gets the same
request body (a KServe v2 request with the 1x3x224x224 float32 image as a ``b64`` tensor, 803 kB):

- ``in-process infer``   — ``session.infer(feed)`` in this process: the floor.
- ``in-process handler`` — the platform's own request codec in this process (decode the JSON and
  base64, ``session.infer``, encode the response): what any server must do with this body.
- ``platform lambda``    — the Lambda Invoke route of ``servelab platform up`` (a separate process),
  function deployed with 1769 MB (1 vCPU, 1 thread) and the default cgroup limits.
- ``platform v2``        — the same function through the Open Inference Protocol route.
- ``platform v2 binary`` — the same route with the protocol's binary tensor data extension (JSON
  header + the raw 602 kB image; outputs back as raw bytes); ``in-process handler binary`` is its
  codec in this process.
- ``platform lambda + malloc (what-if)`` — a second platform started with glibc's mmap threshold
  fixed at 16 MB (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, see ``_servers.WHAT_IFS``),
  the first patch proposed in README.md; ``--what-if`` picks others.
- ``fastapi``            — a hand-written FastAPI app under uvicorn running the same codec.
- ``bare aiohttp``       — the same as a minimal aiohttp app (the platform's HTTP library, no platform).
- ``ray serve``          — one Ray Serve replica (1 CPU) behind Ray Serve's HTTP proxy.

The client is ``http.client`` on one keep-alive connection per system, sequential requests.
Systems are interleaved in rounds (``--block`` requests each, round after round) so that the
shared machine's drifting load hits them all alike. Ray starts a dozen background processes that
would disturb the others, so it runs in a second phase, interleaved again with the in-process and
platform references; its gap is computed against the references of its own phase.

    .venv/bin/python benchmarks/bench_warm_overhead.py               # ~2.5 minutes
    .venv/bin/python benchmarks/bench_warm_overhead.py --no-ray --requests 120

Prints a table and writes every latency, with the platform's server-side facts, to
``benchmarks/results/warm-overhead-<time>.json``. Latencies in ms.
"""

import argparse
import contextlib
import http.client
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S

MEMORY_MB = 1769  # exactly 1 vCPU under the platform's limits, so the instance uses 1 thread
THREADS = 1
FUNCTION = "mnv2"
# The platform again with proposed patches applied at start-up (see _servers.WHAT_IFS); --what-if.
DEFAULT_WHAT_IF = "malloc"


class HttpSystem:
    """Sequential POSTs on one keep-alive connection; returns client latency and server facts."""

    def __init__(self, name: str, url: str, *, path: str) -> None:
        self.name = name
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.path = path

    def __call__(self, body: bytes) -> tuple[float, bytes, dict[str, Any]]:
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        out = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {resp.status} {out[:300]!r}")
        facts = resp.getheader("X-Servelab-Facts")
        return ms, out, json.loads(facts) if facts else {}

    def close(self) -> None:
        self.conn.close()


class BinaryHttpSystem(HttpSystem):
    """The Open Inference Protocol's binary tensor extension: its own body (JSON header + raw image
    bytes, outputs asked back as raw bytes), whatever body the round passes in."""

    def __init__(self, name: str, url: str, *, path: str, x: np.ndarray) -> None:
        super().__init__(name, url, path=path)
        self.body, self.header_length = binary_body(x)

    def __call__(self, body: bytes) -> tuple[float, bytes, dict[str, Any]]:
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=self.body,
                          headers={"Content-Type": "application/octet-stream",
                                   "Inference-Header-Content-Length": str(self.header_length)})
        resp = self.conn.getresponse()
        out = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {resp.status} {out[:300]!r}")
        from servelab.tensors import frame_binary

        facts = resp.getheader("X-Servelab-Facts")
        # framed like the instance's answer, so check_outputs decodes both the same way
        return ms, frame_binary(out, int(resp.getheader("Inference-Header-Content-Length"))), \
            json.loads(facts) if facts else {}


def binary_body(x: np.ndarray) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(x).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, len(header)


def in_process(session: Any, handler: Any, x: np.ndarray) -> dict[str, Callable]:
    def infer(body: bytes) -> tuple[float, bytes, dict]:
        t0 = time.perf_counter()
        out = session.infer({"input": x})
        return (time.perf_counter() - t0) * 1000, b"", {"_out": out}

    def codec(body: bytes) -> tuple[float, bytes, dict]:
        t0 = time.perf_counter()
        (_ok, payload), = handler.run_batch([body])[0]
        return (time.perf_counter() - t0) * 1000, payload, {}

    from servelab.tensors import frame_binary

    framed = frame_binary(*binary_body(x))

    def binary_codec(body: bytes) -> tuple[float, bytes, dict]:
        t0 = time.perf_counter()
        (_ok, payload), = handler.run_batch([framed])[0]
        return (time.perf_counter() - t0) * 1000, payload, {}

    return {"in-process infer": infer, "in-process handler": codec, "in-process handler binary": binary_codec}


def interleave(systems: dict[str, Callable], body: bytes, *, requests: int, block: int, warmup: int,
               console: Console, phase: str) -> dict[str, dict[str, list]]:
    """Warm each system up, then run ``block`` requests per system per round until ``requests``."""
    data: dict[str, dict[str, list]] = {n: {"ms": [], "facts": []} for n in systems}
    for fn in systems.values():
        for _ in range(warmup):
            fn(body)
    rounds = -(-requests // block)
    t0 = time.monotonic()
    for r in range(rounds):
        order = list(systems.items())
        if r % 2:  # alternate the order so no system always follows the same one
            order.reverse()
        for name, fn in order:
            for _ in range(block):
                ms, _, facts = fn(body)
                data[name]["ms"].append(ms)
                if facts and "_out" not in facts:
                    data[name]["facts"].append(facts)
    console.log(f"{phase}: {rounds} rounds x {block} requests x {len(systems)} systems "
                f"in {time.monotonic() - t0:.1f} s")
    return data


def check_outputs(systems: dict[str, Callable], body: bytes, expected: np.ndarray) -> dict[str, float]:
    """Max abs difference of each HTTP system's output from the in-process one (sanity)."""
    from servelab.tensors import decode_tensors, unframe_binary

    diffs = {}
    for name, fn in systems.items():
        if name.startswith("in-process infer"):
            continue
        _, out, _ = fn(body)
        framed = unframe_binary(out)
        if framed is not None:
            rest, n = framed
            got = next(iter(decode_tensors(json.loads(bytes(rest[:n]))["outputs"], rest[n:]).values()))
        else:
            got = next(iter(decode_tensors(json.loads(out)["outputs"]).values()))
        diffs[name] = float(np.max(np.abs(got - expected)))
    return diffs


def summarize(data: dict[str, dict[str, list]], ref: str) -> list[dict[str, Any]]:
    ref_p50 = S.pct(data[ref]["ms"], 50)
    rows = []
    for name, d in data.items():
        ms = np.asarray(d["ms"])
        row = {"system": name, "n": int(ms.size), "p50_ms": S.pct(ms, 50), "p90_ms": S.pct(ms, 90),
               "p99_ms": S.pct(ms, 99), "mean_ms": float(ms.mean())}
        row["added_p50_ms"] = row["p50_ms"] - ref_p50
        row["ratio_p50"] = row["p50_ms"] / ref_p50
        if d["facts"]:
            for k in ("platform_ms", "duration_ms", "inference_ms"):
                row[f"server_{k}_p50"] = S.pct([f[k] for f in d["facts"]], 50)
            # Where the platform's time goes, per request, medians of per-request differences.
            row["http_and_client_ms_p50"] = S.pct([m - f["platform_ms"] for m, f in zip(ms, d["facts"],
                                                                                         strict=True)], 50)
            row["gateway_and_ipc_ms_p50"] = S.pct([f["platform_ms"] - f["duration_ms"] for f in d["facts"]], 50)
            row["worker_codec_ms_p50"] = S.pct([f["duration_ms"] - f["inference_ms"] for f in d["facts"]], 50)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], title: str, ref_handler: float | None) -> Table:
    t = Table(title=title)
    for c in ("system", "n", "p50", "p90", "p99", "+p50 vs infer", "x infer", "+p50 vs handler"):
        t.add_column(c, justify="left" if c == "system" else "right")
    for r in rows:
        vs_h = "" if ref_handler is None else f"{r['p50_ms'] - ref_handler:+.2f}"
        t.add_row(r["system"], str(r["n"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['added_p50_ms']:+.2f}", f"{r['ratio_p50']:.2f}", vs_h)
    return t


def breakdown(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Platform: where a warm request's time goes (medians, ms)")
    for c in ("route", "client", "HTTP+client", "gateway+IPC", "worker codec", "inference"):
        t.add_column(c, justify="left" if c == "route" else "right")
    for r in rows:
        if "gateway_and_ipc_ms_p50" in r:
            t.add_row(r["system"], f"{r['p50_ms']:.2f}", f"{r['http_and_client_ms_p50']:.2f}",
                      f"{r['gateway_and_ipc_ms_p50']:.2f}", f"{r['worker_codec_ms_p50']:.2f}",
                      f"{r['server_inference_ms_p50']:.2f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=320, help="timed requests per system (after warm-up)")
    ap.add_argument("--block", type=int, default=10, help="requests per system per round")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Serve phase")
    ap.add_argument("--limits", default="auto", help="the platform's --limits")
    ap.add_argument("--what-if", default=DEFAULT_WHAT_IF,
                    help="comma-separated _servers.WHAT_IFS for a second, patched platform ('' skips it)")
    args = ap.parse_args()
    console = S.console()
    from servelab import runtimes
    from servelab.platform.worker import ModelHandler

    model = S.mobilenet_path()
    x = S.mobilenet_input()
    body = S.v2_body(x)
    session = runtimes.load(model, runtime="onnxruntime", threads=THREADS)
    handler = ModelHandler(session, FUNCTION)
    expected = next(iter(session.infer({"input": x}).values()))
    doc: dict[str, Any] = {"benchmark": "warm overhead", "what_if": args.what_if, "model": str(model),
                           "body_bytes": len(body),
                           "memory_mb": MEMORY_MB, "threads": THREADS, "requests": args.requests,
                           "block": args.block, "warmup": args.warmup, "platform_limits": args.limits,
                           "client": "http.client, one keep-alive connection per system, TCP_NODELAY, sequential",
                           "machine": S.machine(), "load_before": S.load_snapshot(), "phases": {}}
    console.log(f"body {len(body) / 1e3:.0f} kB; load {doc['load_before']['uptime']}")
    home = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    with contextlib.ExitStack() as stack:
        # Both platforms start before either creates an instance: a platform's start-up removes every
        # servelab cgroup it finds in its memory cgroup, live instances of another platform included.
        plat = stack.enter_context(S.PlatformProcess(home / "home", limits=args.limits))
        what_if = None
        names = tuple(n for n in args.what_if.split(",") if n)
        if names:
            what_if = stack.enter_context(S.PlatformProcess(home / "home-what-if", limits=args.limits,
                                                            what_ifs=names))
        doc["platform_limits_mode"] = plat.info()["limits"]
        lam = HttpSystem("platform lambda", plat.url, path=f"/2015-03-31/functions/{FUNCTION}/invocations")
        v2 = HttpSystem("platform v2", plat.url, path=f"/v2/models/{FUNCTION}/infer")
        v2b = BinaryHttpSystem("platform v2 binary", plat.url, path=f"/v2/models/{FUNCTION}/infer", x=x)
        platforms: dict[str, HttpSystem] = {"platform lambda": lam, "platform v2": v2, "platform v2 binary": v2b}
        for p in (plat, what_if):
            if p is not None:
                p.deploy(FUNCTION, p.put_model(model), memory_mb=MEMORY_MB, start_mode="fork", threads=THREADS,
                         max_concurrency=1)
        if what_if is not None:
            name = f"platform lambda + {'+'.join(names)} (what-if)"
            platforms[name] = HttpSystem(name, what_if.url, path=f"/2015-03-31/functions/{FUNCTION}/invocations")
        for sys_ in platforms.values():
            sys_(body)  # the cold start, out of the way
        fa = stack.enter_context(S.ServerProcess("fastapi", model, threads=THREADS))
        ai = stack.enter_context(S.ServerProcess("aiohttp", model, threads=THREADS))
        fast = HttpSystem("fastapi", fa.url, path="/infer")
        bare = HttpSystem("bare aiohttp", ai.url, path="/infer")
        systems = {**in_process(session, handler, x), **platforms, "fastapi": fast, "bare aiohttp": bare}
        doc["output_max_abs_diff"] = check_outputs(systems, body, expected)
        data = interleave(systems, body, requests=args.requests, block=args.block, warmup=args.warmup,
                          console=console, phase="phase 1 (no Ray)")
        fast.close()
        bare.close()
        doc["phases"]["main"] = {"rows": summarize(data, "in-process infer"),
                                 "raw_ms": {k: v["ms"] for k, v in data.items()},
                                 "platform_facts": {k: v["facts"] for k, v in data.items() if v["facts"]}}
        if not args.no_ray:
            try:
                with S.ServerProcess("ray", model, threads=THREADS) as rs:
                    console.log(f"Ray Serve ready in {rs.started_s:.1f} s")
                    ray = HttpSystem("ray serve", rs.url, path="/infer")
                    systems = {**in_process(session, handler, x), "platform lambda": lam, "ray serve": ray}
                    doc["output_max_abs_diff"]["ray serve"] = check_outputs({"ray serve": ray}, body,
                                                                            expected)["ray serve"]
                    data = interleave(systems, body, requests=args.requests, block=args.block,
                                      warmup=args.warmup, console=console, phase="phase 2 (Ray running)")
                    ray.close()
                    doc["phases"]["ray"] = {"rows": summarize(data, "in-process infer"),
                                            "raw_ms": {k: v["ms"] for k, v in data.items()},
                                            "ray_start_s": rs.started_s}
            except RuntimeError as e:
                doc["phases"]["ray"] = {"skipped": str(e)}
                console.log(f"[yellow]Ray Serve skipped: {e}[/]")
        for sys_ in platforms.values():
            sys_.close()
    shutil.rmtree(home, ignore_errors=True)  # each platform home holds a copy of the model
    doc["load_after"] = S.load_snapshot()
    for phase, title in (("main", "Phase 1: warm MobileNetV2 batch 1, latency ms (Ray not running)"),
                         ("ray", "Phase 2: with Ray Serve running (its own references)")):
        p = doc["phases"].get(phase)
        if p and "rows" in p:
            ref_h = next(r["p50_ms"] for r in p["rows"] if r["system"] == "in-process handler")
            console.print(table(p["rows"], title, ref_h))
    console.print(breakdown(doc["phases"]["main"]["rows"]))
    console.print(f"outputs vs in-process, max abs diff: {doc['output_max_abs_diff']}")
    doc["cpu_over_run"] = S.run_shares(doc)
    console.print(S.describe_load(doc))
    path = S.write_result("warm-overhead", doc)
    console.print(f"raw results: {path}")


if __name__ == "__main__":
    main()
