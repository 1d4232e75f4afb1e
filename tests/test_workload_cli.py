"""``servelab workload show`` and ``servelab workload presets``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from servelab.errors import WorkloadError
from servelab.workload import generate, load_spec
from servelab.workload.cli import app

runner = CliRunner()


def test_show_json_summarises_the_generated_arrivals():
    result = runner.invoke(
        app, ["show", "mmpp:rates=5,50;sojourn=10,2", "--duration", "200", "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    arrivals = generate(load_spec("mmpp:rates=5,50;sojourn=10,2"), duration_s=200, seed=3)
    assert summary["count"] == len(arrivals)
    assert summary["duration_s"] == 200.0 and summary["seed"] == 3
    assert summary["mean_rate_rps"] == pytest.approx(len(arrivals) / 200)
    assert summary["expected_mean_rate_rps"] == pytest.approx(12.5)
    assert summary["peak_rate_rps"] >= summary["mean_rate_rps"]
    assert summary["interarrival_cv"] > 1.0  # bursty: more variable than Poisson's CV of 1
    states = summary["states"]
    assert [s["rate_rps"] for s in states] == [5.0, 50.0]
    assert sum(s["time_share"] for s in states) == pytest.approx(1.0)
    assert [s["stationary_share"] for s in states] == pytest.approx([10 / 12, 2 / 12])


def test_show_table_for_a_poisson_spec():
    result = runner.invoke(app, ["show", "poisson:rate=20", "--duration", "50"])
    assert result.exit_code == 0, result.output
    assert "arrivals" in result.output and "expected 20.00" in result.output
    assert "hidden states" not in result.output


def test_show_scale_multiplies_the_rates():
    result = runner.invoke(app, ["show", "high", "--scale", "0.5", "--duration", "20", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["expected_mean_rate_rps"] == pytest.approx(75.0)
    assert [s["rate_rps"] for s in summary["states"]] == [50.0, 125.0]


def test_show_mmpp_table_lists_states():
    result = runner.invoke(app, ["show", "bursty", "--duration", "60"])
    assert result.exit_code == 0, result.output
    assert "hidden states" in result.output and "stationary" in result.output


@pytest.mark.parametrize(
    "spec", ["bursty", "ramp:start=0;end=50", "step:rates=5,20;steps=10", "poisson:rate=5"]
)
def test_show_saves_a_png_plot(tmp_path, spec):
    out = tmp_path / "plots" / "rate.png"
    result = runner.invoke(app, ["show", spec, "--duration", "40", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_presets_lists_every_preset():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    for name in ("low", "medium", "high", "bursty"):
        assert name in result.output


def test_bad_spec_raises_workload_error_from_the_command():
    result = runner.invoke(app, ["show", "poisson:rat=5"])
    assert isinstance(result.exception, WorkloadError)


def test_servelab_command_exits_2_with_the_message():
    proc = subprocess.run(
        [sys.executable, "-m", "servelab.cli", "workload", "show", "gamma:shape=2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "'gamma' is not a kind" in proc.stderr


def test_help_text_names_every_kind_in_the_registry():
    """The help is written out so --help need not import numpy; this keeps it in step."""
    from servelab.workload import ARRIVALS
    from servelab.workload.cli import SPEC_HELP

    assert f"Kinds: {', '.join(ARRIVALS)}." in SPEC_HELP
