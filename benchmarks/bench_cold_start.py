"""Cold starts of MobileNetV2 on onnxruntime: the platform (fork vs spawn) next to the floor.

**Platform.** ``servelab platform up`` runs as a separate process. Each configuration (limits
mode x memory size x start mode) is one function deployed with keep-alive 0 s, so its instance
is reclaimed right after each request. A cold start is one invocation after the previous
instance is gone (its pid has exited, not only left the instance list). One untimed cold start
per configuration comes first, so every timed one starts with the same warm page cache and a
running fork server, as on a cloud worker that has run this function before. The client times
the request end to end; the ``X-Servelab-Facts`` header gives the parts: process start, imports,
model fetch (with its sha256 check), model load (session creation), first inference.

**Floor.** In a helper process that has imported onnxruntime (as the fork server has):

- *fork floor*: ``os.fork()``, then in the child a 1-thread session + one inference — the least a
  fork-mode cold start can cost. Measured unconstrained and inside a cgroup with the same CPU
  quota as the platform's instance (0.58 vCPU at 1024 MB, 1 vCPU at 1769 MB) when cgroups exist.
- *in-process floor*: session creation + one inference in the already-running helper (its
  first session is discarded, so this one has no first-session costs).

The floor is measured N times before and N times after the platform's cold starts (a fresh
helper each time) and pooled; both halves' medians are printed, so drift in the machine's load
is visible.

Configurations: memory 1024 MB (Lambda's default here: 0.58 vCPU) and 1769 MB (1 vCPU) under the
default limits (cgroup v1 here), and ``--limits none``; each with ``fork`` and ``spawn``. Every
instance runs 1 intra-op thread (what both memory sizes give). A fourth field ``thp`` is a
what-if: the platform runs with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (``_servers.WHAT_IFS``).

    .venv/bin/python benchmarks/bench_cold_start.py              # ~1.5 minutes, N=16 per configuration
    .venv/bin/python benchmarks/bench_cold_start.py -n 3 --configs auto:1024:fork,none:1024:fork

Prints tables and writes every cold start and floor run to
``benchmarks/results/cold-start-<time>.json``. Times in ms.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S

DEFAULT_CONFIGS = ("auto:1024:fork", "auto:1024:spawn", "auto:1769:fork", "auto:1769:spawn",
                   "none:1024:fork", "none:1024:spawn", "auto:1024:fork:thp", "none:1024:fork:thp")
# A fourth field names a what-if of _servers.WHAT_IFS ("thp": malloc on transparent huge pages).
PARTS = ("init_process_ms", "init_import_ms", "init_fetch_ms", "init_load_ms", "inference_ms")
TARGET_RATIO = 2.0
MAX_FAILURES = 3


# ---------------------------------------------------------------------------- the floor (helper)
def floor_helper(path: Path, n: int, memories: list[int]) -> dict[str, Any]:
    """Runs in a fresh process (``--floor-helper``): fork floors, then the in-process floor."""
    from servelab import runtimes

    runtimes.import_runtime("onnxruntime")
    import numpy  # noqa: F401  (the fork server preloads numpy too)

    x = S.mobilenet_input()
    out: dict[str, Any] = {"fork": {}, "in_process": []}
    limits_info = None
    try:
        from servelab.platform.limits import detect

        limits_info = detect()
        if limits_info.mode == "rlimit":
            limits_info = None  # an address-space cap does not slow anything: nothing to measure
    except Exception as e:  # no cgroups here: the unconstrained floor still runs
        out["limits_error"] = str(e)
    settings: list[tuple[str, int | None]] = [("none", None)]
    if limits_info is not None:
        settings += [(limits_info.mode, m) for m in memories]
    for mode, memory_mb in settings:
        key = "none" if memory_mb is None else f"{mode}:{memory_mb}"
        runs = [_fork_once(path, x, limits_info, memory_mb, i) for i in range(n + 1)]
        out["fork"][key] = runs[1:]  # the first fork pays for cold file pages; like the platform's warm-up
    for i in range(n + 1):
        t0 = time.monotonic()
        sess = runtimes.load(path, runtime="onnxruntime", threads=1)
        t1 = time.monotonic()
        sess.infer({"input": x})
        t2 = time.monotonic()
        if i:  # the first session in a process pays one-time set-up: not "already running"
            out["in_process"].append({"session_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3,
                                      "total_ms": (t2 - t0) * 1e3})
        del sess
    return out


def _fork_once(path: Path, x: np.ndarray, info: Any, memory_mb: int | None, i: int) -> dict[str, float]:
    from servelab import runtimes

    lim = None
    if memory_mb is not None:
        from servelab.platform.limits import InstanceLimits, ResourceLimits

        lim = InstanceLimits(f"benchfloor-{os.getpid()}-{memory_mb}-{i}", ResourceLimits.for_memory(memory_mb),
                             info)
        lim.create()
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: same steps as a fork-mode instance, minus the platform
        code = 0
        try:
            os.close(r)
            t_child = time.monotonic()
            if lim is not None:
                lim.enter()
            t_enter = time.monotonic()
            sess = runtimes.load(path, runtime="onnxruntime", threads=1)
            t_sess = time.monotonic()
            sess.infer({"input": x})
            t_inf = time.monotonic()
            os.write(w, json.dumps([t_child, t_enter, t_sess, t_inf]).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    if lim is not None:
        lim.destroy()
    if not raw:
        raise RuntimeError("the fork-floor child failed")
    t_child, t_enter, t_sess, t_inf = json.loads(raw)
    return {"fork_ms": (t_child - t0) * 1e3, "enter_ms": (t_enter - t_child) * 1e3,
            "session_ms": (t_sess - t_enter) * 1e3, "infer_ms": (t_inf - t_sess) * 1e3,
            "total_ms": (t_inf - t0) * 1e3}


def run_floor(path: Path, n: int, memories: list[int]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--floor-helper", "--model", str(path), "-n", str(n),
                           "--memories", ",".join(map(str, memories))],
                          capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        raise RuntimeError(f"floor helper failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the platform
def invoke(url: str, name: str, body: bytes) -> tuple[float, dict[str, Any]]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)  # a new connection, like a new client
    conn.connect()
    t0 = time.perf_counter()
    conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.read()
    ms = (time.perf_counter() - t0) * 1e3
    conn.close()
    if resp.status != 200 or resp.getheader("X-Amz-Function-Error"):
        raise RuntimeError(f"{name}: HTTP {resp.status} {out[:300]!r}")
    return ms, json.loads(resp.getheader("X-Servelab-Facts") or "{}")


def instance_pids(plat: S.PlatformProcess) -> list[int]:
    """Live descendants of the platform, fork server excluded (its children are the instances)."""
    assert plat.proc is not None
    seen: list[int] = []
    todo = [plat.proc.pid]
    while todo:
        pid = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            kids = []
        todo += kids
        seen += kids
    forkservers = [p for p in seen if _is_forkserver(p)]
    return [p for p in seen if p not in forkservers and S._alive(p)]


def _is_forkserver(pid: int) -> bool:
    try:
        return b"servelab.platform.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cold_starts(plat: S.PlatformProcess, ref: str, memory_mb: int, mode: str, n: int, body: bytes,
                console: Any) -> list[dict[str, Any]]:
    name = f"cold-{mode}-{memory_mb}"
    plat.deploy(name, ref, memory_mb=memory_mb, start_mode=mode, keep_alive_s=0.0, max_concurrency=1)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    i = 0
    while len(runs) < n:
        plat.wait_no_instances(name, instance_pids(plat))
        try:
            ms, facts = invoke(plat.url, name, body)
        except RuntimeError as e:
            # Another platform starting on this machine removes our instances' cgroups (see README):
            # note it, and try again a few times rather than lose the configuration.
            failures.append(str(e)[:300])
            console.log(f"[yellow]{name}: cold start failed ({len(failures)}): {str(e)[:120]}[/]")
            if len(failures) > MAX_FAILURES:
                raise
            continue
        if facts.get("start_kind") != "cold":
            raise RuntimeError(f"{name}: request {i} was not a cold start: {facts}")
        if i:  # the first is the untimed warm-up (page cache, fork server's first fork)
            runs.append({"client_ms": ms, **facts})
        i += 1
    plat.wait_no_instances(name, instance_pids(plat))
    if failures:
        runs[0]["failures_before_this_config_finished"] = failures
    med = np.median([r["client_ms"] for r in runs])
    wi = f" ({'+'.join(plat.what_ifs)}, what-if)" if plat.what_ifs else ""
    console.log(f"{plat.limits}:{memory_mb}:{mode}{wi}: {n} cold starts, median {med:.1f} ms")
    return runs


def summarize(runs: list[dict[str, Any]], floor_ms: float) -> dict[str, Any]:
    row: dict[str, Any] = {"n": len(runs)}
    for k in ("client_ms", "init_ms", *PARTS, "duration_ms", "platform_ms"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        row[k] = {"p50": S.pct(vals, 50), "p90": S.pct(vals, 90)} if vals else None
    row["ratio_to_floor_p50"] = row["client_ms"]["p50"] / floor_ms
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=16, help="timed cold starts per configuration (and floor runs)")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="limits:memory_mb:mode, comma-separated")
    ap.add_argument("--floor-helper", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memories", default="1024,1769", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_helper:
        print(json.dumps(floor_helper(Path(args.model), args.n, [int(m) for m in args.memories.split(",")])))
        return
    console = S.console()
    model = S.mobilenet_path()
    body = S.v2_body(S.mobilenet_input())
    configs = [[*c.split(":"), ""][:4] for c in args.configs.split(",")]
    memories = sorted({int(m) for lim, m, _, _ in configs if lim != "none"})
    doc: dict[str, Any] = {"benchmark": "cold start", "model": str(model), "n": args.n, "threads": 1,
                           "body_bytes": len(body), "machine": S.machine(), "load_before": S.load_snapshot()}
    console.log(f"load: {doc['load_before']['uptime']}")
    # The floor is measured before and after the platform runs, and pooled, so a drift in the
    # shared machine's load shows up (both halves are in the results) instead of biasing the ratio.
    floor_before = run_floor(model, args.n, memories or [1024])
    console.log("floor measured (before)")
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    for limits, flag in dict.fromkeys((lim, flag) for lim, _, _, flag in configs):
        with S.PlatformProcess(tmp / f"home-{limits}-{flag}", limits=limits,
                               what_ifs=(flag,) if flag else ()) as plat:
            ref = plat.put_model(model)
            mode_info = plat.info()["limits"]
            for lim, mem, mode, f in configs:
                if (lim, f) != (limits, flag):
                    continue
                key = ":".join(p for p in (lim, mem, mode, f) if p)
                try:
                    runs = cold_starts(plat, ref, int(mem), mode, args.n, body, console)
                except RuntimeError as e:
                    console.log(f"[red]{key} failed: {e}[/]")
                    results[key] = {"error": str(e), "limits_mode": mode_info}
                    continue
                results[key] = {"limits_mode": mode_info, "runs": runs}
    floor_after = run_floor(model, args.n, memories or [1024])
    console.log("floor measured (after)")
    floor = {"fork": {k: floor_before["fork"][k] + floor_after["fork"][k] for k in floor_before["fork"]},
             "in_process": floor_before["in_process"] + floor_after["in_process"]}
    doc["floor"] = floor
    doc["floor_halves_p50_ms"] = {
        "fork_none_before": S.pct([r["total_ms"] for r in floor_before["fork"]["none"]], 50),
        "fork_none_after": S.pct([r["total_ms"] for r in floor_after["fork"]["none"]], 50),
        "in_process_before": S.pct([r["total_ms"] for r in floor_before["in_process"]], 50),
        "in_process_after": S.pct([r["total_ms"] for r in floor_after["in_process"]], 50)}
    fork_floor_p50 = S.pct([r["total_ms"] for r in floor["fork"]["none"]], 50)
    inproc_floor_p50 = S.pct([r["total_ms"] for r in floor["in_process"]], 50)
    for res in results.values():
        if "runs" in res:
            res["summary"] = summarize(res["runs"], fork_floor_p50)
    doc["platform"] = results
    shutil.rmtree(tmp, ignore_errors=True)  # each home holds a copy of the model
    doc["load_after"] = S.load_snapshot()
    doc["fork_floor_p50_ms"] = fork_floor_p50
    doc["in_process_floor_p50_ms"] = inproc_floor_p50
    console.print(floor_table(floor))
    h = doc["floor_halves_p50_ms"]
    console.print(f"floor medians before / after the platform runs: fork {h['fork_none_before']:.1f} / "
                  f"{h['fork_none_after']:.1f} ms, in-process {h['in_process_before']:.1f} / "
                  f"{h['in_process_after']:.1f} ms (the table pools both)")
    console.print(platform_table(results, fork_floor_p50, inproc_floor_p50))
    doc["cpu_over_run"] = S.run_shares(doc)
    console.print(S.describe_load(doc))
    console.print(f"raw results: {S.write_result('cold-start', doc)}")


def _q(vals: list[float]) -> str:
    return f"{S.pct(vals, 50):.1f} / {S.pct(vals, 90):.1f}"


def _ratio(r: float) -> str:
    """The issue's target: a fork-mode cold start within TARGET_RATIO x the floor."""
    return f"[green]{r:.2f}[/]" if r <= TARGET_RATIO else f"{r:.2f}"


def floor_table(floor: dict[str, Any]) -> Table:
    t = Table(title="Floor: 1-thread session + first inference (ms, median / p90)")
    for c in ("floor", "n", "fork", "cgroup enter", "session", "inference", "total"):
        t.add_column(c, justify="left" if c == "floor" else "right", no_wrap=c == "floor")
    for key, runs in floor["fork"].items():
        label = "fork, no limits" if key == "none" else f"fork, {key.split(':')[0]} {key.split(':')[1]} MB quota"
        t.add_row(label, str(len(runs)), _q([r["fork_ms"] for r in runs]), _q([r["enter_ms"] for r in runs]),
                  _q([r["session_ms"] for r in runs]), _q([r["infer_ms"] for r in runs]),
                  _q([r["total_ms"] for r in runs]))
    runs = floor["in_process"]
    t.add_row("in-process (running)", str(len(runs)), "-", "-", _q([r["session_ms"] for r in runs]),
              _q([r["infer_ms"] for r in runs]), _q([r["total_ms"] for r in runs]))
    return t


def platform_table(results: dict[str, Any], fork_floor: float, inproc_floor: float) -> Table:
    t = Table(title=f"Platform cold start, MobileNetV2 (ms, median / p90); fork floor {fork_floor:.1f} ms, "
                    f"in-process floor {inproc_floor:.1f} ms")
    for c in ("limits:MB:mode", "n", "client e2e", "init", "process", "imports", "fetch", "load",
              "1st infer", "x fork floor", "x in-proc floor"):
        t.add_column(c, justify="left" if c == "limits:MB:mode" else "right", no_wrap=c == "limits:MB:mode")
    for key, res in results.items():
        if "error" in res:
            t.add_row(key, "0", f"[red]{res['error'][:60]}[/]")
            continue
        runs = res["runs"]

        def q(k: str, runs: list = runs) -> str:
            return _q([r[k] for r in runs if r.get(k) is not None])

        p50 = S.pct([r["client_ms"] for r in runs], 50)
        t.add_row(key, str(len(runs)), q("client_ms"), q("init_ms"), q("init_process_ms"), q("init_import_ms"),
                  q("init_fetch_ms"), q("init_load_ms"), q("inference_ms"), _ratio(p50 / fork_floor),
                  _ratio(p50 / inproc_floor))
    return t


if __name__ == "__main__":
    main()
