"""One accounting: a real run with cold starts, priced by every path — the executor's summary,
the report, ``servelab cost run``, the simulator's pricing and the pricing function itself —
gives the same number, includes init by AWS's current rule, and differs under the study era's
rule by exactly the init's GB-s."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.analysis.metrics import load_run
from servelab.analysis.report import load_experiment
from servelab.bench.executor import Executor
from servelab.bench.planner import make_plan
from servelab.bench.spec import parse_experiment
from servelab.billing import rules
from servelab.billing.pricing import estimate, price_run
from servelab.cli import app
from servelab.sim import ServerlessConfig, price_records

ENTRY = "aws-lambda-x86-us-east-1"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, str, dict]:
    out = tmp_path_factory.mktemp("acct")
    exp = parse_experiment({
        "name": "acct", "seed": 2, "duration_s": 3, "models": ["tiny-cnn"], "workloads": ["poisson:rate=12"],
        "memory_mb": [1024],
        "targets": [{"kind": "serverless", "cooldown_s": 0, "max_concurrency": 3, "keep_alive_s": 0.3}],
    })
    plan = make_plan(exp)
    result = Executor(plan, out, quiet=True).run()
    assert result.completed and not result.failed
    run_id = plan.runs[0].run_id
    summary = json.loads((out / "summary.json").read_text().splitlines()[0])
    return out, run_id, summary


def test_every_path_prices_a_real_run_with_cold_starts_the_same(real_run) -> None:
    out, run_id, summary = real_run
    loaded = load_run(out / "runs" / run_id)
    table = loaded.table
    assert summary["summary"]["cold_starts"] >= 1, "the run must have cold starts for this check to mean anything"

    direct = price_run(table, ENTRY).total_usd
    executor = summary["cost"]["total_usd"]
    report_from_summary = load_experiment(out).runs[0].cost.total_usd
    moved = out.parent / f"{out.name}-summary.json"
    shutil.move(out / "summary.json", moved)  # the report prices the records itself when no summary
    try:
        report_from_records = load_experiment(out).runs[0].cost.total_usd
    finally:
        shutil.move(moved, out / "summary.json")
    cli = CliRunner().invoke(app, ["cost", "run", str(out / "runs" / run_id / "records"), "--entry", ENTRY,
                                   "--json"])
    assert cli.exit_code == 0, cli.output
    from_cli = json.loads(cli.output)[0]["total_usd"]
    simulated_path = price_records(table, ServerlessConfig(memory_mb=1024, price_entry=ENTRY)).total_usd

    for other in (executor, report_from_summary, report_from_records, from_cli, simulated_path):
        assert other == pytest.approx(direct, rel=0.01)


def test_init_is_billed_by_the_current_rule_and_the_study_era_differs_by_exactly_its_gb_s(real_run) -> None:
    out, run_id, _ = real_run
    table = load_run(out / "runs" / run_id).table
    now = price_run(table, ENTRY)
    then = price_run(table, ENTRY, as_of=rules.STUDY_ERA)
    assert now.init_billed and not then.init_billed
    assert now.init_gb_s > 0 and then.init_gb_s == pytest.approx(now.init_gb_s)
    assert now.billed_gb_s - then.billed_gb_s == pytest.approx(now.init_gb_s, rel=1e-9)
    rate = 0.0000166667
    assert now.compute_usd - then.compute_usd == pytest.approx(now.init_gb_s * rate, rel=1e-6)
    cold = [r for r in table.to_pylist() if r["init_ms"] is not None]
    assert len(cold) == sum(1 for r in table.to_pylist() if r["start_kind"] in ("cold", "prewarmed"))
    expected = sum(math.ceil(r["init_ms"] - 1e-6) / 1000 * r["memory_mb"] / 1024 for r in cold)
    assert now.init_gb_s == pytest.approx(expected)


def test_records_bill_what_the_pricing_function_bills() -> None:
    """The meter's per-record billed_ms (Lambda's REPORT 'Billed Duration') and price_run agree."""
    assert rules.request_billed_ms(duration_ms=10.2, batch_size=1, rounding_ms=1, init_ms=99.1) == 11 + 100
    assert rules.request_billed_ms(duration_ms=40, batch_size=8, rounding_ms=100, init_ms=None) == 100 / 8
    assert rules.batch_kinds("on_demand", True, 3) == ("cold", "warm", "warm")
    assert rules.batch_kinds("provisioned", True, 2) == ("prewarmed", "warm")
    assert rules.batch_kinds("on_demand", False, 2) == ("warm", "warm")
    assert not rules.carries_init("provisioned") and rules.carries_init("prewarmed")


def test_an_entry_without_an_init_rule_never_bills_init() -> None:
    from servelab.billing.catalog import load_catalog

    cat = load_catalog()
    lam = cat.get(ENTRY)
    assert str(lam.init_billed_from) == "2025-08-01"
    assert rules.init_billed(lam.init_billed_from, lam.init_billed_from)
    assert not rules.init_billed(None, rules.STUDY_ERA)
    e = estimate(ENTRY, requests=1000, duration_ms=10, memory_mb=1024)
    assert e.init_gb_s == 0 and e.as_of == "2026-11-23"


def test_cost_cli_as_of_study_prices_without_init(real_run) -> None:
    out, run_id, _ = real_run
    records = str(out / "runs" / run_id / "records")
    now = json.loads(CliRunner().invoke(app, ["cost", "run", records, "--entry", ENTRY, "--json"]).output)[0]
    then = json.loads(CliRunner().invoke(app, ["cost", "run", records, "--entry", ENTRY, "--json",
                                               "--as-of", "study"]).output)[0]
    assert then["total_usd"] < now["total_usd"] and then["as_of"] == "2021-06-01"
    bad = CliRunner().invoke(app, ["cost", "run", records, "--entry", ENTRY, "--as-of", "yesterday"])
    assert bad.exit_code != 0 and "--as-of" in (bad.output + str(bad.exception))
