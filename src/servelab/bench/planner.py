"""The planner: an experiment's grid expanded into an ordered list of runs, before anything runs.

Each run carries its full resolved configuration and a stable ``run_id`` — a short hash of that
configuration — so the executor recognises a finished run after an interruption even if the
experiment file was reordered or grew. The plan also estimates how long it will take
(schedule + drain + start overheads + cool-down), and marks runs a target cannot do on this
machine (a GPU server without a GPU) as skipped, with the reason.

Order: repetition, workload, model, runtime, memory, batch size, provisioned, then target
innermost, so the targets compared for one configuration run back to back.

Units: seconds throughout.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from servelab.bench.spec import Experiment, resolve_workload, workload_label
from servelab.bench.target_spec import TargetSpecBase

RUN_ID_HASH_CHARS = 10
DRAIN_ALLOWANCE_S = 1.0  # requests still in flight when the schedule ends (a typical run drains in < 1 s)
PLATFORM_START_S = 3.0  # starting the local platform once (measured ~1.5-2.5 s on the 2-core VM)


@dataclass(frozen=True)
class PlannedRun:
    """One run, fully resolved. ``None`` on an axis means the axis does not apply to the target."""

    index: int
    run_id: str
    target: str  # the target's label
    kind: str
    model: str
    runtime: str | None
    memory_mb: int | None
    batch_size: int | None
    provisioned: int | None
    workload: str  # label as written in the experiment
    workload_spec: str  # the workload's inline form (what is generated)
    repetition: int
    seed: int
    duration_s: float
    timeout_s: float
    payloads: int
    target_settings: dict[str, Any] = field(default_factory=dict)
    price_entry: str | None = None
    estimate_s: float = 0.0
    skip_reason: str | None = None

    def identity(self) -> dict[str, Any]:
        """What makes this run this run: the hash input for ``run_id``."""
        d = asdict(self)
        for k in ("index", "run_id", "estimate_s", "skip_reason"):
            d.pop(k)
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def value(self, key: str) -> Any:
        return self.kind if key == "kind" else getattr(self, key)

    def matches(self, partial: dict[str, Any]) -> bool:
        """True when every key of ``partial`` matches (a list value matches any of its items)."""
        for key, want in partial.items():
            wants = want if isinstance(want, (list, tuple)) else [want]
            have = self.value(key)
            alts = {have, self.workload_spec} if key == "workload" else {have}
            if not any(_same(w, h) for w in wants for h in alts):
                return False
        return True


def _same(want: Any, have: Any) -> bool:
    if isinstance(want, dict) and not isinstance(have, dict):
        return False
    return want == have or (have is not None and str(want) == str(have))


@dataclass(frozen=True)
class Plan:
    experiment: Experiment
    runs: tuple[PlannedRun, ...]
    excluded: int  # grid points cut by ``exclude``
    platform_start_s: float  # one-off: starting the local platform, if a target needs it

    @property
    def to_run(self) -> tuple[PlannedRun, ...]:
        return tuple(r for r in self.runs if r.skip_reason is None)

    @property
    def skipped(self) -> tuple[PlannedRun, ...]:
        return tuple(r for r in self.runs if r.skip_reason is not None)

    @property
    def estimate_s(self) -> float:
        return self.platform_start_s + sum(r.estimate_s for r in self.to_run)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment.model_dump(mode="json"), "base_dir": self.experiment.base_dir,
                "excluded": self.excluded, "platform_start_s": self.platform_start_s,
                "estimate_s": self.estimate_s, "runs": [r.to_dict() for r in self.runs]}


def run_id_for(identity: dict[str, Any]) -> str:
    """``<target>-<model>-<hash>``: readable, and stable for as long as the configuration is."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    model = re.sub(r"[^A-Za-z0-9_.-]", "-", identity["model"].rsplit("/", 1)[-1].removesuffix(".onnx"))
    prefix = f"{identity['target']}-{model}"[: 64 - RUN_ID_HASH_CHARS - 1].strip("-.") or "run"
    return f"{prefix}-{digest[:RUN_ID_HASH_CHARS]}"


def make_plan(exp: Experiment, *, check_availability: bool = True) -> Plan:
    """Expand ``exp`` into runs. ``check_availability=False`` skips probing the machine (GPU)."""
    from servelab.bench.registry import target_class

    runs: list[PlannedRun] = []
    seen: set[str] = set()
    excluded = 0
    reasons: dict[str, str | None] = {}
    for t in exp.targets:
        reasons[t.label] = target_class(t.kind).availability(t) if check_availability else None
    workload_cache: dict[str, Any] = {}
    for point in _grid(exp):
        rep, wl, model, runtime, memory, batch, prov, t = point
        key = json.dumps(wl, sort_keys=True) if isinstance(wl, dict) else wl
        if key not in workload_cache:
            workload_cache[key] = resolve_workload(wl, exp.base_dir)
        wspec = workload_cache[key]
        duration = exp.duration_s if exp.duration_s is not None else float(wspec.duration_s)
        if duration != wspec.duration_s:  # the inline form then says what is generated
            wspec = type(wspec).model_validate({**wspec.model_dump(), "duration_s": duration})
        probe = PlannedRun(
            index=len(runs), run_id="", target=t.label, kind=t.kind, model=model, runtime=runtime,
            memory_mb=memory, batch_size=batch, provisioned=prov, workload=workload_label(wl),
            workload_spec=wspec.to_inline(), repetition=rep,
            # the same seed for every configuration of one repetition: all targets see the same arrivals
            seed=exp.seed + rep, duration_s=duration, timeout_s=exp.timeout_s, payloads=exp.payloads,
            target_settings=t.settings(), price_entry=t.price_entry,
        )
        if any(probe.matches(ex) for ex in exp.exclude):
            excluded += 1
            continue
        rid = run_id_for(probe.identity())
        if rid in seen:  # two grid points that differ only on axes the target ignores
            continue
        seen.add(rid)
        overhead = target_class(t.kind).overhead_s(probe)
        estimate = duration + DRAIN_ALLOWANCE_S + overhead + t.cooldown_s
        runs.append(_replace(probe, run_id=rid, estimate_s=round(estimate, 1), skip_reason=reasons[t.label]))
    needs_platform = any(getattr(t, "url", "") is None for t in exp.targets
                         if any(r.target == t.label and r.skip_reason is None for r in runs))
    return Plan(experiment=exp, runs=tuple(runs), excluded=excluded,
                platform_start_s=PLATFORM_START_S if needs_platform else 0.0)


def _replace(run: PlannedRun, **changes: Any) -> PlannedRun:
    return PlannedRun(**{**asdict(run), **changes})


def _grid(exp: Experiment):
    """Every grid point in plan order; axes a target ignores take the single value None."""
    def values(t: TargetSpecBase, axis: str) -> tuple[Any, ...]:
        return (None,) if axis in t.FIXED_AXES else exp.axis_values(t, axis)

    for rep in range(exp.repetitions):
        # Outer axes are the union over targets (in first-seen order); each target then keeps
        # only the values it has, so per-target overrides never leak into other targets.
        for wl in _union(exp, "workload"):
            for model in _union(exp, "model"):
                for runtime in _union(exp, "runtime"):
                    for memory in _union(exp, "memory_mb"):
                        for batch in _union(exp, "batch_size"):
                            for prov in _union(exp, "provisioned"):
                                for t in exp.targets:
                                    point = {"workload": wl, "model": model, "runtime": runtime,
                                             "memory_mb": memory, "batch_size": batch, "provisioned": prov}
                                    if all(_has(values(t, a), v) for a, v in point.items()):
                                        yield rep, wl, model, runtime, memory, batch, prov, t


def _has(values: tuple[Any, ...], v: Any) -> bool:
    return any(x == v for x in values)


def _union(exp: Experiment, axis: str) -> list[Any]:
    out: list[Any] = []
    for t in exp.targets:
        vals = (None,) if axis in t.FIXED_AXES else exp.axis_values(t, axis)
        for v in vals:
            if not _has(tuple(out), v):
                out.append(v)
    return out

