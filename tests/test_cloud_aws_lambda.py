"""The AWS Lambda target end to end: the same boto3 code that talks to AWS deploys, invokes and
tears down against the local platform's Lambda API (loopback, fake credentials), which runs the
very handler file servelab ships; the model-from-S3 path fetches from moto's S3 server."""

from __future__ import annotations

import json
import os
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from moto.server import ThreadedMotoServer

from platform_harness import RunningPlatform
from servelab.cloud.aws_lambda import LambdaFunction, make_spec
from servelab.cloud.cleanup import cleanup_lambda, cleanup_s3
from servelab.cloud.safety import TAG_RUN_ID, teardown_guard
from servelab.errors import ConfigError
from servelab.loadgen.payloads import from_model
from servelab.records import read_records
from servelab.tensors import decode_tensors

TOKEN = "AKIASERVELABTEST0001"  # the platform's token doubles as the AWS access key id
SECRET = "fake/Secret+Key/ThatMustNeverBeWritten0"


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Fake credentials through the standard chain (environment), nothing from ~/.aws."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", TOKEN)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            mp.delenv(k, raising=False)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield


@pytest.fixture(scope="module")
def s3_url(aws_env: None) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def platform(aws_env: None, s3_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    # started after the fake credentials are in the environment: instances inherit them for S3
    with RunningPlatform(tmp_path_factory.mktemp("cloud") / "home", token=TOKEN) as p:
        yield p


@pytest.fixture
def bucket(s3_url: str) -> str:
    name = f"models-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=name)
    return name


def _fn(platform: RunningPlatform, name: str, run_id: str, **kw: Any) -> LambdaFunction:
    spec = make_spec(function_name=name, run_id=run_id, endpoint_url=platform.url, memory_mb=512, **kw)
    return LambdaFunction(spec, poll_s=0.05, ready_timeout_s=60)


def _names(platform: RunningPlatform) -> list[str]:
    return [f["FunctionName"] for f in platform.lambda_client(TOKEN).list_functions()["Functions"]]


def _expected(model: Path, payload: bytes) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = decode_tensors(json.loads(payload)["inputs"])
    return sess.run(None, feeds)[0]


def test_model_from_s3_deploys_invokes_with_report_line_and_tears_down(
        platform: RunningPlatform, s3_url: str, bucket: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    model = tiny_models["tiny-mlp"]
    fn = _fn(platform, "cl-s3", "run-s3", model_source="s3", model_bucket=bucket, s3_endpoint_url=s3_url)
    payloads = from_model(model, 1, count=2, seed=1)
    with teardown_guard(fn.teardown):
        dep = fn.deploy(model)
        assert dep.package["kind"] == "zip" and dep.package["model_source"] == "s3"
        s3 = boto3.client("s3", endpoint_url=s3_url)
        key = f"servelab/run-s3/{model.name}"
        tagging = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert {"Key": TAG_RUN_ID, "Value": "run-s3"} in tagging
        lam = platform.lambda_client(TOKEN)
        assert lam.list_tags(Resource=dep.function_arn)["Tags"][TAG_RUN_ID] == "run-s3"
        recs = fn.invoke_many(payloads, 3, records_dir=tmp_path / "records")
        first = fn.invoke(payloads[0])
    out = json.loads(first.payload)["outputs"][0]
    got = np.frombuffer(__import__("base64").b64decode(out["b64"]), dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, _expected(model, payloads[0]), rtol=1e-5)
    # the REPORT line, parsed into the record: cold first (Init Duration), then warm
    assert [r.status for r in recs] == ["ok"] * 3
    assert recs[0].cold is True and recs[0].init_ms and recs[0].init_ms > 0
    assert recs[0].init_fetch_ms is not None and recs[0].init_load_ms is not None  # the handler's init line
    assert recs[1].cold is False and recs[1].init_ms is None
    assert all(r.memory_mb == 512 and r.billed_ms >= 1 and r.duration_ms > 0 and r.max_memory_used_mb > 0
               for r in recs)
    assert "REPORT RequestId:" in first.log_tail and first.cloud_request_id
    table = read_records(tmp_path / "records")
    assert table.num_rows == 3 and table.column("memory_mb").to_pylist() == [512] * 3
    # teardown removed the function and the model object
    assert "cl-s3" not in _names(platform)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_bundled_model_with_reserved_and_provisioned_concurrency_waits_until_ready(
        platform: RunningPlatform, tiny_models: dict[str, Path]) -> None:
    model = tiny_models["tiny-cnn"]
    fn = _fn(platform, "cl-prov", "run-prov", model_source="bundled", reserved_concurrency=3,
             provisioned_concurrency=1)
    lam = platform.lambda_client(TOKEN)
    with teardown_guard(fn.teardown):
        dep = fn.deploy(model)
        assert dep.qualifier == "1" and dep.invoke_name == "cl-prov:1"
        pc = lam.get_provisioned_concurrency_config(FunctionName="cl-prov", Qualifier="1")
        assert pc["Status"] == "READY" and pc["AvailableProvisionedConcurrentExecutions"] == 1
        assert lam.get_function_concurrency(FunctionName="cl-prov")["ReservedConcurrentExecutions"] == 3
        rec = fn.invoke(from_model(model, 1, count=1)[0]).record
        # the first request lands on the instance provisioned before it: no Init Duration
        assert rec.status == "ok" and rec.cold is False and rec.start_kind == "warm"
    assert "cl-prov" not in _names(platform)


def test_teardown_runs_after_an_error_inside_the_block(platform: RunningPlatform, tiny_models) -> None:
    fn = _fn(platform, "cl-err", "run-err", model_source="bundled")
    with pytest.raises(RuntimeError, match="boom"), teardown_guard(fn.teardown):
        fn.deploy(tiny_models["noop"])
        assert "cl-err" in _names(platform)
        raise RuntimeError("boom")
    assert "cl-err" not in _names(platform)


def test_teardown_runs_after_sigterm(platform: RunningPlatform, tiny_models) -> None:
    fn = _fn(platform, "cl-term", "run-term", model_source="bundled")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), teardown_guard(fn.teardown):
        fn.deploy(tiny_models["noop"])
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread: raises KeyboardInterrupt
    assert "cl-term" not in _names(platform)
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_bad_request_is_an_error_record_not_a_crash(platform: RunningPlatform, tiny_models) -> None:
    fn = _fn(platform, "cl-bad", "run-bad", model_source="bundled")
    with teardown_guard(fn.teardown):
        fn.deploy(tiny_models["tiny-mlp"])
        bad = fn.invoke(b'{"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]}').record
        good = fn.invoke(from_model(tiny_models["tiny-mlp"], 1)[0]).record
    assert bad.status == "error" and "unknown input 'nope'" in bad.error
    assert good.status == "ok"  # the same instance still serves


def test_cleanup_by_tag_removes_only_that_runs_leftovers(
        platform: RunningPlatform, s3_url: str, bucket: str, tiny_models) -> None:
    left = _fn(platform, "cl-left", "run-left", model_source="s3", model_bucket=bucket, s3_endpoint_url=s3_url)
    keep = _fn(platform, "cl-keep", "run-keep", model_source="bundled")
    left.deploy(tiny_models["noop"])  # no teardown: a crashed run's leftovers
    keep.deploy(tiny_models["noop"])
    lam = platform.lambda_client(TOKEN)
    s3 = boto3.client("s3", endpoint_url=s3_url)
    try:
        planned = cleanup_lambda(lam, run_id="run-left", dry_run=True)
        assert [a.name for a in planned] == ["cl-left"] and "cl-left" in _names(platform)
        done = cleanup_lambda(lam, run_id="run-left")
        assert [a.name for a in done] == ["cl-left"] and all(a.done for a in done)
        assert "cl-left" not in _names(platform) and "cl-keep" in _names(platform)
        objs = cleanup_s3(s3, bucket, run_id="run-left")
        assert len(objs) == 1 and s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    finally:
        keep.teardown()
        left.teardown()


def test_no_secret_reaches_records_logs_or_packages(
        platform: RunningPlatform, tiny_models, tmp_path: Path) -> None:
    fn = _fn(platform, "cl-secret", "run-secret", model_source="bundled")
    with teardown_guard(fn.teardown):
        dep = fn.deploy(tiny_models["noop"])
        recs = fn.invoke_many(from_model(tiny_models["noop"], 1), 2, records_dir=tmp_path / "records")
        (tmp_path / "deploy.json").write_text(json.dumps({"deployed": dep.__dict__, "plan": fn.plan(
            tiny_models["noop"], requests=2).to_dict()}, default=str))
        pkg = fn.package(tiny_models["noop"])
    assert [r.status for r in recs] == ["ok", "ok"]
    with zipfile.ZipFile(__import__("io").BytesIO(pkg.zip_bytes)) as zf:
        blobs = [zf.read(n) for n in zf.namelist()]
    scanned = 0
    for root in (tmp_path, platform.home):
        for p in Path(root).rglob("*"):
            if p.is_file():
                blobs.append(p.read_bytes())
                scanned += 1
    assert scanned >= 3
    for blob in blobs:
        assert SECRET.encode() not in blob


def test_a_plan_prices_the_run_and_a_budget_refuses_it(platform: RunningPlatform, tiny_models) -> None:
    from servelab.cloud.safety import check_budget

    fn = _fn(platform, "cl-plan", "run-plan", model_source="s3", model_bucket="b", provisioned_concurrency=1)
    plan = fn.plan(tiny_models["noop"], requests=1000, expected_duration_ms=100)
    kinds = [r.kind for r in plan.resources]
    assert kinds == ["s3-object", "lambda-function", "lambda-version", "lambda-provisioned-concurrency"]
    # 1000 x 100 ms x 0.5 GB on provisioned capacity + 1 x 0.5 GB x 300 s provisioned + requests
    assert plan.estimate_usd == pytest.approx(1000 * 0.1 * 0.5 * 0.0000097222 + 0.5 * 300 * 0.0000041667
                                              + 1000 * 0.2 / 1e6, rel=1e-3)
    assert plan.worst_case_usd > plan.estimate_usd
    check_budget(plan, 1.0)
    with pytest.raises(ConfigError, match="over the budget"):
        check_budget(plan, plan.estimate_usd / 2)
    assert "cl-plan" not in _names(platform)  # planning creates nothing


def test_missing_bucket_and_role_are_config_errors_before_anything_is_created(tiny_models) -> None:
    fn = LambdaFunction(make_spec(function_name="x", run_id="r", model_source="s3", role_arn="arn:aws:iam::1:role/r"))
    with pytest.raises(ConfigError, match="model_bucket"):
        fn.deploy(tiny_models["noop"])
    fn = LambdaFunction(make_spec(function_name="x", run_id="r", model_source="bundled"))
    with pytest.raises(ConfigError, match="execution role"):
        fn.deploy(tiny_models["noop"])
    assert fn.created == []
