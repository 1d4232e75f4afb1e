"""Bootstrap intervals, interval-aware ranking and the report's headline (servelab.analysis.stats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servelab.analysis.report import CDF_PROBS, load_experiment, write_report
from servelab.analysis.stats import Interval, RunSample, group_intervals, rank
from test_report import BASE, EC2, synthetic_records, write_plan, write_run


def sample(latency: np.ndarray, *, failed: int = 0, usd: float = float("nan")) -> RunSample:
    return RunSample(np.quantile(latency, CDF_PROBS), CDF_PROBS, ok=latency.size, count=latency.size + failed,
                     total_usd=usd)


def test_request_level_interval_matches_a_bootstrap_of_the_raw_latencies() -> None:
    rng = np.random.default_rng(7)
    lat = rng.lognormal(3.0, 0.6, 3000)
    got = group_intervals([sample(lat)], resamples=2000, seed=1)
    raw = lat[rng.integers(0, lat.size, (2000, lat.size))]
    for p in (50, 95, 99):
        lo, hi = np.quantile(np.percentile(raw, p, axis=1), [0.025, 0.975])
        iv = got.latency_ms[p]
        assert iv.point == pytest.approx(np.percentile(lat, p), rel=0.01)
        assert iv.low == pytest.approx(lo, rel=0.03) and iv.high == pytest.approx(hi, rel=0.03)
    assert got.runs == 1 and "one repetition" in got.notes[0]


def test_the_95_percent_interval_of_p95_covers_the_true_value_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    true_p95 = float(np.exp(3.0 + 0.5 * 1.6448536))  # lognormal(3, 0.5)
    covered = 0
    trials = 60
    for t in range(trials):
        runs = [sample(rng.lognormal(3.0, 0.5, 400)) for _ in range(3)]
        iv = group_intervals(runs, resamples=400, seed=t).latency_ms[95]
        covered += iv.low <= true_p95 <= iv.high
    assert covered / trials >= 0.85


def test_runs_that_disagree_widen_the_interval_beyond_what_their_requests_alone_say() -> None:
    rng = np.random.default_rng(3)
    alike = [sample(rng.lognormal(3.0, 0.5, 1000)) for _ in range(3)]
    apart = [sample(rng.lognormal(3.0 + shift, 0.5, 1000)) for shift in (-0.3, 0.0, 0.3)]
    width = {name: (iv := group_intervals(runs, seed=0).latency_ms[95]).high - iv.low
             for name, runs in (("alike", alike), ("apart", apart))}
    assert width["apart"] > 2 * width["alike"]


def test_success_ratio_and_cost_intervals_come_from_counts_and_run_bills() -> None:
    rng = np.random.default_rng(5)
    runs = [sample(rng.lognormal(3, 0.5, 900), failed=100, usd=u) for u in (1.0, 2.0, 3.0)]
    got = group_intervals(runs, seed=0)
    assert got.success_ratio.point == pytest.approx(0.9)
    assert 0.87 < got.success_ratio.low < 0.9 < got.success_ratio.high < 0.93
    # 6 USD over 3,000 requests; a resample of runs cannot cost less than the cheapest run or more than the dearest
    assert got.per_million_usd.point == pytest.approx(2000.0)
    assert 1000.0 <= got.per_million_usd.low < 2000.0 < got.per_million_usd.high <= 3000.0
    one = group_intervals(runs[:1], seed=0).per_million_usd
    assert one.low == one.point == one.high == pytest.approx(1000.0)  # 1 USD / 1,000 requests


def test_a_run_with_no_successful_request_has_no_latency_interval() -> None:
    empty = RunSample(np.empty(0), CDF_PROBS, ok=0, count=50, total_usd=0.1)
    got = group_intervals([empty], seed=0)
    assert not got.latency_ms[95].known and got.success_ratio.point == 0.0


def test_rank_separates_only_where_intervals_do_not_overlap() -> None:
    ranked = rank([("slow", Interval(50, 45, 55)), ("fast", Interval(10, 9, 11)),
                   ("fast-ish", Interval(11, 10.5, 12)), ("unknown", Interval.unknown())])
    by_name = {r.name: r for r in ranked}
    assert [r.name for r in ranked] == ["fast", "fast-ish", "slow", "unknown"]
    assert by_name["fast"].text == "tie (1)" and by_name["fast-ish"].text == "tie (1)"
    assert by_name["fast"].ties == ("fast-ish",)
    assert by_name["slow"].rank == 3 and by_name["slow"].text == "3"
    assert by_name["unknown"].text == "-"
    higher = rank([("a", Interval(0.9, 0.89, 0.91)), ("b", Interval(0.99, 0.98, 1.0))], lower_is_better=False)
    assert [r.name for r in higher] == ["b", "a"] and higher[0].rank == 1 and higher[1].rank == 2


# ------------------------------------------------------------------- the report's use of them


def two_targets(root: Path, *, server_ms: float, serverless_ms: float, reps: int = 2) -> None:
    plan = []
    for r in range(reps):
        plan.append((f"sl-r{r}", {**BASE, "memory_mb": 1024, "repetition": r, "seed": r}))
        plan.append((f"srv-r{r}", {**BASE, "target": "server", "memory_mb": 1024, "repetition": r, "seed": r,
                                   "price_entry": EC2}))
    write_plan(root, "two", plan)
    for rid, cfg in plan:
        base = server_ms if cfg["target"] == "server" else serverless_ms
        write_run(root, rid, cfg, synthetic_records(rid, n=300, base_ms=base, seed=hash(rid) % 1000, cold_every=0))


def test_headline_names_the_cheapest_configuration_that_meets_the_objective_and_the_ratio(tmp_path: Path) -> None:
    two_targets(tmp_path, server_ms=10.0, serverless_ms=20.0)
    exp = load_experiment(tmp_path, slo_p95_ms=60.0)
    [line] = exp.headlines()
    by = {g.label: g for g in exp.groups}
    sl, srv = by["serverless"], by["server"]
    ratio = srv.intervals.per_million_usd.point / sl.intervals.per_million_usd.point
    assert line.startswith("For this workload, serverless meets p95 <= 60.0 ms at $")
    assert f"{ratio:.3g} times cheaper than server" in line
    # the targets of one repetition saw the same arrivals: the paired count is given beside the intervals
    assert line.endswith("By repetition (the same arrivals), serverless's p95 was lower than server's in 0 of 2.")
    # an objective only the server meets: serverless is cheaper but misses it, and the headline says so
    [strict] = load_experiment(tmp_path, slo_p95_ms=20.0).headlines()
    assert strict.startswith("For this workload, server meets p95 <= 20.0 ms") and "misses it" in strict


def test_identical_configurations_tie_in_the_report_instead_of_being_ranked(tmp_path: Path) -> None:
    two_targets(tmp_path, server_ms=20.0, serverless_ms=20.0, reps=3)
    files = write_report(tmp_path)
    md = files.summary_md
    assert md.splitlines()[2].startswith("**For this workload,")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| server")}
    assert "tie (1)" in rows["serverless"].split("|")[-3] and "tie (1)" in rows["server"].split("|")[-3]
    html = files.html.read_text()
    assert "headline" in html and "tie (1)" in html


def test_the_comparison_the_executor_writes_has_intervals_ranks_and_the_headline(tmp_path: Path) -> None:
    import json

    from servelab.analysis.comparison import comparison, comparison_table

    two_targets(tmp_path, server_ms=10.0, serverless_ms=40.0, reps=2)
    doc = comparison(tmp_path, slo_p95_ms=200.0)
    by = {g["label"]: g for g in doc["groups"]}
    assert by["server"]["rank_p95"] == "1" and by["serverless"]["rank_p95"] == "2"  # far apart: ranked
    p95 = by["serverless"]["intervals"]["latency_ms"]["p95"]
    assert p95["low"] <= p95["point"] <= p95["high"] and by["serverless"]["intervals"]["runs"] == 2
    assert doc["headlines"][0].startswith("For this workload, ")
    json.dumps(doc)  # what comparison.json holds must be plain JSON
    assert comparison_table(doc).row_count == 2


def test_without_an_objective_the_headline_says_so_and_uses_the_cheapest_configurations_own_bound(
        tmp_path: Path) -> None:
    two_targets(tmp_path, server_ms=10.0, serverless_ms=20.0)
    [line] = load_experiment(tmp_path).headlines()
    sl = next(g for g in load_experiment(tmp_path).groups if g.label == "serverless")
    bound = sl.intervals.latency_ms[95].high
    assert line.startswith(f"For this workload, serverless meets p95 <= {bound:.1f} ms at $")
    assert "no objective set" in line


def test_configurations_whose_costs_overlap_are_a_cost_tie_not_a_ratio(tmp_path: Path) -> None:
    plan = [(f"{m}-r{r}", {**BASE, "memory_mb": m, "repetition": r, "seed": r}) for r in range(2) for m in (1024, 1025)]
    write_plan(tmp_path, "tie", plan)
    for rid, cfg in plan:
        write_run(tmp_path, rid, cfg, synthetic_records(rid, n=200, base_ms=20.0, seed=int(rid[-1]), cold_every=0,
                                                        memory_mb=cfg["memory_mb"]))
    [line] = load_experiment(tmp_path, slo_p95_ms=500.0).headlines()
    assert "meets p95 <= 500.0 ms at $" in line and "times cheaper" not in line
    assert line.count("a cost tie with") == 1 and "the cost intervals overlap" in line
