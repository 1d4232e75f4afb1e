"""The Azure-2019-shaped generator, the multi-function simulator and ``servelab policies compare``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from servelab.cli import app
from servelab.errors import ConfigError
from servelab.sim.compare import PolicyRow, mark_pareto, parse_duration
from servelab.sim.host_engine import COLD, PENDING, parse_policy, run_host
from servelab.workload.azure_synth import (
    arrivals,
    burr12_quantile,
    durations_ms,
    synth_functions,
    write_azure_csv,
)
from servelab.workload.trace import select_counts

SAMPLE = Path(__file__).parent.parent / "examples" / "workloads" / "azure2019-synth-20fn.csv"


def test_burr_median_matches_the_fit() -> None:
    # median of Burr XII: lam * (2^(1/k) - 1)^(1/c)
    expect = 107.083 * (2 ** (1 / 0.221) - 1) ** (1 / 11.652)
    assert float(burr12_quantile(np.array([0.5]))[0]) == pytest.approx(expect)


def test_generator_hits_the_published_frequency_points() -> None:
    fns = synth_functions(4000, np.random.default_rng(0), max_rate_per_s=1e9)
    daily = np.array([f.daily_invocations for f in fns])
    assert np.mean(daily <= 24) == pytest.approx(0.45, abs=0.03)  # once per hour or less
    assert np.mean(daily <= 1440) == pytest.approx(0.81, abs=0.03)  # once per minute or less
    assert math.log10(daily.max() / daily.min()) > 6  # many orders of magnitude


def test_bursty_arrivals_keep_their_cv_and_timers_are_periodic() -> None:
    rng = np.random.default_rng(3)
    fns = synth_functions(200, rng, max_rate_per_s=1.0)
    bursty = next(f for f in fns if f.trigger == "http" and f.iat_cv > 2 and f.rate_per_s > 0.05)
    t = arrivals(bursty, 86400.0, rng, diurnal_amplitude=0.0)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(bursty.iat_cv, rel=0.25)
    timer = next(f for f in fns if f.trigger == "timer" and f.rate_per_s > 0.001)
    tt = arrivals(timer, 86400.0, rng)
    assert np.allclose(np.diff(tt), 1 / timer.rate_per_s)


def test_committed_sample_reads_with_the_azure_2019_reader() -> None:
    sel = select_counts(SAMPLE, top=20)
    assert sel.n_functions == 20 and len(sel.counts) == 1440 and sel.counts.sum() > 0


def test_written_csv_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    fns = synth_functions(3, rng)
    times = [arrivals(f, 3600.0, rng) for f in fns]
    write_azure_csv(fns, times, tmp_path / "t.csv")
    sel = select_counts(tmp_path / "t.csv", row=0)
    assert sel.counts.sum() == len(times[0])


def _workload(n: int = 30, duration_s: float = 1800.0, seed: int = 7):
    rng = np.random.default_rng(seed)
    fns = synth_functions(n, rng)
    times = [arrivals(f, duration_s, rng) for f in fns]
    durs = [durations_ms(f, len(t), rng) for f, t in zip(fns, times, strict=True)]
    return fns, times, durs


@pytest.mark.parametrize("policy", ["fixed:600", "fixed:0", "hybrid", "faascache", "layered"])
def test_every_request_is_served_within_a_tight_budget(policy: str) -> None:
    fns, times, durs = _workload()
    budget = max(f.memory_mb for f in fns) + 600.0
    run = run_host(fns, times, durs, parse_policy(policy), budget_mb=budget, horizon_s=1800.0,
                   rng=np.random.default_rng(0))
    assert not np.any(run.kind == PENDING), "a request was never served"
    assert run.peak_used_mb <= budget + 1e-6
    assert np.all(run.done_s >= run.arrival_s)


def test_a_bigger_budget_never_costs_more_cold_starts_for_fixed() -> None:
    fns, times, durs = _workload()
    colds = []
    for budget in (3000.0, 12000.0, 1e6):
        run = run_host(fns, times, durs, parse_policy("fixed:600"), budget_mb=budget, horizon_s=1800.0,
                       rng=np.random.default_rng(0))
        colds.append(int(np.sum(run.kind == COLD)))
    assert colds[0] >= colds[1] >= colds[2]


def test_layered_cold_starts_wait_less() -> None:
    fns, times, durs = _workload()
    big = 1e6
    waits = {}
    for p in ("fixed:60", "layered:60"):
        run = run_host(fns, times, durs, parse_policy(p), budget_mb=big, horizon_s=1800.0,
                       rng=np.random.default_rng(0))
        cold = run.kind == COLD
        waits[p] = float(np.mean(run.dispatch_s[cold] - run.arrival_s[cold]))
    assert waits["layered:60"] < waits["fixed:60"]


def test_policy_and_duration_parsing() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("30m") == 1800 and parse_duration("90") == 90
    with pytest.raises(ConfigError):
        parse_duration("two hours")
    with pytest.raises(ConfigError, match="unknown policy"):
        parse_policy("lru")
    assert parse_policy("faascache").order == "greedy-dual" and parse_policy("fixed:60").order == "lru"


def _row(name: str, cold: float, idle: float) -> PolicyRow:
    return PolicyRow(name, cold, idle, 0.0, 0.0, False, 0.0, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0)


def test_pareto_front() -> None:
    rows = [_row("a", 0.1, 100), _row("b", 0.2, 50), _row("c", 0.2, 120), _row("d", 0.1, 100)]
    mark_pareto(rows)
    assert [r.pareto for r in rows] == [True, True, False, True]


def test_cli_writes_the_table_and_the_figure(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["policies", "compare", "--functions", "20", "--duration", "20m",
                                   "--policies", "fixed:600,faascache,layered", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    with (tmp_path / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["policy"] for r in rows] == ["fixed:600", "faascache", "layered"]
    assert {"policy", "cold_start_rate", "idle_gb_s", "p99_ms", "cost_usd", "pareto"} <= set(rows[0])
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_cli_bad_policy_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["policies", "compare", "--functions", "5", "--duration", "1m",
                                   "--policies", "nope", "--out", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "unknown policy" in str(res.exception)
