"""The platform's services sharing one host memory budget (servelab.core.host), on the fake backend:
eviction follows the policy, starts that cannot fit wait, and no request fails because of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.compute as pc

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
