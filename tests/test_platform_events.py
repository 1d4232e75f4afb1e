"""Nothing accepted is lost: Event invocations in a durable queue (kill -9 and restart), Lambda's
retries and destinations, a bounded queue; records on disk within a second of being measured.

Real platforms on loopback: in-process (RunningPlatform) or `servelab platform up` child
processes (PlatformProcess) where a test kills them. The handlers show that they ran by writing
to files under the test's tmp directory, so function isolation (as root: a private /tmp, the
home hidden) is turned off here; tests/test_isolation* cover isolation itself.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from platform_harness import PlatformProcess, RunningPlatform, zip_code
from servelab.records import read_records

HANDLERS = '''
import json, os, time

def record(event, context):
    """Sleeps, then appends the event's id to a file; fails its first `fail` attempts."""
    time.sleep(event.get("sleep_s", 0))
    if event.get("fail"):
        counter = event["out"] + "." + event["id"] + ".tries"
        tries = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
        open(counter, "w").write(str(tries))
        if tries <= event["fail"]:
            raise RuntimeError(f"failing on purpose, attempt {tries}")
    with open(event["out"], "a") as f:
        f.write(event["id"] + "\\n")
    return {"ok": event["id"]}

def sink(event, context):
    """An on-failure destination: keeps every invocation record it is sent."""
    with open(os.environ["SINK_FILE"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    return {}
'''


def _deploy(client, name: str, handler: str, **env: str) -> None:
    client.create_function(FunctionName=name, Role="r", Handler=f"app.{handler}", MemorySize=256, Timeout=30,
                           Code={"ZipFile": zip_code({"app.py": HANDLERS})}, Environment={"Variables": env})


def _post(url: str, body: dict | bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _event(p, name: str, body: dict) -> tuple[int, dict, bytes]:
    return _post(f"{p.url}/2015-03-31/functions/{name}/invocations", body, {"X-Amz-Invocation-Type": "Event"})


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _wait(cond, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_events_accepted_before_a_kill_9_all_run_after_the_restart(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    home = tmp_path / "home"
    a = PlatformProcess(home, args=("--event-retry-delay-s", "0.2", "--no-isolation")).start()
    try:
        _deploy(a.lambda_client(), "rec", "record")
        a.lambda_client().put_function_concurrency(FunctionName="rec", ReservedConcurrentExecutions=1)
        ids = [f"e{i}" for i in range(10)]
        for i in ids:  # 1 s each, one at a time: most are still queued when the platform dies
            assert _event(a, "rec", {"id": i, "out": str(out), "sleep_s": 1.0})[0] == 202
        a.kill()
        ran_before = set(_lines(out))
        assert len(ran_before) < len(ids)  # else the restart proves nothing
    finally:
        a.stop()
    b = PlatformProcess(home, args=("--event-retry-delay-s", "0.2", "--no-isolation")).start()
    try:
        done = _wait(lambda: set(_lines(out)) == set(ids), 60)
        with urllib.request.urlopen(f"{b.url}/servelab/v1/functions/rec/events", timeout=10) as r:
            events = json.loads(r.read())["events"]
        assert done, (_lines(out), events)
        assert [e["state"] for e in events] == ["succeeded"] * len(ids)
    finally:
        b.stop()


def test_function_errors_are_retried_with_backoff_and_each_attempt_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    with RunningPlatform(tmp_path / "home", event_retry_delay_s=0.3, isolate=False) as p:
        c = p.lambda_client()
        _deploy(c, "rec", "record")
        status, headers, _ = _event(p, "rec", {"id": "flaky", "out": str(out), "fail": 2})
        assert status == 202
        request_id = headers["x-amzn-RequestId"]
        assert _wait(lambda: _lines(out) == ["flaky"], 30)
        events = json.loads(urllib.request.urlopen(f"{p.url}/servelab/v1/functions/rec/events").read())["events"]
        (ev,) = events
        assert (ev["request_id"], ev["state"], ev["attempts"]) == (request_id, "succeeded", 3)
        assert ev["finished_at"] - ev["enqueued_at"] >= 0.3 + 0.6  # waited 0.3 s, then 0.6 s
    recs = read_records(tmp_path / "home" / "records").to_pylist()
    attempts = [r for r in recs if r["request_id"] == request_id]
    assert [r["status"] for r in attempts] == ["error", "error", "ok"]


def test_an_event_that_gives_up_goes_to_the_on_failure_destination(tmp_path: Path) -> None:
    out, sink = tmp_path / "ran.txt", tmp_path / "sink.jsonl"
    with RunningPlatform(tmp_path / "home", event_retry_delay_s=0.1, isolate=False) as p:
        c = p.lambda_client()
        _deploy(c, "rec", "record")
        _deploy(c, "dlq", "sink", SINK_FILE=str(sink))
        cfg = c.put_function_event_invoke_config(
            FunctionName="rec", MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": "arn:aws:lambda:local:000000000000:function:dlq"}})
        assert cfg["MaximumRetryAttempts"] == 1 and cfg["MaximumEventAgeInSeconds"] == 21600
        assert c.get_function_event_invoke_config(FunctionName="rec")["DestinationConfig"]["OnFailure"][
            "Destination"].endswith("function:dlq")
        with pytest.raises(c.exceptions.InvalidParameterValueException, match="not available locally"):
            c.put_function_event_invoke_config(
                FunctionName="rec", DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}})
        with pytest.raises(c.exceptions.InvalidParameterValueException):
            c.put_function_event_invoke_config(FunctionName="rec", MaximumRetryAttempts=5)
        status, headers, _ = _event(p, "rec", {"id": "doomed", "out": str(out), "fail": 99})
        assert status == 202
        assert _wait(lambda: bool(_lines(sink)), 30)
        record = json.loads(sink.read_text().splitlines()[0])
        assert record["requestContext"]["requestId"] == headers["x-amzn-RequestId"]
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert record["requestPayload"]["id"] == "doomed"
        assert record["responseContext"]["functionError"] == "Unhandled"
        assert "failing on purpose" in json.dumps(record["responsePayload"])
        assert _lines(out) == []
        events = json.loads(urllib.request.urlopen(f"{p.url}/servelab/v1/functions/rec/events").read())["events"]
        assert [(e["state"], e["attempts"]) for e in events] == [("failed", 2)]


def test_the_event_queue_is_bounded_and_answers_429_when_full(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    with RunningPlatform(tmp_path / "home", max_event_queue=3, isolate=False) as p:
        c = p.lambda_client()
        _deploy(c, "rec", "record")
        statuses = [_event(p, "rec", {"id": f"e{i}", "out": str(out), "sleep_s": 2})[0] for i in range(6)]
        assert statuses[:3] == [202] * 3 and statuses[3:] == [429] * 3
        status, headers, body = _event(p, "rec", {"id": "late", "out": str(out)})
        assert status == 429 and headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert "queue is full" in json.loads(body)["message"]
        assert _wait(lambda: len(_lines(out)) == 3, 30)  # the accepted ones run; then there is room again
        assert _wait(lambda: _event(p, "rec", {"id": "after", "out": str(out)})[0] == 202, 10)


def test_three_finished_requests_are_on_disk_without_a_fourth_even_after_kill_9(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    p = PlatformProcess(tmp_path / "home", args=("--no-isolation",)).start()
    try:
        _deploy(p.lambda_client(), "rec", "record")
        ids = [_post(f"{p.url}/2015-03-31/functions/rec/invocations",
                     {"id": str(i), "out": str(out)})[1]["x-amzn-RequestId"] for i in range(3)]
        time.sleep(2.5)  # no more requests: only the flush timer can have written them
        p.kill()
    finally:
        p.stop()
    recs = read_records(tmp_path / "home" / "records").column("request_id").to_pylist()
    assert sorted(recs) == sorted(ids)
    # a restart cleans up what the kill left
    PlatformProcess(tmp_path / "home", args=("--no-isolation",)).start().stop()
