"""SageMaker: no SageMaker server can run here, so every request servelab sends is checked by
botocore's Stubber against the service model (names, types, required fields) and the exact
parameters we expect, answered with responses of the recorded shape. The inference script in the
model archive runs for real on a tiny model."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from servelab.cloud.safety import TAG_CREATED_BY, TAG_RUN_ID
from servelab.cloud.sagemaker import SageMakerEndpoint, build_model_archive, make_spec
from servelab.errors import ConfigError
from servelab.loadgen.payloads import from_model

ROLE = "arn:aws:iam::123456789012:role/servelab-sagemaker"
TAGS = [{"Key": TAG_RUN_ID, "Value": "run-sm"}, {"Key": TAG_CREATED_BY, "Value": "servelab"}]


def _clients() -> dict[str, Any]:
    kw = {"region_name": "us-east-1", "aws_access_key_id": "AKIAFAKE", "aws_secret_access_key": "fake"}
    return {name: boto3.client(name, **kw) for name in ("sagemaker", "sagemaker-runtime",
                                                         "application-autoscaling", "s3")}


def _endpoint(clients: dict[str, Any], **kw: Any) -> SageMakerEndpoint:
    spec = make_spec(name="sl-ep", run_id="run-sm", role_arn=ROLE, model_bucket="models", **kw)
    return SageMakerEndpoint(spec, sagemaker_client=clients["sagemaker"], runtime_client=clients["sagemaker-runtime"],
                             autoscaling_client=clients["application-autoscaling"], s3_client=clients["s3"], poll_s=0)


def _stub_deploy(st: dict[str, Stubber], variant: dict[str, Any]) -> None:
    st["s3"].add_response("put_object", {"ETag": '"x"'},
                          {"Bucket": "models", "Key": "servelab/run-sm/model.tar.gz", "Body": ANY,
                           "Tagging": "servelab%3Arun-id=run-sm&servelab%3Acreated-by=servelab"})
    st["sagemaker"].add_response(
        "create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/sl-ep-model"},
        {"ModelName": "sl-ep-model", "ExecutionRoleArn": ROLE, "Tags": TAGS,
         "PrimaryContainer": {"Image": ANY, "ModelDataUrl": "s3://models/servelab/run-sm/model.tar.gz",
                              "Environment": ANY}})
    st["sagemaker"].add_response(
        "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"},
        {"EndpointConfigName": "sl-ep-config", "ProductionVariants": [variant], "Tags": TAGS})
    st["sagemaker"].add_response(
        "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sl-ep"},
        {"EndpointName": "sl-ep", "EndpointConfigName": "sl-ep-config", "Tags": TAGS})
    # the waiter: Creating, then InService (recorded DescribeEndpoint shapes)
    for status in ("Creating", "InService"):
        st["sagemaker"].add_response("describe_endpoint", {
            "EndpointName": "sl-ep", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/sl-ep",
            "EndpointConfigName": "sl-ep-config", "EndpointStatus": status,
            "CreationTime": "2026-11-23T00:00:00Z", "LastModifiedTime": "2026-11-23T00:00:00Z"},
            {"EndpointName": "sl-ep"})


def _stub_teardown(st: dict[str, Stubber]) -> None:
    st["sagemaker"].add_response("delete_endpoint", {}, {"EndpointName": "sl-ep"})
    st["sagemaker"].add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
    st["sagemaker"].add_response("delete_endpoint_config", {}, {"EndpointConfigName": "sl-ep-config"})
    st["sagemaker"].add_response("delete_model", {}, {"ModelName": "sl-ep-model"})
    st["s3"].add_response("delete_object", {}, {"Bucket": "models", "Key": "servelab/run-sm/model.tar.gz"})


def test_realtime_endpoint_with_autoscaling_sends_valid_requests_in_order(tiny_models) -> None:
    clients = _clients()
    st = {k: Stubber(c) for k, c in clients.items()}
    ep = _endpoint(clients, instance_type="ml.c5.large", instance_count=1, autoscaling_max=3)
    _stub_deploy(st, {"VariantName": "AllTraffic", "ModelName": "sl-ep-model", "InitialInstanceCount": 1,
                      "InstanceType": "ml.c5.large", "InitialVariantWeight": 1.0})
    rid = "endpoint/sl-ep/variant/AllTraffic"
    dim = "sagemaker:variant:DesiredInstanceCount"
    st["application-autoscaling"].add_response(
        "register_scalable_target", {}, {"ServiceNamespace": "sagemaker", "ResourceId": rid,
                                         "ScalableDimension": dim, "MinCapacity": 1, "MaxCapacity": 3})
    st["application-autoscaling"].add_response(
        "put_scaling_policy", {"PolicyARN": "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x"},
        {"PolicyName": "sl-ep-invocations", "ServiceNamespace": "sagemaker", "ResourceId": rid,
         "ScalableDimension": dim, "PolicyType": "TargetTrackingScaling",
         "TargetTrackingScalingPolicyConfiguration": {
             "TargetValue": 100.0,
             "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
             "ScaleInCooldown": 300, "ScaleOutCooldown": 60}})
    st["application-autoscaling"].add_response(
        "deregister_scalable_target", {}, {"ServiceNamespace": "sagemaker", "ResourceId": rid,
                                           "ScalableDimension": dim})
    _stub_teardown(st)
    for s in st.values():
        s.activate()
    arn = ep.deploy(tiny_models["noop"])
    assert arn.endswith("endpoint/sl-ep")
    removed = ep.teardown()
    assert removed[0].startswith("autoscaling-target") and removed[-1].startswith("s3-object")
    for s in st.values():
        s.assert_no_pending_responses()


def test_serverless_endpoint_config_and_invoke_record(tiny_models) -> None:
    clients = _clients()
    st = {k: Stubber(c) for k, c in clients.items()}
    ep = _endpoint(clients, mode="serverless", memory_mb=2048, max_concurrency=5)
    _stub_deploy(st, {"VariantName": "AllTraffic", "ModelName": "sl-ep-model",
                      "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}})
    answer = json.dumps({"model_name": "noop", "outputs": []}).encode()
    st["sagemaker-runtime"].add_response(
        "invoke_endpoint", {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/json",
                            "InvokedProductionVariant": "AllTraffic"},
        {"EndpointName": "sl-ep", "ContentType": "application/json", "Accept": "application/json", "Body": b"{}"})
    st["sagemaker-runtime"].add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded",
                                             http_status_code=400)
    _stub_teardown(st)
    for s in st.values():
        s.activate()
    ep.deploy(tiny_models["noop"])
    ok = ep.invoke(b"{}")
    throttled = ep.invoke(b"{}")
    ep.teardown()
    assert ok.record.status == "ok" and ok.variant == "AllTraffic" and ok.record.memory_mb == 2048
    assert ok.record.latency_ms is not None and ok.record.latency_ms >= 0
    assert throttled.record.status == "throttled" and "Rate exceeded" in throttled.record.error


def test_plans_price_instances_or_memory(tiny_models) -> None:
    clients = _clients()
    rt = _endpoint(clients, instance_type="ml.c5.large", autoscaling_max=2).plan(
        tiny_models["noop"], requests=1000, window_s=3600)
    # two ml.c5.large for an hour (the autoscaling maximum): 2 x $0.119
    assert rt.estimate_usd == pytest.approx(2 * 0.119, rel=1e-3)
    assert rt.entry_id == "aws-sagemaker-ml.c5.large-us-east-1"
    assert [r.kind for r in rt.resources][-1] == "autoscaling-target"
    sl = _endpoint(clients, mode="serverless", memory_mb=2048).plan(tiny_models["noop"], requests=1000,
                                                                   expected_duration_ms=100)
    assert sl.estimate_usd == pytest.approx(1000 * 0.1 * 2 * 0.00002, rel=1e-3)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="serverless memory_mb"):
        make_spec(name="a", run_id="r", role_arn=ROLE, model_bucket="b", mode="serverless", memory_mb=1500)
    with pytest.raises(ConfigError, match="autoscaling_max"):
        make_spec(name="a", run_id="r", role_arn=ROLE, model_bucket="b", instance_count=3, autoscaling_max=2)


def test_the_archived_inference_script_serves_the_model(tiny_models, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with tarfile.open(fileobj=io.BytesIO(build_model_archive(tiny_models["tiny-mlp"]))) as tar:
        assert sorted(tar.getnames()) == ["code/inference.py", "code/requirements.txt", "code/servelab_infer.py",
                                          "model.onnx"]
        tar.extractall(tmp_path, filter="data")
    assert "onnxruntime==" in (tmp_path / "code" / "requirements.txt").read_text()
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    for mod in ("inference", "servelab_infer"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    import inference  # the toolkit's four hooks, as SageMaker calls them

    model = inference.model_fn(str(tmp_path))
    body = from_model(tiny_models["tiny-mlp"], 1, count=1)[0]
    out, ctype = inference.output_fn(inference.predict_fn(inference.input_fn(body, "application/json"), model),
                                     "application/json")
    resp = json.loads(out)
    assert ctype == "application/json" and resp["outputs"][0]["shape"][0] == 1
    assert np.isfinite(np.frombuffer(__import__("base64").b64decode(resp["outputs"][0]["b64"]), np.float32)).all()
    bad = inference.predict_fn({"inputs": []}, model)
    assert "missing input" in bad["error"]
