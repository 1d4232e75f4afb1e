"""FaasCache Greedy-Dual, scheduled and predictive pre-warm: plain numbers in, decisions out."""

from __future__ import annotations

import math

import pytest

from servelab.core import CoreConfig, FunctionCore, StartInstance, StopInstance
from servelab.core.policies import (
    Candidate,
    GreedyDualKeepAlive,
    HybridHistogramKeepAlive,
    ScheduledKeepAlive,
    gd_priority,
    keepalive_from,
    make_keepalive,
    pick_victims,
    predicted_window,
    scheduled_min_warm,
)
from servelab.core.policies.prewarm import in_daily_window, in_periodic_window
from servelab.errors import ConfigError


def test_gd_priority_is_clock_plus_frequency_times_cost_over_size() -> None:
    assert gd_priority(clock=10.0, frequency=4, cost_ms=500.0, size_mb=250.0) == 18.0
    with pytest.raises(ConfigError):
        gd_priority(clock=0.0, frequency=1, cost_ms=1.0, size_mb=0.0)


def test_pick_victims_evicts_lowest_priority_first_and_raises_the_clock() -> None:
    cands = [Candidate(("a", 0), 30.0, 100), Candidate(("b", 0), 10.0, 100), Candidate(("c", 0), 20.0, 100)]
    ev = pick_victims(cands, need_mb=150, free_mb=0, clock=5.0, order="greedy-dual")
    assert ev is not None and ev.victims == (("b", 0), ("c", 0)) and ev.clock == 20.0
    lru = pick_victims(cands, need_mb=150, free_mb=0, clock=5.0, order="lru")
    assert lru is not None and lru.victims == (("b", 0), ("c", 0)) and lru.clock == 5.0


def test_pick_victims_evicts_nothing_when_it_fits_or_cannot_fit() -> None:
    cands = [Candidate(("a", 0), 1.0, 100)]
    fits = pick_victims(cands, need_mb=100, free_mb=100, clock=0.0, order="greedy-dual")
    assert fits is not None and fits.victims == ()
    assert pick_victims(cands, need_mb=300, free_mb=100, clock=0.0, order="greedy-dual") is None


def test_greedy_dual_keeps_a_frequent_small_slow_function_over_a_rare_big_one() -> None:
    # hot: 100 invocations, 2 s init, 128 MB; cold: 2 invocations, 0.2 s init, 1024 MB
    hot = gd_priority(clock=0.0, frequency=100, cost_ms=2000.0, size_mb=128.0)
    rare = gd_priority(clock=0.0, frequency=2, cost_ms=200.0, size_mb=1024.0)
    ev = pick_victims([Candidate(("hot", 0), hot, 128), Candidate(("rare", 0), rare, 1024)], need_mb=512,
                      free_mb=0, clock=0.0, order="greedy-dual")
    assert ev is not None and ev.victims == (("rare", 0),)


def test_faascache_is_a_registered_keepalive_kind_that_never_expires_alone() -> None:
    p = make_keepalive("faascache")
    assert isinstance(p, GreedyDualKeepAlive) and p.decide(None).keep_alive_s == math.inf
    assert keepalive_from("faascache", 30.0).decide(None).keep_alive_s == 30.0
    with pytest.raises(ConfigError):
        GreedyDualKeepAlive(keep_alive_s=-1)


def test_daily_window_wraps_past_midnight() -> None:
    assert in_daily_window(8 * 3600, 8 * 3600, 18 * 3600)
    assert not in_daily_window(18 * 3600, 8 * 3600, 18 * 3600)
    assert in_daily_window(86400 + 23 * 3600, 22 * 3600, 6 * 3600)
    assert in_daily_window(5 * 3600, 22 * 3600, 6 * 3600)
    assert not in_daily_window(12 * 3600, 22 * 3600, 6 * 3600)


def test_periodic_window() -> None:
    assert not in_periodic_window(5.0, every_s=60, warm_for_s=10, phase_s=50)
    assert in_periodic_window(55.0, every_s=60, warm_for_s=10, phase_s=50)
    assert not in_periodic_window(61.0, every_s=60, warm_for_s=10, phase_s=50)
    assert in_periodic_window(111.0, every_s=60, warm_for_s=10, phase_s=50)


def test_scheduled_min_warm_and_config_errors() -> None:
    p = ScheduledKeepAlive(keep_alive_s=60, window_start_s=3600, window_end_s=7200, count=2)
    assert [scheduled_min_warm(p, t) for t in (0, 3600, 7199, 7200)] == [0, 2, 2, 0]
    with pytest.raises(ConfigError):
        ScheduledKeepAlive(window_start_s=10)
    with pytest.raises(ConfigError):
        ScheduledKeepAlive(every_s=0)
    assert make_keepalive("scheduled", every_s=60.0, count=1.0).count == 1


def test_core_keeps_the_scheduled_floor_warm_and_reclaims_after_the_window() -> None:
    ka = ScheduledKeepAlive(keep_alive_s=10, window_start_s=100, window_end_s=200, count=1)
    core = FunctionCore(CoreConfig(keepalive=ka))
    core.boot(0.0)
    assert core.tick(50.0) == []
    acts = core.tick(100.0)
    assert [type(a) for a in acts] == [StartInstance] and acts[0].kind == "prewarmed"  # type: ignore[union-attr]
    core.ready(0, 101.0)
    assert core.tick(150.0) == []  # idle 49 s > keep_alive 10 s, but the window holds it
    stops = core.tick(200.0)
    assert [type(a) for a in stops] == [StopInstance]


def test_predicted_window_is_the_hybrid_policys_prewarm() -> None:
    pol = HybridHistogramKeepAlive(bin_s=1.0, range_s=100.0, min_samples=5)
    state = pol.initial_state()
    assert predicted_window(pol, state) is None
    t = 0.0
    for _ in range(20):  # a strict 30 s period: every IT lands in bin 30
        state = pol.observe(state, now_s=t)
        t += 30.0
    w = predicted_window(pol, state)
    last = t - 30.0
    assert w is not None and w.mode == "histogram"
    assert w.load_at_s == pytest.approx(last + 30 * 0.9)
    assert w.until_s == pytest.approx(last + 31 * 1.1)


def test_max_held_requests_bounds_requests_waiting_for_a_start() -> None:
    core = FunctionCore(CoreConfig(max_instances=1, admission="queue", max_held_requests=2))
    core.boot(0.0)
    assert [type(a).__name__ for a in core.arrive(0, 0.0)] == ["StartInstance"]
    core.arrive(1, 0.1)  # held: the instance is starting
    refused = core.arrive(2, 0.2)
    assert [type(a).__name__ for a in refused] == ["Throttle"]
    assert core.counters.held_throttled == 1 and list(core.waiting) == [0, 1]
    with pytest.raises(ConfigError):
        CoreConfig(max_held_requests=0)
