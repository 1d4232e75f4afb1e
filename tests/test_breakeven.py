"""Break-even curves: cost per 1M requests vs rate for serverless, server and managed (analysis/breakeven.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from servelab.analysis.breakeven import Offering, break_even, curve
from servelab.analysis.report import write_report
from servelab.billing.catalog import load_catalog
from servelab.billing.pricing import estimate
from servelab.errors import ConfigError
from test_report import BASE, EC2, LAMBDA, synthetic_records, write_plan, write_run

SAGEMAKER = "aws-sagemaker-ml.c5.large-us-east-1"
RATES = np.logspace(-2, 3, 101)


def test_serverless_costs_the_same_per_request_at_every_rate() -> None:
    c = curve(Offering("fn", "serverless", LAMBDA, 12.3, memory_mb=1024), RATES)
    flat = estimate(LAMBDA, requests=1_000_000, duration_ms=12.3, memory_mb=1024).per_million_usd
    assert np.allclose(c.per_million_usd, flat) and (c.instances == 0).all()


def test_a_server_costs_its_hourly_price_over_the_requests_it_served_until_it_is_full() -> None:
    hourly = load_catalog().get(EC2).hourly_usd  # c5.large: 2 vCPUs -> 2 workers
    c = curve(Offering("srv", "server", EC2, 20.0), RATES)
    capacity = 2 / 0.020
    ok = capacity > RATES
    assert np.allclose(c.per_million_usd[ok], hourly / (RATES[ok] * 3600) * 1e6)
    assert np.isnan(c.per_million_usd[~ok]).all()


def test_a_managed_endpoint_adds_instances_at_its_target_utilisation() -> None:
    sm = Offering("sm", "managed", SAGEMAKER, 20.0, min_instances=1, max_instances=5)
    c = curve(sm, np.array([50, 71, 140, 400]))
    # one instance serves 100 req/s; at 70% it takes 70 req/s before a second is added
    assert c.instances.tolist() == [1, 2, 2, 0] and math.isnan(c.per_million_usd[-1])


def test_break_even_rate_is_where_the_flat_and_the_falling_line_meet() -> None:
    sl = Offering("serverless", "serverless", LAMBDA, 15.0, memory_mb=1769)
    srv = Offering("server", "server", EC2, 15.0)
    result = break_even([sl, srv], RATES)
    per_m = result.curves[0].per_million_usd[0]
    hourly = load_catalog().get(EC2).hourly_usd
    [rate] = result.crossings["serverless vs server"]
    assert rate == pytest.approx(hourly * 1e6 / (3600 * per_m), rel=0.01)


def test_offerings_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs memory_mb"):
        Offering("fn", "serverless", LAMBDA, 10.0)
    with pytest.raises(ConfigError, match="not an instance-hour price entry"):
        curve(Offering("srv", "server", LAMBDA, 10.0), RATES)


def test_cli_prints_the_table_and_the_break_even_rates(tmp_path: Path) -> None:
    from servelab.analysis.cost_cli import app

    res = CliRunner().invoke(app, ["breakeven", "--points", "6", "--png", str(tmp_path / "be.png")])
    assert res.exit_code == 0, res.output
    assert "break-even serverless vs server:" in res.output and (tmp_path / "be.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(CliRunner().invoke(app, ["breakeven", "--json", "--managed", ""]).output)
    assert [c["offering"]["kind"] for c in doc["curves"]] == ["serverless", "server"]


def test_the_report_draws_the_break_even_of_its_serverless_and_server_targets(tmp_path: Path) -> None:
    plan = [("sl", {**BASE, "kind": "serverless", "memory_mb": 1024, "repetition": 0, "seed": 0}),
            ("srv", {**BASE, "target": "server", "kind": "server", "memory_mb": 1024, "repetition": 0, "seed": 0,
                     "price_entry": EC2, "target_settings": {"workers": 2, "machines": 1}})]
    write_plan(tmp_path, "be", plan)
    for rid, cfg in plan:
        write_run(tmp_path, rid, cfg, synthetic_records(rid, n=200, base_ms=20.0, cold_every=0))
    files = write_report(tmp_path)
    assert files.figures["breakeven"].read_bytes()[:4] == b"\x89PNG"
    assert 'id="breakeven"' in files.html.read_text()
