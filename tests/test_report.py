"""``servelab report``: an experiment directory → HTML, PNG figures, markdown summary.

The experiments here are synthetic (records generated with known numbers, written in the
executor's layout with the real RecordWriter) so every figure in the report can be recomputed
independently with numpy; tests/test_report_real.py reports a real load-generator run.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from servelab.analysis.report import (
    CDF_PROBS,
    config_labels,
    load_experiment,
    pareto_front,
    write_report,
)
from servelab.analysis.report_cli import register
from servelab.analysis.report_render import fmt_ms, fmt_sr, fmt_usd, render_markdown
from servelab.billing.catalog import load_catalog
from servelab.errors import ConfigError
from servelab.records import RecordWriter

LAMBDA = "aws-lambda-x86-us-east-1"
EC2 = "aws-ec2-c5.large-us-east-1"

# --------------------------------------------------------------------------- fixtures


def synthetic_records(run_id: str, *, n: int = 400, rate_rps: float = 40.0, seed: int = 0,
                      base_ms: float = 20.0, memory_mb: int | None = 1024, cold_every: int = 100,
                      fail_every: int = 0, instances: int = 2, start_s: float = 0.0) -> list[dict[str, Any]]:
    """``n`` requests of a Poisson schedule; every ``cold_every``-th is a cold start with known
    init parts; every ``fail_every``-th (when > 0) is an error."""
    rng = np.random.default_rng(seed)
    scheduled = start_s + np.cumsum(rng.exponential(1.0 / rate_rps, n))
    rows = []
    for i in range(n):
        cold = cold_every > 0 and i % cold_every == 0
        parts = {"init_process_ms": 40.0 + i % 7, "init_import_ms": 120.0, "init_fetch_ms": 30.0,
                 "init_load_ms": 60.0} if cold else {}
        init = sum(parts.values()) + 5.0 if cold else None
        inference = float(base_ms * rng.lognormal(0.0, 0.3))
        latency = inference + 1.0 + (init or 0.0)
        failed = fail_every > 0 and i % fail_every == fail_every - 1
        rows.append({
            "run_id": run_id, "request_id": f"{run_id}-{i}", "target": "fn",
            "scheduled_s": float(scheduled[i]), "sent_s": float(scheduled[i]) + 1e-4,
            "completed_s": float(scheduled[i]) + latency / 1e3, "latency_ms": latency, "send_lag_ms": 0.1,
            "status": "error" if failed else "ok", "error": "boom" if failed else None,
            "start_kind": "cold" if cold else "warm", "cold": cold, "instance_id": f"i-{i % instances}",
            "platform_ms": latency - 1.0, "queue_ms": 0.0, "init_ms": init, **parts,
            "inference_ms": inference, "duration_ms": inference, "memory_mb": memory_mb, "batch_size": 1,
        })
    return rows


def write_run(root: Path, run_id: str, config: Mapping[str, Any], rows: list[dict[str, Any]], *,
              done: bool = True, config_json: bool = True, run_json: bool = True) -> Path:
    """One ``root/runs/<run_id>/`` directory as the executor writes it."""
    d = root / "runs" / run_id
    with RecordWriter(d / "records", flush_rows=250) as w:
        w.extend(rows)
    if run_json:
        (d / "run.json").write_text(json.dumps({
            "run_id": run_id, "status": "completed" if done else "interrupted",
            "config": {"target": {"kind": "lambda", "url": "http://127.0.0.1:1", "name": "fn"},
                       "requests": len(rows), "timeout_s": 30.0, **dict(config)},
        }))
    if config_json:
        (d / "config.json").write_text(json.dumps({**config, "run_id": run_id,
                                                   "machine": {"cpus": 2, "os": "linux"},
                                                   "versions": {"servelab": "0.1.0"}}))
    if done:
        (d / "DONE").write_text("")
    return d


def write_plan(root: Path, name: str, runs: list[tuple[str, Mapping[str, Any]]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps(
        {"name": name, "runs": [{"run_id": rid, "config": dict(cfg)} for rid, cfg in runs]}))


BASE = {"target": "serverless", "model": "tiny-mlp", "runtime": "onnxruntime", "batch_size": 1,
        "provisioned": 0, "workload": "poisson:rate=40", "price_entry": LAMBDA}
PLAN = [
    ("mem512-r0", {**BASE, "memory_mb": 512, "repetition": 0, "seed": 0}),
    ("mem512-r1", {**BASE, "memory_mb": 512, "repetition": 1, "seed": 1}),
    ("mem2048-r0", {**BASE, "memory_mb": 2048, "repetition": 0, "seed": 0}),
    ("server-r0", {**BASE, "target": "server", "memory_mb": 2048, "repetition": 0, "seed": 0,
                   "price_entry": EC2}),
]
SHAPES: dict[str, dict[str, Any]] = {
    "mem512-r0": {"base_ms": 40.0, "seed": 1, "fail_every": 50},
    "mem512-r1": {"base_ms": 40.0, "seed": 2},
    "mem2048-r0": {"base_ms": 12.0, "seed": 3},
    "server-r0": {"base_ms": 8.0, "seed": 4, "cold_every": 0},
}


def small_experiment(root: Path, *, n: int = 400) -> dict[str, list[dict[str, Any]]]:
    """Three configurations (512 MB twice, 2048 MB, an EC2 server); the rows written per run."""
    write_plan(root, "synthetic", PLAN)
    written = {}
    for rid, cfg in PLAN:
        written[rid] = synthetic_records(rid, n=n, memory_mb=cfg["memory_mb"], **SHAPES[rid])
        write_run(root, rid, cfg, written[rid])
    return written


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """The small experiment, reported once for the tests that only read the result."""
    root = tmp_path_factory.mktemp("exp")
    rows = small_experiment(root)
    write_report(root)
    return root, rows


class _Doc(HTMLParser):
    """Collects what the tests check: cell texts, image sources, every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.imgs: list[str] = []
        self.urls: list[str] = []
        self.open: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "td":
            self._cell = []
        if tag not in ("img", "meta", "br", "link"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(html_text: str) -> _Doc:
    doc = _Doc()
    doc.feed(html_text)
    doc.close()
    assert doc.open == [], f"unclosed tags: {doc.open}"
    return doc


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def ok_latencies(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([r["latency_ms"] for r in rows if r["status"] == "ok"])


def lambda_per_million(rows: list[dict[str, Any]], memory_mb: int) -> float:
    """AWS Lambda x86 us-east-1 from its published prices: $0.20 per 1M requests plus
    $0.0000166667 per GB-s, durations rounded up to 1 ms, and the init of each environment on the
    record that carries it (AWS bills INIT since 2025-08-01)."""
    billed_s = sum(math.ceil(r["duration_ms"] - 1e-9) + math.ceil((r.get("init_ms") or 0) - 1e-9)
                   for r in rows) / 1000
    total = len(rows) * 0.20 / 1e6 + billed_s * memory_mb / 1024 * 0.0000166667
    return total / len(rows) * 1e6


# ------------------------------------------------------------------------ the whole report


def test_report_html_is_self_contained_and_shows_each_run_with_its_numbers(experiment) -> None:
    root, rows = experiment
    html_text = (root / "report" / "report.html").read_text()
    doc = parse(html_text)
    for rid, written in rows.items():
        lat = ok_latencies(written)
        assert rid in doc.cells
        sr = sum(r["status"] == "ok" for r in written) / len(written)
        for value in (fmt_sr(sr), fmt_ms(lat.mean()), fmt_ms(np.percentile(lat, 50)),
                      fmt_ms(np.percentile(lat, 95)), fmt_ms(np.percentile(lat, 99))):
            assert value in doc.cells, (rid, value)
    assert fmt_sr(392 / 400) == "98.00%" and "98.00%" in doc.cells  # one error in every 50
    # offline: every image is embedded, nothing is fetched from anywhere
    assert doc.imgs and all(src.startswith("data:image/png;base64,") for src in doc.imgs)
    assert all(u.startswith(("data:", "#")) for u in doc.urls)
    assert "<script" not in html_text and "http://" not in html_text.split("<main>")[1].split("<details>")[0]
    # one timeline per run + CDF + cost + cold starts
    assert len(doc.imgs) == len(rows) + 3


def test_report_prices_each_run_with_its_catalog_entry(experiment) -> None:
    root, rows = experiment
    doc = parse((root / "report" / "report.html").read_text())
    expected = lambda_per_million(rows["mem2048-r0"], 2048)
    row = doc.cells[doc.cells.index("mem2048-r0"):][:11]
    assert row[-2] == fmt_usd(expected) and row[-1] == LAMBDA
    server = doc.cells[doc.cells.index("server-r0"):][:11]
    assert server[-1] == EC2 and server[-2] != "-"


def test_report_writes_a_nonempty_png_per_figure_and_the_markdown_summary(experiment) -> None:
    root, rows = experiment
    out = root / "report"
    names = ["latency_cdf.png", "cost_vs_p95.png", "cold_starts.png"] + [f"timeline-{r}.png" for r in rows]
    for name in names:
        width, height = png_size(out / name)
        assert width >= 800 and height >= 250, name
        assert (out / name).stat().st_size > 10_000, name
    md = (out / "summary.md").read_text()
    assert md.startswith("# servelab report: synthetic")
    assert all(f"| {rid} |" in md for rid in rows)
    assert "Pareto front" in md and str(out / "report.html") in md


def test_repetitions_pool_into_one_configuration_labelled_by_what_varies(tmp_path: Path) -> None:
    small_experiment(tmp_path, n=120)
    exp = load_experiment(tmp_path)
    labels = {g.label: [r.run_id for r in g.runs] for g in exp.groups}
    assert labels == {"serverless · 512 MB": ["mem512-r0", "mem512-r1"],
                      "serverless · 2048 MB": ["mem2048-r0"], "server · 2048 MB": ["server-r0"]}
    g512 = exp.groups[0]
    assert g512.requests == 240 and g512.success_ratio == pytest.approx((240 - 2) / 240)
    assert g512.p95_ms == pytest.approx(np.median([r.p95_ms for r in g512.runs]))
    assert g512.cold_starts == 4  # requests 0 and 100 of each repetition
    parts = g512.cold_part_means_ms()
    assert parts["init_import_ms"] == pytest.approx(120.0) and parts["init_load_ms"] == pytest.approx(60.0)


def test_pooled_cdf_matches_the_empirical_cdf_of_all_repetitions(tmp_path: Path) -> None:
    write_plan(tmp_path, "cdf", PLAN[:2])
    a = synthetic_records("a", n=3000, seed=1, base_ms=10)
    b = synthetic_records("b", n=1000, seed=2, base_ms=50)
    write_run(tmp_path, "mem512-r0", PLAN[0][1], a)
    write_run(tmp_path, "mem512-r1", PLAN[1][1], b)
    [group] = load_experiment(tmp_path).groups
    xs, cdf = group.latency_cdf()
    pooled = np.sort(np.concatenate([ok_latencies(a), ok_latencies(b)]))
    for x in np.percentile(pooled, [5, 25, 50, 75, 95, 99]):
        exact = np.searchsorted(pooled, x, side="right") / pooled.size
        assert np.interp(x, xs, cdf) == pytest.approx(exact, abs=0.01)


def test_pareto_front_keeps_points_nothing_beats_in_both() -> None:
    p95 = np.array([10.0, 20.0, 30.0, 25.0, 10.0, np.nan, 40.0])
    usd = np.array([5.0, 2.0, 1.0, 2.5, 5.0, 0.1, 1.0])
    # 3 is beaten by 1 (faster and cheaper); 4 ties 0 (neither beats the other); NaN never;
    # 6 costs what 2 costs but is slower
    assert pareto_front(p95, usd).tolist() == [True, True, True, False, True, False, False]
    assert pareto_front(np.array([]), np.array([])).tolist() == []


def test_configurations_below_min_sr_are_not_on_the_front(tmp_path: Path) -> None:
    small_experiment(tmp_path, n=200)
    exp = load_experiment(tmp_path, min_sr=0.999)  # mem512 lost 1 in 50 of one repetition
    by_label = {g.label: g for g in exp.groups}
    assert not by_label["serverless · 512 MB"].eligible and not by_label["serverless · 512 MB"].on_front
    assert [g.label for g in exp.front] == ["server · 2048 MB", "serverless · 2048 MB"]


def test_a_pareto_front_is_drawn_per_load_never_across_loads(tmp_path: Path) -> None:
    """A cheap run of a calm load must not push the configurations of a bursty load off the front."""
    calm = {**BASE, "memory_mb": 2048, "workload": "calm", "repetition": 0, "seed": 0}
    plan = [("calm-sl", calm), ("calm-srv", {**calm, "target": "server", "price_entry": EC2}),
            ("burst-sl", {**calm, "workload": "bursty"}),
            ("burst-srv", {**calm, "workload": "bursty", "target": "server", "price_entry": EC2})]
    write_plan(tmp_path, "loads", plan)
    shapes = {"calm-sl": 10.0, "calm-srv": 5.0, "burst-sl": 30.0, "burst-srv": 60.0}
    for rid, cfg in plan:
        write_run(tmp_path, rid, cfg, synthetic_records(rid, n=120, base_ms=shapes[rid], cold_every=0))
    files = write_report(tmp_path)
    exp = files.experiment
    assert exp.scenarios == ["calm", "bursty"]
    by_label = {g.label: g for g in exp.groups}
    assert by_label["serverless · calm"].scenario == "calm"
    # in each load both are on its front (server faster but dearer on calm; serverless faster and
    # cheaper on bursty beats the server there) — across loads, calm would have hidden bursty
    assert by_label["server · calm"].on_front and by_label["serverless · calm"].on_front
    assert by_label["serverless · bursty"].on_front and not by_label["server · bursty"].on_front
    assert "among runs of load calm" in files.summary_md and "among runs of load bursty" in files.summary_md
    from servelab.analysis.report_figures import cost_vs_p95, group_colors

    fig = cost_vs_p95(exp, group_colors(exp.groups))
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ["load: calm", "load: bursty"]


def test_labels_name_only_what_tells_configurations_apart() -> None:
    a = {"target": "serverless", "model": "m", "memory_mb": 512, "batch_size": 1, "seed": 0, "keep_alive_s": 5}
    b = {**a, "memory_mb": 1024, "seed": 1}
    c = {**a, "batch_size": 8, "keep_alive_s": 60}  # keep_alive_s changes only where batch_size does
    assert config_labels([a, b, c]) == ["512 MB · batch 1", "1024 MB · batch 1", "512 MB · batch 8"]
    assert config_labels([a]) == ["serverless · m"]
    # kind and price_entry follow the target; an axis a target does not have (None) is not named
    lam = {"target": "lambda", "kind": "serverless", "price_entry": "x", "memory_mb": 512, "repetition": 0}
    lam2 = {**lam, "memory_mb": 2048}
    srv = {"target": "cpu", "kind": "server", "price_entry": "y", "memory_mb": None, "repetition": 1}
    assert config_labels([lam, lam2, srv]) == ["lambda · 512 MB", "lambda · 2048 MB", "cpu"]


def test_the_executors_flat_plan_nested_config_and_markers_are_read(tmp_path: Path) -> None:
    """The layout servelab.bench.executor writes: flat plan entries under experiment.name, the
    config under config.json's "run", SKIPPED / FAILED markers, attempts moved aside."""
    def planned(rid: str, target: str, kind: str, memory_mb: int | None, entry: str, rep: int) -> dict:
        return {"index": rep, "run_id": rid, "target": target, "kind": kind, "model": "tiny-mlp",
                "runtime": "onnxruntime", "memory_mb": memory_mb, "batch_size": 1, "provisioned": 0,
                "workload": "steady", "workload_spec": "poisson:rate=40", "repetition": rep, "seed": rep,
                "duration_s": 10.0, "timeout_s": 30.0, "payloads": 8, "target_settings": {"machines": 2},
                "price_entry": entry, "estimate_s": 12.0, "skip_reason": None}

    runs = [planned("lam-a", "lambda", "serverless", 1024, LAMBDA, 0),
            planned("srv-a", "cpu", "server", None, EC2, 0),
            planned("gpu-a", "gpu", "gpu-server", None, EC2, 0),
            planned("bad-a", "lambda", "serverless", 128, LAMBDA, 1)]
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "plan.json").write_text(json.dumps({"experiment": {"name": "from-executor"}, "runs": runs}))
    for run in runs[:2]:
        d = write_run(tmp_path, run["run_id"], {}, synthetic_records(run["run_id"], n=80,
                                                                     memory_mb=run["memory_mb"]),
                      config_json=False)
        (d / "config.json").write_text(json.dumps({"run": run, "experiment": {"name": "from-executor"},
                                                   "machine": {"cpus": 2}, "target": {"url": "http://x"}}))
    for rid, marker, text in (("gpu-a", "SKIPPED", "no GPU on this machine"), ("bad-a", "FAILED", "OOM")):
        (tmp_path / "runs" / rid).mkdir(parents=True)
        (tmp_path / "runs" / rid / marker).write_text(text + "\n")
    write_run(tmp_path, "lam-a.partial-1", {}, synthetic_records("lam-a", n=10), done=False)

    exp = load_experiment(tmp_path)
    assert exp.name == "from-executor"
    assert [r.run_id for r in exp.runs] == ["lam-a", "srv-a"]
    assert [g.label for g in exp.groups] == ["lambda", "cpu"]
    assert {s.run_id: s.reason for s in exp.skipped} == {"gpu-a": "skipped: no GPU on this machine",
                                                         "bad-a": "failed: OOM"}
    srv = exp.runs[1]
    assert srv.config["kind"] == "server" and srv.machine == {"cpus": 2}
    assert srv.cost.entry_id == EC2 and any("priced as 2 instance(s)" in n for n in srv.cost.notes)


# ----------------------------------------------------------------- missing and broken files


def test_runs_without_plan_config_or_summary_are_reported_from_run_json(tmp_path: Path) -> None:
    for rid, cfg in PLAN[:2]:
        write_run(tmp_path, rid, cfg, synthetic_records(rid, n=100), config_json=False)
    files = write_report(tmp_path)
    exp = files.experiment
    assert [r.run_id for r in exp.runs] == ["mem512-r0", "mem512-r1"]
    assert exp.name == tmp_path.name
    assert all("configuration taken from run.json" in " ".join(r.notes) for r in exp.runs)
    assert exp.runs[0].config["memory_mb"] == 512  # the executor's config, passed into run.json
    assert files.html.is_file() and files.figures["latency_cdf"].is_file()


def test_records_only_runs_without_a_price_get_no_cost_figure_unless_given_an_entry(tmp_path: Path) -> None:
    rows = synthetic_records("r", n=100, memory_mb=1024)
    write_run(tmp_path, "r", {}, rows, config_json=False, run_json=False)  # records + DONE only
    files = write_report(tmp_path)
    assert "cost_vs_p95" not in files.figures
    assert any("no run has a price" in w for w in files.experiment.warnings)
    assert "No run has a price" in files.html.read_text()

    files = write_report(tmp_path, price_entry=LAMBDA)
    assert files.experiment.runs[0].per_million_usd == pytest.approx(lambda_per_million(rows, 1024))
    assert "cost_vs_p95" in files.figures


def test_a_price_in_summary_json_is_used_as_the_executor_recorded_it(tmp_path: Path) -> None:
    small_experiment(tmp_path, n=100)
    lines = [json.dumps({"run_id": "mem2048-r0", "cost": {"entry_id": "custom-entry", "catalog_date": "2026-01-01",
                                                         "total_usd": 1.0, "per_million_usd": 123.456}}),
             "not json", ""]
    (tmp_path / "summary.json").write_text("\n".join(lines))
    exp = load_experiment(tmp_path)
    run = next(r for r in exp.runs if r.run_id == "mem2048-r0")
    assert run.cost.source == "summary.json" and run.per_million_usd == 123.456
    assert any("summary.json:2" in w for w in exp.warnings)
    assert next(r for r in exp.runs if r.run_id == "mem512-r0").cost.source == "records"


def test_unfinished_runs_are_left_out_with_a_reason_or_included_as_partial(tmp_path: Path) -> None:
    small_experiment(tmp_path, n=100)
    (tmp_path / "runs" / "server-r0" / "DONE").unlink()
    run_json = tmp_path / "runs" / "server-r0" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "interrupted"}))
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["runs"].append({"run_id": "later-r0", "config": BASE})
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    exp = load_experiment(tmp_path)
    reasons = {s.run_id: s.reason for s in exp.skipped}
    assert "not finished" in reasons["server-r0"] and "interrupted" in reasons["server-r0"]
    assert "not started" in reasons["later-r0"]
    md = render_markdown(exp, {})
    assert "- server-r0: not finished" in md and "--partial" in md

    files = write_report(tmp_path, include_partial=True)
    assert "server-r0 (partial)" in parse(files.html.read_text()).cells
    assert not (tmp_path / "report" / "timeline-later-r0.png").exists()


def test_a_run_with_a_corrupt_records_part_is_left_out_and_said_so(tmp_path: Path) -> None:
    small_experiment(tmp_path, n=100)
    part = sorted((tmp_path / "runs" / "mem2048-r0" / "records").glob("part-*.parquet"))[0]
    part.write_bytes(b"not parquet at all")
    exp = load_experiment(tmp_path)
    assert "mem2048-r0" not in [r.run_id for r in exp.runs]
    assert "records unreadable" in next(s.reason for s in exp.skipped if s.run_id == "mem2048-r0")


def test_an_empty_directory_says_where_runs_are_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no runs to report: expected .*runs/<run_id>/ with records/"):
        load_experiment(tmp_path)
    write_plan(tmp_path, "p", PLAN)
    with pytest.raises(ConfigError, match=r"plan\.json lists 4 run"):
        load_experiment(tmp_path)
    with pytest.raises(ConfigError, match="no such experiment directory"):
        load_experiment(tmp_path / "nope")


def test_runs_with_no_successful_request_still_get_every_figure(tmp_path: Path) -> None:
    rows = synthetic_records("bad", n=60, fail_every=1)  # every request fails
    write_run(tmp_path, "bad", {**BASE, "memory_mb": 512}, rows)
    files = write_report(tmp_path)
    assert parse(files.html.read_text()).cells[:4] == ["bad", "serverless · tiny-mlp", "60", "0.00%"]
    assert files.experiment.front == []  # SR 0 is never on the front
    assert png_size(files.figures["timeline-bad"])[0] >= 800


def test_long_runs_are_binned_coarser_so_figures_stay_readable(tmp_path: Path) -> None:
    rows = synthetic_records("long", n=300, rate_rps=0.15)  # ~2000 s: 5 s bins
    write_run(tmp_path, "long", {**BASE, "memory_mb": 512}, rows)
    [run] = load_experiment(tmp_path, max_bins=600).runs
    assert run.bin_s == 5.0 and run.series.num_rows <= 700
    assert run.series.column("arrivals").to_numpy().sum() == 300


def test_quantiles_kept_per_run_reach_the_far_tail() -> None:
    assert CDF_PROBS[0] == 0.0 and CDF_PROBS[-1] == 1.0
    assert (1 - CDF_PROBS[(CDF_PROBS < 1)]).min() == pytest.approx(1e-5)


def test_prices_of_unknown_entries_are_a_note_not_a_crash(tmp_path: Path) -> None:
    write_run(tmp_path, "r", {**BASE, "memory_mb": 512, "price_entry": "aws-lamda"}, synthetic_records("r", n=50))
    [run] = load_experiment(tmp_path, catalog=load_catalog()).runs
    assert run.cost is None and any("did you mean" in n for n in run.notes)


# ----------------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, as the real servelab app is
        pass

    register(app)
    return app


def test_cli_prints_the_markdown_summary_and_writes_the_report(tmp_path: Path) -> None:
    for rid, cfg in PLAN[1:3]:
        write_run(tmp_path, rid, cfg, synthetic_records(rid, n=100))
    result = CliRunner().invoke(_app(), ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "| mem512-r1 |" in result.output and "Pareto front" in result.output
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "summary.md").is_file()

    quiet = CliRunner().invoke(_app(), ["report", str(tmp_path), "-o", str(tmp_path / "r"), "-q"])
    assert quiet.exit_code == 0 and quiet.output.strip() == str(tmp_path / "r" / "report.html")


def test_cli_raises_the_library_error_for_the_main_entry_point_to_print(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["report", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "no runs to report" in str(result.exception)
