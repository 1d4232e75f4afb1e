"""``servelab cost catalog|run|estimate`` through the real Typer app."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.cli import app
from servelab.errors import ConfigError
from servelab.records import RecordWriter, RequestRecord

runner = CliRunner()


@pytest.fixture()
def records(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    with RecordWriter(out) as w:
        for i, d in enumerate([120.4, 260.0, 30.0]):
            w.append(RequestRecord(run_id="r", request_id=str(i), scheduled_s=float(i), sent_s=float(i),
                                   completed_s=i + d / 1000, duration_ms=d, memory_mb=256))
        w.append(RequestRecord(run_id="r", request_id="3", scheduled_s=3.0, status="throttled"))
    return out


def test_catalog_lists_entries_as_a_table_and_as_json():
    table = runner.invoke(app, ["cost", "catalog", "--provider", "gcp"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "gcp-cloudfunctions-gen1-us-central1" in table.output and "aws-lambda" not in table.output
    as_json = runner.invoke(app, ["cost", "catalog", "--provider", "aws", "--json"])
    rows = json.loads(as_json.output)
    assert rows and {r["provider"] for r in rows} == {"aws"}
    assert all(r["catalog_date"] == "2026-11-23" and "confirmed" in r and r["source"] for r in rows)


def test_run_prices_records_as_several_entries(records):
    res = runner.invoke(app, ["cost", "run", str(records), "-e", "aws-lambda-x86-us-east-1",
                              "-e", "gcp-cloudfunctions-gen1-us-central1", "--json"])
    assert res.exit_code == 0, res.output
    aws, gcf = json.loads(res.output)
    assert aws["requests"] == gcf["requests"] == 3
    assert aws["compute_usd"] == pytest.approx(0.411 * 0.25 * 0.0000166667)
    assert gcf["compute_usd"] == pytest.approx(0.6 * (0.25 * 2.5e-6 + 0.4 * 1e-5))
    assert aws["catalog_date"] == "2026-11-23" and any("throttled" in n for n in aws["notes"])


def test_run_as_csv_and_as_a_table(records):
    res = runner.invoke(app, ["cost", "run", str(records), "-e", "aws-lambda-x86-us-east-1", "--csv"])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert len(rows) == 1 and rows[0]["entry_id"] == "aws-lambda-x86-us-east-1" and rows[0]["requests"] == "3"
    table = runner.invoke(app, ["cost", "run", str(records), "-e", "aws-ec2-c5.large-us-east-1"],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "aws-ec2-c5.large-us-east-1" in table.output
    assert "60 s" in table.output  # the EC2 minimum shows in the notes


def test_prices_env_and_option_override_the_shipped_catalog(records, tmp_path):
    cheap = tmp_path / "cheap.yaml"
    cheap.write_text("""catalog_version: 1
date: 2027-02-01
currency: USD
entries:
  - {id: aws-lambda-x86-us-east-1, provider: aws, service: lambda, region: us-east-1, model: serverless,
     per_million_requests_usd: 0, per_gb_second_usd: 0, rounding_ms: 1, source: test, confirmed: false}
""")
    res = runner.invoke(app, ["cost", "run", str(records), "-e", "aws-lambda-x86-us-east-1", "--json"],
                        env={"SERVELAB_PRICES": str(cheap)})
    (row,) = json.loads(res.output)
    assert row["total_usd"] == 0 and row["catalog_date"] == "2027-02-01"
    res = runner.invoke(app, ["cost", "catalog", "--json", "--prices", str(cheap)])
    lam = next(r for r in json.loads(res.output) if r["id"] == "aws-lambda-x86-us-east-1")
    assert lam["catalog_date"] == "2027-02-01"


def test_estimate_prints_the_what_if():
    res = runner.invoke(app, ["cost", "estimate", "-e", "aws-lambda-x86-us-east-1", "--requests", "1000000",
                              "--duration-ms", "120", "--memory-mb", "1769", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    assert row["total_usd"] == pytest.approx(3.6550850, abs=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["cost", "run", "/nonexistent/records", "-e", "aws-lambda-x86-us-east-1"], "no records at"),
    (["cost", "estimate", "-e", "aws-lambda-x86-us-east-1", "--requests", "1", "--duration-ms", "1",
      "--memory-mb", "128", "--json", "--csv"], "choose one"),
    (["cost", "catalog", "--provider", "azure"], "providers: aws, gcp"),
    (["cost", "estimate", "-e", "nope", "--requests", "1", "--duration-ms", "1"], "no price entry 'nope'"),
])
def test_cli_mistakes_are_config_errors_that_say_what_to_fix(args, message):
    res = runner.invoke(app, args)
    assert isinstance(res.exception, ConfigError)
    assert message in str(res.exception)
