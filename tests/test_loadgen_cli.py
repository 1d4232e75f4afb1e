"""``servelab loadgen run`` / ``capacity`` end to end: real workload specs, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from typer.testing import CliRunner

from servelab.errors import ConfigError
from servelab.loadgen.cli import app
from servelab.records import read_records
from servelab.tensors import decode_tensors


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[str, list[bytes]]]:
    """Answers every POST at once and keeps the bodies it got."""
    ready, box, bodies = threading.Event(), {}, []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"ok": True})

    async def main() -> None:
        box["stop"] = asyncio.Event()
        web_app = web.Application()
        web_app.router.add_post("/{tail:.*}", handle)
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
    yield box["url"], bodies
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(5)


def test_run_command_records_a_workload_and_prints_the_summary(echo_server, tmp_path, tiny_models) -> None:
    url, bodies = echo_server
    out = tmp_path / "run1"
    res = CliRunner().invoke(app, ["run", "--function", "echo", "--platform", url, "-w", "poisson:rate=100",
                                   "-d", "1", "--seed", "3", "--model-input", str(tiny_models["tiny-mlp"]),
                                   "--batch", "2", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "success ratio" in res.output and "completed:" in res.output
    t = read_records(out / "records")
    assert 60 <= t.num_rows <= 140 and set(t.column("status").to_pylist()) == {"ok"}
    assert t.column("target").to_pylist()[0] == "echo"
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "completed"
    cfg = doc["config"]
    assert cfg["workload"] == "poisson:rate=100" and cfg["workload_spec"].startswith("poisson:")
    assert cfg["seed"] == 3 and cfg["duration_s"] == 1.0 and cfg["batch"] == 2
    assert cfg["target"] == {"kind": "lambda", "url": url, "name": "echo"}
    assert decode_tensors(json.loads(bodies[-1])["inputs"])["input"].shape == (2, 16)


def test_capacity_command_writes_every_trial_and_the_answer(tmp_path) -> None:
    out = tmp_path / "cap"
    res = CliRunner().invoke(app, ["capacity", "--null", "--p99-ms", "50", "--lo", "50", "--hi", "200",
                                   "--run-s", "0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["rate"] == 200 and [r["rate"] for r in doc["runs"]] == [50, 100, 200]
    assert "at least that" in doc["confidence"] and doc["target"] == {"kind": "null"}
    trials = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert trials == ["trial-01-50rps", "trial-02-100rps", "trial-03-200rps"]
    cfg = json.loads((out / trials[1] / "run.json").read_text())["config"]
    assert cfg["rate_rps"] == 100 and cfg["workload_spec"].startswith("poisson:")
    assert "rate_rps=100" in cfg["workload_spec"]


def test_capacity_scales_a_bursty_workload_to_each_rate(tmp_path) -> None:
    out = tmp_path / "cap"
    res = CliRunner().invoke(app, ["capacity", "--null", "--workload", "mmpp:rates=10,100;sojourn=1,1",
                                   "--p99-ms", "50", "--lo", "40", "--hi", "80", "--run-s", "0.5",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "trial-01-40rps" / "run.json").read_text())["config"]
    spec = cfg["workload_spec"]
    assert spec.startswith("mmpp:") and "rates_rps=7.2727" in spec  # mean 55 rps scaled to 40: 10 * 40/55


def test_choosing_two_targets_is_refused_with_the_fix(tmp_path) -> None:
    res = CliRunner().invoke(app, ["run", "--function", "f", "--null", "-w", "poisson:rate=1", "-d", "1",
                                   "-o", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "choose one target" in str(res.exception)
    res = CliRunner().invoke(app, ["run", "-w", "poisson:rate=1", "-d", "1", "-o", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "--function NAME" in str(res.exception)
