"""Arrival generation for every kind: statistics, determinism, and output invariants.

Tolerances: counts at 6 standard deviations, KS / chi-square at p > 1e-6 (see
test_workload_mmpp.py); seeds are left random where a statistic is tested, so the tests do not
lean on one lucky seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from servelab.errors import WorkloadError
from servelab.workload import (
    PRESETS,
    ConstantSpec,
    MMPPSpec,
    OnOffSpec,
    PoissonSpec,
    RampSpec,
    StepSpec,
    generate,
    load_spec,
)
from servelab.workload.arrivals import MAX_ARRIVALS

K_SIGMA = 6.0
P_MIN = 1e-6


def assert_poisson_count(n: int, expected: float) -> None:
    assert abs(n - expected) < K_SIGMA * np.sqrt(expected), (n, expected)


def rescaled_gaps(times: np.ndarray, cum_rate) -> np.ndarray:
    """Time-rescaling theorem: if arrivals are Poisson with rate λ(t), the gaps of Λ(tᵢ) are
    i.i.d. Exp(1). One test for any rate function."""
    return np.diff(np.concatenate([[0.0], cum_rate(times)]))


def dispersion_pvalue(counts: np.ndarray) -> float:
    """Two-sided p-value of the index-of-dispersion test: Σ(c - c̄)² / c̄ ~ χ²(n-1) for Poisson."""
    d = ((counts - counts.mean()) ** 2).sum() / counts.mean()
    cdf = stats.chi2.cdf(d, counts.size - 1)
    return float(2 * min(cdf, 1 - cdf))


# --- Poisson ------------------------------------------------------------------------------


def test_poisson_rate_interarrivals_and_dispersion():
    rate, duration_s = 80.0, 2_000.0
    a = generate(PoissonSpec(rate_rps=rate), duration_s=duration_s)
    assert_poisson_count(len(a), rate * duration_s)
    gaps = np.diff(np.concatenate([[0.0], a.times_s]))
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > P_MIN
    _, per_s = a.rate_series(1.0)
    assert dispersion_pvalue(per_s) > P_MIN


def test_the_statistical_checks_reject_non_poisson_arrivals():
    """Constant spacing has the right mean rate but is not Poisson: both checks must say so."""
    rate = 80.0
    a = generate(ConstantSpec(rate_rps=rate), duration_s=2_000.0)
    gaps = np.diff(a.times_s)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue < P_MIN
    _, per_s = a.rate_series(1.0)
    assert dispersion_pvalue(per_s) < P_MIN


def test_constant_rate_is_evenly_spaced_from_zero():
    a = generate(ConstantSpec(rate_rps=4.0), duration_s=10.0)
    np.testing.assert_allclose(a.times_s, np.arange(40) / 4.0)
    assert a.states is None and a.state_path is None


# --- non-stationary kinds -----------------------------------------------------------------


def test_step_rates_hold_for_their_steps_and_the_last_rate_holds_after():
    spec = StepSpec(rates_rps=(10.0, 100.0, 40.0), steps_s=(100.0, 50.0, 100.0))
    assert spec.duration_s == 250.0
    a = generate(spec, duration_s=400.0)
    edges = np.array([0.0, 100.0, 150.0, 250.0, 400.0])
    counts = np.diff(np.searchsorted(a.times_s, edges))
    for n, expected in zip(counts, [1_000, 5_000, 4_000, 6_000], strict=True):
        assert_poisson_count(int(n), expected)
    cum = lambda t: np.interp(t, edges, np.concatenate([[0.0], np.cumsum([1_000, 5_000, 4_000, 6_000])]))  # noqa: E731
    assert stats.kstest(rescaled_gaps(a.times_s, cum), "expon").pvalue > P_MIN


def test_step_pattern_repeats_when_asked():
    spec = StepSpec(rates_rps=(0.0, 50.0), steps_s=(5.0,), repeat=True, duration_s=100.0)
    a = generate(spec)
    assert np.all((a.times_s % 10.0) >= 5.0)  # silent in the first half of every period
    assert_poisson_count(len(a), 50.0 * 50.0)
    assert spec.mean_rate_rps == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("start", "end", "ramp_s"), [(0.0, 200.0, None), (150.0, 10.0, None), (20.0, 100.0, 300.0)]
)
def test_ramp_follows_its_linear_rate(start, end, ramp_s):
    duration_s = 600.0
    spec = RampSpec(start_rps=start, end_rps=end, ramp_s=ramp_s)
    a = generate(spec, duration_s=duration_s)
    ramp = ramp_s or duration_s
    slope = (end - start) / ramp

    def cum(t):
        t = np.asarray(t, dtype=float)
        on = np.minimum(t, ramp)
        return start * on + 0.5 * slope * on * on + end * np.maximum(t - ramp, 0.0)

    assert_poisson_count(len(a), float(cum(duration_s)))
    for lo, hi in [(0, 60), (270, 330), (540, 600)]:
        n = np.count_nonzero((a.times_s >= lo) & (a.times_s < hi))
        assert_poisson_count(n, float(cum(hi) - cum(lo)))
    assert stats.kstest(rescaled_gaps(a.times_s, cum), "expon").pvalue > P_MIN


def test_ramp_check_rejects_a_flat_rate_with_the_same_mean():
    a = generate(PoissonSpec(rate_rps=100.0), duration_s=600.0)
    cum = lambda t: 200.0 * t * t / (2 * 600.0)  # noqa: E731  (the 0 -> 200 rps ramp)
    assert stats.kstest(rescaled_gaps(a.times_s, cum), "expon").pvalue < P_MIN


def test_onoff_is_silent_when_off_and_poisson_when_on():
    spec = OnOffSpec(on_rate_rps=200.0, on_s=2.0, off_s=8.0)
    a = generate(spec, duration_s=2_000.0)
    assert np.all((a.times_s % 10.0) < 2.0)
    assert_poisson_count(len(a), 200.0 * 2.0 * 200)
    assert spec.mean_rate_rps == pytest.approx(40.0)
    # Glue the on periods together: a homogeneous Poisson process at 200 rps.
    glued = np.floor(a.times_s / 10.0) * 2.0 + a.times_s % 10.0
    assert stats.kstest(np.diff(np.concatenate([[0.0], glued])), "expon", args=(0, 1 / 200.0)).pvalue > P_MIN


def test_onoff_off_rate_is_used_between_bursts():
    a = generate(OnOffSpec(on_rate_rps=100.0, off_rate_rps=10.0, on_s=1.0, off_s=1.0), duration_s=1_000.0)
    off = np.count_nonzero((a.times_s % 2.0) >= 1.0)
    assert_poisson_count(off, 10.0 * 500.0)


# --- invariants for every kind ------------------------------------------------------------

SPECS = {
    "poisson": PoissonSpec(rate_rps=300.0),
    "constant": ConstantSpec(rate_rps=7.0),
    "mmpp": MMPPSpec(rates_rps=(1.0, 30.0, 400.0), sojourn_s=(2.0, 1.0, 0.2)),
    "step": StepSpec(rates_rps=(0.0, 5.0, 500.0, 0.0), steps_s=(0.7,), repeat=True),
    "ramp": RampSpec(start_rps=500.0, end_rps=0.0),
    "onoff": OnOffSpec(on_rate_rps=900.0, off_rate_rps=1.0, on_s=0.05, off_s=0.3),
}


@pytest.mark.parametrize("name", SPECS)
def test_times_are_sorted_float64_and_inside_the_run(name):
    a = generate(SPECS[name], duration_s=123.4)
    assert a.times_s.dtype == np.float64 and len(a) > 0
    assert np.all(np.diff(a.times_s) >= 0)
    assert a.times_s[0] >= 0.0 and a.times_s[-1] < 123.4
    assert a.duration_s == 123.4


@pytest.mark.parametrize("name", SPECS)
def test_same_seed_gives_identical_arrivals_and_another_seed_does_not(name):
    spec = SPECS[name]
    a, b, c = (generate(spec, duration_s=60.0, seed=s) for s in (11, 11, 12))
    np.testing.assert_array_equal(a.times_s, b.times_s)
    if spec.kind == "mmpp":
        np.testing.assert_array_equal(a.states, b.states)
        np.testing.assert_array_equal(a.state_path[0], b.state_path[0])
    if spec.kind != "constant":
        assert len(a) != len(c) or not np.array_equal(a.times_s, c.times_s)


def test_without_a_seed_the_drawn_seed_is_recorded_and_reproduces_the_run():
    spec = PRESETS["bursty"]
    first = generate(spec, duration_s=30.0)
    assert isinstance(first.seed, int)
    again = generate(spec, duration_s=30.0, seed=first.seed)
    np.testing.assert_array_equal(first.times_s, again.times_s)


def test_duration_defaults_to_the_spec_and_can_be_overridden():
    spec = PoissonSpec(rate_rps=10.0, duration_s=12.0)
    assert generate(spec, seed=1).duration_s == 12.0
    assert generate(spec, duration_s=3.0, seed=1).times_s.max() < 3.0


def test_many_short_pieces_stay_sorted():
    """Thousands of piece boundaries, each a chance for rounding to reorder neighbours."""
    spec = MMPPSpec(rates_rps=(1e4, 3e4), sojourn_s=(1e-3, 1e-3))
    a = generate(spec, duration_s=20.0)
    assert a.state_path[0].size > 10_000
    assert np.all(np.diff(a.times_s) >= 0) and a.times_s[-1] < 20.0


# --- rate series --------------------------------------------------------------------------


def test_rate_series_counts_every_arrival_once():
    a = generate(PoissonSpec(rate_rps=50.0), duration_s=10.5, seed=3)
    starts, rates = a.rate_series(1.0)
    np.testing.assert_array_equal(starts, np.arange(11.0))
    widths = np.append(np.ones(10), 0.5)
    assert round((rates * widths).sum()) == len(a)
    assert rates[3] == np.count_nonzero((a.times_s >= 3) & (a.times_s < 4))


def test_rate_series_rejects_a_zero_bin():
    with pytest.raises(WorkloadError, match="bin_s must be > 0"):
        generate(PoissonSpec(rate_rps=1.0), seed=1).rate_series(0.0)


# --- errors -------------------------------------------------------------------------------


def test_absurd_sizes_are_refused_before_allocating():
    with pytest.raises(WorkloadError, match="shorten the duration or lower the rate"):
        generate(PoissonSpec(rate_rps=1e6), duration_s=MAX_ARRIVALS)


@pytest.mark.parametrize("bad", [0.0, -5.0, float("inf"), float("nan")])
def test_bad_duration_is_refused(bad):
    with pytest.raises(WorkloadError, match="duration_s must be a finite number > 0"):
        generate(PoissonSpec(rate_rps=1.0), duration_s=bad)


def test_presets_generate_with_their_advertised_mean():
    for name, spec in PRESETS.items():
        a = generate(spec, duration_s=30.0, seed=0)
        assert a.state_path is not None, name
        assert len(a) > 0, name
    assert (
        load_spec("high").mean_rate_rps > load_spec("medium").mean_rate_rps > load_spec("low").mean_rate_rps
    )
