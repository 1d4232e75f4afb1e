"""Capacity search: against pure functions with a known answer, and a real loopback server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from aiohttp import web

from servelab.analysis.capacity import find_capacity
from servelab.errors import ConfigError
from servelab.loadgen import TargetSpec, run
from servelab.records import read_records, to_table


def synthetic(rate: float, latency_ms: float, *, ok_ratio: float = 1.0, n: int = 400) -> pa.Table:
    n_ok = round(n * ok_ratio)
    return to_table([{"run_id": "c", "request_id": str(i), "scheduled_s": i / rate,
                      "completed_s": i / rate + latency_ms / 1e3, "latency_ms": latency_ms,
                      "status": "ok" if i < n_ok else "timeout"} for i in range(n)])


def queue_like(cap: float):
    """p99 grows like an M/M/1 queue's as the rate nears ``cap``; above it, it explodes."""
    def run_at(rate: float) -> pa.Table:
        return synthetic(rate, 10.0 / (1 - rate / cap) if rate < cap else 1e6)
    return run_at


def test_finds_the_rate_where_p99_crosses_the_bound() -> None:
    calls: list[float] = []

    def run_at(rate: float) -> pa.Table:
        calls.append(rate)
        return queue_like(100.0)(rate)

    res = find_capacity(run_at, p99_ms=40.0, lo=5.0, rel_tol=0.02, max_runs=20)
    # 10 / (1 - r/100) <= 40  <=>  r <= 75
    assert res.converged and 75 / 1.02 <= res.rate <= 75.0
    good, bad = res.bracket
    assert good == res.rate and bad > 75 and bad / good - 1 <= 0.02
    assert calls[:5] == [5, 10, 20, 40, 80] and len(calls) == len(res.runs) <= 20
    assert all(r.passed == (r.rate <= 75) for r in res.runs)
    assert "bracketed to" in res.confidence


def test_success_ratio_floor_also_bounds_capacity() -> None:
    def run_at(rate: float) -> pa.Table:  # latency always fine; from 60 rps on, 5% time out
        return synthetic(rate, 5.0, ok_ratio=1.0 if rate < 60 else 0.95)

    res = find_capacity(run_at, p99_ms=50.0, min_sr=0.99, lo=10.0, rel_tol=0.05)
    assert 60 / 1.05 <= res.rate < 60
    failing = [r for r in res.runs if not r.passed]
    assert failing and all(r.success_ratio == pytest.approx(0.95) for r in failing)


def test_a_failing_lowest_rate_searches_downwards() -> None:
    res = find_capacity(queue_like(10.0), p99_ms=40.0, lo=100.0, rel_tol=0.05)
    assert 7.5 / 1.05 <= res.rate <= 7.5


def test_run_budget_is_respected_and_reported() -> None:
    res = find_capacity(queue_like(100.0), p99_ms=40.0, lo=1.0, rel_tol=0.001, max_runs=9)
    assert len(res.runs) == 9 and not res.converged
    assert "run budget spent" in res.confidence and res.rate is not None and res.rate <= 75


def test_nothing_passing_and_everything_passing_are_said_plainly() -> None:
    never = find_capacity(lambda r: synthetic(r, 500.0), p99_ms=50.0, lo=10.0, max_runs=4)
    assert never.rate is None and "no rate passed" in never.confidence
    always = find_capacity(lambda r: synthetic(r, 1.0), p99_ms=50.0, lo=10.0, hi=100.0)
    assert always.rate == 100.0 and always.converged and "at least that" in always.confidence


def test_short_runs_and_a_failed_repeat_lower_the_confidence() -> None:
    seen: dict[float, int] = {}

    def flaky(rate: float) -> pa.Table:
        seen[rate] = seen.get(rate, 0) + 1
        repeat = seen[rate] > 1
        return synthetic(rate, 200.0 if repeat else 10.0 / (1 - min(rate, 99) / 100), n=50)

    res = find_capacity(flaky, p99_ms=50.0, lo=10.0, rel_tol=0.1, confirm=True)
    assert "as few as 50 requests" in res.confidence
    assert "did not pass again" in res.confidence


def test_bad_settings_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="lo <= hi"):
        find_capacity(queue_like(1), p99_ms=1, lo=10, hi=5)
    with pytest.raises(ConfigError, match="growth"):
        find_capacity(queue_like(1), p99_ms=1, growth=1.0)


# ----- a real server with a known capacity ------------------------------------------------------


SERVICE_S = 0.010  # one request at a time, 10 ms each: at most ~100 requests per second


@pytest.fixture(scope="module")
def serial_server() -> Iterator[str]:
    ready = threading.Event()
    box: dict = {}

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        async with box["lock"]:
            await asyncio.sleep(SERVICE_S)  # the server's fixed service time
        return web.Response(text="ok")

    async def main() -> None:
        box["lock"], box["stop"] = asyncio.Lock(), asyncio.Event()
        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["url"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(5)


def test_capacity_search_brackets_a_serial_servers_known_capacity(serial_server: str, tmp_path: Path) -> None:
    spec = TargetSpec("http", url=serial_server)
    trial = iter(range(100))

    def run_at(rate: float) -> pa.Table:
        k = next(trial)
        times = np.cumsum(np.random.default_rng(k).exponential(1 / rate, int(rate * 1.5)))
        out = tmp_path / f"t{k}"
        run(spec, times, [b"{}"], out_dir=out, run_id=f"t{k}", timeout_s=5.0)
        return read_records(out / "records")

    res = find_capacity(run_at, p99_ms=100.0, min_sr=0.99, lo=25.0, rel_tol=0.1, max_runs=8)
    _, bad = res.bracket
    assert res.rate is not None and 45 <= res.rate <= 1 / SERVICE_S
    assert bad is not None and bad > res.rate
