"""Exit codes tell the truth: a function error, a cloud run in which every request failed and a
missing optional package all end non-zero, the last with one line naming the extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from platform_harness import RunningPlatform
from servelab.cli import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("exit") / "home") as p:
        yield p


@pytest.fixture
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


BAD_INPUT = json.dumps({"inputs": [{"name": "no-such-input", "shape": [1, 16], "datatype": "FP32",
                                    "data": [0.0] * 16}]})


def test_invoke_exits_zero_on_success_and_one_on_a_function_error(platform, tiny_models) -> None:
    r = runner.invoke(app, ["deploy", "ex-mlp", "--model", str(tiny_models["tiny-mlp"]), "--memory-mb", "256",
                            "--platform", platform.url])
    assert r.exit_code == 0, r.output
    ok = runner.invoke(app, ["invoke", "ex-mlp", "--random", "1", "--platform", platform.url])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["invoke", "ex-mlp", "--payload", BAD_INPUT, "--platform", platform.url])
    assert bad.exit_code == 1, bad.output
    assert "function error" in bad.output


@pytest.mark.usefixtures("_fake_aws")
def test_cloud_run_exits_99_when_every_request_failed(platform, tiny_models, tmp_path: Path) -> None:
    body = tmp_path / "bad.json"
    body.write_text(BAD_INPUT)
    r = runner.invoke(app, ["cloud", "run", str(tiny_models["tiny-mlp"]), "--endpoint-url", platform.url,
                            "--model-source", "bundled", "--memory-mb", "256", "--count", "2",
                            "--payload", str(body), "--run-id", "exit-all-fail", "--max-cost", "1"])
    assert r.exit_code == 99, r.output  # as `servelab run` and `loadgen run` when every request failed
    assert "every request failed (2 of 2)" in r.output and "torn down" in r.output


def _cli_without(module: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``servelab ARGS`` in a fresh interpreter in which MODULE cannot be imported."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(SRC)])}
    return subprocess.run([sys.executable, "-c", "from servelab.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


@pytest.mark.parametrize(("module", "args", "extra"), [
    ("boto3", ["cloud", "cleanup", "--dry-run"], "aws"),
    ("matplotlib", ["workload", "show", "low", "--plot", "x.png"], "plot"),
])
def test_a_missing_extra_is_one_line_naming_the_pip_install(module, args, extra, tmp_path: Path) -> None:
    proc = _cli_without(module, args, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'servelab[{extra}]'" in lines[0], proc.stderr
