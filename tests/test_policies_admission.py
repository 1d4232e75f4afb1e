"""Admission: every branch of admit(), the scale-from-zero buffer rule, and queue timeouts."""

from __future__ import annotations

import math
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.core.policies import (
    ADMISSION_MODES,
    EPSILON_S,
    AdmissionAction,
    AdmissionMode,
    AdmissionSnapshot,
    admit,
    queue_timed_out,
)
from servelab.errors import ConfigError, PlatformError

PROPERTY = settings(derandomize=True, database=None, deadline=None)


def snap(*, idle: int = 0, starting: int = 0, busy: int = 0, waiting: int = 0, max_concurrency: int = 4,
         max_queue: int = 2, mode: AdmissionMode = "throttle") -> AdmissionSnapshot:
    return AdmissionSnapshot(idle=idle, starting=starting, busy=busy, waiting=waiting,
                             max_concurrency=max_concurrency, max_queue=max_queue, mode=mode)


def test_modes_registry_matches_the_literal() -> None:
    assert ADMISSION_MODES == get_args(AdmissionMode) == ("throttle", "queue")


def test_idle_instance_gets_the_request() -> None:
    assert admit(snap(idle=1, busy=3)) == "dispatch"
    # Even at the concurrency limit: the idle instance counts inside the limit.
    assert admit(snap(idle=1, busy=3, max_concurrency=4)) == "dispatch"


def test_scale_from_zero_starts_an_instance_and_buffers_the_request() -> None:
    assert admit(snap(max_concurrency=1)) == "start"
    assert admit(snap(max_concurrency=1, mode="queue", max_queue=0)) == "start"


def test_busy_instances_below_the_limit_start_another() -> None:
    assert admit(snap(busy=3, max_concurrency=4)) == "start"


def test_request_waits_for_an_unclaimed_starting_instance_instead_of_starting_another() -> None:
    # A pre-warm is loading (starting=1) and nobody waits for it yet: the request takes it.
    assert admit(snap(starting=1, waiting=0)) == "queue"
    # Also in throttle mode at the limit: waiting for a start is a buffer, never a 429.
    assert admit(snap(starting=1, busy=3, waiting=0, max_concurrency=4, mode="throttle")) == "queue"


def test_every_starting_instance_claimed_means_start_another() -> None:
    # Two starts in flight, two requests already waiting for them: the third needs its own.
    assert admit(snap(starting=2, waiting=2)) == "start"


def test_at_the_limit_in_throttle_mode_throttles() -> None:
    assert admit(snap(busy=4, max_concurrency=4, mode="throttle")) == "throttle"
    assert admit(snap(starting=2, busy=2, waiting=2, max_concurrency=4, mode="throttle")) == "throttle"


def test_at_the_limit_in_queue_mode_queues_until_the_queue_is_full() -> None:
    assert admit(snap(busy=4, waiting=0, max_concurrency=4, max_queue=2, mode="queue")) == "queue"
    assert admit(snap(busy=4, waiting=1, max_concurrency=4, max_queue=2, mode="queue")) == "queue"
    assert admit(snap(busy=4, waiting=2, max_concurrency=4, max_queue=2, mode="queue")) == "throttle"


def test_requests_waiting_for_starts_do_not_use_up_the_queue() -> None:
    # 2 of the 3 waiting requests wait for the 2 starting instances; only 1 waits for a busy one.
    at_limit = {"starting": 2, "busy": 2, "max_concurrency": 4, "max_queue": 2, "mode": "queue"}
    assert admit(snap(waiting=3, **at_limit)) == "queue"
    assert admit(snap(waiting=4, **at_limit)) == "throttle"


def test_zero_max_queue_in_queue_mode_behaves_like_throttle_at_the_limit() -> None:
    assert admit(snap(busy=4, max_concurrency=4, max_queue=0, mode="queue")) == "throttle"


def test_zero_concurrency_never_starts() -> None:
    assert admit(snap(max_concurrency=0)) == "throttle"


@pytest.mark.parametrize(
    ("fields", "error", "fragment"),
    [
        ({"mode": "drop"}, ConfigError, "choose one of: throttle, queue"),
        ({"max_concurrency": -1}, ConfigError, "max_concurrency"),
        ({"max_queue": -1}, ConfigError, "max_queue"),
        ({"busy": -1}, PlatformError, "negative"),
    ],
)
def test_invalid_snapshots_are_rejected_with_a_reason(fields, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        snap(**fields)


@PROPERTY
@given(idle=st.integers(0, 5), starting=st.integers(0, 5), busy=st.integers(0, 5), waiting=st.integers(0, 10),
       max_concurrency=st.integers(0, 8), max_queue=st.integers(0, 5), mode=st.sampled_from(ADMISSION_MODES))
def test_admit_never_exceeds_the_limits(idle, starting, busy, waiting, max_concurrency, max_queue,
                                        mode) -> None:
    s = AdmissionSnapshot(idle=idle, starting=starting, busy=busy, waiting=waiting,
                          max_concurrency=max_concurrency, max_queue=max_queue, mode=mode)
    action: AdmissionAction = admit(s)
    if action == "start":
        assert s.instances < max_concurrency  # a start never passes the concurrency limit
        assert starting <= waiting  # and never happens while a starting instance is unclaimed
    if action == "dispatch":
        assert idle > 0
    if action == "throttle":
        assert idle == 0 and starting <= waiting  # never 429 while an instance is free or coming
        assert s.instances >= max_concurrency
    if action == "queue" and starting <= waiting:
        assert mode == "queue" and waiting - starting < max_queue


def test_queue_times_out_at_exactly_max_wait() -> None:
    assert queue_timed_out(enqueued_s=10.0, now_s=15.0, max_wait_s=5.0)
    assert queue_timed_out(enqueued_s=0.1, now_s=0.3, max_wait_s=0.2)  # float noise within EPSILON_S
    assert not queue_timed_out(enqueued_s=10.0, now_s=15.0 - 10 * EPSILON_S, max_wait_s=5.0)


def test_infinite_max_wait_never_times_out() -> None:
    assert not queue_timed_out(enqueued_s=0.0, now_s=1e12, max_wait_s=math.inf)
