"""The report over real load-generator runs: servelab.loadgen against a small Lambda-API server
on loopback, laid out the way the executor lays out an experiment."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from servelab.analysis.report import write_report
from servelab.loadgen import TargetSpec, run
from servelab.records import read_records


class _Function:
    """Answers the Lambda Invoke API with the platform's facts header: the first request on each
    of two instances is a cold start with its init parts; the rest are warm."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.count = 0

    async def invoke(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        instance = f"i-{self.count % 2}"
        facts = {"instance_id": instance, "cold": False, "start_kind": "warm", "inference_ms": 1.0,
                 "duration_ms": 1.0, "memory_mb": 512, "platform_ms": 1.5, "queue_ms": 0.0}
        if instance not in self.seen:
            self.seen.add(instance)
            facts.update(cold=True, start_kind="cold", init_ms=30.0, init_process_ms=10.0,
                         init_import_ms=8.0, init_fetch_ms=2.0, init_load_ms=9.0)
        return web.json_response({"ok": True}, headers={"X-Servelab-Facts": json.dumps(facts)})


@pytest.fixture
def function() -> Iterator[tuple[str, _Function]]:
    """The server on an event loop in a thread; yields (url, function) once it listens (no sleeping)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}
    fn = _Function()

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{fn}/invocations", fn.invoke)
        state["runner"] = runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    yield f"http://127.0.0.1:{state['port']}", fn
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_report_over_real_loadgen_runs(tmp_path: Path, function: tuple[str, _Function]) -> None:
    url, fn = function
    configs = {
        "lambda-r0": {"target": "serverless", "model": "noop", "memory_mb": 512, "repetition": 0,
                      "price_entry": "aws-lambda-x86-us-east-1"},
        "lambda-r1": {"target": "serverless", "model": "noop", "memory_mb": 512, "repetition": 1,
                      "price_entry": "aws-lambda-x86-us-east-1"},
    }
    (tmp_path / "plan.json").write_text(json.dumps(
        {"name": "real", "runs": [{"run_id": k, "config": v} for k, v in configs.items()]}))
    for i, (rid, cfg) in enumerate(configs.items()):
        fn.seen.clear()  # cooled down between runs, as the executor does: each run starts cold
        out = tmp_path / "runs" / rid
        arrivals = np.sort(np.random.default_rng(i).uniform(0.0, 1.0, 60))
        result = run(TargetSpec("lambda", url=url, name="noop"), arrivals, [b"{}"], out_dir=out,
                     run_id=rid, timeout_s=10, config=cfg)
        assert result.status == "completed"
        (out / "config.json").write_text(json.dumps({**cfg, "machine": {"cpus": 2}}))
        (out / "DONE").touch()

    files = write_report(tmp_path)
    exp = files.experiment
    assert [r.run_id for r in exp.runs] == ["lambda-r0", "lambda-r1"] and len(exp.groups) == 1
    for r in exp.runs:
        table = read_records(r.path / "records")
        assert r.summary.count == table.num_rows == 60
        assert r.summary.cold_starts == 2 and r.cost is not None and r.cost.source == "records"
    parts = exp.groups[0].cold_part_means_ms()
    assert parts["init_process_ms"] == pytest.approx(10.0) and parts["init_load_ms"] == pytest.approx(9.0)
    html_text = files.html.read_text()
    assert "lambda-r0" in html_text and "lambda-r1" in html_text
    assert {"latency_cdf", "cost_vs_p95", "cold_starts", "timeline-lambda-r0"} <= set(files.figures)
