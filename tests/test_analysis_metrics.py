"""Analyzer numbers on hand-built record tables, and the ``servelab analyze`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from servelab.analysis.cli import app as analyze_app
from servelab.analysis.metrics import load_run, summarize, summarize_run
from servelab.analysis.timeseries import grouped_percentiles, per_second
from servelab.errors import ConfigError
from servelab.records import RecordWriter, to_table

OK_LAT = [10.0 * (i + 1) for i in range(10)]  # 10 … 100 ms


def hand_built() -> pa.Table:
    rows: list[dict] = []
    for i, lat in enumerate(OK_LAT):
        rows.append({"run_id": "r", "request_id": str(i), "scheduled_s": i * 0.1,
                     "completed_s": i * 0.1 + lat / 1e3, "latency_ms": lat, "send_lag_ms": 0.1,
                     "status": "ok", "instance_id": f"i{i % 3}"})
    # two cold starts with their init parts
    rows[0].update(cold=True, start_kind="cold", init_ms=30.0, init_process_ms=5.0, init_import_ms=10.0,
                   init_fetch_ms=3.0, init_load_ms=12.0, platform_ms=8.0, queue_ms=1.0, inference_ms=5.0)
    rows[1].update(cold=True, start_kind="cold", init_ms=50.0, init_process_ms=7.0, init_import_ms=20.0,
                   init_fetch_ms=5.0, init_load_ms=18.0, platform_ms=15.0, queue_ms=2.0, duration_ms=7.0)
    rows[2].update(cold=False, start_kind="warm")
    failures = [("error", "HTTP 500: boom"), ("error", "HTTP 500: boom"), ("error", "HTTP 502: bad"),
                ("throttled", "HTTP 429 TooManyRequestsException: Rate exceeded"), ("timeout", None)]
    for k, (status, err) in enumerate(failures):
        rows.append({"run_id": "r", "request_id": str(10 + k), "scheduled_s": 1.0 + k * 0.1,
                     "completed_s": 1.05 + k * 0.1, "latency_ms": 50.0, "send_lag_ms": 0.2,
                     "status": status, "error": err})
    return to_table(rows)


def test_summary_counts_success_ratio_and_latency_percentiles() -> None:
    s = summarize(hand_built(), window_s=1.5)
    assert s.count == 15 and s.by_status == {"ok": 10, "error": 3, "throttled": 1, "timeout": 1}
    assert s.success_ratio == pytest.approx(10 / 15)
    assert s.throttled == 1
    assert s.offered_rps == pytest.approx(10.0) and s.throughput_rps == pytest.approx(10 / 1.5)
    lat = np.array(OK_LAT)  # failures' 50 ms latencies are not in the percentiles
    for p in (50, 90, 95, 99):
        assert s.latency_ms[f"p{p}"] == pytest.approx(np.percentile(lat, p))
    assert s.latency_ms["mean"] == pytest.approx(55.0) and s.latency_ms["max"] == 100.0


def test_window_defaults_to_first_schedule_to_last_completion() -> None:
    s = summarize(hand_built())
    assert s.window_s == pytest.approx(1.45)  # 0.0 … last completion at 1.05 + 0.4


def test_throughput_counts_the_backlog_drained_after_the_schedule() -> None:
    t = hand_built()  # ok requests scheduled in [0, 0.9 s]; pretend the last one finished at 10 s
    done = t.column("completed_s").to_pylist()
    done[9] = 10.0
    late = t.set_column(t.schema.get_field_index("completed_s"), "completed_s", pa.array(done))
    s = summarize(late, window_s=1.5)
    assert s.offered_rps == pytest.approx(10.0)  # 15 requests asked for in 1.5 s …
    assert s.throughput_rps == pytest.approx(1.0)  # … 10 served by 10 s


def test_cold_starts_and_their_init_parts() -> None:
    s = summarize(hand_built())
    assert s.cold_starts == 2 and s.cold_ratio == pytest.approx(2 / 15)
    assert s.start_kinds == {"cold": 2, "warm": 1}
    assert s.init_ms["init_ms"] == {"mean": 40.0, "p50": 40.0, "n": 2}
    assert s.init_ms["init_import_ms"]["mean"] == 15.0
    assert s.init_ms["init_load_ms"]["p50"] == 15.0
    assert s.instances == 3


def test_errors_are_grouped_by_kind_most_frequent_first() -> None:
    s = summarize(hand_built(), top_k=2)
    assert s.top_errors == [{"status": "error", "error": "HTTP 500: boom", "count": 2},
                            {"status": "error", "error": "HTTP 502: bad", "count": 1}]
    assert len(summarize(hand_built()).top_errors) == 4


def test_latency_decomposition_client_platform_function() -> None:
    d = summarize(hand_built()).decomposition_ms
    assert d["client"] == {"mean": pytest.approx(3.5), "p50": pytest.approx(3.5), "n": 2}  # 10-8, 20-15
    assert d["platform"]["mean"] == pytest.approx((1 + 30 + 2 + 50) / 2)  # queue + init
    assert d["function"]["mean"] == pytest.approx(6.0)  # inference 5, else duration 7


def test_generator_that_fell_behind_is_flagged() -> None:
    t = hand_built()
    assert summarize(t).generator_behind is False
    lag = np.full(t.num_rows, 0.1)
    lag[:3] = 12.0  # 3 of 15 requests left 12 ms late: p99 is over 5 ms
    behind = summarize(t.set_column(t.schema.get_field_index("send_lag_ms"), "send_lag_ms", pa.array(lag)))
    assert behind.generator_behind is True and behind.send_lag_ms["max"] == 12.0


def test_empty_table_gives_empty_numbers_not_errors() -> None:
    s = summarize(to_table([]))
    assert s.count == 0 and s.success_ratio is None and s.latency_ms is None
    assert per_second(to_table([])).num_rows == 0


def test_grouped_percentiles_match_numpy_per_group() -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 20, 5000)
    keys[keys == 7] = 8  # an empty group
    values = rng.exponential(10, 5000)
    got = grouped_percentiles(keys, values, (50.0, 99.0), 20)
    for g in range(20):
        if g == 7:
            assert np.isnan(got[g]).all()
        else:
            assert got[g] == pytest.approx(np.percentile(values[keys == g], [50, 99]))


def test_per_second_series() -> None:
    rows = [
        {"run_id": "r", "request_id": "0", "scheduled_s": 0.1, "completed_s": 0.2, "latency_ms": 100.0,
         "status": "ok", "instance_id": "a", "cold": True},
        {"run_id": "r", "request_id": "1", "scheduled_s": 0.5, "completed_s": 1.1, "latency_ms": 600.0,
         "status": "ok", "instance_id": "b"},
        {"run_id": "r", "request_id": "2", "scheduled_s": 0.9, "completed_s": 1.2, "latency_ms": 300.0,
         "status": "ok", "instance_id": "b"},
        {"run_id": "r", "request_id": "3", "scheduled_s": 1.5, "completed_s": 2.5, "latency_ms": 1000.0,
         "status": "timeout"},
    ]
    ts = per_second(to_table(rows)).to_pydict()
    assert ts["t_s"] == [0.0, 1.0, 2.0]
    assert ts["arrivals"] == [3, 1, 0] and ts["arrival_rps"] == [3.0, 1.0, 0.0]
    assert ts["completions"] == [1, 2, 1] and ts["ok"] == [1, 2, 0] and ts["not_ok"] == [0, 0, 1]
    assert ts["latency_p50_ms"][0] == 300.0  # by scheduled second: 100, 600, 300
    assert ts["latency_p99_ms"][0] == pytest.approx(np.percentile([100, 600, 300], 99))
    assert np.isnan(ts["latency_p50_ms"][1])  # the only request of second 1 timed out
    assert ts["instances"] == [1, 1, 0] and ts["cold_starts"] == [1, 0, 0]
    half = per_second(to_table(rows), bin_s=0.5).to_pydict()
    assert half["arrivals"] == [1, 2, 0, 1, 0, 0]


def write_run(path: Path, table: pa.Table, config: dict | None = None) -> Path:
    with RecordWriter(path / "records") as w:
        w.extend(table.to_pylist())
    (path / "run.json").write_text(json.dumps({"run_id": path.name, "status": "completed",
                                               "config": config or {}}))
    return path


def test_load_run_reads_run_dirs_records_dirs_and_uses_the_run_duration(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", hand_built(), {"duration_s": 3.0})
    loaded = load_run(run)
    assert loaded.name == "a" and loaded.table.num_rows == 15 and loaded.window_s == 3.0
    assert summarize_run(loaded).offered_rps == pytest.approx(5.0)
    assert load_run(run / "records").table.num_rows == 15
    with pytest.raises(ConfigError, match="no such run"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no records found"):
        load_run(tmp_path / "empty")


def test_analyze_command_table_json_and_csv(tmp_path: Path) -> None:
    a = write_run(tmp_path / "run-a", hand_built())
    b = write_run(tmp_path / "run-b", hand_built().slice(0, 10))
    runner = CliRunner()
    res = runner.invoke(analyze_app, [str(a), str(b), "--csv", str(tmp_path / "s.csv"), "--timeseries"])
    assert res.exit_code == 0, res.output
    assert "run-a" in res.output and "run-b" in res.output and "success ratio" in res.output
    assert "HTTP 500: boom" in res.output and "per 1 s" in res.output
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("name,count,window_s")
    res = runner.invoke(analyze_app, ["--json", str(a), "--timeseries"])
    doc = json.loads(res.output)
    assert doc["runs"][0]["count"] == 15 and doc["runs"][0]["by_status"]["throttled"] == 1
    assert doc["timeseries"]["run-a"][0]["arrivals"] == 10


def test_analyze_command_says_what_is_wrong_with_a_path(tmp_path: Path) -> None:
    res = CliRunner().invoke(analyze_app, [str(tmp_path / "missing")])
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError) and "no such run" in str(res.exception)
