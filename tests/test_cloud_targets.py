"""Cloud kinds in experiments: an aws-lambda experiment runs end to end through the executor
against the local platform's Lambda API, with the REPORT line's facts in its records; the other
cloud kinds plan, price, and deploy through their real SDK code (with recording clients here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from platform_harness import RunningPlatform
from servelab.bench import make_plan, parse_experiment, read_summary, target_kinds
from servelab.bench.executor import Executor
from servelab.records import read_records


@pytest.fixture(autouse=True)
def _fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials through the standard chain; nothing from ~/.aws."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_cloud_kinds_are_registered() -> None:
    assert {"aws-lambda", "sagemaker", "gcp-functions", "cloud-run"} <= set(target_kinds())


def test_aws_lambda_experiment_runs_cold_then_warm_and_tears_down(tmp_path: Path, tiny_models) -> None:
    with RunningPlatform(tmp_path / "home") as p:
        exp = parse_experiment({
            "name": "lam", "seed": 3, "duration_s": 2, "models": [str(tiny_models["tiny-mlp"])],
            "workloads": ["poisson:rate=5"], "memory_mb": [512],
            "targets": [{"kind": "aws-lambda", "endpoint_url": p.url, "model_source": "bundled",
                         "cooldown_s": 0, "max_cost_usd": 1.0}]})
        plan = make_plan(exp)
        assert len(plan.runs) == 1 and plan.runs[0].runtime is None and plan.runs[0].memory_mb == 512
        result = Executor(plan, tmp_path / "out", quiet=True).run()
        left = [f["FunctionName"] for f in p.lambda_client().list_functions()["Functions"]]
    assert result.completed and not result.failed, result.failed
    assert left == []  # cooled down: the function is gone
    line = read_summary(tmp_path / "out")[0]
    assert line["summary"]["success_ratio"] == 1.0
    assert line["summary"]["cold_starts"] >= 1
    assert line["cost"]["entry_id"] == "aws-lambda-x86-us-east-1" and line["cost"]["total_usd"] > 0
    rd = tmp_path / "out" / "runs" / plan.runs[0].run_id
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["target"]["package"]["kind"] == "zip" and cfg["target"]["plan"]["estimate_usd"] > 0
    t = read_records(rd / "records").to_pydict()
    assert set(t["memory_mb"]) == {512} and all(b is not None and b >= 1 for b in t["billed_ms"])


def test_a_budget_below_the_estimate_fails_the_run_before_deploying(tmp_path: Path, tiny_models) -> None:
    with RunningPlatform(tmp_path / "home") as p:
        exp = parse_experiment({
            "name": "broke", "duration_s": 2, "models": [str(tiny_models["noop"])], "workloads": ["poisson:rate=5"],
            "targets": [{"kind": "aws-lambda", "endpoint_url": p.url, "model_source": "bundled", "cooldown_s": 0,
                         "max_cost_usd": 0.0000001}]})
        result = Executor(make_plan(exp), tmp_path / "out", quiet=True).run()
        left = p.lambda_client().list_functions()["Functions"]
    assert result.failed and "over the budget" in result.failed[0][1]
    assert left == []


def test_sagemaker_and_gcp_kinds_plan_and_price_their_runs(tiny_models) -> None:
    exp = parse_experiment({
        "name": "clouds", "duration_s": 2, "models": [str(tiny_models["noop"])], "workloads": ["poisson:rate=5"],
        "targets": [{"kind": "sagemaker", "model_bucket": "b", "role_arn": "r"},
                    {"kind": "gcp-functions", "project": "p"}, {"kind": "cloud-run", "project": "p", "image": "i"}]})
    plan = make_plan(exp)
    assert len(plan.runs) == 3 and not any(r.skip_reason for r in plan.runs)
    assert [r.price_entry for r in plan.runs] == ["aws-sagemaker-ml.c5.large-us-east-1",
                                                   "gcp-cloudfunctions-gen2-us-central1",
                                                   "gcp-cloudfunctions-gen2-us-central1"]


def test_gcp_target_deploys_per_run_sends_id_tokens_and_deletes_after(tiny_models, tmp_path: Path) -> None:
    from servelab.bench.targets import TargetContext
    from servelab.cloud.gcp import GcpFunction
    from servelab.cloud.targets import GcpFunctionsTarget
    from test_cloud_gcp import RecordingFunctionsClient

    client = RecordingFunctionsClient()

    class Recorded(GcpFunctionsTarget):
        def function(self, run):  # the real deployer, with the recording client in place of Google's
            real = super().function(run)
            return GcpFunction(real.spec, functions_client=client, put_zip=lambda url, data: None,
                               work_dir=tmp_path / "src")

    exp = parse_experiment({"name": "g", "duration_s": 2, "models": [str(tiny_models["noop"])], "memory_mb": [1024],
                            "workloads": ["poisson:rate=5"], "targets": [{"kind": "gcp-functions", "project": "p"}]})
    run = make_plan(exp).runs[0]
    target = Recorded(exp.targets[0], TargetContext.for_dir(tmp_path))
    endpoint = target.prepare(run, tiny_models["noop"])
    assert endpoint.target.kind == "http" and endpoint.target.url == "https://sl-fn-xyz.a.run.app"
    assert endpoint.target.id_token_audience == endpoint.target.url
    created = client.calls[1][1].function
    assert created.service_config.available_memory == "1024Mi" and created.labels["servelab-run-id"]
    target.teardown()
    assert [c[0] for c in client.calls] == ["generate_upload_url", "create_function", "delete_function"]
