"""The durable event queue and its dispatcher on their own: real SQLite files, and an invoke
function standing in for the platform (the seam the platform passes its own ``invoke`` through)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from servelab.platform.events import EventDispatcher, EventInvokeConfig, EventQueue, EventQueueFullError


@dataclass
class Answer:
    """The fields of an Invocation the dispatcher reads."""

    status: str
    payload: bytes = b"{}"
    function_error: bool = False
    http_status: int = 200


def test_running_events_go_back_to_the_queue_when_it_is_reopened(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "events.db", max_queued=10)
    for i in range(3):
        q.put("f", b"{}", f"r{i}")
    claimed, more = q.claim_due(time.time(), 10, {"f": 2})
    assert [e.request_id for e in claimed] == ["r0", "r1"] and more  # at most the function's concurrency
    q.close()  # a crash: r0 and r1 were running
    q = EventQueue(tmp_path / "events.db", max_queued=10)
    assert q.waiting == 3
    assert [e.request_id for e in q.claim_due(time.time(), 10, {"f": 5})[0]] == ["r0", "r1", "r2"]


def test_the_queue_refuses_events_past_its_bound(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "events.db", max_queued=2)
    q.put("f", b"{}", "a")
    q.put("f", b"{}", "b")
    with pytest.raises(EventQueueFullError, match="queue is full"):
        q.put("f", b"{}", "c")
    (ev,), _ = q.claim_due(time.time(), 1, {"f": 1})
    q.finish(ev, "succeeded", attempts=1, error=None)
    q.put("f", b"{}", "c")  # room again


def _run(q: EventQueue, invoke, *, retry_delay_s: float = 0.05, until=None, timeout_s: float = 10.0) -> None:
    async def main() -> None:
        d = EventDispatcher(q, invoke, retry_delay_s=retry_delay_s, concurrency=lambda: {"f": 4, "dlq": 4})
        d.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until():
            await asyncio.sleep(0.02)
        await d.close()

    asyncio.run(main())


def test_an_event_older_than_its_maximum_age_is_not_run_and_goes_to_the_destination(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "events.db")
    q.put_config(EventInvokeConfig("f", max_retry_attempts=2, max_event_age_s=60, on_failure="dlq"))
    q.put("f", b'{"n": 1}', "old", now=time.time() - 120)  # accepted two minutes ago
    calls: list[tuple[str, bytes]] = []

    async def invoke(function: str, body: bytes, request_id: str) -> Answer:
        calls.append((function, body))
        return Answer("ok")

    _run(q, invoke, until=lambda: bool(calls))
    assert [f for f, _ in calls] == ["dlq"]  # never "f"
    record = json.loads(calls[0][1])
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0 and record["requestPayload"] == {"n": 1}
    assert [(e["state"], e["attempts"]) for e in q.list("f")] == [("failed", 0)]


def test_throttles_are_not_attempts_and_function_errors_are(tmp_path: Path) -> None:
    q = EventQueue(tmp_path / "events.db")
    q.put_config(EventInvokeConfig("f", max_retry_attempts=1))
    q.put("f", b"{}", "e")
    answers = [Answer("throttled", http_status=429), Answer("throttled", http_status=429),
               Answer("error", b'{"errorMessage": "boom"}', function_error=True),
               Answer("error", b'{"errorMessage": "boom again"}', function_error=True)]
    seen: list[str] = []

    async def invoke(function: str, body: bytes, request_id: str) -> Answer:
        a = answers[len(seen)]
        seen.append(a.status)
        return a

    _run(q, invoke, until=lambda: q.list("f")[0]["state"] == "failed", timeout_s=20)
    assert seen == ["throttled", "throttled", "error", "error"]
    (ev,) = q.list("f")
    assert (ev["attempts"], ev["throttles"]) == (2, 2)
    assert ev["last_error"].startswith("RetriesExhausted") and "boom again" in ev["last_error"]
