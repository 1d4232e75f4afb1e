"""``servelab cloud`` against the local platform's Lambda API: dry run, budget, run, deploy →
teardown by run id, cleanup, package."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from platform_harness import RunningPlatform
from servelab.cloud.cli import register
from servelab.errors import ConfigError
from servelab.records import read_records

runner = CliRunner()


@pytest.fixture
def cli() -> typer.Typer:
    root = typer.Typer()
    root.command("version")(lambda: None)  # a second command, so "cloud" stays a sub-command
    register(root)
    return root


@pytest.fixture(autouse=True)
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("cli") / "home") as p:
        yield p


def _functions(p: RunningPlatform) -> list[str]:
    return [f["FunctionName"] for f in p.lambda_client().list_functions()["Functions"]]


def test_dry_run_prints_resources_and_cost_and_creates_nothing(cli, platform, tiny_models) -> None:
    r = runner.invoke(cli, ["cloud", "run", str(tiny_models["noop"]), "--endpoint-url", platform.url,
                            "--bucket", "models", "--provisioned", "1", "--count", "1000", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "+ s3-object" in r.output and "+ lambda-function" in r.output
    assert "+ lambda-provisioned-concurrency" in r.output and "estimated cost: $" in r.output
    assert "aws-lambda-x86-us-east-1" in r.output and "dry run: nothing was created" in r.output
    assert _functions(platform) == []


def test_max_cost_refuses_before_creating(cli, platform, tiny_models) -> None:
    r = runner.invoke(cli, ["cloud", "run", str(tiny_models["noop"]), "--endpoint-url", platform.url,
                            "--model-source", "bundled", "--count", "100000", "--max-cost", "0.001"])
    assert isinstance(r.exception, ConfigError) and "over the budget" in str(r.exception)
    assert _functions(platform) == []


def test_run_deploys_invokes_records_and_tears_down(cli, platform, tiny_models, tmp_path: Path) -> None:
    r = runner.invoke(cli, ["cloud", "run", str(tiny_models["tiny-mlp"]), "--endpoint-url", platform.url,
                            "--model-source", "bundled", "--memory-mb", "512", "--count", "3",
                            "--records", str(tmp_path / "rec"), "--run-id", "cli-run", "--max-cost", "1"])
    assert r.exit_code == 0, r.output
    assert "torn down" in r.output and _functions(platform) == []
    t = read_records(tmp_path / "rec").to_pydict()
    assert t["status"] == ["ok"] * 3 and t["cold"][0] is True and t["memory_mb"] == [512] * 3


def test_deploy_then_invoke_then_teardown_by_run_id(cli, platform, tiny_models) -> None:
    r = runner.invoke(cli, ["cloud", "deploy", str(tiny_models["noop"]), "--endpoint-url", platform.url,
                            "--model-source", "bundled", "--name", "cli-fn", "--run-id", "cli-dep"])
    assert r.exit_code == 0, r.output
    assert "cli-fn" in _functions(platform)
    r = runner.invoke(cli, ["cloud", "invoke", "cli-fn", "--model", str(tiny_models["noop"]), "--count", "2",
                            "--endpoint-url", platform.url])
    assert r.exit_code == 0 and r.output.count(" ok ") >= 2, r.output
    r = runner.invoke(cli, ["cloud", "cleanup", "--dry-run", "--endpoint-url", platform.url])
    assert "cli-fn" in r.output and "dry run" in r.output and "cli-fn" in _functions(platform)
    r = runner.invoke(cli, ["cloud", "teardown", "--run-id", "cli-dep", "--endpoint-url", platform.url])
    assert r.exit_code == 0 and "deleted" in r.output, r.output
    assert "cli-fn" not in _functions(platform)


def test_package_writes_each_clouds_artifact(cli, tiny_models, tmp_path: Path) -> None:
    m = str(tiny_models["noop"])
    assert runner.invoke(cli, ["cloud", "package", m, "-o", str(tmp_path / "l"), "--model-source", "bundled"]
                         ).exit_code == 0
    with zipfile.ZipFile(tmp_path / "l" / "function.zip") as zf:
        assert sorted(zf.namelist()) == ["lambda_function.py", "model.onnx", "servelab_infer.py"]
    assert json.loads((tmp_path / "l" / "package.json").read_text())["kind"] == "zip"
    assert runner.invoke(cli, ["cloud", "package", m, "-o", str(tmp_path / "i"), "--image"]).exit_code == 0
    assert "FROM public.ecr.aws/lambda/python:3.11" in (tmp_path / "i" / "Dockerfile").read_text()
    assert runner.invoke(cli, ["cloud", "package", m, "-o", str(tmp_path / "s"), "-t", "sagemaker"]).exit_code == 0
    assert (tmp_path / "s" / "model.tar.gz").stat().st_size > 100
    assert runner.invoke(cli, ["cloud", "package", m, "-o", str(tmp_path / "g"), "-t", "gcp-functions"]).exit_code == 0
    assert (tmp_path / "g" / "main.py").is_file() and (tmp_path / "g" / "requirements.txt").is_file()
