"""The planner: grid expansion, per-target overrides, exclusions, stable run ids, estimates,
and runs a machine cannot do marked skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.bench.cli import app
from servelab.bench.planner import make_plan
from servelab.bench.spec import parse_experiment
from servelab.bench.targets import detect_gpu

BASE = {"name": "p", "seed": 7, "duration_s": 2, "models": ["tiny-mlp", "tiny-cnn"], "memory_mb": [512, 1769],
        "workloads": ["poisson:rate=5", "low"], "targets": ["serverless", {"kind": "server", "workers": 1}]}


def plan(**changes):
    return make_plan(parse_experiment({**BASE, **changes}), check_availability=False)


def test_the_grid_is_the_product_of_the_axes_with_axes_a_target_ignores_collapsed() -> None:
    p = plan(provisioned=[0, 1], repetitions=2)
    # serverless: 2 models x 2 memory x 2 workloads x 2 provisioned; server ignores provisioned
    per_rep = 2 * 2 * 2 * 2 + 2 * 2 * 2
    assert len(p.runs) == 2 * per_rep
    assert {r.provisioned for r in p.runs if r.kind == "server"} == {None}
    assert [r.index for r in p.runs] == list(range(len(p.runs)))
    assert len({r.run_id for r in p.runs}) == len(p.runs)


def test_targets_compared_on_one_configuration_run_back_to_back_with_the_same_seed() -> None:
    p = plan(repetitions=2)
    first, second = p.runs[0], p.runs[1]
    assert (first.kind, second.kind) == ("serverless", "server")
    assert (first.model, first.memory_mb, first.workload) == (second.model, second.memory_mb, second.workload)
    assert {r.seed for r in p.runs if r.repetition == 0} == {7}
    assert {r.seed for r in p.runs if r.repetition == 1} == {8}


def test_per_target_overrides_replace_an_axis_for_that_target_only() -> None:
    server_spec = {"kind": "server", "workers": 1, "memory_mb": 3008, "models": "tiny-cnn"}
    p = plan(targets=["serverless", server_spec])
    server = [r for r in p.runs if r.kind == "server"]
    assert {r.memory_mb for r in server} == {3008} and {r.model for r in server} == {"tiny-cnn"}
    assert {r.memory_mb for r in p.runs if r.kind == "serverless"} == {512, 1769}
    assert len(server) == 2  # 1 model x 1 memory x 2 workloads


def test_exclusions_are_partial_matches_and_are_counted() -> None:
    full = plan()
    p = plan(exclude=[{"target": "server", "memory_mb": 512}, {"model": "tiny-cnn", "workload": ["low"]}])
    cut = [r for r in full.runs if (r.target == "server" and r.memory_mb == 512)
           or (r.model == "tiny-cnn" and r.workload == "low")]
    assert p.excluded == len(cut) == 2 * 2 + 4 - 1  # the two rules overlap on one run
    assert len(p.runs) == len(full.runs) - len(cut)
    assert not any(r.target == "server" and r.memory_mb == 512 for r in p.runs)
    by_kind = plan(exclude=[{"kind": "server"}])
    assert {r.kind for r in by_kind.runs} == {"serverless"}
    inline = plan(exclude=[{"workload": "mmpp:duration_s=2;rates_rps=0.5,5;sojourn_s=30,10"}])
    assert {r.workload for r in inline.runs} == {"poisson:rate=5"}  # matches a workload's inline form too


def test_run_ids_are_stable_and_change_only_with_the_runs_own_configuration() -> None:
    a = plan()
    assert [r.run_id for r in a.runs] == [r.run_id for r in plan().runs]
    reordered = plan(targets=[{"kind": "server", "workers": 1}, "serverless"], memory_mb=[1769, 512])
    assert {r.run_id for r in reordered.runs} == {r.run_id for r in a.runs}
    more = plan(workloads=["poisson:rate=5", "low", "medium"])
    assert {r.run_id for r in a.runs} < {r.run_id for r in more.runs}
    changed = plan(targets=["serverless", {"kind": "server", "workers": 2}])
    same = {r.run_id for r in changed.runs} & {r.run_id for r in a.runs}
    assert same == {r.run_id for r in a.runs if r.kind == "serverless"}
    assert all(r.run_id.startswith(f"{r.target}-{r.model}-") for r in a.runs)


def test_the_estimate_covers_schedule_drain_start_and_cooldown() -> None:
    p = plan(targets=[{"kind": "serverless", "cooldown_s": 5}])
    assert p.platform_start_s > 0
    for r in p.runs:
        assert r.estimate_s >= r.duration_s + 5 + 1
    assert p.estimate_s == pytest.approx(p.platform_start_s + sum(r.estimate_s for r in p.runs))
    only_http = plan(targets=[{"kind": "http", "url": "http://127.0.0.1:9/"}])
    assert only_http.platform_start_s == 0  # nothing to start


@pytest.mark.skipif(detect_gpu() is None, reason="this machine has a GPU")
def test_gpu_server_runs_are_skipped_with_the_reason_on_a_machine_without_a_gpu() -> None:
    p = make_plan(parse_experiment({**BASE, "targets": ["serverless", "gpu-server"]}))
    gpu = [r for r in p.runs if r.kind == "gpu-server"]
    assert gpu and all(r.skip_reason and "no GPU" in r.skip_reason for r in gpu)
    assert all(r.skip_reason is None for r in p.runs if r.kind == "serverless")
    assert [r.run_id for r in p.skipped] == [r.run_id for r in gpu]
    assert len(p.to_run) == len(p.runs) - len(gpu)
    assert p.estimate_s == pytest.approx(p.platform_start_s + sum(r.estimate_s for r in p.to_run))


def test_plan_command_prints_the_runs_and_the_estimate(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(
        "name: cli\nduration_s: 2\nmodels: [tiny-mlp]\nworkloads: ['poisson:rate=5']\n"
        "targets: [serverless, server, gpu-server]\n")
    r = CliRunner().invoke(app, ["plan", str(tmp_path / "e.yaml")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    ids = [x.run_id for x in make_plan(parse_experiment(
        {"name": "cli", "duration_s": 2, "models": ["tiny-mlp"], "workloads": ["poisson:rate=5"],
         "targets": ["serverless", "server", "gpu-server"]}, base_dir=tmp_path)).runs]
    for rid in ids:
        assert rid in r.output
    assert "3 runs" in r.output and "estimated time 0:00:" in r.output
    if detect_gpu() is not None:
        assert "skipped (1): no GPU" in r.output
    bad = CliRunner().invoke(app, ["plan", str(tmp_path / "nope.yaml")])
    assert bad.exit_code != 0
