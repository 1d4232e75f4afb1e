"""The platform through the real boto3 Lambda client and the Open Inference Protocol, on loopback."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from botocore.exceptions import ClientError

from platform_harness import RunningPlatform
from servelab.models.store import open_store
from servelab.records import read_records
from servelab.tensors import decode_tensors, encode_tensor


@pytest.fixture
def platform(tmp_path: Path):
    with RunningPlatform(tmp_path / "home") as p:
        yield p


def _put(p: RunningPlatform, path: Path) -> str:
    return open_store(None, home=p.home).put(path.stem, path)


def _event(x: np.ndarray, binary: bool = True) -> bytes:
    return json.dumps({"inputs": [encode_tensor("input", x, binary=binary)]}).encode()


def _create(client, name: str, ref: str, **env: str) -> dict:
    variables = {"SERVELAB_MODEL": ref, **env}
    return client.create_function(FunctionName=name, Role="r", Code={"ZipFile": b""}, MemorySize=512,
                                  Timeout=10, Environment={"Variables": variables})


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_boto3_manages_the_function_lifecycle(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    ref = _put(platform, tiny_models["tiny-mlp"])
    created = _create(c, "mlp", ref)
    assert created["MemorySize"] == 512 and created["Environment"]["Variables"]["SERVELAB_MODEL"] == ref
    assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["mlp"]
    got = c.get_function(FunctionName="mlp")
    assert got["Configuration"]["Timeout"] == 10
    upd = c.update_function_configuration(FunctionName="mlp", MemorySize=1024, Timeout=20)
    assert (upd["MemorySize"], upd["Timeout"]) == (1024, 20)
    assert c.put_function_concurrency(FunctionName="mlp", ReservedConcurrentExecutions=3)[
        "ReservedConcurrentExecutions"] == 3
    with pytest.raises(ClientError) as e:
        _create(c, "mlp", ref)
    assert e.value.response["Error"]["Code"] == "ResourceConflictException"
    c.delete_function(FunctionName="mlp")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function(FunctionName="mlp")


def test_invoke_returns_the_models_outputs_and_a_report_line(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    _create(c, "mlp", _put(platform, tiny_models["tiny-mlp"]))
    x = np.random.default_rng(1).random((3, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(tiny_models["tiny-mlp"])).run(None, {"input": x})[0]
    logs = []
    for _ in range(2):
        r = c.invoke(FunctionName="mlp", Payload=_event(x), LogType="Tail")
        assert r["StatusCode"] == 200 and "FunctionError" not in r
        out = decode_tensors(json.loads(r["Payload"].read())["outputs"])
        np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-6)
        logs.append(base64.b64decode(r["LogResult"]).decode())
    cold, warm = logs
    assert "REPORT RequestId:" in cold and "Billed Duration:" in cold and "Memory Size: 512 MB" in cold
    assert "Init Duration:" in cold  # the first request waited for a cold start
    assert "Init Duration:" not in warm


def test_records_label_cold_then_warm_with_init_parts(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    _create(c, "mlp", _put(platform, tiny_models["tiny-mlp"]))
    x = np.ones((1, 16), np.float32)
    facts = []
    for _ in range(2):
        status, headers, _ = _post(f"{platform.url}/2015-03-31/functions/mlp/invocations", _event(x))
        assert status == 200
        facts.append(json.loads(headers["X-Servelab-Facts"]))
    assert facts[0]["start_kind"] == "cold" and facts[0]["cold"] is True
    for part in ("init_process_ms", "init_import_ms", "init_fetch_ms", "init_load_ms", "init_ms"):
        assert facts[0][part] >= 0
    assert facts[0]["init_ms"] >= facts[0]["init_load_ms"]
    assert facts[1]["start_kind"] == "warm" and facts[1]["instance_id"] == facts[0]["instance_id"]
    assert facts[1]["billed_ms"] >= 1 and facts[1]["billed_ms"] == np.ceil(facts[1]["duration_ms"])
    platform.platform.meter.writer.flush()
    t = read_records(platform.home / "records")
    assert t.column("start_kind").to_pylist() == ["cold", "warm"]
    assert t.column("memory_mb").to_pylist() == [512, 512]


def test_open_inference_protocol_serves_metadata_and_inference(platform: RunningPlatform, tiny_models) -> None:
    _create(platform.lambda_client(), "cnn", _put(platform, tiny_models["tiny-cnn"]))
    status, body = _get(f"{platform.url}/v2/models/cnn")
    meta = json.loads(body)
    assert status == 200 and meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert _get(f"{platform.url}/v2/health/ready")[0] == 200
    assert _get(f"{platform.url}/v2/models/cnn/ready")[0] == 200
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    status, _, body = _post(f"{platform.url}/v2/models/cnn/infer",
                            json.dumps({"id": "r1", "inputs": [encode_tensor("input", x)]}).encode())
    resp = json.loads(body)
    assert status == 200 and resp["id"] == "r1" and resp["model_name"] == "cnn"
    assert resp["outputs"][0]["shape"] == [2, 10] and resp["outputs"][0]["datatype"] == "FP32"
    status, _, body = _post(f"{platform.url}/v2/models/cnn/infer",
                            json.dumps({"inputs": [encode_tensor("input", np.ones((1, 3, 8, 8), np.float32))]})
                            .encode())
    assert status == 400 and "axis 2 must be 32" in json.loads(body)["error"]
    assert _get(f"{platform.url}/v2/models/nope")[0] == 404


def test_binary_tensor_extension_round_trips_raw_bytes(platform: RunningPlatform, tiny_models) -> None:
    """The Open Inference Protocol's binary tensor data extension: JSON header + raw bytes, both ways."""
    _create(platform.lambda_client(), "cnn", _put(platform, tiny_models["tiny-cnn"]))
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    raw = x.tobytes()
    header = json.dumps({"id": "b1", "inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    url = f"{platform.url}/v2/models/cnn/infer"
    status, h, body = _post(url, header + raw, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and h["Content-Type"] == "application/octet-stream"
    n = int(h["Inference-Header-Content-Length"])
    resp = json.loads(body[:n])
    out = resp["outputs"][0]
    assert resp["id"] == "b1" and out["shape"] == [2, 10] and "data" not in out
    got = np.frombuffer(body[n:], dtype="<f4").reshape(2, 10)
    assert out["parameters"]["binary_data_size"] == got.nbytes == len(body) - n
    # the same inputs as JSON give the same numbers
    _, _, jbody = _post(url, json.dumps({"inputs": [encode_tensor("input", x)]}).encode())
    want = np.asarray(json.loads(jbody)["outputs"][0]["data"], dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(got, want)
    # binary inputs, JSON outputs (no binary_data_output)
    plain = json.dumps({"inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32",
                                    "parameters": {"binary_data_size": len(raw)}}]}).encode()
    status, h, body = _post(url, plain + raw, {"Inference-Header-Content-Length": str(len(plain))})
    assert status == 200 and "Inference-Header-Content-Length" not in h
    np.testing.assert_array_equal(np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(2, 10), want)
    # sizes that do not add up are a 400 that says so; a bad header length too
    status, _, body = _post(url, plain + raw[:-4], {"Inference-Header-Content-Length": str(len(plain))})
    assert status == 400 and "binary_data_size" in json.loads(body)["error"]
    status, _, body = _post(url, plain + raw, {"Inference-Header-Content-Length": str(10**9)})
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(body)["error"]


def test_bad_input_is_a_function_error_with_a_clear_message(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    _create(c, "mlp", _put(platform, tiny_models["tiny-mlp"]))
    r = c.invoke(FunctionName="mlp", Payload=b'{"inputs": [{"name": "input", "shape": [1, 3], '
                                              b'"datatype": "FP32", "data": [1, 2, 3]}]}')
    assert r["FunctionError"] == "Unhandled"
    err = json.loads(r["Payload"].read())
    assert err["errorType"] == "InputValidationError" and "axis 1 must be 16" in err["errorMessage"]
    with pytest.raises(c.exceptions.InvalidRequestContentException, match="Could not parse request body"):
        c.invoke(FunctionName="mlp", Payload=b"not json")  # as on Lambda: 400 before any instance sees it


def test_throttles_above_max_concurrency_with_429(platform: RunningPlatform, tiny_models) -> None:
    import concurrent.futures as cf

    c = platform.lambda_client()
    ref = _put(platform, tiny_models["tiny-mlp"])
    code = 'import time\ndef handler(event, context):\n    time.sleep(0.5)\n    return {"ok": True}\n'
    from platform_harness import zip_code

    c.create_function(FunctionName="slow", Role="r", Handler="app.handler",
                      Code={"ZipFile": zip_code({"app.py": code})},
                      Environment={"Variables": {"SERVELAB_MODEL": ref, "SERVELAB_MAX_CONCURRENCY": "2"}})
    url = f"{platform.url}/2015-03-31/functions/slow/invocations"
    with cf.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: _post(url, b"{}"), range(3)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 429]
    throttled = next(r for r in results if r[0] == 429)
    assert throttled[1]["x-amzn-ErrorType"] == "TooManyRequestsException"
    with pytest.raises(c.exceptions.TooManyRequestsException), cf.ThreadPoolExecutor(3) as ex:
        list(ex.map(lambda _: c.invoke(FunctionName="slow", Payload=b"{}"), range(3)))


def test_queue_mode_buffers_requests_and_records_queue_time(platform: RunningPlatform, tiny_models) -> None:
    import concurrent.futures as cf

    c = platform.lambda_client()
    _create(c, "mlp", _put(platform, tiny_models["tiny-mlp"]), SERVELAB_MAX_CONCURRENCY="1",
            SERVELAB_ADMISSION="queue")
    url = f"{platform.url}/2015-03-31/functions/mlp/invocations"
    x = _event(np.ones((1, 16), np.float32))
    with cf.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda _: _post(url, x), range(6)))
    assert [r[0] for r in results] == [200] * 6
    facts = [json.loads(r[1]["X-Servelab-Facts"]) for r in results]
    assert len({f["instance_id"] for f in facts}) == 1  # one instance served them all, in turn


def test_body_over_the_limit_gets_413(tmp_path: Path, tiny_models) -> None:
    with RunningPlatform(tmp_path / "h", max_body_bytes=1024) as p:
        _create(p.lambda_client(), "mlp", _put(p, tiny_models["tiny-mlp"]))
        status, headers, _ = _post(f"{p.url}/2015-03-31/functions/mlp/invocations", b"x" * 4096)
        assert status == 413 and headers["x-amzn-ErrorType"] == "RequestTooLargeException"


def test_management_calls_need_the_token_when_one_is_set(tmp_path: Path, tiny_models) -> None:
    with RunningPlatform(tmp_path / "h", token="s3cret") as p:
        ref = _put(p, tiny_models["tiny-mlp"])
        with pytest.raises(ClientError) as e:
            _create(p.lambda_client("wrong"), "mlp", ref)
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        _create(p.lambda_client("s3cret"), "mlp", ref)  # boto3: the token is the access key id
        status, _, _ = _post(f"{p.url}/2015-03-31/functions", b"{}", {"Authorization": "Bearer nope"})
        assert status == 403


def test_invalid_names_and_settings_get_400_that_says_what_to_fix(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    ref = _put(platform, tiny_models["tiny-mlp"])
    status, _, body = _post(f"{platform.url}/2015-03-31/functions",
                                  json.dumps({"FunctionName": "../etc", "Role": "r", "Code": {},
                                              "Environment": {"Variables": {"SERVELAB_MODEL": ref}}}).encode())
    assert status == 400 and "invalid function name" in json.loads(body)["message"]
    with pytest.raises(ClientError) as e:
        _create(c, "f", ref, SERVELAB_BATCH_SIZE="lots")
    assert "SERVELAB_BATCH_SIZE" in str(e.value)
    with pytest.raises(ClientError) as e:
        _create(c, "f", ref, SERVELAB_START_MODE="teleport")
    assert "start_mode" in str(e.value) and "fork" in str(e.value)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        _create(c, "f", "no-such-model")


def test_functions_survive_a_platform_restart(tmp_path: Path, tiny_models) -> None:
    home = tmp_path / "h"
    with RunningPlatform(home) as p:
        _create(p.lambda_client(), "mlp", _put(p, tiny_models["tiny-mlp"]))
    with RunningPlatform(home) as p:
        c = p.lambda_client()
        assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["mlp"]
        r = c.invoke(FunctionName="mlp", Payload=_event(np.ones((1, 16), np.float32)))
        assert "FunctionError" not in r


def test_metrics_info_and_event_invocations(platform: RunningPlatform, tiny_models) -> None:
    c = platform.lambda_client()
    _create(c, "mlp", _put(platform, tiny_models["tiny-mlp"]))
    r = c.invoke(FunctionName="mlp", InvocationType="Event", Payload=_event(np.ones((1, 16), np.float32)))
    assert r["StatusCode"] == 202
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline and 'servelab_requests_total{function="mlp",status="ok"} 1.0' not in text:
        text = _get(f"{platform.url}/metrics")[1].decode()
        time.sleep(0.05)
    assert 'servelab_requests_total{function="mlp",status="ok"} 1.0' in text
    assert 'servelab_cold_starts_total{function="mlp"} 1.0' in text
    assert "servelab_billed_gb_seconds_total" in text
    info = json.loads(_get(f"{platform.url}/servelab/v1/info")[1])
    assert info["tcp_nodelay"] is True  # the socket this very response went out on
    assert info["limits"]["mode"] in ("cgroup1", "cgroup2", "rlimit")
