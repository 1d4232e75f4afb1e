"""Batching: the three properties BentoML / MLServer users reported broken, tested directly.

1. a batch never exceeds max_batch_size;
2. a lone request never waits past max_wait_s;
3. every request is taken exactly once (checked with a tiny simulated queue loop that drives
   decide_batch over event times — a virtual clock, no sleeps).
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.core.policies import EPSILON_S, BatchDecision, decide_batch
from servelab.errors import ConfigError

PROPERTY = settings(derandomize=True, database=None, deadline=None)


def test_empty_queue_takes_nothing_and_has_nothing_to_time() -> None:
    assert decide_batch(queued=0, oldest_enqueued_s=None, now_s=3.0, max_batch_size=8,
                        max_wait_s=0.01) == BatchDecision(take=0, wait_s=math.inf)


def test_max_batch_size_one_takes_each_request_at_once() -> None:
    assert decide_batch(queued=5, oldest_enqueued_s=3.0, now_s=3.0, max_batch_size=1,
                        max_wait_s=10.0) == BatchDecision(take=1, wait_s=0.0)


def test_full_batch_runs_at_once_and_never_exceeds_max() -> None:
    assert decide_batch(queued=8, oldest_enqueued_s=1.0, now_s=1.0, max_batch_size=8,
                        max_wait_s=10.0) == BatchDecision(take=8, wait_s=0.0)
    assert decide_batch(queued=50, oldest_enqueued_s=1.0, now_s=1.0, max_batch_size=8,
                        max_wait_s=10.0) == BatchDecision(take=8, wait_s=0.0)


def test_partial_batch_waits_only_for_the_rest_of_the_oldest_requests_budget() -> None:
    decision = decide_batch(queued=3, oldest_enqueued_s=1.0, now_s=1.004, max_batch_size=8, max_wait_s=0.01)
    assert decision.take == 0
    assert decision.wait_s == pytest.approx(0.006)


def test_lone_request_runs_when_its_max_wait_is_up() -> None:
    assert decide_batch(queued=1, oldest_enqueued_s=1.0, now_s=1.01, max_batch_size=8,
                        max_wait_s=0.01) == BatchDecision(take=1, wait_s=0.0)
    # Late callers (the timer fired late) take it at once too.
    assert decide_batch(queued=1, oldest_enqueued_s=1.0, now_s=2.0, max_batch_size=8,
                        max_wait_s=0.01) == BatchDecision(take=1, wait_s=0.0)


def test_zero_max_wait_never_waits() -> None:
    assert decide_batch(queued=2, oldest_enqueued_s=5.0, now_s=5.0, max_batch_size=8,
                        max_wait_s=0.0) == BatchDecision(take=2, wait_s=0.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_s": -1.0}, "max_wait_s"),
        ({"max_wait_s": math.nan}, "max_wait_s"),
        ({"queued": -1}, "queued"),
        ({"oldest_enqueued_s": None}, "oldest_enqueued_s"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs, fragment) -> None:
    args = {"queued": 2, "oldest_enqueued_s": 0.0, "now_s": 0.0, "max_batch_size": 4, "max_wait_s": 0.1}
    with pytest.raises(ConfigError, match=fragment):
        decide_batch(**(args | kwargs))


@PROPERTY
@given(queued=st.integers(0, 100), age_s=st.floats(0, 10), max_batch_size=st.integers(1, 32),
       max_wait_s=st.floats(0, 5))
def test_decision_never_exceeds_limits_or_deadline(queued, age_s, max_batch_size, max_wait_s) -> None:
    now_s = 100.0
    oldest = now_s - age_s if queued else None
    d = decide_batch(queued=queued, oldest_enqueued_s=oldest, now_s=now_s, max_batch_size=max_batch_size,
                     max_wait_s=max_wait_s)
    assert 0 <= d.take <= min(queued, max_batch_size)
    if queued == 0:
        assert d == BatchDecision(take=0, wait_s=math.inf)
    elif d.take == 0:
        assert d.wait_s > EPSILON_S  # a timer that moves the clock
        assert now_s + d.wait_s <= oldest + max_wait_s + EPSILON_S  # never waits past the deadline
    else:
        assert d.wait_s == 0.0


# --- a tiny simulated queue: one or more workers, a virtual clock, an event heap ---------------


def simulate(arrivals_s: list[float], *, max_batch_size: int, max_wait_s: float, service_s: float,
             workers: int = 1) -> list[tuple[float, list[int]]]:
    """Drive decide_batch over event times; return the batches as (start time, request ids).

    Events: an arrival, a worker finishing, a batching timer running out. At every event the
    free workers ask decide_batch, as the platform's batcher does.
    """
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, payload)
    seq = 0
    for request_id, t in enumerate(arrivals_s):
        heapq.heappush(events, (t, seq, "arrive", request_id))
        seq += 1
    queue: list[tuple[int, float]] = []  # (request id, enqueued_s), oldest first
    free = workers
    batches: list[tuple[float, list[int]]] = []
    while events:
        now_s, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            queue.append((payload, now_s))
        elif kind == "done":
            free += 1
        while free > 0:
            d = decide_batch(queued=len(queue), oldest_enqueued_s=queue[0][1] if queue else None, now_s=now_s,
                             max_batch_size=max_batch_size, max_wait_s=max_wait_s)
            if d.take == 0:
                assert now_s + d.wait_s > now_s, f"asked to wait {d.wait_s} s: the clock would not move"
                if queue:
                    heapq.heappush(events, (now_s + d.wait_s, seq, "timer", 0))
                    seq += 1
                break
            taken, queue = queue[:d.take], queue[d.take:]
            batches.append((now_s, [request_id for request_id, _ in taken]))
            free -= 1
            heapq.heappush(events, (now_s + service_s, seq, "done", 0))
            seq += 1
    assert not queue, "requests left behind in the queue"
    return batches


def test_simulated_lone_request_waits_exactly_max_wait() -> None:
    batches = simulate([1.0], max_batch_size=8, max_wait_s=0.05, service_s=0.01)
    assert batches == [(pytest.approx(1.05), [0])]


def test_simulated_burst_is_cut_into_full_batches_then_a_timed_remainder() -> None:
    batches = simulate([0.0] * 10, max_batch_size=4, max_wait_s=0.05, service_s=0.001, workers=3)
    assert [ids for _, ids in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [t for t, _ in batches] == [0.0, 0.0, pytest.approx(0.05)]


arrival_lists = st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=40).map(sorted)


@PROPERTY
@given(arrivals=arrival_lists, max_batch_size=st.integers(1, 8), max_wait_s=st.floats(0, 0.2),
       service_s=st.floats(0, 0.3), workers=st.integers(1, 3))
def test_simulated_every_request_is_taken_exactly_once_in_batches_within_max(
        arrivals, max_batch_size, max_wait_s, service_s, workers) -> None:
    batches = simulate(arrivals, max_batch_size=max_batch_size, max_wait_s=max_wait_s, service_s=service_s,
                       workers=workers)
    taken = [request_id for _, ids in batches for request_id in ids]
    assert sorted(taken) == list(range(len(arrivals)))  # exactly once: none lost, none twice
    assert all(1 <= len(ids) <= max_batch_size for _, ids in batches)
    assert taken == sorted(taken)  # oldest first: FIFO order is kept


@PROPERTY
@given(arrivals=arrival_lists, max_batch_size=st.integers(1, 8), max_wait_s=st.floats(0, 0.2))
def test_simulated_no_request_waits_past_max_wait_when_a_worker_is_free(arrivals, max_batch_size,
                                                                        max_wait_s) -> None:
    # As many workers as requests and instant service: waiting is the batcher's doing alone.
    batches = simulate(arrivals, max_batch_size=max_batch_size, max_wait_s=max_wait_s, service_s=0.0,
                       workers=len(arrivals))
    for start_s, ids in batches:
        for request_id in ids:
            assert start_s - arrivals[request_id] <= max_wait_s + EPSILON_S
