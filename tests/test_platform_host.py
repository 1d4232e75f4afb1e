"""The platform's services sharing one host memory budget (servelab.core.host), on the fake backend:
eviction follows the policy, starts that cannot fit wait, and no request fails because of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.compute as pc
import pytest

from servelab.core.host import HostCore
from servelab.core.policies import GreedyDualKeepAlive  # noqa: F401  (the faascache kind is registered)
from servelab.platform.backends.fake import FakeBackend
from servelab.platform.functions import make_config
from servelab.platform.meter import Meter
from servelab.platform.service import FunctionService
from servelab.records import read_instances


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def services(tmp_path: Path, backend: FakeBackend, host: HostCore, names: list[str]) -> dict[str, FunctionService]:
    meter = Meter(tmp_path / "records")
    out: dict[str, FunctionService] = {}

    def to_peer(name: str, acts: list) -> None:
        out[name]._carry_out(acts)

    for n in names:
        cfg = make_config({"name": n, "handler": "app.h", "memory_mb": 512, "max_concurrency": 2})
        out[n] = FunctionService(cfg, backend=backend, meter=meter, home=tmp_path, store_url=None, host=host,
                                 peers=to_peer)
    return out


def test_lru_eviction_and_held_starts_on_the_platform(tmp_path) -> None:
    async def main():
        backend = FakeBackend()
        host = HostCore(1024, order="lru")  # two 512 MB instances
        svcs = services(tmp_path, backend, host, ["a", "b", "c"])
        assert (await svcs["a"].invoke(b"{}", "a1")).status == "ok"
        assert (await svcs["b"].invoke(b"{}", "b1")).status == "ok"  # a and b idle, memory full
        assert host.used_mb == 1024
        out_c = await svcs["c"].invoke(b"{}", "c1")  # evicts a (the longest idle)
        assert out_c.status == "ok"
        assert [k for k, _ in host.started] and ("a", 0) not in host.started and ("b", 0) in host.started
        # all of a's memory is gone; now b and c are idle: a again evicts b (longest idle)
        assert (await svcs["a"].invoke(b"{}", "a2")).status == "ok"
        assert ("b", 0) not in host.started
        for s in svcs.values():
            await s.close()
        svcs["a"].meter.close()
        return host

    host = asyncio.run(main())
    assert host.counters.evictions == 2 and host.used_mb == 0
    events = read_instances(tmp_path / "instances")
    reasons = events.filter(pc.equal(events["event"], "reclaimed"))["reason"].to_pylist()
    assert reasons.count("evicted") == 2


def test_a_start_that_cannot_fit_waits_and_no_request_fails(tmp_path) -> None:
    async def main():
        backend = FakeBackend(auto_ready=False)
        host = HostCore(512, order="lru")  # one instance at a time
        svcs = services(tmp_path, backend, host, ["a", "b"])
        ta = asyncio.create_task(svcs["a"].invoke(b"{}", "a1"))
        await settle()
        tb = asyncio.create_task(svcs["b"].invoke(b"{}", "b1"))
        await settle()
        assert len(backend.instances) == 1 and len(host.held) == 1  # b's start is held
        backend.release()
        out_a = await ta
        await settle()
        backend.release()  # a's instance idles, is evicted, b's held start goes out
        out_b = await tb
        for s in svcs.values():
            await s.close()
        svcs["a"].meter.close()
        return out_a, out_b, host

    out_a, out_b, host = asyncio.run(main())
    assert out_a.status == "ok" and out_b.status == "ok"
    assert host.counters.held_starts == 1 and host.counters.evictions == 1


@pytest.mark.timeout(240)
def test_real_platform_host_budget_evicts_lru_and_fails_no_request(tmp_path) -> None:
    """Four real functions (256 MB each) on a 512 MB host: each new function evicts the longest-idle
    instance (real processes stopped), every request succeeds, and the evictions are lifecycle records."""
    import json
    import urllib.request

    from platform_harness import RunningPlatform, zip_code

    code = "def h(event, context):\n    return {'ok': True}\n"
    names = ["fa", "fb", "fc", "fd"]
    with RunningPlatform(tmp_path / "home", host_memory_mb=512) as p:
        client = p.lambda_client()
        for n in names:
            client.create_function(FunctionName=n, Role="r", Handler="app.h", MemorySize=256, Timeout=30,
                                   Code={"ZipFile": zip_code({"app.py": code})})

        def call(n: str) -> tuple[int, dict]:
            req = urllib.request.Request(f"{p.url}/2015-03-31/functions/{n}/invocations", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.headers["X-Servelab-Facts"])

        results = [(n, *call(n)) for n in [*names, "fa", "fd"]]
        host = p.platform.host
        assert host is not None
        started = sorted(host.started)
        evictions = host.counters.evictions
    assert all(status == 200 for _, status, _ in results)
    kinds = [f["start_kind"] for _, _, f in results]
    # fa, fb cold (fit); fc evicts fa, fd evicts fb; fa again cold (evicts fc); fd warm
    assert kinds == ["cold", "cold", "cold", "cold", "cold", "warm"]
    assert evictions == 3 and [k[0] for k in started] == ["fa", "fd"]
    events = read_instances(tmp_path / "home" / "instances")
    reclaimed = events.filter(pc.equal(events["event"], "reclaimed"))
    assert reclaimed["reason"].to_pylist().count("evicted") == 3
