"""The MMPP as the study parametrised it: a transition-probability matrix stepped every ``step_s``
seconds, and workloads sized by their number of requests. Statistical checks use fixed seeds and
tolerances of several standard errors, so they test the distribution without being flaky."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from servelab.errors import WorkloadError
from servelab.workload import MMPPSpec, generate, load_spec
from servelab.workload.mmpp import simulate_discrete_path, stationary_distribution_discrete, validate_transition

P = ((0.9, 0.1), (0.3, 0.7))  # stationary (0.75, 0.25); holding means 10 and 3.33 slots
RATES = (5.0, 50.0)


@pytest.mark.parametrize(("p", "fragment"), [
    ([[0.5, 0.5, 0.0]], "must be square"),
    ([[1.2, -0.2], [0.5, 0.5]], "transition[0][1] = -0.2"),
    ([[0.9, 0.2], [0.5, 0.5]], "row 0 sums to 1.1"),
    ([[1.0, 0.0], [0.0, 1.0]], "more than one stationary distribution"),
])
def test_invalid_transition_matrices_name_the_entry(p, fragment) -> None:
    with pytest.raises(WorkloadError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        validate_transition(p)


def test_stationary_distribution_solves_pi_p_equals_pi() -> None:
    pi = stationary_distribution_discrete(validate_transition(P))
    assert pi == pytest.approx([0.75, 0.25])
    spec = MMPPSpec(rates_rps=RATES, transition=P)
    assert spec.mean_rate_rps == pytest.approx(0.75 * 5 + 0.25 * 50)
    assert spec.slot_s == 1.0


def test_share_of_slots_in_each_state_matches_the_stationary_distribution() -> None:
    switch_s, states = simulate_discrete_path(validate_transition(P), 1.0, 100_000, np.random.default_rng(1))
    held = np.diff(np.append(switch_s, 100_000))
    share = np.bincount(states, weights=held, minlength=2) / 100_000
    # sd of the share ~ 0.003 here (the chain's lag-1 correlation is 0.6)
    assert share == pytest.approx([0.75, 0.25], abs=0.015)


def test_a_state_is_held_a_geometric_number_of_slots() -> None:
    step_s = 0.5
    switch_s, states = simulate_discrete_path(validate_transition(P), step_s, 200_000, np.random.default_rng(2))
    slots = np.round(np.diff(switch_s) / step_s).astype(int)
    for state, stay in ((0, 0.9), (1, 0.7)):
        n = slots[states[:-1] == state]
        assert n.mean() == pytest.approx(1 / (1 - stay), rel=0.05)
        k = np.arange(1, 16)
        expected = stats.geom.pmf(k, 1 - stay) * n.size
        observed = np.array([(n == x).sum() for x in k])
        tail_obs, tail_exp = (n > 15).sum(), stats.geom.sf(15, 1 - stay) * n.size
        chi2 = stats.chisquare(np.append(observed, tail_obs), np.append(expected, tail_exp))
        assert chi2.pvalue > 0.001


def test_arrivals_in_a_slot_are_poisson_at_that_states_rate() -> None:
    spec = MMPPSpec(rates_rps=RATES, transition=P, step_s=2.0)
    a = generate(spec, duration_s=40_000, seed=5)
    edges = np.arange(0.0, 40_000 + 2.0, 2.0)
    counts = np.histogram(a.times_s, bins=edges)[0]
    switch_s, states = a.state_path
    slot_state = states[np.searchsorted(switch_s, edges[:-1], side="right") - 1]
    for state, rate in enumerate(RATES):
        c = counts[slot_state == state]
        assert c.mean() == pytest.approx(rate * 2.0, rel=0.03)
        assert c.var() / c.mean() == pytest.approx(1.0, abs=0.1)  # Poisson: variance = mean
    assert len(a) / a.duration_s == pytest.approx(spec.mean_rate_rps, rel=0.05)
    assert np.array_equal(a.states, slot_state[np.searchsorted(edges, a.times_s, side="right") - 1])


def test_counts_over_many_slots_are_overdispersed_unlike_poisson() -> None:
    a = generate(MMPPSpec(rates_rps=RATES, transition=P), duration_s=20_000, seed=9)
    per_10s = np.histogram(a.times_s, bins=np.arange(0, 20_001, 10.0))[0]
    assert per_10s.var() / per_10s.mean() > 5


def test_sized_by_requests_gives_exactly_that_many_arrivals_reproducibly() -> None:
    spec = load_spec("mmpp:rates=5,50;transition=0.9,0.1/0.3,0.7;requests=2000")
    assert spec.duration_s == pytest.approx(2000 / spec.mean_rate_rps)  # the expected length, for planning
    a, b = generate(spec, seed=3), generate(spec, seed=3)
    assert len(a) == 2000 and np.array_equal(a.times_s, b.times_s)
    assert a.duration_s > a.times_s[-1] and a.duration_s == np.nextafter(a.times_s[-1], np.inf)
    assert np.array_equal(generate(spec, duration_s=1.0, seed=3).times_s, a.times_s)  # the count decides
    ends = [generate(spec, seed=s).times_s[-1] for s in range(40)]
    # mean time to the 2,000th request ~ 2000 / 16.25 s; sd of a 40-seed mean ~ 1.5%
    assert np.mean(ends) == pytest.approx(2000 / spec.mean_rate_rps, rel=0.06)


def test_the_continuous_forms_can_be_sized_by_requests_too() -> None:
    spec = load_spec("mmpp:rates=5,50;sojourn=10,2;requests=300")
    a = generate(spec, seed=0)
    assert len(a) == 300 and a.state_path[0][-1] < a.duration_s


@pytest.mark.parametrize(("text", "fragment"), [
    ("mmpp:rates=5,50;sojourn=10,2;step=1", "step_s is the slot length of a transition matrix"),
    ("mmpp:rates=5,50;transition=0.9,0.1/0.3,0.7;q=-1,1/1,-1", "got q_per_s and transition"),
    ("mmpp:rates=0,0;transition=0.9,0.1/0.3,0.7;requests=10", "requests needs a process with arrivals"),
    ("mmpp:rates=5,50,1;transition=0.9,0.1/0.3,0.7", "transition is 2 x 2 but rates_rps has 3"),
])
def test_discrete_spec_errors_say_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(WorkloadError, match=fragment):
        load_spec(text)


def test_inline_form_round_trips_and_scaling_keeps_the_chain() -> None:
    spec = load_spec("mmpp:rates=5,50;p=0.9,0.1/0.3,0.7;step=0.5;requests=100")
    assert load_spec(spec.to_inline()) == spec
    double = spec.scaled(2.0)
    assert double.rates_rps == (10.0, 100.0) and double.transition == spec.transition
    assert double.duration_s == pytest.approx(spec.duration_s / 2) and double.requests == 100
