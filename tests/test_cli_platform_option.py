"""``--platform URL`` (use a running platform) and ``--port`` (the port of the one a command starts)
on profile, recommend --verify and run; and no ``servelab-profile-*`` / ``servelab-verify-*``
temporary directory is left behind. The commands run as a user runs them: a fresh interpreter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from platform_harness import RunningPlatform

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("popt") / "home") as p:
        yield p


def _servelab(args: list[str], tmp_path: Path, *, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmpdir), "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-c", "from servelab.cli import main; main()", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROFILE_ARGS = ["profile", "tiny-mlp", "--memory-mb", "512", "--batch-sizes", "1", "--cold", "1", "--warm", "3"]


def test_profile_and_verify_use_a_running_platform_and_leave_no_temp_dir(platform, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _servelab([*PROFILE_ARGS, "--out", "prof.yaml", "--platform", platform.url], tmp_path, tmpdir=tmpdir)
    assert (tmp_path / "prof.yaml").is_file()
    assert (platform.home / "store" / "refs" / "tiny-mlp").is_dir()  # profiled on that platform
    proc = _servelab(["recommend", "-w", "poisson:rate=3", "-p", "prof.yaml", "--p95-ms", "1000", "--memory-mb",
                      "512", "--duration-s", "2", "--verify", "--model", "tiny-mlp", "--platform", platform.url,
                      "--json"], tmp_path, tmpdir=tmpdir)
    verified = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert verified["measured"]["success_ratio"] > 0
    # a verdict on the objective, whether the prediction held, and where it extrapolated
    assert verified["objective"] == "p95 <= 1000 ms, SR >= 0.999" and isinstance(verified["objective_met"], bool)
    assert isinstance(verified["prediction_within_15pct"], bool) and verified["extrapolated"] == []
    assert "predicted_cloud" in verified  # the prediction shares this machine's cores; the cloud model beside it
    assert list(tmpdir.iterdir()) == []  # no servelab-profile-* or servelab-verify-* left


def test_profile_starts_its_platform_on_the_port_asked_for(tmp_path: Path) -> None:
    port = _free_port()
    work = tmp_path / "work"
    _servelab([*PROFILE_ARGS, "--out", "prof.yaml", "--port", str(port), "--work-dir", str(work)], tmp_path,
              tmpdir=tmp_path)
    assert f"http://127.0.0.1:{port}" in (work / "platform.log").read_text()
    assert work.is_dir()  # a --work-dir given is kept


def test_a_platform_url_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", "from servelab.cli import main; main()", *PROFILE_ARGS,
                           "--platform", f"http://127.0.0.1:{_free_port()}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no servelab platform answers at" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


EXPERIMENT = """\
name: on-a-running-platform
seed: 1
duration_s: 1
models: [tiny-mlp]
workloads: ["poisson:rate=4"]
targets:
  - {kind: serverless, cooldown_s: 0, max_concurrency: 1}
"""


def test_run_uses_a_running_platform(platform, tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    _servelab(["run", "exp.yaml", "--out", "out", "--platform", platform.url], tmp_path, tmpdir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "out" / "summary.json").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["done"]
    # no platform was started for it (a started one lives in out/platform and logs to out/platform.log)
    assert not (tmp_path / "out" / "platform").exists() and not (tmp_path / "out" / "platform.log").exists()


@pytest.mark.parametrize("command", [["demo"], ["run"], ["profile"], ["recommend"]])
def test_every_experiment_command_offers_platform_and_port(command: list[str]) -> None:
    from typer.testing import CliRunner

    from servelab.cli import app

    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    assert "--platform" in out and "--port" in out, out
