"""The vocabulary of a run's configuration: which keys are design-space axes, which only differ
between repetitions (never part of what makes a configuration), and which make a scenario.
Shared by the report and its renderer, so neither imports the other for it."""

from __future__ import annotations

# Config keys that name the design-space axes, in the order a configuration label shows them.
AXES: tuple[str, ...] = ("target", "model", "runtime", "memory_mb", "batch_size", "provisioned", "workload")
# Keys that differ between repetitions of one configuration, or describe the machine: never
# part of what makes a configuration. (run.json's config has requests/schedule_end_s, which
# change with the seed.)
NOT_CONFIGURATION: frozenset[str] = frozenset({
    "repetition", "seed", "run_id", "index", "estimate_s", "skip_reason", "machine", "versions",
    "requests", "schedule_end_s", "started_at", "out_dir", "model_path", "experiment",
})
# Keys that make a *scenario*: configurations that share them faced the same load (the same
# arrivals, the same model), so their costs and latencies can be compared and a Pareto front is
# drawn among them; across scenarios (a calm load vs a bursty one) a front would mislead.
SCENARIO_KEYS: tuple[str, ...] = ("workload", "workload_spec", "model", "duration_s")
