"""The executor end to end on loopback with the tiny models: a two-target experiment that runs,
is killed with SIGKILL in the middle of its second run, resumes without redoing the finished
run, and completes; provisioned runs start warm, others cold; unmanaged targets work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from servelab.analysis.report_cli import register as register_report
from servelab.bench.cli import app
from servelab.bench.executor import DONE, SKIPPED, Executor, read_summary
from servelab.bench.planner import make_plan
from servelab.bench.spec import load_experiment, parse_experiment
from servelab.bench.targets import detect_gpu

report_app = typer.Typer()
report_app.callback()(lambda: None)  # a command group, as the real `servelab` app is
register_report(report_app)

TWO_TARGETS = """\
name: two-targets
seed: 3
duration_s: 3
models: [tiny-mlp]
workloads: ["poisson:rate=8"]
targets:
  - {kind: serverless, cooldown_s: 0, max_concurrency: 2}
  - {kind: server, workers: 1, cooldown_s: 0}
  - {kind: gpu-server, cooldown_s: 0}
"""


def _wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll a file-system condition (the executor's own progress markers), never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"executor exited ({proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_interrupted_experiment_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text(TWO_TARGETS)
    out = tmp_path / "out"
    plan = make_plan(load_experiment(spec))
    first, second, gpu = plan.runs
    assert (first.kind, second.kind, gpu.kind) == ("serverless", "server", "gpu-server")

    cmd = [sys.executable, "-c", "from servelab.bench.cli import app; app()", "run", str(spec),
           "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        _wait_for(lambda: (out / "runs" / first.run_id / DONE).is_file(), 90, "the first run's DONE", proc)
        # kill -9 once the second run has started measuring (its records directory exists)
        _wait_for(lambda: (out / "runs" / second.run_id / "records").is_dir(), 60, "the second run", proc)
        platform_pid = int((out / "platform" / "platform.pid").read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # the platform the executor started dies with it (PR_SET_PDEATHSIG), instances included
    _wait_for(lambda: not _alive(platform_pid), 30, "the orphaned platform to exit")
    assert not (out / "runs" / second.run_id / DONE).exists()
    done_before = (out / "runs" / first.run_id / DONE).read_text()
    run_json_before = (out / "runs" / first.run_id / "run.json").read_text()

    r = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "--quiet"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output

    # the finished run was not redone: its files are byte-for-byte the same
    assert (out / "runs" / first.run_id / DONE).read_text() == done_before
    assert (out / "runs" / first.run_id / "run.json").read_text() == run_json_before
    # the interrupted attempt was moved aside, with what it had measured, and the run redone
    partial = out / "runs" / f"{second.run_id}.partial-1"
    assert partial.is_dir() and (partial / "config.json").is_file()
    assert (out / "runs" / second.run_id / DONE).is_file()
    assert json.loads((out / "runs" / second.run_id / "run.json").read_text())["status"] == "completed"

    lines = read_summary(out)
    assert [x["run_id"] for x in lines] == [first.run_id, second.run_id, gpu.run_id]
    done = {x["run_id"]: x for x in lines if x["status"] == "done"}
    for rid in (first.run_id, second.run_id):
        s = done[rid]["summary"]
        assert s["count"] > 0 and s["success_ratio"] == 1.0
        assert done[rid]["cost"]["total_usd"] > 0
    assert done[first.run_id]["cost"]["entry_id"] == "aws-lambda-x86-us-east-1"
    assert done[second.run_id]["cost"]["entry_id"] == "aws-ec2-c5.large-us-east-1"
    # serverless starts cold; the server's worker was started before the load (pre-warmed)
    assert done[first.run_id]["summary"]["cold_starts"] >= 1
    assert done[second.run_id]["summary"]["cold_starts"] == 0
    assert done[second.run_id]["start_kinds"].get("prewarmed", 0) >= 1

    cfg = json.loads((out / "runs" / second.run_id / "config.json").read_text())
    assert cfg["run"]["run_id"] == second.run_id and cfg["run"]["target_settings"]["workers"] == 1
    assert [t["kind"] for t in cfg["experiment"]["targets"]] == ["serverless", "server", "gpu-server"]
    assert cfg["machine"]["cpus"] >= 1 and cfg["machine"]["memory_mb"] > 0
    assert cfg["machine"]["os"] and cfg["machine"]["python"].startswith("3.") and "cpu_model" in cfg["machine"]
    for pkg in ("servelab", "onnxruntime", "numpy", "python"):
        assert cfg["versions"][pkg]
    assert cfg["target"]["shape"]["admission"] == "queue" and cfg["target"]["provisioned"] == 1
    assert json.loads((out / "plan.json").read_text())["runs"][0]["run_id"] == first.run_id

    if detect_gpu() is not None:  # this machine has no GPU: skipped with the reason, never faked
        assert (out / "runs" / gpu.run_id / SKIPPED).read_text().startswith("no GPU")
        assert lines[2]["status"] == "skipped" and "no GPU" in lines[2]["reason"]
        assert not (out / "runs" / gpu.run_id / "records").exists()

    # and it reports: the HTML, the markdown and the figures exist and name both targets
    r = CliRunner().invoke(report_app, ["report", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    report = out / "report"
    html = (report / "report.html").read_text()
    md = (report / "summary.md").read_text()
    for rid in (first.run_id, second.run_id):
        assert rid in html and rid in md and (report / f"timeline-{rid}.png").stat().st_size > 10_000
    assert "serverless" in md and "server" in md and f"{second.run_id}.partial-1" not in md
    for name in ("latency_cdf.png", "cost_vs_p95.png", "cold_starts.png"):
        assert (report / name).stat().st_size > 10_000
    if detect_gpu() is not None:
        assert gpu.run_id in md and "no GPU" in md  # the skipped run is named with its reason


def test_provisioned_runs_start_warm_and_unprovisioned_runs_start_cold(tmp_path: Path) -> None:
    exp = parse_experiment({
        "name": "warmth", "seed": 1, "duration_s": 2, "models": ["tiny-cnn"], "workloads": ["poisson:rate=6"],
        "provisioned": [0, 1],
        "targets": [{"kind": "serverless", "cooldown_s": 0, "max_concurrency": 2},
                    {"kind": "managed", "min_instances": 1, "max_instances": 2, "cooldown_s": 0}],
    })
    plan = make_plan(exp)
    assert [(r.kind, r.provisioned) for r in plan.runs] == [
        ("serverless", 0), ("serverless", 1), ("managed", None)]
    result = Executor(plan, tmp_path / "out", quiet=True).run()
    assert result.completed == [r.run_id for r in plan.runs] and not result.failed
    lines = {x["run_id"]: x for x in read_summary(tmp_path / "out")}
    cold, warm, managed = (lines[r.run_id] for r in plan.runs)
    assert cold["summary"]["cold_starts"] >= 1  # deployed from a cold state
    assert warm["start_kinds"].get("prewarmed", 0) >= 1  # the provisioned instance took the first request
    assert warm["summary"]["cold_starts"] == 0
    assert warm["cost"]["provisioned_usd"] > 0
    assert managed["start_kinds"].get("prewarmed", 0) >= 1
    assert managed["cost"]["entry_id"] == "aws-sagemaker-ml.c5.large-us-east-1"
    cfg = json.loads((tmp_path / "out" / "runs" / plan.runs[2].run_id / "config.json").read_text())
    assert any("target-tracking" in n for n in cfg["target"]["notes"])
    env = cfg["target"]["deployed"]["Environment"]["Variables"]
    assert json.loads(env["SERVELAB_SCALING_PARAMS"])["kind"] == "target-tracking"
    assert json.loads(env["SERVELAB_SCALING_PARAMS"])["target_utilisation"] == 0.7


def test_http_target_drives_any_url_unpriced(tmp_path: Path, tiny_models) -> None:
    from platform_harness import RunningPlatform
    from servelab.models.store import open_store
    from servelab.platform.client import PlatformClient

    with RunningPlatform(tmp_path / "home") as p:
        ref = open_store(None, home=p.home).put("tiny-mlp", tiny_models["tiny-mlp"])
        PlatformClient(p.url).create({"FunctionName": "ext", "Role": "r", "MemorySize": 512,
                                      "Environment": {"Variables": {"SERVELAB_MODEL": ref}}})
        exp = parse_experiment({
            "name": "ext", "duration_s": 2, "models": [str(tiny_models["tiny-mlp"])],
            "workloads": ["poisson:rate=5"],
            "targets": [{"kind": "http", "url": f"{p.url}/v2/models/ext/infer", "cooldown_s": 0}]})
        plan = make_plan(exp)
        assert plan.platform_start_s == 0 and plan.runs[0].memory_mb is None
        result = Executor(plan, tmp_path / "out", quiet=True).run()
    assert result.completed and not result.failed
    line = read_summary(tmp_path / "out")[0]
    assert line["summary"]["success_ratio"] == 1.0 and line["cost"] is None
    assert not (tmp_path / "out" / "platform").exists()  # nothing was started for an unmanaged target


@pytest.mark.parametrize("only", ["nope"])
def test_only_that_matches_nothing_is_an_error(tmp_path: Path, only: str) -> None:
    (tmp_path / "e.yaml").write_text(TWO_TARGETS)
    args = ["run", str(tmp_path / "e.yaml"), "--out", str(tmp_path / "o"), "--only", only]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "matches no run id" in str(r.exception)
