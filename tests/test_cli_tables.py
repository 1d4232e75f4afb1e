"""Tables at 80 columns: no number or id is ever cut, the swept dimensions show, and every table
also prints as JSON / CSV. The commands run through the real CLI with ``COLUMNS=80``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from platform_harness import RunningPlatform
from servelab.cli import app
from servelab.records import RecordWriter, RequestRecord
from servelab.tables import fit_table, table_rows

runner = CliRunner()
NARROW = {"COLUMNS": "80"}
SRC = Path(__file__).resolve().parents[1] / "src"


def _lines_fit(output: str, width: int = 80) -> None:
    too_wide = [line for line in output.splitlines() if len(line) > width]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in output, output  # rich's mark for a cut cell


def _render(table: Table, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    for part in fit_table(table, width):
        console.print(part)
    return console.export_text()


def test_fit_table_keeps_every_word_of_every_cell_and_repeats_the_key_column() -> None:
    t = Table("run id", "memory MB", "requests", "p50 ms", "p95 ms", "p99 ms", "USD per 1M req", "price entry",
              title="results")
    rows = [[f"serverless-mobilenetv2-{i:010x}", str(128 * (i + 1)), f"{123456 * i:,}", "22.5", f"{1234.5 * i:,.1f}",
             "162.9", f"{0.735 * i:,.4f}", "aws-lambda-x86-us-east-1"] for i in range(1, 4)]
    for row in rows:
        t.add_row(*row)
    text = _render(t, 80)
    _lines_fit(text)
    for row in rows:
        for cell in row:
            assert cell in text, (cell, text)
        assert text.count(row[0]) >= 2  # stacked tables, each starting with the run id
    assert "results (continued)" in text
    # a table that fits is left as one table
    assert len(fit_table(t, 300)) == 1


def test_table_rows_turn_cells_into_json_values() -> None:
    t = Table("id", "count", "ms", "note")
    t.add_row("a-1", "1,234", "12.5", "[green]ok[/]")
    t.add_row("b-2", "-", "1e-05", "")
    assert table_rows(t) == [{"id": "a-1", "count": 1234, "ms": 12.5, "note": "ok"},
                             {"id": "b-2", "count": None, "ms": 1e-05, "note": None}]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    with RecordWriter(out) as w:  # a long run: five-figure request counts and four-figure dollars
        for i in range(12_345):
            w.append(RequestRecord(run_id="r", request_id=str(i), scheduled_s=i * 0.01, sent_s=i * 0.01,
                                   completed_s=i * 0.01 + 2.5, duration_ms=2500.0, memory_mb=8192))
    return out


def test_cost_run_at_80_columns_cuts_no_figure(records: Path) -> None:
    entries = ["aws-lambda-x86-us-east-1", "gcp-cloudfunctions-gen1-us-central1", "aws-ec2-c5.large-us-east-1"]
    args = ["cost", "run", str(records)] + [a for e in entries for a in ("-e", e)]
    table = runner.invoke(app, args, env=NARROW)
    assert table.exit_code == 0, table.output
    as_json = json.loads(runner.invoke(app, [*args, "--json"]).output)
    table_part = table.output.split(f"\n{entries[0]}\n")[0]  # the notes below it are prose
    _lines_fit(table_part)
    for b in as_json:
        assert b["entry_id"] in table.output
        assert f"{b['requests']:,}" in table.output
        for key in ("compute_usd", "total_usd", "per_million_usd"):
            x = b[key]
            if x:
                assert (f"{x:,.4f}" if abs(x) >= 0.01 else f"{x:.3e}") in table.output, (key, table.output)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("tables") / "home") as p:
        yield p


def test_functions_ls_and_instances_at_80_columns_cut_no_id_or_ref(platform, tiny_models, tmp_path) -> None:
    home = str(platform.home)
    push = runner.invoke(app, ["models", "push", str(tiny_models["tiny-cnn"]), "--name", "tiny-cnn-model",
                               "--store", str(Path(home) / "store")])
    assert push.exit_code == 0, push.output
    ref = push.output.strip().splitlines()[-1]
    name = "a-function-with-a-rather-long-name"
    r = runner.invoke(app, ["deploy", name, "--model", ref, "--memory-mb", "2048", "--platform", platform.url])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["invoke", name, "--random", "1", "--platform", platform.url]).exit_code == 0

    ls = runner.invoke(app, ["functions", "ls", "--platform", platform.url], env=NARROW)
    assert ls.exit_code == 0, ls.output
    _lines_fit(ls.output)
    short = ref.split("@sha256:")[0] + "@sha256:" + ref.split("@sha256:")[1][:12]
    assert name in ls.output and short in ls.output and "2048" in ls.output
    rows = json.loads(runner.invoke(app, ["functions", "ls", "--platform", platform.url, "--json"]).output)
    assert {row["name"]: row["model"] for row in rows}[name] == ref  # the whole ref for machines
    as_csv = list(csv.DictReader(io.StringIO(
        runner.invoke(app, ["functions", "ls", "--platform", platform.url, "--csv"]).output)))
    assert any(row["name"] == name and row["memory MB"] == "2048" for row in as_csv)

    snap = json.loads(runner.invoke(app, ["functions", "instances", name, "--platform", platform.url,
                                          "--json"]).output)
    inst = runner.invoke(app, ["functions", "instances", name, "--platform", platform.url], env=NARROW)
    assert inst.exit_code == 0, inst.output
    _lines_fit(inst.output)
    assert snap["instances"]
    for i in snap["instances"]:
        for key in ("id", "pid", "init_ms", "max_rss_mb"):
            assert str(i[key]) in inst.output, (key, inst.output)


MEMORY_SWEEP = """\
name: narrow-sweep
seed: 1
duration_s: 1
models: [tiny-mlp]
memory_mb: [256, 3008]
workloads: ["poisson:rate=5"]
targets:
  - {kind: serverless, cooldown_s: 0, max_concurrency: 1}
"""


def test_run_at_80_columns_shows_the_swept_memory_sizes_and_prints_a_line_per_run(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(MEMORY_SWEEP)
    env = {**os.environ, **NARROW, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", "from servelab.cli import main; main()", "run", str(spec),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    table = out[out.index("results"):]
    _lines_fit(table)
    lines = [json.loads(x) for x in (tmp_path / "out" / "summary.json").read_text().splitlines()]
    assert sorted(line["memory_mb"] for line in lines) == [256, 3008]
    assert "memory MB" in table
    for line in lines:
        assert line["run_id"] in table and str(line["memory_mb"]) in table
        assert f"{line['summary']['count']:,}" in table
    # off a terminal: one line as each run starts and one as it ends, no progress bar
    assert out.count(": started, ") == 2 and out.count("done ") >= 2
    again = subprocess.run([sys.executable, "-c", "from servelab.cli import main; main()", "run", str(spec),
                            "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True,
                           timeout=240, env=env)
    assert again.returncode == 0, again.stderr
    assert [x["run_id"] for x in json.loads(again.stdout)] == [x["run_id"] for x in lines]
