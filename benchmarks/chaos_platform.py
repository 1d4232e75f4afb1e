"""Chaos run: steady load on a real platform while faults are injected; every failure explained.

``servelab platform up`` runs as a child process. A handler function (256 MB, 2 s timeout,
4 instances at most, 2 of them provisioned so the load starts warm) takes a steady open-loop
load of synchronous requests (``--rps``, 100 ms of work each) and one ``Event`` invocation per
second, each of which writes its id to a file when it runs. On a fixed schedule the script injects, by pid:

- ``kill -9`` of a *busy* instance (twice), and ``SIGSTOP`` of one (a hang: its request times out);
- an out-of-memory request (touches 512 MB in a 256 MB function);
- a request that runs past the 2 s timeout;
- 5x what the function can serve (200 req/s for 8% of the run): 429s above its 4 instances,
  never a queue without bound;
- ``kill -9`` of the platform, then a restart on the same home and port;
- a graceful restart (SIGINT, then start again).

Each synchronous request ends as ok or as a failure that must be explained by a fault:
``Runtime.ExitError`` on the killed instance, ``Runtime.OutOfMemory`` / ``Sandbox.Timedout`` for
the fault requests themselves, connection errors while the platform was down, 429s in the few
seconds after a fault took capacity away or during the overload. Anything else is *unexplained*. Afterwards: every
request that got an answer must have a record on disk (except those answered in the last second
before the platform's ``kill -9``, which the records' 1 s flush interval may lose, counted
apart); every ``Event`` that got a 202 must have run at least once; the platform's RSS is
sampled every second.

Not injected (the dead-instance work of issue 15 is elsewhere): kill -9 or SIGSTOP of an *idle*
instance.

    PYTHONPATH=src .venv/bin/python benchmarks/chaos_platform.py           # ~80 s
    PYTHONPATH=src .venv/bin/python benchmarks/chaos_platform.py --rps 4 --duration-s 40

Prints a table and writes the raw outcome of every request to
``benchmarks/results/chaos-<time>.json``. Times in seconds since the run started.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S

HANDLER = '''
import time

def handler(event, context):
    time.sleep(event.get("sleep_s", 0))
    if event.get("hog_mb"):
        held = [b"x" * (16 << 20) for _ in range(event["hog_mb"] // 16)]
        return {"held_mb": 16 * len(held)}
    if event.get("out"):
        with open(event["out"], "a") as f:
            f.write(event["id"] + "\\n")
    return {"ok": event.get("id")}
'''
FUNCTION = "work"
EXPLAIN_WINDOW_S = 5.0  # how long after a fault a 429 (capacity lost) counts as caused by it
MAX_INSTANCES = 4
WORK_S = 0.1  # each synchronous request's work
OVERLOAD_RPS = 5 * MAX_INSTANCES / WORK_S  # five times what the function can serve: 200 req/s


@dataclass
class Outcome:
    id: str
    kind: str  # load / oom / timeout / event
    sent_s: float
    done_s: float = 0.0
    http_status: int | None = None
    error_type: str | None = None  # errorType of a function error, or the client exception
    request_id: str | None = None
    instance_id: str | None = None
    explained_by: str | None = None


@dataclass
class Fault:
    name: str
    at_s: float
    until_s: float | None = None  # for platform downtime: when it answered again
    detail: dict[str, Any] = field(default_factory=dict)


class Platform:
    """``servelab platform up`` by pid, on a fixed home and port so that it can be restarted."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        self.home, self.port, self.log = home, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.proc = subprocess.Popen([sys.executable, "-m", "servelab.cli", "platform", "up", "--home", str(self.home),
                                      "--port", str(self.port), "--event-retry-delay-s", "1",
                                      # the Event handler proves it ran by writing a file here; as
                                      # root, isolation would give it a private /tmp instead
                                      "--no-isolation"],
                                     stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"platform exited {self.proc.returncode}: see {self.log}")
            try:
                urllib.request.urlopen(f"{self.url}/servelab/v1/info", timeout=2).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"platform did not start within {timeout_s} s: see {self.log}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def rss_mb(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def call(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None,
             timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def _zip(files: dict[str, str]) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return base64.b64encode(buf.getvalue()).decode()


def send(p: Platform, o: Outcome, body: dict[str, Any], t0: float, *, event: bool = False) -> None:
    headers = {"X-Amz-Invocation-Type": "Event"} if event else {}
    try:
        status, headers_out, out = p.call("POST", f"/2015-03-31/functions/{FUNCTION}/invocations", body, headers)
        o.http_status = status
        o.request_id = headers_out.get("x-amzn-RequestId")
        o.instance_id = json.loads(headers_out.get("X-Servelab-Facts") or "{}").get("instance_id")
        if headers_out.get("X-Amz-Function-Error"):
            o.error_type = json.loads(out).get("errorType", "Unhandled")
        elif status >= 400:
            o.error_type = headers_out.get("x-amzn-ErrorType", f"HTTP {status}")
    except OSError as e:  # refused, reset, timed out: the platform was down or went down
        o.error_type = f"client:{type(e).__name__}"
    o.done_s = time.monotonic() - t0


def explain(o: Outcome, faults: list[Fault]) -> str | None:
    ok = o.http_status in (200, 202) and o.error_type is None
    if ok:
        return None
    for f in faults:  # the overload first: a 429 inside it is its doing, whatever happened before
        if o.http_status == 429 and f.name == "overload 5x" and f.until_s is not None and (
                f.at_s <= o.sent_s <= f.until_s + 1.0):
            return "over capacity: overload 5x"
    for f in faults:
        if f.name == "kill -9 busy instance" and o.error_type == "Runtime.ExitError" and (
                o.instance_id == f.detail.get("instance_id") or f.at_s - 0.5 <= o.done_s <= f.at_s + 2.0):
            return f.name
        if f.name in ("platform kill -9", "platform graceful restart") and f.until_s is not None and (
                o.error_type and (o.error_type.startswith("client:") or o.http_status == 503)) and (
                o.sent_s <= f.until_s + 0.5 and o.done_s >= f.at_s - 0.5):
            return f.name
        if f.name == "SIGSTOP busy instance" and o.error_type == "Sandbox.Timedout" and (
                o.instance_id == f.detail.get("instance_id") or f.at_s - 0.5 <= o.done_s <= f.at_s + 3.0):
            return f.name
        if f.name == "out of memory" and o.kind == "oom" and o.error_type == "Runtime.OutOfMemory":
            return f.name
        if f.name == "timeout" and o.kind == "timeout" and o.error_type == "Sandbox.Timedout":
            return f.name
        if o.http_status == 429 and "no busy instance" not in f.name and f.name != "overload 5x" and (
                f.at_s <= o.sent_s <= (f.until_s or f.at_s) + EXPLAIN_WINDOW_S):
            return f"capacity lost to: {f.name}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rps", type=float, default=8.0, help="synchronous requests per second")
    ap.add_argument("--duration-s", type=float, default=70.0)
    args = ap.parse_args()
    d = args.duration_s
    schedule = [(0.08 * d, "kill -9 busy instance"), (0.16 * d, "out of memory"), (0.24 * d, "timeout"),
                (0.32 * d, "SIGSTOP busy instance"), (0.40 * d, "kill -9 busy instance"),
                (0.48 * d, "overload 5x"), (0.64 * d, "platform kill -9"), (0.82 * d, "platform graceful restart")]
    overload_s = 0.08 * d  # how long the 5x overload lasts

    work = Path(tempfile.mkdtemp(prefix="servelab-chaos-"))
    p = Platform(work / "home", S.free_port(), work / "platform.log")
    events_file = work / "events.txt"
    load_before = S.load_snapshot()
    p.start()
    status, _, out = p.call("POST", "/2015-03-31/functions", {
        "FunctionName": FUNCTION, "Role": "r", "Handler": "app.handler", "MemorySize": 256, "Timeout": 2,
        "Code": {"ZipFile": _zip({"app.py": HANDLER})}})
    assert status == 201, out
    p.call("PUT", f"/2017-10-31/functions/{FUNCTION}/concurrency", {"ReservedConcurrentExecutions": MAX_INSTANCES})
    # two instances always warm (and restored after every fault), so the load starts warm and a
    # 429 can only come from capacity a fault took away
    p.call("PUT", f"/2019-09-30/functions/{FUNCTION}/provisioned-concurrency",
           {"ProvisionedConcurrentExecutions": 2})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(
            i["state"] == "idle" for i in p.get(f"/servelab/v1/functions/{FUNCTION}/instances")["instances"]) < 2:
        time.sleep(0.1)

    outcomes: list[Outcome] = []
    faults: list[Fault] = []
    rss: list[tuple[float, float]] = []
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=128)
    t0 = time.monotonic()
    stop = threading.Event()
    burst = threading.Event()  # set while the load runs at 5x

    def sampler() -> None:
        while not stop.wait(1.0):
            mb = p.rss_mb()
            if mb is not None:
                rss.append((time.monotonic() - t0, mb))

    threading.Thread(target=sampler, daemon=True).start()

    def submit(kind: str, body: dict[str, Any], *, event: bool = False) -> None:
        o = Outcome(id=f"{kind}-{len(outcomes)}", kind=kind, sent_s=time.monotonic() - t0)
        with lock:
            outcomes.append(o)
        pool.submit(send, p, o, {**body, "id": o.id}, t0, event=event)

    def inject(name: str) -> None:
        at = time.monotonic() - t0
        if name in ("kill -9 busy instance", "SIGSTOP busy instance"):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                busy = [i for i in p.get(f"/servelab/v1/functions/{FUNCTION}/instances")["instances"]
                        if i["state"] == "busy" and i["pid"]]
                if busy:
                    os.kill(busy[0]["pid"], signal.SIGKILL if name.startswith("kill") else signal.SIGSTOP)
                    faults.append(Fault(name, time.monotonic() - t0, detail={"instance_id": busy[0]["id"],
                                                                             "pid": busy[0]["pid"]}))
                    return
                time.sleep(0.02)
            faults.append(Fault(name + " (no busy instance found)", at))
        elif name == "out of memory":
            faults.append(Fault(name, at))
            submit("oom", {"hog_mb": 512})
        elif name == "timeout":
            faults.append(Fault(name, at))
            submit("timeout", {"sleep_s": 5})
        elif name == "overload 5x":
            f = Fault(name, at, at + overload_s)
            faults.append(f)
            burst.set()
            time.sleep(overload_s)
            burst.clear()
            f.until_s = time.monotonic() - t0
        else:
            f = Fault(name, at)
            faults.append(f)
            p.signal(signal.SIGKILL if name == "platform kill -9" else signal.SIGINT)
            p.start()
            f.until_s = time.monotonic() - t0

    def injector() -> None:  # its own thread: the load keeps its schedule while a fault is injected
        for at_s, name in schedule:
            time.sleep(max(0.0, at_s - (time.monotonic() - t0)))
            inject(name)

    chaos = threading.Thread(target=injector, daemon=True)
    chaos.start()
    next_load, next_event = 0.0, 0.0
    while (now := time.monotonic() - t0) < d:
        if now >= next_load:
            submit("load", {"sleep_s": WORK_S})
            next_load += 1.0 / (OVERLOAD_RPS if burst.is_set() else args.rps)
        if now >= next_event:
            submit("event", {"out": str(events_file)}, event=True)
            next_event += 1.0
        time.sleep(max(0.0, min(next_load, next_event) - (time.monotonic() - t0)))
    chaos.join()
    pool.shutdown(wait=True)
    accepted = {o.id for o in outcomes if o.kind == "event" and o.http_status == 202}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not accepted <= set(events_file.read_text().split()
                                                                if events_file.exists() else []):
        time.sleep(0.2)
    ran = events_file.read_text().split() if events_file.exists() else []
    p.signal(signal.SIGINT)
    stop.set()
    load_after = S.load_snapshot()

    from servelab.records import read_records

    recorded = set(read_records(p.home / "records").column("request_id").to_pylist())
    kill_at = next((f.at_s for f in faults if f.name == "platform kill -9"), None)
    answered = [o for o in outcomes if o.kind != "event" and o.request_id and o.http_status == 200]
    missing = [o for o in answered if o.request_id not in recorded]
    missing_in_last_s = [o for o in missing if kill_at is not None and kill_at - 1.5 <= o.done_s <= kill_at]
    for o in outcomes:
        o.explained_by = explain(o, faults)
    sync = [o for o in outcomes if o.kind != "event"]
    failed = [o for o in sync if not (o.http_status == 200 and o.error_type is None)]
    unexplained = [o for o in failed if o.explained_by is None]
    events_not_accepted = [o for o in outcomes if o.kind == "event" and o.http_status != 202]

    c = S.console()
    from rich.table import Table

    t = Table(title=f"chaos run: {d:g} s, {args.rps:g} req/s + 1 event/s, 256 MB function, 4 instances at most")
    for col in ("what", "count", "detail"):
        t.add_column(col)
    t.add_row("synchronous requests sent", str(len(sync)), "")
    t.add_row("succeeded", str(len(sync) - len(failed)), "")
    by_cause: dict[str, int] = {}
    for o in failed:
        key = f"{o.error_type} ← {o.explained_by or 'UNEXPLAINED'}"
        by_cause[key] = by_cause.get(key, 0) + 1
    for key, n in sorted(by_cause.items()):
        t.add_row("failed", str(n), key)
    t.add_row("unexplained failures", str(len(unexplained)), "")
    t.add_row("events accepted (202)", str(len(accepted)),
              f"{len(events_not_accepted)} refused while the platform was down")
    t.add_row("accepted events that ran", str(len(accepted & set(ran))),
              f"{len(ran) - len(set(ran))} ran twice (at-least-once)")
    t.add_row("answered requests without a record", str(len(missing)),
              f"{len(missing_in_last_s)} of them answered in the last 1.5 s before the platform's kill -9")
    t.add_row("platform RSS, MB (max / last)", f"{max(m for _, m in rss):.0f} / {rss[-1][1]:.0f}" if rss else "-",
              f"{len(rss)} samples, 1/s")
    c.print(t)
    for f in faults:
        c.print(f"  fault at {f.at_s:5.1f} s: {f.name}" + (f" (answering again at {f.until_s:.1f} s)"
                                                          if f.until_s else "") + (f" {f.detail}" if f.detail else ""))
    doc = {"args": vars(args), "machine": S.machine(), "load_before": load_before, "load_after": load_after,
           "faults": [asdict(f) for f in faults], "outcomes": [asdict(o) for o in outcomes],
           "rss_mb": rss, "events_ran": ran, "records_missing": [o.request_id for o in missing],
           "records_missing_in_last_s_before_kill": [o.request_id for o in missing_in_last_s],
           "unexplained": [asdict(o) for o in unexplained]}
    c.print(S.describe_load(doc))
    S.RESULTS.mkdir(exist_ok=True)
    path = S.RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    c.print(f"raw results: {path}   platform log: {p.log}")


if __name__ == "__main__":
    main()
