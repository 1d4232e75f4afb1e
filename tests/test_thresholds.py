"""Thresholds and exit codes (k6-style) for `servelab loadgen run` and `servelab run`."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from typer.testing import CliRunner

from servelab.analysis.thresholds import EXIT_BREACHED, evaluate, parse_threshold, parse_thresholds
from servelab.errors import ConfigError
from servelab.loadgen.cli import app

SUMMARY = {"count": 200, "n_ok": 196, "n_error": 2, "n_throttled": 1, "n_timeout": 1,
           "latency_p50_ms": 20.0, "latency_p90_ms": 60.0, "latency_p95_ms": 120.0, "latency_p99_ms": 300.0,
           "latency_mean_ms": 35.0, "latency_max_ms": 900.0}


@pytest.mark.parametrize(("text", "metric", "op", "value"), [
    ("p95<200ms", "p95", "<", 200.0), ("p99 <= 0.5s", "p99", "<=", 500.0), ("mean<40", "mean", "<", 40.0),
    ("errors<1%", "errors", "<", 0.01), ("sr>=99.5%", "sr", ">=", 0.995), ("THROTTLED<0.1%", "throttled", "<", 0.001),
])
def test_thresholds_parse_into_ms_and_fractions(text: str, metric: str, op: str, value: float) -> None:
    t = parse_threshold(text)
    assert (t.metric, t.op) == (metric, op) and t.value == pytest.approx(value)


@pytest.mark.parametrize(("text", "says"), [
    ("p95", "expected METRIC OP VALUE"), ("p95=200ms", "expected METRIC OP VALUE"),
    ("p42<10ms", "unknown metric 'p42'"), ("errors<1", "give it in percent"), ("p95<5%", "give it in ms or s"),
    ("sr>120%", "at most 100%"),
])
def test_bad_thresholds_say_what_to_write(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_threshold(text)


def test_each_threshold_is_judged_on_the_runs_summary() -> None:
    rules = parse_thresholds(["p95<200ms", "p99<250ms", "errors<1%", "errors<3%", "sr>97%", "timeouts<=0.5%"])
    got = {v.threshold: v.passed for v in evaluate(SUMMARY, rules)}
    assert got == {"at least one request ok (default)": True, "p95<200ms": True, "p99<250ms": False,
                   "errors<1%": False, "errors<3%": True, "sr>97%": True, "timeouts<=0.5%": True}


def test_a_run_whose_every_request_failed_fails_by_default_and_latency_rules_have_nothing_to_meet() -> None:
    failed = {"count": 24, "n_ok": 0, "n_error": 24}
    [rule, p95] = evaluate(failed, parse_thresholds(["p95<200ms"]))
    assert not rule.passed and rule.observed == "0 of 24 ok"
    assert not p95.passed and p95.observed == "no successful request"
    assert evaluate(failed, [], fail_if_all_failed=False) == []


# ------------------------------------------------------------------ the CLI, on real HTTP


@pytest.fixture(scope="module")
def flaky_server() -> Iterator[str]:
    """POST /ok answers 200 at once; POST /fail answers 500."""
    ready, box = threading.Event(), {}

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "boom"}, status=500)

    async def main() -> None:
        box["stop"] = asyncio.Event()
        web_app = web.Application()
        web_app.router.add_post("/ok", ok)
        web_app.router.add_post("/fail", fail)
        runner = web.AppRunner(web_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
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


def _run(url: str, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["run", "--url", url, "-w", "poisson:rate=40", "-d", "0.6", "--seed", "1",
                                    "-o", str(out), "-q", *extra])


def test_loadgen_run_whose_every_request_failed_exits_non_zero(flaky_server: str, tmp_path: Path) -> None:
    res = _run(flaky_server + "/fail", tmp_path / "all-failed")
    assert res.exit_code == EXIT_BREACHED, res.output
    assert "FAIL  at least one request ok (default)" in res.output
    assert _run(flaky_server + "/fail", tmp_path / "allowed", "--allow-all-failed").exit_code == 0


def test_loadgen_run_exits_non_zero_on_a_breach_and_zero_when_thresholds_pass(flaky_server: str,
                                                                              tmp_path: Path) -> None:
    passed = _run(flaky_server + "/ok", tmp_path / "pass", "--threshold", "p95<5s", "--threshold", "errors<1%")
    assert passed.exit_code == 0, passed.output
    assert "pass  p95<5s" in passed.output and "pass  errors<1%" in passed.output
    breach = _run(flaky_server + "/ok", tmp_path / "breach", "--threshold", "p50<0.001ms")
    assert breach.exit_code == EXIT_BREACHED and "FAIL  p50<0.001ms" in breach.output


def test_a_bad_threshold_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: nothing may be sent anyway
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _run(f"http://127.0.0.1:{port}/", tmp_path / "bad", "--threshold", "p95<<3")
    assert isinstance(res.exception, ConfigError) and "expected METRIC OP VALUE" in str(res.exception)
    assert not (tmp_path / "bad").exists()


def test_servelab_run_judges_every_run_and_exits_non_zero_when_one_fails_every_request(
        flaky_server: str, tmp_path: Path, tiny_models) -> None:
    from servelab.bench.cli import app as bench_app

    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "name: thresholds\nduration_s: 1\nseed: 2\n"
        f"models: [{tiny_models['tiny-mlp']}]\nworkloads: ['poisson:rate=24']\n"
        "targets:\n"
        f"  - {{kind: http, name: good, url: '{flaky_server}/ok', cooldown_s: 0}}\n"
        f"  - {{kind: http, name: broken, url: '{flaky_server}/fail', cooldown_s: 0}}\n")
    res = CliRunner().invoke(bench_app, ["run", str(spec), "--out", str(tmp_path / "out"), "-q",
                                         "--threshold", "p95<5s"])
    assert res.exit_code == EXIT_BREACHED, res.output
    fails = [line for line in res.output.splitlines() if line.startswith("FAIL")]
    assert any("at least one request ok" in line and "broken" in line for line in fails), res.output
    assert all("good" not in line for line in fails)
    assert (tmp_path / "out" / "comparison.json").is_file()
