"""The open-loop load generator against a real aiohttp server on loopback.

The server runs in its own thread with its own event loop; the fixture waits on its readiness
flag. Its routes answer the way the local platform and AWS Lambda answer (facts header, REPORT
log tail, function-error header, 429), or slowly, to check the open-loop properties.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from aiohttp import web

from servelab.errors import ConfigError
from servelab.loadgen import (
    InvokeResult,
    TargetSpec,
    from_files,
    from_json,
    from_model,
    run,
    run_load,
)
from servelab.loadgen.targets import clean_facts, parse_report_line
from servelab.records import read_records
from servelab.tensors import decode_tensors

REPORT = ("START RequestId: 6b2 Version: $LATEST\nhello\nEND RequestId: 6b2\n"
          "REPORT RequestId: 6b2\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\t"
          "Max Memory Used: 50 MB\tInit Duration: 200.00 ms\t\n")
FACTS = {"start_kind": "cold", "cold": True, "instance_id": "i-7", "platform_ms": 40.5,
         "queue_ms": 30.0, "init_ms": 25.0, "init_process_ms": 5.0, "init_import_ms": 8.0,
         "init_fetch_ms": 2.0, "init_load_ms": 10.0, "inference_ms": 3.5, "duration_ms": 4.0,
         "billed_ms": 5.0, "memory_mb": 1024, "max_memory_used_mb": 90.5, "batch_size": 1,
         "not_a_field": "ignored"}


class LoopbackServer:
    """An aiohttp app served from a background thread; ``url`` once ``ready`` is set."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.seen: list[dict] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop: asyncio.Event | None = None

    async def invocations(self, request: web.Request) -> web.Response:
        body = await request.read()
        fn = request.match_info["fn"]
        self.seen.append({"fn": fn, "headers": dict(request.headers), "body": body})
        if fn == "facts":
            return web.json_response({"ok": 1}, headers={"X-Servelab-Facts": json.dumps(FACTS)})
        if fn == "report":
            return web.json_response({"ok": 1}, headers={
                "X-Amz-Log-Result": base64.b64encode(REPORT.encode()).decode()})
        if fn == "fnerror":
            return web.json_response({"errorMessage": "boom", "errorType": "ValueError"},
                                     headers={"X-Amz-Function-Error": "Unhandled"})
        if fn == "throttle":
            return web.json_response({"Type": "User", "message": "Rate exceeded"}, status=429,
                                     headers={"X-Amzn-ErrorType": "TooManyRequestsException"})
        if fn == "missing":
            return web.json_response({"Type": "User", "message": "Function not found: missing"},
                                     status=404, headers={"X-Amzn-ErrorType": "ResourceNotFoundException"})
        return web.json_response({"ok": 1})

    async def sagemaker(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"fn": "sm:" + request.match_info["ep"], "headers": dict(request.headers), "body": body})
        if request.match_info["ep"] == "bad-input":  # servelab's inference script: 200 with an error
            return web.json_response({"error": "input 'x': expected shape [1, 4]"})
        return web.json_response({"outputs": []})

    async def gcp(self, request: web.Request) -> web.Response:
        self.seen.append({"fn": "gcp", "headers": dict(request.headers), "body": await request.read()})
        if request.headers.get("Authorization", "") != "Bearer token-1":
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response({"outputs": []})

    async def slow(self, request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(float(request.query.get("ms", "100")) / 1e3)  # the server's service time
        return web.Response(text="done")

    async def infer(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != "tiny-mlp":
            return web.json_response({"error": "model 'nope' is not deployed"}, status=404)
        inputs = decode_tensors((await request.json())["inputs"])
        return web.json_response({"outputs": [{"name": k, "shape": list(v.shape)}
                                              for k, v in inputs.items()]})

    def _serve(self) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_post("/2015-03-31/functions/{fn}/invocations", self.invocations)
            app.router.add_post("/slow", self.slow)
            app.router.add_post("/endpoints/{ep}/invocations", self.sagemaker)
            app.router.add_post("/gcp", self.gcp)
            app.router.add_post("/v2/models/{model}/infer", self.infer)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self.ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        assert self.ready.wait(10), "loopback server did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer().start()
    yield s
    s.stop()


def steady(rate: float, n: int, start_s: float = 0.0) -> np.ndarray:
    return start_s + np.arange(n) / rate


def go(spec, times, out: Path, payloads=(b"{}",), **kw) -> tuple[object, pa.Table]:
    res = asyncio.run(run_load(spec, times, list(payloads), out_dir=out, run_id="t", **kw))
    return res, read_records(out / "records")


def rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: int(r["request_id"]))


# ----- open loop ---------------------------------------------------------------------------------


def test_slow_server_does_not_delay_later_sends(server: LoopbackServer, tmp_path: Path) -> None:
    times = steady(100, 60)  # a new request every 10 ms; each takes 300 ms to answer
    res, t = go(TargetSpec("http", url=f"{server.url}/slow?ms=300"), times, tmp_path)
    r = rows(t)
    assert res.status == "completed" and len(r) == 60
    assert all(x["status"] == "ok" for x in r)
    lags = np.array([x["send_lag_ms"] for x in r])
    lat = np.array([x["latency_ms"] for x in r])
    # Sends kept the schedule (a closed loop would be 300 ms late; the bound leaves room for a
    # busy shared machine's scheduling hiccups) …
    assert np.percentile(lags, 99) < 50
    assert lat.min() >= 295  # … while every answer took the server's 300 ms
    sent = np.array([x["sent_s"] for x in r])
    done = np.array([x["completed_s"] for x in r])
    assert (sent[1:] < done[:-1]).sum() >= 50  # later requests left before earlier ones came back


class StallingTarget:
    """A target whose first call blocks the event loop for 200 ms, like a stalled generator."""

    name = "stall"

    def __init__(self, session) -> None:
        self.calls = 0

    async def invoke(self, request_id: str, payload: bytes) -> InvokeResult:
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.2)
        return InvokeResult("ok")


def test_latency_counts_from_the_scheduled_time_when_the_generator_is_late(tmp_path: Path) -> None:
    times = steady(100, 10)  # 0, 10, 20 … 90 ms; all due during the stall
    res, t = go(StallingTarget, times, tmp_path)
    r = rows(t)
    late = r[5]  # due at 50 ms, could only leave after the 200 ms stall
    assert late["send_lag_ms"] > 100
    assert late["latency_ms"] >= late["send_lag_ms"]  # the target answered at once: latency is lag
    for x in r:
        assert x["latency_ms"] == pytest.approx((x["completed_s"] - x["scheduled_s"]) * 1e3)
        assert x["send_lag_ms"] == pytest.approx((x["sent_s"] - x["scheduled_s"]) * 1e3)
    assert res.send_lag_max_ms > 100


def test_request_past_its_timeout_is_recorded_as_timeout(server: LoopbackServer, tmp_path: Path) -> None:
    res, t = go(TargetSpec("http", url=f"{server.url}/slow?ms=3000"), steady(10, 3), tmp_path,
                timeout_s=0.2)
    r = rows(t)
    assert [x["status"] for x in r] == ["timeout"] * 3
    assert all(190 <= x["latency_ms"] < 1000 for x in r)
    assert "0.2 s" in r[0]["error"]
    assert res.by_status["timeout"] == 3


def test_a_full_connection_pool_is_reported(server, tmp_path) -> None:
    res, t = go(TargetSpec("http", url=f"{server.url}/slow?ms=200"), steady(100, 10), tmp_path,
                max_connections=2)
    assert res.pool_saturated and res.max_in_flight >= 2
    assert t.num_rows == 10  # requests waited for a connection; none was lost
    wide, _ = go(TargetSpec("http", url=f"{server.url}/slow?ms=200"), steady(100, 10), tmp_path / "w")
    assert not wide.pool_saturated and wide.max_in_flight > 2


def test_the_send_is_stamped_when_the_bytes_are_written_so_a_wait_for_a_connection_is_lag(server, tmp_path) -> None:
    """Two requests due 1 ms apart, one pooled connection, a server that takes 150 ms: the second
    request's bytes can only leave once the first answer is in, and its send lag says so."""
    res, t = go(TargetSpec("http", url=f"{server.url}/slow?ms=150"), np.array([0.0, 0.001]), tmp_path,
                max_connections=1)
    first, second = rows(t)
    assert second["sent_s"] >= first["completed_s"] - 0.005
    assert second["send_lag_ms"] >= 100.0 and first["send_lag_ms"] < 50.0
    assert res.send_lag_max_ms == pytest.approx(second["send_lag_ms"])
    assert res.start_monotonic_s is not None and res.start_monotonic_s <= time.monotonic()


def test_a_target_without_a_socket_keeps_the_send_stamped_at_the_task_start(tmp_path) -> None:
    _, t = go(TargetSpec("null"), steady(200, 20), tmp_path)
    assert t.num_rows == 20 and all(r["sent_s"] >= r["scheduled_s"] for r in t.to_pylist())


# ----- what the answers mean ---------------------------------------------------------------------


def lam(server: LoopbackServer, fn: str) -> TargetSpec:
    return TargetSpec("lambda", url=server.url, name=fn)


def test_429_is_recorded_as_throttled_with_the_server_message(server, tmp_path) -> None:
    _, t = go(lam(server, "throttle"), steady(50, 2), tmp_path)
    r = rows(t)[0]
    assert r["status"] == "throttled" and r["http_status"] == 429
    assert "TooManyRequestsException" in r["error"] and "Rate exceeded" in r["error"]


def test_other_http_errors_are_errors_with_the_server_message(server, tmp_path) -> None:
    _, t = go(lam(server, "missing"), steady(50, 1), tmp_path)
    r = rows(t)[0]
    assert r["status"] == "error" and r["http_status"] == 404
    assert "Function not found: missing" in r["error"]


def test_function_error_header_makes_a_200_an_error(server, tmp_path) -> None:
    _, t = go(lam(server, "fnerror"), steady(50, 1), tmp_path)
    r = rows(t)[0]
    assert r["status"] == "error" and r["http_status"] == 200
    assert r["error"] == "function error (Unhandled): ValueError: boom"


def test_platform_facts_header_is_copied_into_the_record(server, tmp_path) -> None:
    _, t = go(lam(server, "facts"), steady(50, 1), tmp_path)
    r = rows(t)[0]
    assert r["status"] == "ok" and r["target"] == "facts"
    for key, value in FACTS.items():
        if key != "not_a_field":
            assert r[key] == value, key
    seen = [s for s in server.seen if s["fn"] == "facts"][-1]
    assert seen["headers"]["X-Amz-Log-Type"] == "Tail"
    assert seen["headers"]["X-Servelab-Request-Id"] == "0"


def test_aws_report_line_in_the_log_tail_is_parsed(server, tmp_path) -> None:
    _, t = go(lam(server, "report"), steady(50, 1), tmp_path)
    r = rows(t)[0]
    assert (r["duration_ms"], r["billed_ms"], r["memory_mb"], r["max_memory_used_mb"], r["init_ms"]) == \
        (12.34, 13.0, 128, 50.0, 200.0)
    assert r["cold"] is True and r["start_kind"] == "cold"


def test_report_line_without_init_duration_is_a_warm_start() -> None:
    facts = parse_report_line("REPORT RequestId: x\tDuration: 1.50 ms\tBilled Duration: 2 ms\t"
                              "Memory Size: 512 MB\tMax Memory Used: 70 MB\t")
    assert facts == {"duration_ms": 1.5, "billed_ms": 2.0, "memory_mb": 512, "max_memory_used_mb": 70.0,
                     "cold": False, "start_kind": "warm"}
    assert parse_report_line("no report here") == {}


def test_facts_of_the_wrong_type_are_dropped_not_raised() -> None:
    assert clean_facts({"cold": "yes", "memory_mb": "lots", "init_ms": 3, "start_kind": "tepid",
                        "batch_size": True, "instance_id": 7}) == {"init_ms": 3.0, "instance_id": "7"}


def test_unreachable_target_is_an_error_record_not_a_crash(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res, t = go(TargetSpec("http", url=f"http://127.0.0.1:{port}/"), steady(50, 2), tmp_path)
    r = rows(t)
    assert [x["status"] for x in r] == ["error", "error"]
    assert "Connect" in r[0]["error"] and r[0]["http_status"] is None
    assert res.status == "completed"


def test_v2_target_sends_model_inputs_in_the_open_inference_protocol(server, tmp_path, tiny_models) -> None:
    bodies = from_model(tiny_models["tiny-mlp"], batch=3, count=2)
    assert len(bodies) == 2 and bodies[0] != bodies[1]
    _, t = go(TargetSpec("v2", url=server.url, name="tiny-mlp"), steady(50, 2), tmp_path, payloads=bodies)
    assert [x["status"] for x in rows(t)] == ["ok", "ok"]
    assert decode_tensors(json.loads(bodies[0])["inputs"])["input"].shape == (3, 16)
    _, t = go(TargetSpec("v2", url=server.url, name="nope"), steady(50, 1), tmp_path / "b")
    assert rows(t)[0]["error"] == "HTTP 404: model 'nope' is not deployed"


def test_payloads_from_files_and_json(tmp_path) -> None:
    (tmp_path / "b.json").write_bytes(b'{"b": 2}')
    (tmp_path / "a.json").write_bytes(b'{"a": 1}')
    assert from_files([tmp_path]) == [b'{"a": 1}', b'{"b": 2}']
    assert from_json({"x": [1, 2]}) == [b'{"x":[1,2]}']
    with pytest.raises(ConfigError, match="does not exist"):
        from_files([tmp_path / "nope"])


def test_target_spec_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="needs url and name"):
        TargetSpec("lambda")
    with pytest.raises(ConfigError, match="must be one of"):
        TargetSpec("grpc", url="http://x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="http://"):
        TargetSpec("http", url="localhost:8080")


def test_lambda_requests_are_sigv4_signed_when_a_region_is_given(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-for-tests")
    spec = TargetSpec("lambda", url=server.url, name="signed", aws_region="eu-west-1")
    _, t = go(spec, steady(50, 1), tmp_path)
    assert rows(t)[0]["status"] == "ok"
    h = [s for s in server.seen if s["fn"] == "signed"][-1]["headers"]
    assert h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/lambda/aws4_request" in h["Authorization"]


def test_sagemaker_requests_go_to_invoke_endpoint_signed_for_service_sagemaker(server, tmp_path,
                                                                               monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-for-tests")
    spec = TargetSpec("sagemaker", url=server.url, name="sl-ep", aws_region="us-east-1")
    _, t = go(spec, steady(50, 3), tmp_path)
    assert [r["status"] for r in rows(t)] == ["ok"] * 3
    h = [s for s in server.seen if s["fn"] == "sm:sl-ep"][-1]["headers"]
    assert h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/sagemaker/aws4_request" in h["Authorization"] and h["Accept"] == "application/json"
    _, t = go(TargetSpec("sagemaker", url=server.url, name="bad-input"), steady(50, 1), tmp_path / "bad")
    r = rows(t)[0]
    assert r["status"] == "error" and "expected shape" in r["error"]  # a 200 with an error is not a success


def test_http_requests_carry_a_google_id_token_fetched_once(server) -> None:
    from servelab.loadgen.targets import HttpTarget

    fetched: list[str] = []

    def fetch(audience: str) -> str:
        fetched.append(audience)
        return "token-1"

    async def main() -> list[str]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            t = HttpTarget(session, server.url + "/gcp", id_token_audience="https://fn.example", fetch_token=fetch)
            return [(await t.invoke(f"r{i}", b"{}")).status for i in range(3)]

    assert asyncio.run(main()) == ["ok"] * 3
    assert fetched == ["https://fn.example"]  # cached: one fetch for three requests
    assert TargetSpec("http", url=server.url, id_token_audience="a").to_dict()["id_token_audience"] == "a"


# ----- records while the run goes, interruption, several processes ------------------------------


def test_records_reach_disk_while_the_run_is_going(server, tmp_path) -> None:
    async def main() -> int:
        task = asyncio.create_task(run_load(lam(server, "ok"), steady(50, 100), [b"{}"], out_dir=tmp_path,
                                            run_id="live", flush_interval_s=0.25))
        while not task.done() and not list((tmp_path / "records").glob("part-*.parquet")):
            await asyncio.sleep(0.02)
        assert not task.done(), "no part file appeared before the run ended"
        seen = read_records(tmp_path / "records").num_rows
        assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
        await task
        return seen

    seen = asyncio.run(main())
    assert 0 < seen < 100
    assert read_records(tmp_path / "records").num_rows == 100


def test_cancelled_run_keeps_its_records_and_says_interrupted(server, tmp_path) -> None:
    async def main() -> None:
        task = asyncio.create_task(run_load(lam(server, "ok"), steady(50, 500), [b"{}"], out_dir=tmp_path,
                                            run_id="cancel", flush_interval_s=0.25))
        while not list((tmp_path / "records").glob("part-*.parquet")):
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "interrupted"
    n = read_records(tmp_path / "records").num_rows
    assert 0 < n < 500
    assert doc["result"]["recorded"] == n  # the counts survive the cancellation too


def test_stop_event_stops_issuing_and_waits_for_in_flight(server, tmp_path) -> None:
    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        return await run_load(TargetSpec("http", url=f"{server.url}/slow?ms=100"), steady(50, 500),
                              [b"{}"], out_dir=tmp_path, run_id="stop", stop=stop)

    res = asyncio.run(main())
    assert res.status == "interrupted" and res.abandoned == 0
    t = read_records(tmp_path / "records")
    assert 10 <= t.num_rows < 40 and res.sent == t.num_rows
    assert set(t.column("status").to_pylist()) == {"ok"}  # in-flight ones finished, not dropped


def test_ctrl_c_stops_a_blocking_run_cleanly(server, tmp_path) -> None:
    code = (
        "import numpy as np\n"
        "from servelab.loadgen import TargetSpec, run\n"
        f"r = run(TargetSpec('http', url={server.url + '/slow?ms=50'!r}), np.arange(2000) / 100, [b'{{}}'],"
        f" out_dir={str(tmp_path)!r}, run_id='sigint')\n"
        "print(r.status, r.recorded)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("records/part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    status, recorded = out.split()
    assert status == "interrupted"
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "interrupted"
    assert read_records(tmp_path / "records").num_rows == int(recorded) > 0


def test_two_processes_split_the_schedule_on_one_clock(server, tmp_path) -> None:
    times = np.sort(np.random.default_rng(1).uniform(0, 1.5, 300))
    res = run(lam(server, "ok"), times, [b"{}"], out_dir=tmp_path, run_id="two", procs=2)
    assert res.status == "completed" and res.recorded == 300
    parts = {p.name.split("-")[1] for p in (tmp_path / "records").glob("part-*.parquet")}
    assert parts == {"p0", "p1"}
    r = rows(read_records(tmp_path / "records"))
    assert [int(x["request_id"]) for x in r] == list(range(300))
    assert np.allclose([x["scheduled_s"] for x in r], times)  # one time axis for both processes
    lags = np.array([x["send_lag_ms"] for x in r])
    assert lags.min() > -0.5 and np.percentile(lags, 99) < 50
    assert json.loads((tmp_path / "run.json").read_text())["config"]["procs"] == 2


def test_arrivals_must_be_sorted_seconds(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sorted"):
        asyncio.run(run_load(TargetSpec("null"), np.array([1.0, 0.5]), [b"{}"], out_dir=tmp_path,
                             run_id="x"))


def test_run_json_carries_the_config_and_the_outcome(tmp_path) -> None:
    _, t = go(TargetSpec("null"), steady(1000, 200), tmp_path,
              config={"workload": "poisson:rate=1000", "seed": 7})
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "completed" and doc["config"]["target"] == {"kind": "null"}
    assert doc["config"]["workload"] == "poisson:rate=1000" and doc["config"]["seed"] == 7
    assert doc["config"]["timeout_s"] == 30.0 and "aiohttp" in doc["versions"]
    assert doc["result"]["recorded"] == t.num_rows == 200
