"""What function isolation costs: cold starts and warm requests with and without it.

Two platforms side by side (``servelab platform up`` and ``servelab platform up --no-isolation``,
both as root, limits as the machine gives them), MobileNetV2 on onnxruntime, fork mode, 1024 MB,
one intra-op thread. Cold starts: keep-alive 0, one request after the previous instance has
exited, alternating between the two platforms so drift in the machine's load hits both alike.
Warm: keep-alive 600 s, blocks of requests alternating between the two. Medians, and the
isolated/plain ratio. Isolation work happens once per instance (a mount namespace, tmpfs
mounts, a uid change), so the warm path should not move; the cold start pays it.

    .venv/bin/python benchmarks/bench_isolation.py [-n 12] [--warm 200]

Needs root (isolation needs it); writes ``benchmarks/results/isolation-<time>.json``. Times in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _servers as S


def _invoke(url: str, name: str, body: bytes) -> tuple[float, dict]:
    t0 = time.perf_counter()
    status, headers, out = S._http("POST", f"{url}/2015-03-31/functions/{name}/invocations", body)
    ms = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {out[:200]!r}")
    return ms, json.loads(headers.get("X-Servelab-Facts", "{}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=12, help="cold starts per platform")
    ap.add_argument("--warm", type=int, default=200, help="warm requests per platform")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("isolation needs root: run this benchmark as root")
    model = S.mobilenet_path()
    body = S.v2_body(S.mobilenet_input())
    before = S.load_snapshot()
    work = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    cold: dict[str, list[float]] = {"isolated": [], "plain": []}
    init: dict[str, list[float]] = {"isolated": [], "plain": []}
    warm: dict[str, list[float]] = {"isolated": [], "plain": []}
    with S.PlatformProcess(work / "iso") as iso, \
            S.PlatformProcess(work / "plain", extra_args=("--no-isolation",)) as plain:
        plats = {"isolated": iso, "plain": plain}
        assert iso.info()["isolation"]["mode"] == "root" and plain.info()["isolation"]["mode"] == "off"
        for p in plats.values():
            ref = p.put_model(model)
            p.deploy("cold", ref, keep_alive_s=0.0, max_concurrency=1)
            p.deploy("warm", ref, keep_alive_s=600.0, max_concurrency=1)
            _invoke(p.url, "cold", body)  # an untimed first start: page cache and fork server warm
        for _ in range(args.n):
            for name, p in plats.items():
                pids = [i["pid"] for i in p.instances("cold")["instances"]]
                p.wait_no_instances("cold", pids)
                ms, facts = _invoke(p.url, "cold", body)
                cold[name].append(ms)
                init[name].append(float(facts.get("init_ms") or 0.0))
        for p in plats.values():
            for _ in range(20):
                _invoke(p.url, "warm", body)
        block = 20
        for _ in range(max(1, args.warm // block)):
            for name, p in plats.items():
                warm[name] += [_invoke(p.url, "warm", body)[0] for _ in range(block)]
    after = S.load_snapshot()
    med = {k: {"cold_ms": statistics.median(cold[k]), "init_ms": statistics.median(init[k]),
               "warm_ms": statistics.median(warm[k])} for k in cold}
    con = S.console()
    from rich.table import Table

    t = Table(title="isolation: MobileNetV2, fork mode, 1024 MB (medians, ms)")
    for col in ("", "cold start (client)", "init (platform)", "warm request (client)"):
        t.add_column(col, justify="right")
    for k in ("plain", "isolated"):
        t.add_row(k, f"{med[k]['cold_ms']:.1f}", f"{med[k]['init_ms']:.1f}", f"{med[k]['warm_ms']:.2f}")
    t.add_row("isolated − plain", f"{med['isolated']['cold_ms'] - med['plain']['cold_ms']:+.1f}",
              f"{med['isolated']['init_ms'] - med['plain']['init_ms']:+.1f}",
              f"{med['isolated']['warm_ms'] - med['plain']['warm_ms']:+.2f}")
    con.print(t)
    doc = {"machine": S.machine(), "load_before": before, "load_after": after,
           "medians": med, "cold_ms": cold, "init_ms": init, "warm_ms": warm}
    con.print(S.describe_load(doc))
    dest = S.write_result("isolation", doc)
    con.print(f"wrote {dest}")


if __name__ == "__main__":
    main()
