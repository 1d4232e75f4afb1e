"""Target kinds plug in from their own module: the spec validator accepts the new kind, the
planner and executor find its target, and nothing of it is imported before it is needed."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.bench import registry
from servelab.bench.executor import Executor, read_summary
from servelab.bench.planner import make_plan
from servelab.bench.registry import register_target, spec_class, target_class, target_kinds, unregister_target
from servelab.bench.spec import ServerTargetSpec, parse_experiment
from servelab.errors import ConfigError

# A cloud target in miniature: the spec module registers the kind and names its target class
# lazily, as "module:attr" (a real one would import boto3 only in that module, inside methods).
PLUGIN = '''
from typing import ClassVar, Literal

from servelab.bench.registry import register_target
from servelab.bench.spec import TargetSpecBase


class FakeCloudSpec(TargetSpecBase):
    kind: Literal["fake-cloud"] = "fake-cloud"
    region: str = "eu-west-1"
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"runtime", "batch_size", "provisioned"})


register_target("fake-cloud", FakeCloudSpec, "fakecloud_target:FakeCloudTarget")
'''
TARGET = '''
from servelab.bench.targets import BenchTarget, Endpoint
from servelab.loadgen.targets import TargetSpec

CALLS = []


class FakeCloudTarget(BenchTarget):
    kind = "fake-cloud"

    @classmethod
    def overhead_s(cls, run):
        return 7.0

    def prepare(self, run, model_path):
        CALLS.append(("prepare", run.run_id, self.spec.region, run.memory_mb))
        # the loadgen's null target answers at once: the executor's path, without a network
        return Endpoint(target=TargetSpec("null"), info={"region": self.spec.region, "notes": ["fake"]})

    def cooldown(self):
        CALLS.append(("cooldown",))
'''
EXP = {"name": "plug", "seed": 2, "duration_s": 1, "models": ["tiny-mlp"], "workloads": ["poisson:rate=10"],
       "memory_mb": [512, 1024]}


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin on sys.path, discovered like servelab.cloud.targets; all of it removed afterwards."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "fakecloud_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (d / "fakecloud_target.py").write_text(textwrap.dedent(TARGET))
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setattr(registry, "PLUGIN_MODULES", ("fakecloud_plugin", "no_such_servelab_plugin"))
    monkeypatch.setattr(registry, "_discovered", False)
    yield d
    unregister_target("fake-cloud")
    for m in ("fakecloud_plugin", "fakecloud_target"):
        sys.modules.pop(m, None)


def test_a_plugin_module_adds_a_kind_that_validates_plans_and_runs(plugin_dir: Path, tmp_path: Path) -> None:
    assert "fakecloud_plugin" not in sys.modules
    exp = parse_experiment({**EXP, "targets": [{"kind": "fake-cloud", "region": "ap-south-1", "cooldown_s": 0}]})
    assert type(exp.targets[0]).__name__ == "FakeCloudSpec" and exp.targets[0].region == "ap-south-1"
    # validating found the spec without importing the target module (its SDK stays unimported)
    assert "fakecloud_plugin" in sys.modules and "fakecloud_target" not in sys.modules
    # the plan carries the plugin's own settings, and dumps them (plan.json)
    assert exp.model_dump()["targets"][0]["region"] == "ap-south-1"

    plan = make_plan(exp)
    assert [r.memory_mb for r in plan.runs] == [512, 1024] and plan.runs[0].runtime is None
    assert plan.runs[0].target_settings == {"kind": "fake-cloud", "price": None, "region": "ap-south-1"}
    assert plan.runs[0].estimate_s == 1 + 1 + 7  # schedule + drain + the target's own overhead
    assert plan.platform_start_s == 0  # no local platform for a kind that does not use it

    result = Executor(plan, tmp_path / "out", quiet=True).run()
    assert result.completed == [r.run_id for r in plan.runs] and not result.failed
    calls = sys.modules["fakecloud_target"].CALLS
    assert [c[0] for c in calls] == ["prepare", "cooldown", "prepare", "cooldown"]
    assert calls[0][2:] == ("ap-south-1", 512)
    lines = read_summary(tmp_path / "out")
    assert all(x["status"] == "done" and x["summary"]["count"] > 0 for x in lines)
    assert lines[0]["summary"]["success_ratio"] == 1.0 and lines[0]["cost"] is None


def test_an_unknown_kind_lists_built_in_and_registered_kinds(plugin_dir: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_experiment({**EXP, "targets": ["aws-lamda"]})
    msg = str(e.value)
    assert "targets[0]: unknown target kind 'aws-lamda'" in msg
    assert "serverless, server, gpu-server, managed, http, " in msg and "fake-cloud" in msg
    assert target_kinds()[-1] == "fake-cloud"
    # a key the plugin's spec does not have is named with that spec's own keys
    with pytest.raises(ConfigError, match=r"unknown key 'targets\[0\].regoin'; allowed keys: kind, .*region"):
        parse_experiment({**EXP, "targets": [{"kind": "fake-cloud", "regoin": "x"}]})


def test_register_target_checks_what_it_is_given() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_target("server", ServerTargetSpec, "servelab.bench.targets:GpuServerTarget")
    with pytest.raises(ConfigError, match=r"kind must be Literal\['my-box'\]"):
        register_target("my-box", ServerTargetSpec, "servelab.bench.targets:ServerTarget")
    with pytest.raises(ConfigError, match=r"must subclass servelab\.bench\.targets\.BenchTarget"):
        register_target("my-box", "servelab.bench.spec:ServerTargetSpec", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'module:attr'"):
        register_target("my-box", "servelab.bench.spec.ServerTargetSpec", "x:y")
    with pytest.raises(ConfigError, match="built-in"):
        unregister_target("serverless")
    assert "my-box" not in target_kinds()


def test_a_lazy_reference_that_does_not_import_is_a_clear_error() -> None:
    register_target("broken-box", "servelab.bench.no_such_module:Spec", "servelab.bench.targets:ServerTarget")
    try:
        with pytest.raises(ConfigError, match=r"target kind 'broken-box': cannot import 'servelab\.bench\.no_such"):
            spec_class("broken-box")
        assert target_class("server").__name__ == "ServerTarget"
    finally:
        unregister_target("broken-box")
