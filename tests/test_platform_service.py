"""The platform's function service — the core's asyncio driver — on the in-memory fake backend:
no processes, no sleeps; inits and batches finish when the test says. And the acceptance check
of the accounting: from zero, 50 requests queued on 4 new instances count 4 cold starts and bill
4 inits, on the fake backend, on the real platform, and in the simulator, alike."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from servelab.platform.backends.fake import FakeBackend
from servelab.platform.functions import make_config
from servelab.platform.meter import Meter
from servelab.platform.service import FunctionService
from servelab.records import read_instances, read_records
from servelab.sim import Profile, ServerlessConfig, simulate


def service(tmp_path: Path, backend: FakeBackend, **cfg) -> FunctionService:
    config = make_config({"name": "f", "handler": "app.h", "memory_mb": 1024, **cfg})
    return FunctionService(config, backend=backend, meter=Meter(tmp_path / "records"), home=tmp_path,
                           store_url=None)


async def settle() -> None:
    for _ in range(20):  # let the service's tasks run (no wall-clock waiting)
        await asyncio.sleep(0)


def test_fifty_queued_requests_on_four_new_instances_are_four_cold_starts(tmp_path) -> None:
    async def main():
        backend = FakeBackend(auto_ready=False)
        svc = service(tmp_path, backend, max_concurrency=4, admission="queue", max_queue=100)
        calls = [asyncio.create_task(svc.invoke(b"{}", f"r{i}")) for i in range(50)]
        await settle()
        assert len(backend.instances) == 4  # the limit
        backend.release()
        out = await asyncio.gather(*calls)
        await svc.close()
        svc.meter.close()
        return out

    out = asyncio.run(main())
    recs = [o.record for o in out]
    assert all(o.status == "ok" for o in out)
    assert sum(r.cold for r in recs) == 4
    assert [r.start_kind for r in recs].count("warm") == 46
    assert sum(r.init_ms is not None for r in recs) == 4  # init billed once per environment
    # the warm ones that waited behind a cold start report that wait as queueing
    assert all(r.queue_ms is not None and r.queue_ms >= 0 for r in recs)
    events = read_instances(tmp_path / "instances")
    assert pc.sum(pc.equal(events["event"], "started")).as_py() == 4


def test_the_simulator_counts_the_same_cold_starts_for_the_same_arrivals() -> None:
    prof = Profile.model_validate({"model": "m", "cold_start": {"init_ms": 100.0},
                                   "inference": [{"memory_mb": 1024, "batches": {1: 10.0}}]})
    cfg = ServerlessConfig(memory_mb=1024, max_concurrency=4, admission="queue", max_queue=100, scale_rate="none")
    r = simulate(cfg, prof, np.zeros(50))
    t = r.table
    assert pc.sum(pc.cast(t["cold"], "int64")).as_py() == 4
    assert t["init_ms"].null_count == 46
    assert r.outcomes.instances == 4


def test_an_idle_instance_that_died_is_replaced_and_the_request_succeeds(tmp_path) -> None:
    async def main():
        backend = FakeBackend()
        svc = service(tmp_path, backend)
        first = await svc.invoke(b"{}", "a")
        backend.instances[0].crash()  # kill -9 while idle
        second = await svc.invoke(b"{}", "b")  # found dead at dispatch: requeued on a new instance
        svc.reconcile()
        third = await svc.invoke(b"{}", "c")
        await svc.close()
        svc.meter.close()
        return first, second, third, backend

    first, second, third, backend = asyncio.run(main())
    assert [x.status for x in (first, second, third)] == ["ok", "ok", "ok"]
    assert second.record.instance_id == backend.instances[1].id
    assert second.record.start_kind == "cold"  # a new environment, started on demand
    assert third.record.start_kind == "warm"
    events = read_instances(tmp_path / "instances")
    died = events.filter(pc.equal(events["event"], "died"))
    assert died["instance_id"].to_pylist() == [backend.instances[0].id]


def test_reconcile_finds_a_dead_idle_instance_before_any_request(tmp_path) -> None:
    async def main():
        backend = FakeBackend()
        svc = service(tmp_path, backend)
        await svc.invoke(b"{}", "a")
        backend.instances[0].crash()
        svc.reconcile()
        n = len(svc.instances)
        await svc.close()
        svc.meter.close()
        return n

    assert asyncio.run(main()) == 0


def test_an_instance_killed_mid_request_fails_that_request_with_the_crash_and_the_next_succeeds(tmp_path) -> None:
    async def main():
        backend = FakeBackend(auto_finish=False)
        svc = service(tmp_path, backend)
        call = asyncio.create_task(svc.invoke(b"{}", "a"))
        await settle()
        backend.instances[0].crash()
        failed = await call
        backend.auto_finish = True
        ok = await svc.invoke(b"{}", "b")
        await svc.close()
        svc.meter.close()
        return failed, ok

    failed, ok = asyncio.run(main())
    assert failed.status == "error" and failed.function_error
    assert json.loads(failed.payload)["errorType"] == "Runtime.ExitError"
    assert "SIGKILL" in json.loads(failed.payload)["errorMessage"]
    assert ok.status == "ok" and ok.record.start_kind == "cold"


def test_init_failure_fails_the_waiting_requests_with_an_init_error(tmp_path) -> None:
    async def main():
        svc = service(tmp_path, FakeBackend(fail_init=True), max_concurrency=1, admission="queue")
        out = await asyncio.gather(*(svc.invoke(b"{}", f"r{i}") for i in range(3)))
        await svc.close()
        svc.meter.close()
        return out

    out = asyncio.run(main())
    assert [o.error_type for o in out] == ["Runtime.InitError"] * 3


def test_provisioned_environments_serve_prewarmed_first_requests_without_billing_init(tmp_path) -> None:
    async def main():
        svc = service(tmp_path, FakeBackend(), provisioned=1)
        svc.reconcile()  # boots the provisioned environment
        await settle()
        a = await svc.invoke(b"{}", "a")
        b = await svc.invoke(b"{}", "b")
        await svc.close()
        svc.meter.close()
        return a, b

    a, b = asyncio.run(main())
    assert (a.record.start_kind, b.record.start_kind) == ("prewarmed", "warm")
    assert a.record.init_ms is None and a.record.billed_ms == 10.0


# ---------------------------------------------------------------------------- the real platform


@pytest.mark.timeout(180)
def test_real_platform_fifty_queued_requests_four_cold_starts(tmp_path) -> None:
    from platform_harness import RunningPlatform, zip_code

    code = "import time\ndef h(event, context):\n    time.sleep(0.02)\n    return {'ok': True}\n"
    with RunningPlatform(tmp_path / "home") as p:
        p.lambda_client().create_function(
            FunctionName="f", Role="r", Handler="app.h", MemorySize=256, Timeout=30,
            Code={"ZipFile": zip_code({"app.py": code})},
            Environment={"Variables": {"SERVELAB_MAX_CONCURRENCY": "4", "SERVELAB_ADMISSION": "queue",
                                       "SERVELAB_MAX_QUEUE": "100", "SERVELAB_MAX_QUEUE_WAIT_S": "60"}})

        def call(i: int) -> dict:
            req = urllib.request.Request(f"{p.url}/2015-03-31/functions/f/invocations", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.headers["X-Servelab-Facts"])

        with cf.ThreadPoolExecutor(50) as pool:
            facts = list(pool.map(call, range(50)))
        p.platform.meter.writer.flush()
        p.platform.meter.instance_writer.flush()
        recs = read_records(p.home / "records")
        events = read_instances(p.home / "instances")
    starts = events.filter(pc.equal(events["event"], "started")).num_rows
    cold = sum(1 for f in facts if f.get("cold"))
    assert starts <= 4
    # every environment started on demand that served a request has exactly one cold request
    assert cold == len({f["instance_id"] for f in facts})
    assert pc.sum(pc.cast(recs["cold"], "int64")).as_py() == cold
    assert recs.filter(pc.invert(pc.is_null(recs["init_ms"]))).num_rows == cold


def test_a_fixed_pool_never_starts_more_than_its_size_and_requests_queue(tmp_path) -> None:
    """The server pool of the bench target: the same core model as the simulator's ServerConfig."""
    async def main():
        backend = FakeBackend(auto_finish=False)
        svc = service(tmp_path, backend, provisioned=2, max_concurrency=2, admission="queue",
                      scaling={"kind": "fixed"})
        svc.reconcile()
        await settle()
        calls = [asyncio.create_task(svc.invoke(b"{}", f"r{i}")) for i in range(5)]
        await settle()
        waiting = svc.waiting
        backend.auto_finish = True
        for _ in range(5):
            backend.release()
            await settle()
        out = await asyncio.gather(*calls)
        await svc.close()
        svc.meter.close()
        return out, waiting, len(backend.instances)

    out, waiting, started = asyncio.run(main())
    assert started == 2 and waiting == 3
    assert [o.record.start_kind for o in out].count("prewarmed") == 2
    assert all(o.status == "ok" for o in out)


@pytest.mark.timeout(180)
def test_real_platform_idle_instance_killed_then_invoked_succeeds_on_a_new_instance(tmp_path) -> None:
    import os
    import signal

    from platform_harness import RunningPlatform, zip_code

    code = "def h(event, context):\n    return {'ok': True}\n"
    with RunningPlatform(tmp_path / "home") as p:
        p.lambda_client().create_function(FunctionName="f", Role="r", Handler="app.h", MemorySize=256, Timeout=30,
                                          Code={"ZipFile": zip_code({"app.py": code})})

        def call() -> tuple[int, dict]:
            req = urllib.request.Request(f"{p.url}/2015-03-31/functions/f/invocations", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.headers["X-Servelab-Facts"])

        status, first = call()
        with urllib.request.urlopen(f"{p.url}/servelab/v1/functions/f/instances", timeout=10) as r:
            (inst,) = json.loads(r.read())["instances"]
        os.kill(inst["pid"], signal.SIGKILL)  # kill -9 while idle
        from servelab.platform.backends.process import _running

        deadline = time.monotonic() + 5  # "then invoke": once the kernel has ended it (a zombie or gone)
        while _running(inst["pid"]) and time.monotonic() < deadline:
            time.sleep(0.001)
        results = [call() for _ in range(11)]
    assert status == 200 and first["start_kind"] == "cold"
    assert all(s == 200 for s, _ in results)
    assert results[0][1]["instance_id"] != first["instance_id"]
    assert results[0][1]["start_kind"] == "cold" and all(f["start_kind"] == "warm" for _, f in results[1:])


def test_scale_from_zero_holds_up_to_max_held_requests_then_429_with_retry_after(tmp_path) -> None:
    async def main():
        backend = FakeBackend(auto_ready=False)
        svc = service(tmp_path, backend, max_concurrency=1, admission="queue", max_queue=100, max_held_requests=3)
        calls = [asyncio.create_task(svc.invoke(b"{}", f"r{i}")) for i in range(5)]
        await settle()
        assert len(backend.instances) == 1  # one instance starting, three requests held for it
        backend.release()
        out = await asyncio.gather(*calls)
        await svc.close()
        svc.meter.close()
        return out

    out = asyncio.run(main())
    assert [o.status for o in out] == ["ok", "ok", "ok", "throttled", "throttled"]
    refused = out[3]
    assert refused.http_status == 429 and refused.extra_headers["Retry-After"] == "1"
    assert "held while instances start" in refused.record.error
    # the held requests' hold time: queue_ms (waiting for the instance) + init_ms (the first)
    held = [o.record for o in out[:3]]
    assert held[0].cold and held[0].init_ms is not None
    assert all(r.queue_ms is not None and r.queue_ms >= 0 for r in held)
