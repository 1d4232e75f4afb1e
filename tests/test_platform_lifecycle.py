"""Instances for real: cold starts, scale to zero, provisioned concurrency, batching, and
instances that time out, crash or run out of memory being replaced."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from platform_harness import RunningPlatform, zip_code
from servelab.models.store import open_store
from servelab.tensors import decode_tensors, encode_tensor

HANDLERS = '''
import os, signal, time
import numpy as np

def sleepy(event, context):
    time.sleep(event.get("sleep_s", 0))
    return {"slept": event.get("sleep_s", 0), "remaining_ms": context.get_remaining_time_in_millis()}

def crash(event, context):
    if event.get("how") == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(3)

def hog(event, context):
    held = []
    for _ in range(event["mb"] // 16):
        held.append(np.ones(16 * 1024 * 1024, dtype=np.uint8))
    return {"held_mb": 16 * len(held)}

def echo(event, context):
    print("hello from the handler")
    return {"event": event, "function": context.function_name, "memory": context.memory_limit_in_mb,
            "has_model": context.model is not None}
'''


@pytest.fixture
def platform(tmp_path: Path):
    with RunningPlatform(tmp_path / "home") as p:
        yield p


def _invoke(p: RunningPlatform, name: str, body: bytes | dict) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(f"{p.url}/2015-03-31/functions/{name}/invocations", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, headers, out = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, out = e.code, dict(e.headers), e.read()
    facts = json.loads(headers.get("X-Servelab-Facts", "{}"))
    try:
        payload = json.loads(out)
    except ValueError:
        payload = {"raw": out.decode(errors="replace")}
    return status, {**headers, "facts": facts}, payload


def _deploy_handler(p: RunningPlatform, name: str, handler: str, *, memory_mb: int = 512, timeout_s: int = 10,
                    **env: str) -> None:
    p.lambda_client().create_function(
        FunctionName=name, Role="r", Handler=f"app.{handler}", MemorySize=memory_mb, Timeout=timeout_s,
        Code={"ZipFile": zip_code({"app.py": HANDLERS})}, Environment={"Variables": env})


def _deploy_model(p: RunningPlatform, name: str, path: Path, **env: str) -> None:
    ref = open_store(None, home=p.home).put(path.stem, path)
    p.lambda_client().create_function(FunctionName=name, Role="r", Code={"ZipFile": b""}, MemorySize=512,
                                      Environment={"Variables": {"SERVELAB_MODEL": ref, **env}})


def _instances(p: RunningPlatform, name: str) -> list[dict]:
    with urllib.request.urlopen(f"{p.url}/servelab/v1/functions/{name}/instances", timeout=10) as r:
        return json.loads(r.read())["instances"]


def _wait_for(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_user_handler_gets_event_context_and_its_log(platform: RunningPlatform) -> None:
    _deploy_handler(platform, "echo", "echo", FOO="bar")
    c = platform.lambda_client()
    r = c.invoke(FunctionName="echo", Payload=b'{"a": 1}', LogType="Tail")
    out = json.loads(r["Payload"].read())
    assert out == {"event": {"a": 1}, "function": "echo", "memory": 512, "has_model": False}
    import base64

    log = base64.b64decode(r["LogResult"]).decode()
    assert "hello from the handler" in log and log.index("START") < log.index("hello") < log.index("REPORT")


def test_idle_instance_is_reclaimed_after_keep_alive_and_the_next_request_is_cold(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", SERVELAB_KEEP_ALIVE_S="0.3")
    assert _invoke(platform, "f", {})[1]["facts"]["start_kind"] == "cold"
    assert _invoke(platform, "f", {})[1]["facts"]["start_kind"] == "warm"
    _wait_for(lambda: _instances(platform, "f") == [])  # scaled to zero
    assert _invoke(platform, "f", {})[1]["facts"]["start_kind"] == "cold"


def test_instance_is_never_reclaimed_while_executing(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", SERVELAB_KEEP_ALIVE_S="0.05")
    status, h, out = _invoke(platform, "f", {"sleep_s": 1.0})  # 20x the keep-alive
    assert status == 200 and out["slept"] == 1.0 and "X-Amz-Function-Error" not in h


def test_provisioned_instances_start_at_deploy_and_are_kept(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", SERVELAB_KEEP_ALIVE_S="0.1")
    c = platform.lambda_client()
    r = c.put_provisioned_concurrency_config(FunctionName="f", Qualifier="$LATEST",
                                             ProvisionedConcurrentExecutions=1)
    assert r["RequestedProvisionedConcurrentExecutions"] == 1
    _wait_for(lambda: [i["state"] for i in _instances(platform, "f")] == ["idle"])
    assert c.get_provisioned_concurrency_config(FunctionName="f", Qualifier="$LATEST")["Status"] == "READY"
    facts = _invoke(platform, "f", {})[1]["facts"]
    assert facts["start_kind"] == "prewarmed" and facts["cold"] is False and "init_ms" not in facts
    time.sleep(0.5)  # five keep-alives: a provisioned instance stays
    assert [i["provisioned"] for i in _instances(platform, "f")] == [True]
    assert _invoke(platform, "f", {})[1]["facts"]["start_kind"] == "warm"


def test_timeout_fails_the_request_and_the_instance_is_replaced(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", timeout_s=1)
    status, h, out = _invoke(platform, "f", {"sleep_s": 30})
    assert status == 200 and h["X-Amz-Function-Error"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout" and "timed out after 1.00 seconds" in out["errorMessage"]
    assert h["facts"].get("duration_ms", 0) >= 1000
    _, h2, out2 = _invoke(platform, "f", {"sleep_s": 0})
    assert out2["slept"] == 0 and h2["facts"]["start_kind"] == "cold"  # a new instance


@pytest.mark.parametrize("how,why", [("exit", "exit status 3"), ("segv", "SIGSEGV")])
def test_crashing_instance_fails_only_its_request(platform, how: str, why: str) -> None:
    _deploy_handler(platform, "f", "crash")
    _deploy_handler(platform, "ok", "sleepy")
    status, h, out = _invoke(platform, "f", {"how": how})
    assert status == 200 and h["X-Amz-Function-Error"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError" and why in out["errorMessage"]
    assert _invoke(platform, "ok", {})[0] == 200  # the platform and other functions carry on
    assert _instances(platform, "f") == []


def test_out_of_memory_is_reported_like_aws_and_the_instance_replaced(platform) -> None:
    if platform.platform.limits_info is None or platform.platform.limits_info.mode == "rlimit":
        pytest.skip("needs cgroup memory limits (this machine has none writable)")
    _deploy_handler(platform, "hog", "hog", memory_mb=128)
    _, h, out = _invoke(platform, "hog", {"mb": 512})
    assert h["X-Amz-Function-Error"] == "Unhandled"
    assert out["errorType"] == "Runtime.OutOfMemory"
    assert "Runtime exited: out of memory, limit 128 MB" in out["errorMessage"]
    _, _, ok = _invoke(platform, "hog", {"mb": 16})
    assert ok == {"held_mb": 16}


def test_init_error_fails_the_waiting_request_with_the_reason(platform) -> None:
    platform.lambda_client().create_function(
        FunctionName="bad", Role="r", Handler="missing_module.handler",
        Code={"ZipFile": zip_code({"app.py": HANDLERS})})
    _, _, out = _invoke(platform, "bad", {})
    assert out["errorType"] == "Runtime.InitError" and "missing_module" in out["errorMessage"]


def test_batching_gives_each_caller_its_own_rows_and_respects_the_maximum(platform, tiny_models) -> None:
    _deploy_model(platform, "mlp", tiny_models["tiny-mlp"], SERVELAB_BATCH_SIZE="4",
                  SERVELAB_BATCH_WAIT_MS="200", SERVELAB_MAX_CONCURRENCY="1", SERVELAB_ADMISSION="queue")
    _invoke(platform, "mlp", {"inputs": [encode_tensor("input", np.zeros((1, 16), np.float32))]})  # warm up
    sess = ort.InferenceSession(str(tiny_models["tiny-mlp"]))
    rng = np.random.default_rng(7)
    xs = [rng.random((1 + i % 2, 16), dtype=np.float32) for i in range(6)]
    with cf.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda x: _invoke(platform, "mlp", {"inputs": [encode_tensor("input", x)]}), xs))
    sizes = []
    for x, (status, h, out) in zip(xs, results, strict=True):
        assert status == 200
        got = decode_tensors(out["outputs"])["logits"]
        np.testing.assert_allclose(got, sess.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)
        sizes.append(h["facts"]["batch_size"])
    assert max(sizes) <= 4 and max(sizes) > 1  # batched, never past the maximum


def test_a_lone_request_waits_no_longer_than_the_batch_wait(platform, tiny_models) -> None:
    _deploy_model(platform, "mlp", tiny_models["tiny-mlp"], SERVELAB_BATCH_SIZE="8", SERVELAB_BATCH_WAIT_MS="100")
    body = {"inputs": [encode_tensor("input", np.zeros((1, 16), np.float32))]}
    _invoke(platform, "mlp", body)
    _, h, _ = _invoke(platform, "mlp", body)
    assert h["facts"]["batch_size"] == 1
    assert 90 <= h["facts"]["queue_ms"] <= 100 + 50  # waited for company, then went alone


def test_spawn_mode_cold_starts_a_fresh_interpreter(platform, tiny_models) -> None:
    _deploy_model(platform, "mlp", tiny_models["tiny-mlp"], SERVELAB_START_MODE="spawn")
    status, h, out = _invoke(platform, "mlp", {"inputs": [encode_tensor("input", np.ones((1, 16), np.float32))]})
    assert status == 200 and out["outputs"][0]["shape"] == [1, 4]
    f = h["facts"]
    assert f["start_kind"] == "cold" and f["init_import_ms"] > 5  # it had to import onnxruntime itself


def test_queued_request_is_throttled_after_its_maximum_wait(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", SERVELAB_MAX_CONCURRENCY="1", SERVELAB_ADMISSION="queue",
                    SERVELAB_MAX_QUEUE_WAIT_S="0.2")
    _invoke(platform, "f", {})
    with cf.ThreadPoolExecutor(2) as ex:
        slow = ex.submit(_invoke, platform, "f", {"sleep_s": 1.0})
        time.sleep(0.1)
        queued = ex.submit(_invoke, platform, "f", {})
        assert queued.result()[0] == 429
        assert slow.result()[0] == 200


def test_hybrid_keep_alive_unloads_after_each_call_and_prewarms_before_the_next(platform) -> None:
    params = json.dumps({"bin_s": 0.1, "range_s": 30, "min_samples": 5, "cv_threshold": 0.5})
    _deploy_handler(platform, "f", "sleepy", SERVELAB_KEEP_ALIVE_POLICY="hybrid", SERVELAB_KEEP_ALIVE_S="60",
                    SERVELAB_KEEP_ALIVE_PARAMS=params)
    kinds = []
    for _ in range(8):  # a steady call every 1.5 s teaches the histogram
        kinds.append(_invoke(platform, "f", {})[1]["facts"]["start_kind"])
        time.sleep(1.5)
    # once it has learned the period, each call finds a pre-warmed instance, not a kept-alive one
    assert kinds[0] == "cold" and kinds[-1] == "prewarmed", kinds
    with pytest.raises(Exception, match="unknown parameter"):
        _deploy_handler(platform, "g", "sleepy", SERVELAB_KEEP_ALIVE_POLICY="hybrid",
                        SERVELAB_KEEP_ALIVE_PARAMS='{"bogus": 1}')


def test_configuration_update_lets_running_requests_finish(platform) -> None:
    _deploy_handler(platform, "f", "sleepy", memory_mb=512)
    _invoke(platform, "f", {})
    with cf.ThreadPoolExecutor(1) as ex:
        running = ex.submit(_invoke, platform, "f", {"sleep_s": 1.0})
        _wait_for(lambda: any(i["state"] == "busy" for i in _instances(platform, "f")))
        platform.lambda_client().update_function_configuration(FunctionName="f", MemorySize=1024)
        status, h, out = running.result()
    assert status == 200 and out["slept"] == 1.0 and h["facts"]["memory_mb"] == 512
    _, h2, _ = _invoke(platform, "f", {})
    assert h2["facts"]["memory_mb"] == 1024 and h2["facts"]["start_kind"] == "cold"


def test_target_tracking_scales_out_under_load_and_back_in_when_idle(platform) -> None:
    params = json.dumps({"target_utilisation": 0.5, "metric_period_s": 0.5, "scale_out_cooldown_s": 0,
                         "scale_in_cooldown_s": 1.0, "scale_out_delay_s": 0.3})
    with pytest.raises(Exception, match="admission 'queue'"):
        _deploy_handler(platform, "g", "sleepy", SERVELAB_SCALING="target-tracking", SERVELAB_PROVISIONED="1")
    with pytest.raises(Exception, match="min_instances"):
        _deploy_handler(platform, "g", "sleepy", SERVELAB_SCALING="target-tracking", SERVELAB_ADMISSION="queue")
    _deploy_handler(platform, "f", "sleepy", SERVELAB_SCALING="target-tracking", SERVELAB_SCALING_PARAMS=params,
                    SERVELAB_PROVISIONED="1", SERVELAB_ADMISSION="queue", SERVELAB_MAX_CONCURRENCY="3")
    _wait_for(lambda: [i["state"] for i in _instances(platform, "f")] == ["idle"])  # the minimum, at deploy
    stop = time.monotonic() + 3.0

    def client() -> list[dict]:
        facts = []
        while time.monotonic() < stop:
            facts.append(_invoke(platform, "f", {"sleep_s": 0.5})[1]["facts"])
        return facts

    with cf.ThreadPoolExecutor(4) as ex:  # 4 in flight on 1 instance: 8x the target per instance
        futures = [ex.submit(client) for _ in range(4)]
        _wait_for(lambda: len(_instances(platform, "f")) == 3, timeout_s=10)  # scaled out to the maximum
        facts = [f for fut in futures for f in fut.result()]
    # the autoscaler's instances were not started for a request: nobody saw a cold start, many queued
    assert facts and not any(f["cold"] for f in facts)
    assert len({f["instance_id"] for f in facts}) >= 2
    _wait_for(lambda: len(_instances(platform, "f")) == 1, timeout_s=15)  # back to the minimum
    assert [i["provisioned"] for i in _instances(platform, "f")] == [True]
