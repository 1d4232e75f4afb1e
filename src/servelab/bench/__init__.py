"""Experiments: a YAML spec of the configurations to compare, a planner that expands it into
runs, targets that serve each run (local serverless platform, always-on server, GPU server,
managed-endpoint approximation, any URL), and an executor that runs the plan and resumes after
an interruption.

    exp = load_experiment("examples/quickstart.yaml")
    plan = make_plan(exp)                      # plan.runs: PlannedRun with run_id, config, estimate
    result = run_experiment(exp, "out/quick")  # out/quick/runs/<run_id>/…, out/quick/summary.json

New target kinds (cloud targets) plug in with ``register_target(kind, spec_cls, target_cls)``
(see :mod:`servelab.bench.registry`).

The names below are imported on first use so ``servelab --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Experiment": "spec", "load_experiment": "spec", "parse_experiment": "spec", "TargetKind": "spec",
    "TargetSpecBase": "spec",
    "register_target": "registry", "unregister_target": "registry", "target_kinds": "registry",
    "spec_class": "registry", "target_class": "registry",
    "Plan": "planner", "PlannedRun": "planner", "make_plan": "planner",
    "BenchTarget": "targets", "Endpoint": "targets", "TargetContext": "targets", "make_target": "targets",
    "detect_gpu": "targets",
    "Executor": "executor", "ExecutionResult": "executor", "run_experiment": "executor",
    "read_summary": "executor",
    "demo_experiment": "demo",
}
__all__ = [
    "BenchTarget",
    "Endpoint",
    "ExecutionResult",
    "Executor",
    "Experiment",
    "Plan",
    "PlannedRun",
    "TargetContext",
    "TargetKind",
    "TargetSpecBase",
    "demo_experiment",
    "detect_gpu",
    "load_experiment",
    "make_plan",
    "make_target",
    "parse_experiment",
    "read_summary",
    "register_target",
    "run_experiment",
    "spec_class",
    "target_class",
    "target_kinds",
    "unregister_target",
]

if TYPE_CHECKING:
    from servelab.bench.demo import demo_experiment
    from servelab.bench.executor import ExecutionResult, Executor, read_summary, run_experiment
    from servelab.bench.planner import Plan, PlannedRun, make_plan
    from servelab.bench.registry import register_target, spec_class, target_class, target_kinds, unregister_target
    from servelab.bench.spec import Experiment, TargetKind, TargetSpecBase, load_experiment, parse_experiment
    from servelab.bench.targets import BenchTarget, Endpoint, TargetContext, detect_gpu, make_target


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'servelab.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"servelab.bench.{module}"), name)
