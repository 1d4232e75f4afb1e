"""The MMPP's Markov chain and arrivals, checked statistically.

Tolerances are derived, not tuned: counts are compared at 6 standard deviations (a false alarm
about once in 10^9 runs), and KS / chi-square tests fail only below p = 1e-6, so every test holds
for any seed with overwhelming probability. Each statistical check is paired with a case where
the same check must fail, so it is known to have teeth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from servelab.errors import WorkloadError
from servelab.workload import MMPPSpec, generate
from servelab.workload.mmpp import (
    generator_from_sojourn,
    simulate_path,
    stationary_distribution,
    validate_generator,
)

K_SIGMA = 6.0
P_MIN = 1e-6

# A 3-state chain with random jumps (exercises the sequential path walker) and a birth-death
# structure (state 0 <-> 1 <-> 2) whose stationary distribution is known in closed form.
Q3 = np.array([[-0.5, 0.5, 0.0], [0.3, -1.0, 0.7], [0.0, 2.0, -2.0]])
PI3 = np.array([1.0, 0.5 / 0.3, 0.5 / 0.3 * 0.7 / 2.0])
PI3 /= PI3.sum()


def asymptotic_variance(q: np.ndarray, f: np.ndarray) -> float:
    """lim Var(∫₀ᵀ f(X_t) dt) / T for a stationary chain, from the deviation matrix
    D = (Π - Q)⁻¹ - Π (an independent route to the answer: no simulation involved)."""
    pi = stationary_distribution(q)
    big_pi = np.tile(pi, (q.shape[0], 1))
    d = np.linalg.inv(big_pi - q) - big_pi
    return float(2.0 * (pi * f) @ d @ f)


def glued_gaps(arrivals, state: int) -> np.ndarray:
    """Inter-arrival gaps of one state's arrivals with the other states' time cut out.

    Given the path, arrivals in state i form a Poisson(λ_i) process on the union of the state-i
    intervals; gluing those intervals end to end makes it homogeneous, so the gaps are exactly
    i.i.d. exponential (gaps inside single visits would be biased short: visits cut long ones off).
    """
    switch_s, states = arrivals.state_path
    lengths = np.diff(np.append(switch_s, arrivals.duration_s))
    in_state = states == state
    glued_start = np.cumsum(np.where(in_state, lengths, 0.0)) - np.where(in_state, lengths, 0.0)
    seg = np.searchsorted(switch_s, arrivals.times_s, side="right") - 1
    mine = arrivals.states == state
    glued = glued_start[seg[mine]] + (arrivals.times_s[mine] - switch_s[seg[mine]])
    return np.diff(np.concatenate([[0.0], glued]))


# --- generator matrices -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "fragment"),
    [
        ([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]], "square"),
        ([], "square"),
        ([[-1.0, 1.0], [-0.5, 0.5]], "Q[1][0] = -0.5 is negative"),
        ([[-1.0, 1.0], [0.5, -0.4]], "row 1 sums to 0.1"),
        ([[-1.0, float("nan")], [1.0, -1.0]], "must be finite"),
        ([[0.0, 0.0], [0.0, 0.0]], "more than one stationary distribution"),
        ([["a", "b"], ["c", "d"]], "square matrix of numbers"),
    ],
)
def test_invalid_generator_is_rejected_with_the_offending_entry(q, fragment):
    with pytest.raises(WorkloadError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        validate_generator(q)


def test_generator_accepts_rounding_in_row_sums_and_repairs_the_diagonal():
    q = validate_generator([[-0.3, 0.1, 0.2], [0.1, -0.1 - 1e-12, 0.0], [0.5, 0.5, -1.0]])
    assert q[1, 1] == -0.1  # rebuilt from the off-diagonal entries
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-15)


def test_sojourn_times_build_the_generator_with_uniform_jumps_by_default():
    q = generator_from_sojourn([2.0, 4.0, 5.0])
    expected = np.array([[-0.5, 0.25, 0.25], [0.125, -0.25, 0.125], [0.1, 0.1, -0.2]])
    np.testing.assert_allclose(q, expected)
    assert np.allclose(q.sum(axis=1), 0.0)


def test_jump_probabilities_steer_the_generator():
    q = generator_from_sojourn([1.0, 2.0, 4.0], [[0, 0.9, 0.1], [1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(q[0], [-1.0, 0.9, 0.1])
    np.testing.assert_allclose(q[2], [0.0, 0.25, -0.25])


@pytest.mark.parametrize(
    ("jump", "fragment"),
    [
        ([[0, 1], [1, 0], [0, 0]], "must be 2 x 2"),
        ([[0, 1], [0.5, 0.5]], r"jump\[1\]\[1\] = 0.5"),
        ([[0, 0.9], [1, 0]], "row 0 sums to 0.9"),
        ([[0, -1], [1, 0]], "must be finite and >= 0"),
    ],
)
def test_invalid_jump_matrix_is_rejected(jump, fragment):
    with pytest.raises(WorkloadError, match=fragment):
        generator_from_sojourn([1.0, 2.0], jump)


def test_stationary_distribution_solves_pi_q_equals_zero():
    pi = stationary_distribution(Q3)
    np.testing.assert_allclose(pi, PI3, rtol=1e-12)
    np.testing.assert_allclose(pi @ Q3, 0.0, atol=1e-12)
    # Two states: pi_0 = beta / (alpha + beta), the textbook result.
    np.testing.assert_allclose(
        stationary_distribution(generator_from_sojourn([10.0, 2.0])), [10 / 12, 2 / 12]
    )


def test_a_transient_state_gets_zero_stationary_weight():
    q = validate_generator([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [0.0, 1.0, -1.0]])
    np.testing.assert_allclose(stationary_distribution(q), [0.0, 0.5, 0.5], atol=1e-12)


# --- state paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [Q3, generator_from_sojourn([3.0, 1.0]), generator_from_sojourn([1.0, 0.5, 0.2, 2.0])],
    ids=["birth-death-3", "two-state", "four-state-uniform"],
)
def test_time_share_of_each_state_matches_the_stationary_distribution(q):
    duration_s = 20_000.0
    switch_s, states = simulate_path(q, duration_s, np.random.default_rng())
    lengths = np.diff(np.append(switch_s, duration_s))
    share = np.bincount(states, weights=lengths, minlength=q.shape[0]) / duration_s
    pi = stationary_distribution(q)
    for i in range(q.shape[0]):
        sd = np.sqrt(asymptotic_variance(q, np.eye(q.shape[0])[i]) / duration_s)
        assert abs(share[i] - pi[i]) < K_SIGMA * sd, (i, share[i], pi[i], sd)


def test_state_path_is_a_valid_chain_path():
    switch_s, states = simulate_path(Q3, 5_000.0, np.random.default_rng())
    assert switch_s[0] == 0.0 and np.all(np.diff(switch_s) > 0) and switch_s[-1] < 5_000.0
    assert np.all(states[1:] != states[:-1])  # every switch changes state
    allowed = Q3 > 0
    assert np.all(allowed[states[:-1], states[1:]])  # never 0 -> 2 or 2 -> 0 in a birth-death chain


def test_sojourns_are_exponential_with_the_exit_rate():
    switch_s, states = simulate_path(Q3, 20_000.0, np.random.default_rng())
    sojourn = np.diff(switch_s)  # complete visits only (the last is cut by the horizon)
    for i in range(3):
        d = sojourn[states[:-1] == i]
        assert stats.kstest(d, "expon", args=(0, 1 / -Q3[i, i])).pvalue > P_MIN
    # The same test sees a 20 % error in an exit rate (state 1 has ~10k visits).
    d1 = sojourn[states[:-1] == 1]
    assert stats.kstest(d1, "expon", args=(0, 1.2 / -Q3[1, 1])).pvalue < P_MIN


def test_initial_state_is_drawn_from_the_stationary_distribution():
    rng = np.random.default_rng()
    n = 4000
    first = np.array([simulate_path(Q3, 1e-6, rng)[1][0] for _ in range(n)])
    freq = np.bincount(first, minlength=3) / n
    sd = np.sqrt(PI3 * (1 - PI3) / n)
    assert np.all(np.abs(freq - PI3) < K_SIGMA * sd), (freq, PI3)


def test_absorbing_state_ends_the_path():
    q = validate_generator([[-1.0, 1.0], [0.0, 0.0]])
    switch_s, states = simulate_path(q, 1e6, np.random.default_rng(3), initial_state=0)
    assert states.tolist() == [0, 1] and switch_s[0] == 0.0


# --- MMPP arrivals ------------------------------------------------------------------------


def bursty_spec(**kw) -> MMPPSpec:
    return MMPPSpec(rates_rps=(5.0, 50.0, 200.0), q_per_s=tuple(map(tuple, Q3)), **kw)


def test_each_state_delivers_its_own_poisson_rate():
    a = generate(bursty_spec(), duration_s=3_000.0, seed=None)
    in_state_s = a.time_in_state_s(3)
    counts = np.bincount(a.states, minlength=3)
    for i, rate in enumerate((5.0, 50.0, 200.0)):
        expected = rate * in_state_s[i]  # given the path, the count is Poisson(rate x time)
        assert abs(counts[i] - expected) < K_SIGMA * np.sqrt(expected), (i, counts[i], expected)


def test_inter_arrivals_within_a_state_are_exponential_with_that_states_rate():
    a = generate(bursty_spec(), duration_s=3_000.0)
    for i, rate in enumerate((5.0, 50.0, 200.0)):
        gaps = glued_gaps(a, i)
        assert gaps.size > 1000
        assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > P_MIN, i
    # Power check: a rate off by 5 % is rejected by the same test.
    assert stats.kstest(glued_gaps(a, 2), "expon", args=(0, 1 / 210.0)).pvalue < P_MIN


def test_long_run_rate_matches_the_stationary_mean():
    spec = bursty_spec()
    duration_s = 20_000.0
    n = len(generate(spec, duration_s=duration_s))
    rates = np.array(spec.rates_rps)
    # Poisson noise plus the variance of the integrated rate along the path.
    var = duration_s * (spec.mean_rate_rps + asymptotic_variance(Q3, rates))
    assert abs(n - spec.mean_rate_rps * duration_s) < K_SIGMA * np.sqrt(var)
    assert spec.mean_rate_rps == pytest.approx(PI3 @ rates)


def test_mmpp_counts_are_overdispersed_unlike_poisson():
    a = generate(bursty_spec(), duration_s=2_000.0)
    _, per_s = a.rate_series(1.0)
    assert per_s.var() / per_s.mean() > 10  # regime switches: Var/mean >> 1 (Poisson: 1)


def test_per_arrival_states_match_the_state_path():
    a = generate(bursty_spec(), duration_s=500.0, seed=5)
    switch_s, states = a.state_path
    at = states[np.searchsorted(switch_s, a.times_s, side="right") - 1]
    np.testing.assert_array_equal(a.states, at)
    assert a.states.dtype == np.int8


def test_initial_state_setting_is_honoured():
    a = generate(bursty_spec(initial_state=2), duration_s=1.0, seed=1)
    assert a.state_path[1][0] == 2


def test_two_state_sojourn_spec_alternates_states():
    spec = MMPPSpec(rates_rps=(1.0, 10.0), sojourn_s=(4.0, 1.0))
    a = generate(spec, duration_s=2_000.0)
    states = a.state_path[1]
    assert np.all(states[1:] != states[:-1]) and set(states.tolist()) == {0, 1}
    assert spec.stationary == pytest.approx([0.8, 0.2])


def test_one_state_generator_is_plain_poisson():
    spec = MMPPSpec(rates_rps=(30.0,), q_per_s=((0.0,),))
    a = generate(spec, duration_s=1_000.0)
    assert a.state_path[0].tolist() == [0.0] and np.all(a.states == 0)
    assert abs(len(a) - 30_000) < K_SIGMA * np.sqrt(30_000)


def test_state_with_zero_rate_produces_no_arrivals():
    spec = MMPPSpec(rates_rps=(0.0, 20.0), sojourn_s=(1.0, 1.0))
    a = generate(spec, duration_s=500.0, seed=2)
    assert np.all(a.states == 1) and len(a) > 1000


def test_absurdly_fast_switching_is_refused():
    spec = MMPPSpec(rates_rps=(1.0, 2.0), sojourn_s=(1e-6, 1e-6))
    with pytest.raises(WorkloadError, match="check that sojourn times are in seconds"):
        generate(spec, duration_s=1_000.0)
