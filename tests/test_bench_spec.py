"""The experiment spec: what a valid file looks like, and errors that name the bad key and the
allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from servelab.bench.spec import (
    HttpTargetSpec,
    ServerTargetSpec,
    load_experiment,
    parse_experiment,
)
from servelab.errors import ConfigError

BASE = {"name": "t", "models": ["tiny-mlp"], "workloads": ["poisson:rate=5"], "targets": ["serverless"]}


def _err(**changes) -> str:
    with pytest.raises(ConfigError) as e:
        parse_experiment({**BASE, **changes})
    return str(e.value)


def test_short_forms_expand_to_full_targets_and_scalars_to_lists() -> None:
    targets = ["serverless", {"kind": "server", "workers": 3}]
    exp = parse_experiment({**BASE, "memory_mb": 1769, "targets": targets})
    assert exp.memory_mb == (1769,)
    assert [t.kind for t in exp.targets] == ["serverless", "server"]
    assert isinstance(exp.targets[1], ServerTargetSpec) and exp.targets[1].workers == 3
    assert exp.targets[0].price_entry == "aws-lambda-x86-us-east-1"  # each kind names its catalog entry
    assert exp.targets[1].price_entry == "aws-ec2-c5.large-us-east-1"


def test_unknown_top_level_key_is_named_with_the_allowed_keys() -> None:
    msg = _err(modles=["tiny-mlp"])
    assert "unknown key 'modles'" in msg and "models" in msg and "workloads" in msg


def test_unknown_key_inside_a_target_names_its_path_and_that_kinds_keys() -> None:
    msg = _err(targets=[{"kind": "server", "wrkers": 2}])
    assert "unknown key 'targets[0].wrkers'" in msg
    assert "workers" in msg and "machines" in msg
    assert "Tuple should have" not in msg  # pydantic's follow-on noise is dropped


def test_unknown_target_kind_lists_the_kinds() -> None:
    msg = _err(targets=[{"kind": "lambda"}])
    assert "targets[0]" in msg and "'lambda'" in msg
    for kind in ("serverless", "server", "gpu-server", "managed", "http"):
        assert kind in msg
    assert "a target needs 'kind'" in _err(targets=[{"workers": 2}])


def test_bad_values_name_the_key_the_value_and_what_is_allowed() -> None:
    msg = _err(runtimes=["tensorflow"])
    assert "runtimes[0]" in msg and "'onnxruntime' or 'torch'" in msg and "tensorflow" in msg
    msg = _err(memory_mb=[64])
    assert "memory_mb[0]" in msg and "128" in msg and "64" in msg
    assert "targets[0].workers" in _err(targets=[{"kind": "server", "workers": 0}])
    assert "min_instances (5) cannot exceed max_instances (2)" in _err(
        targets=[{"kind": "managed", "min_instances": 5, "max_instances": 2}])


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="missing key 'workloads'"):
        parse_experiment({k: v for k, v in BASE.items() if k != "workloads"})
    assert "missing key 'targets[0].url'" in _err(targets=[{"kind": "http"}])
    assert "needs 'function'" in _err(targets=[{"kind": "http", "url": "http://x", "protocol": "lambda"}])


def test_models_and_workloads_are_resolved_when_the_spec_is_read() -> None:
    msg = _err(models=["resnet"])
    assert "unknown model 'resnet'" in msg and "tiny-mlp" in msg
    assert "does not exist" in _err(models=["nowhere/model.onnx"])
    msg = _err(workloads=["mmpp:rates=1"])
    assert msg.startswith("experiment: workloads:") and "sojourn_s" in msg


def test_cross_checks_exclusions_duplicates_prices_and_provisioned_limits() -> None:
    msg = _err(exclude=[{"colour": "red"}])
    assert "exclude[0]" in msg and "'colour'" in msg and "memory_mb" in msg
    assert "distinct 'name'" in _err(targets=["serverless", "serverless"])
    msg = _err(targets=[{"kind": "serverless", "price": "aws-lambda"}])
    assert "no price-catalog entry 'aws-lambda'" in msg
    assert "provisioned 8 exceeds its max_concurrency 4" in _err(provisioned=[0, 8])


def test_a_yaml_file_resolves_model_and_workload_paths_relative_to_itself(tmp_path: Path,
                                                                           tiny_models) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "mlp.onnx").write_bytes(tiny_models["tiny-mlp"].read_bytes())
    (tmp_path / "wl.yaml").write_text("kind: poisson\nrate_rps: 3\n")
    (tmp_path / "exp.yaml").write_text(
        "name: files\nmodels: [m/mlp.onnx]\n"
        "workloads: [wl.yaml, {kind: onoff, on_rate_rps: 9, on_s: 1, off_s: 1, name: blink}]\n"
        "targets:\n  - kind: http\n    url: http://127.0.0.1:9/\n")
    exp = load_experiment(tmp_path / "exp.yaml")
    assert isinstance(exp.targets[0], HttpTargetSpec)
    assert exp.base_dir == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(tmp_path / "bad.yaml")


def test_every_shipped_example_is_a_valid_experiment() -> None:
    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    names = {p.name for p in examples}
    assert {"quickstart.yaml", "serverless-vs-server.yaml", "sweep-memory.yaml", "sweep-batch.yaml",
            "sweep-provisioned.yaml", "sweep-runtime.yaml"} <= names
    from servelab.bench import demo_experiment
    from servelab.bench.planner import make_plan

    for p in [*examples, demo_experiment()]:
        exp = load_experiment(p)
        header = p.read_text().lstrip()
        assert header.startswith("#") and "What the study found" in header, f"{p.name}: say what the study found"
        plan = make_plan(exp)  # what `servelab plan` does: every example expands and estimates
        assert plan.runs and plan.estimate_s > 0, p.name
