"""Keep-alive policies: plain numbers in, decisions out; no clocks, no sleeps."""

from __future__ import annotations

import math
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.core.policies import (
    EPSILON_S,
    KEEPALIVE,
    FixedKeepAlive,
    HybridHistogramKeepAlive,
    KeepAliveDecision,
    KeepAliveKind,
    KeepAlivePolicy,
    make_keepalive,
    prewarm_at_s,
    should_reclaim,
)
from servelab.core.policies.keepalive import bin_count_cv
from servelab.errors import ConfigError

# Derandomized: the same examples every run, and no .hypothesis/ database in the tree.
PROPERTY = settings(derandomize=True, database=None, deadline=None)


def feed(policy: KeepAlivePolicy, times_s: list[float]):
    state = policy.initial_state()
    for t in times_s:
        state = policy.observe(state, now_s=t)
    return state


# --- registry -----------------------------------------------------------------------------------


def test_registry_covers_every_kind_and_builds_policies_that_follow_the_protocol() -> None:
    assert set(KEEPALIVE) == set(get_args(KeepAliveKind))
    for kind in KEEPALIVE:
        policy = make_keepalive(kind)
        assert policy.kind == kind
        assert isinstance(policy, KeepAlivePolicy)


def test_make_keepalive_unknown_kind_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="choose one of: fixed, hybrid"):
        make_keepalive("lru")  # type: ignore[arg-type]


def test_make_keepalive_unknown_parameter_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"keepalive_s.*allowed: keep_alive_s"):
        make_keepalive("fixed", keepalive_s=5)
    with pytest.raises(ConfigError, match=r"allowed: bin_s, range_s"):
        make_keepalive("hybrid", bins=60)


@pytest.mark.parametrize(
    ("kind", "params", "fragment"),
    [
        ("fixed", {"keep_alive_s": -1}, "keep_alive_s"),
        ("fixed", {"keep_alive_s": math.nan}, "keep_alive_s"),
        ("hybrid", {"bin_s": 0}, "bin_s"),
        ("hybrid", {"bin_s": 10, "range_s": 5}, "range_s"),
        ("hybrid", {"head_percentile": 99, "tail_percentile": 5}, "head_percentile"),
        ("hybrid", {"margin": 1.5}, "margin"),
        ("hybrid", {"min_samples": 0}, "min_samples"),
        ("hybrid", {"out_of_range_threshold": 0}, "out_of_range_threshold"),
        ("hybrid", {"forecast_window": 0}, "forecast_window"),
        ("hybrid", {"fallback_keep_alive_s": -5}, "fallback_keep_alive_s"),
    ],
)
def test_bad_parameter_values_raise_config_error_naming_the_parameter(kind, params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_keepalive(kind, **params)


# --- fixed --------------------------------------------------------------------------------------


def test_fixed_policy_never_prewarms_and_keeps_alive_its_setting() -> None:
    policy = FixedKeepAlive(keep_alive_s=600.0)
    state = feed(policy, [0.0, 5.0, 4000.0])
    assert policy.decide(state) == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=600.0)


def test_idle_instance_is_reclaimed_at_exactly_keep_alive_s() -> None:
    assert should_reclaim(idle_since_s=100.0, now_s=700.0, keep_alive_s=600.0, provisioned=False, busy=False)


def test_float_noise_below_epsilon_still_reclaims() -> None:
    # 0.1 + 0.2 != 0.3 in floats; an instance idle since 0.1 is due at 0.3 anyway.
    assert should_reclaim(idle_since_s=0.1, now_s=0.3, keep_alive_s=0.2, provisioned=False, busy=False)
    assert should_reclaim(idle_since_s=0.0, now_s=600.0 - EPSILON_S / 2, keep_alive_s=600.0,
                          provisioned=False, busy=False)


def test_idle_instance_is_kept_until_keep_alive_s() -> None:
    assert not should_reclaim(idle_since_s=100.0, now_s=699.999, keep_alive_s=600.0, provisioned=False,
                              busy=False)
    assert not should_reclaim(idle_since_s=0.0, now_s=600.0 - 10 * EPSILON_S, keep_alive_s=600.0,
                              provisioned=False, busy=False)


@pytest.mark.parametrize(("provisioned", "busy"), [(True, False), (False, True), (True, True)])
def test_busy_or_provisioned_instance_is_never_reclaimed(provisioned: bool, busy: bool) -> None:
    assert not should_reclaim(idle_since_s=0.0, now_s=1e9, keep_alive_s=0.0, provisioned=provisioned,
                              busy=busy)


def test_zero_keep_alive_reclaims_at_once_and_infinite_never() -> None:
    assert should_reclaim(idle_since_s=5.0, now_s=5.0, keep_alive_s=0.0, provisioned=False, busy=False)
    assert not should_reclaim(idle_since_s=0.0, now_s=1e12, keep_alive_s=math.inf, provisioned=False,
                              busy=False)


@PROPERTY
@given(idle_since=st.floats(0, 1e6), elapsed=st.floats(0, 1e4), keep=st.floats(0, 1e4))
def test_reclaim_is_exactly_elapsed_at_least_keep_alive(idle_since: float, elapsed: float,
                                                        keep: float) -> None:
    decision = should_reclaim(idle_since_s=idle_since, now_s=idle_since + elapsed, keep_alive_s=keep,
                              provisioned=False, busy=False)
    if elapsed >= keep + 1e-3:
        assert decision
    if elapsed <= keep - 1e-3:
        assert not decision


# --- hybrid histogram ---------------------------------------------------------------------------

# Seconds instead of the paper's minutes: 1 s bins over 120 s.
LOCAL = {"bin_s": 1.0, "range_s": 120.0}


def test_periodic_invocations_prewarm_just_before_the_period_and_keep_alive_a_little_past_it() -> None:
    period_s = 30.0
    policy = HybridHistogramKeepAlive(**LOCAL)
    state = feed(policy, [i * period_s for i in range(20)])
    assert policy.mode(state) == "histogram"
    decision = policy.decide(state)
    # head = tail = the [30, 31) bin; pre-warm at 30 * 0.9, keep until 31 * 1.1.
    assert decision.prewarm_after_s == pytest.approx(27.0)
    assert decision.prewarm_after_s + decision.keep_alive_s == pytest.approx(34.1)
    assert decision.prewarm_after_s < period_s < decision.prewarm_after_s + decision.keep_alive_s
    # The next invocation (at last + period) finds the pre-warmed instance still loaded.
    last_s = 19 * period_s
    loaded_at_s = prewarm_at_s(decision, last_invocation_s=last_s)
    assert loaded_at_s == pytest.approx(last_s + 27.0)
    assert not should_reclaim(idle_since_s=loaded_at_s, now_s=last_s + period_s,
                              keep_alive_s=decision.keep_alive_s, provisioned=False, busy=False)
    assert should_reclaim(idle_since_s=loaded_at_s, now_s=last_s + 34.1,
                          keep_alive_s=decision.keep_alive_s, provisioned=False, busy=False)


def test_paper_defaults_with_hourly_invocations_prewarm_at_54_minutes() -> None:
    policy = HybridHistogramKeepAlive()  # 1-minute bins, 4 hours
    decision = policy.decide(feed(policy, [i * 3600.0 for i in range(12)]))
    assert decision.prewarm_after_s == pytest.approx(0.9 * 60 * 60)
    assert decision.prewarm_after_s + decision.keep_alive_s == pytest.approx(1.1 * 61 * 60)


def test_frequent_invocations_keep_the_instance_loaded_until_the_tail() -> None:
    # ITs of 0.5 s land in bin 0: head 0, so no unload and pre-warm; keep 1 s * 1.1.
    policy = HybridHistogramKeepAlive(**LOCAL)
    decision = policy.decide(feed(policy, [i * 0.5 for i in range(30)]))
    assert decision == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=pytest.approx(1.1))


def test_head_and_tail_are_the_5th_and_99th_percentiles() -> None:
    # 100 ITs: 5 of 2 s, 94 of 10 s, 1 of 50 s. The 5th percentile is in the 2 s bin, the 99th
    # in the 10 s bin: the one 50 s outlier is beyond the tail and does not stretch keep-alive.
    its = [2.0] * 5 + [10.0] * 94 + [50.0]
    times = [0.0]
    for it in its:
        times.append(times[-1] + it)
    policy = HybridHistogramKeepAlive(**LOCAL)
    decision = policy.decide(feed(policy, times))
    assert decision.prewarm_after_s == pytest.approx(2.0 * 0.9)
    assert decision.prewarm_after_s + decision.keep_alive_s == pytest.approx(11.0 * 1.1)


def test_too_few_samples_fall_back_to_the_standard_keep_alive() -> None:
    policy = HybridHistogramKeepAlive(**LOCAL, min_samples=10)
    state = feed(policy, [i * 30.0 for i in range(10)])  # 9 ITs
    assert policy.mode(state) == "fallback"
    assert policy.decide(state) == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=120.0)  # range_s
    with_fixed = HybridHistogramKeepAlive(**LOCAL, fallback_keep_alive_s=600.0)
    assert with_fixed.decide(state) == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=600.0)
    # One more IT and the histogram takes over.
    state = policy.observe(state, now_s=300.0)
    assert policy.mode(state) == "histogram"


def test_first_invocation_alone_falls_back() -> None:
    policy = HybridHistogramKeepAlive()
    state = feed(policy, [42.0])
    assert state.samples == 0 and state.last_invocation_s == 42.0
    assert policy.decide(state) == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=4 * 3600.0)


def test_evenly_spread_idle_times_are_not_representative() -> None:
    # ITs 0.5, 1.5, ..., 119.5 s: one per bin, CV of bin counts 0 < 2 -> standard keep-alive.
    policy = HybridHistogramKeepAlive(**LOCAL)
    times = [0.0]
    for k in range(120):
        times.append(times[-1] + k + 0.5)
    state = feed(policy, times)
    assert bin_count_cv(state.bins, policy.n_bins) == pytest.approx(0.0)
    assert policy.mode(state) == "fallback"
    assert policy.decide(state).prewarm_after_s == 0.0


def test_cv_of_a_single_bin_is_sqrt_of_bins_minus_one() -> None:
    assert bin_count_cv(((30, 19),), 120) == pytest.approx(math.sqrt(119))
    assert bin_count_cv((), 120) == 0.0


def test_mostly_out_of_range_idle_times_use_the_forecast() -> None:
    # ITs of 100 s with a 60 s histogram: all out of range -> predict 100 s, window +-15%.
    policy = HybridHistogramKeepAlive(bin_s=1.0, range_s=60.0)
    state = feed(policy, [i * 100.0 for i in range(12)])
    assert state.out_of_range == 11 and state.in_range == 0
    assert policy.mode(state) == "forecast"
    decision = policy.decide(state)
    assert decision.prewarm_after_s == pytest.approx(85.0)
    assert decision.keep_alive_s == pytest.approx(30.0)


def test_forecast_follows_the_median_of_recent_out_of_range_idle_times() -> None:
    policy = HybridHistogramKeepAlive(bin_s=1.0, range_s=60.0, forecast_window=5)
    its = [1000.0] * 10 + [90.0, 110.0, 100.0, 95.0, 105.0]  # the workload changed pace
    times = [0.0]
    for it in its:
        times.append(times[-1] + it)
    state = feed(policy, times)
    assert state.recent_out_of_range_s == (90.0, 110.0, 100.0, 95.0, 105.0)
    decision = policy.decide(state)
    assert decision.prewarm_after_s == pytest.approx(100.0 * 0.85)
    assert decision.keep_alive_s == pytest.approx(100.0 * 0.30)


def test_a_few_out_of_range_idle_times_leave_the_histogram_in_charge() -> None:
    policy = HybridHistogramKeepAlive(**LOCAL)
    its = [30.0] * 20 + [500.0] * 3
    times = [0.0]
    for it in its:
        times.append(times[-1] + it)
    state = feed(policy, times)
    assert policy.mode(state) == "histogram"
    assert policy.decide(state).prewarm_after_s == pytest.approx(27.0)


def test_short_prewarm_windows_can_be_turned_into_keep_loaded() -> None:
    policy = HybridHistogramKeepAlive(**LOCAL, min_prewarm_s=5.0)
    decision = policy.decide(feed(policy, [i * 3.0 for i in range(20)]))  # head 3 s * 0.9 < 5 s
    assert decision == KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=pytest.approx(4.4))
    assert prewarm_at_s(decision, last_invocation_s=10.0) is None


def test_observe_returns_new_state_and_leaves_the_old_one_alone() -> None:
    policy = HybridHistogramKeepAlive(**LOCAL)
    first = policy.observe(policy.initial_state(), now_s=0.0)
    second = policy.observe(first, now_s=30.0)
    assert first.samples == 0 and second.samples == 1
    assert second.bins == ((30, 1),)


def test_out_of_order_invocation_counts_as_zero_idle_time() -> None:
    policy = HybridHistogramKeepAlive(**LOCAL)
    state = feed(policy, [10.0, 9.5])
    assert state.bins == ((0, 1),) and state.last_invocation_s == 10.0


@PROPERTY
@given(its=st.lists(st.floats(0, 500, allow_nan=False), max_size=60),
       bin_s=st.sampled_from([0.5, 1.0, 60.0]), range_s=st.sampled_from([60.0, 120.0, 14400.0]))
def test_hybrid_decision_is_always_finite_and_non_negative(its: list[float], bin_s: float,
                                                           range_s: float) -> None:
    policy = HybridHistogramKeepAlive(bin_s=bin_s, range_s=range_s, min_samples=3)
    times = [0.0]
    for it in its:
        times.append(times[-1] + it)
    state = feed(policy, times)
    assert state.samples == len(its)
    assert sum(count for _, count in state.bins) == state.in_range
    assert [b for b, _ in state.bins] == sorted({b for b, _ in state.bins})
    decision = policy.decide(state)
    assert 0.0 <= decision.prewarm_after_s < math.inf
    assert 0.0 <= decision.keep_alive_s < math.inf
