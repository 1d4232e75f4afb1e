"""What every experiment target shares, below the spec, the planner, the registry and the
targets (so none of them imports another for it): the axes of the design space, the axis lists a
target may override, the base class of every target's spec, what an ``exclude`` may match, and
the interface every target implements (:class:`BenchTarget`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servelab.config import validate_name
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB

if TYPE_CHECKING:
    from servelab.bench.planner import PlannedRun
    from servelab.bench.targets import Endpoint, TargetContext

RuntimeName = Literal["onnxruntime", "torch"]
# The axes of the grid, in the order the planner nests them (target innermost, so the targets
# compared for one configuration run back to back, minutes apart rather than hours).
AxisName = Literal["repetition", "workload", "model", "runtime", "memory_mb", "batch_size", "provisioned",
                   "target"]
AXES: tuple[str, ...] = ("repetition", "workload", "model", "runtime", "memory_mb", "batch_size",
                         "provisioned", "target")
# Axis -> the list key that sets it (globally and in a target's overrides).
AXIS_KEYS: dict[str, str] = {"model": "models", "runtime": "runtimes", "memory_mb": "memory_mb",
                             "batch_size": "batch_size", "provisioned": "provisioned",
                             "workload": "workloads"}

WorkloadEntry = Union[str, dict[str, Any]]  # noqa: UP007 - a preset / inline / file name, or an inline mapping


def _listify(v: Any) -> Any:
    """A scalar where a list is expected means a one-element list (``memory_mb: 1769``)."""
    if v is None or isinstance(v, (list, tuple)):
        return v
    return [v]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AxisOverrides(_Model):
    """Axis lists a target may set for itself; each replaces the experiment's list for that target."""

    models: tuple[str, ...] | None = Field(None, min_length=1)
    runtimes: tuple[RuntimeName, ...] | None = Field(None, min_length=1)
    memory_mb: tuple[Annotated[int, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)], ...] | None = Field(None, min_length=1)
    batch_size: tuple[Annotated[int, Field(ge=1, le=1024)], ...] | None = Field(None, min_length=1)
    provisioned: tuple[Annotated[int, Field(ge=0, le=1000)], ...] | None = Field(None, min_length=1)
    workloads: tuple[WorkloadEntry, ...] | None = Field(None, min_length=1)

    _wrap = field_validator("models", "runtimes", "memory_mb", "batch_size", "provisioned", "workloads",
                            mode="before")(_listify)


class TargetSpecBase(AxisOverrides):
    """What every target has: a label, a price-catalog entry, a pause between runs.

    A target kind subclasses this with ``kind: Literal["<kind>"] = "<kind>"`` and its own
    settings, and registers it (:func:`servelab.bench.registry.register_target`).
    """

    kind: str
    name: str | None = None  # label in run ids and reports; default: the kind
    price: str | None = None  # price-catalog entry id; default: the kind's DEFAULT_PRICE
    cooldown_s: float = Field(1.0, ge=0, le=3600)  # pause after each run, after its instances are gone

    # Axes that do not apply to this kind collapse to one value (None) instead of multiplying runs.
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset()
    DEFAULT_PRICE: ClassVar[str | None] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, what="target name")

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def price_entry(self) -> str | None:
        return self.price if self.price is not None else self.DEFAULT_PRICE

    def settings(self) -> dict[str, Any]:
        """The target's own settings (no axis overrides, no label): part of every run's config."""
        skip = set(AxisOverrides.model_fields) | {"name", "cooldown_s"}
        return {k: v for k, v in self.model_dump().items() if k not in skip}


def exclusion_keys() -> tuple[str, ...]:
    """What an ``exclude`` entry may match on: every axis, plus the target's kind."""
    return (*AXES, "kind")


class BenchTarget:
    """The interface every target implements. Instances are built per experiment, per target.

    A new kind overrides :meth:`prepare` (required) and whichever of the others it needs; the
    executor calls, per experiment: ``start()`` once, then per run ``prepare(run, model_path)``,
    the load, ``price_args(run, summary)``, ``cooldown()``; at the end ``teardown()``.
    ``availability`` and ``overhead_s`` are asked by the planner before anything runs.
    """

    kind: ClassVar[str]

    def __init__(self, spec: TargetSpecBase, ctx: TargetContext) -> None:
        self.spec = spec
        self.ctx = ctx

    @classmethod
    def availability(cls, spec: TargetSpecBase) -> str | None:
        """None when this machine can run the target; otherwise why not (the runs are skipped)."""
        return None

    @classmethod
    def overhead_s(cls, run: PlannedRun) -> float:
        """Estimated seconds per run beyond the schedule: deploy, start instances, tear down."""
        return 0.0

    def start(self) -> None:
        """Bring the target up before the first run (the local platform starts here)."""

    def prepare(self, run: PlannedRun, model_path: Path) -> Endpoint:
        raise NotImplementedError

    def cooldown(self) -> None:
        """Leave nothing of the last run behind, then pause ``cooldown_s`` for the machine to settle."""
        if self.spec.cooldown_s:
            time.sleep(self.spec.cooldown_s)

    def teardown(self) -> None:
        """Release what the experiment created on the target."""

    def price_args(self, run: PlannedRun, summary: dict[str, Any]) -> dict[str, Any] | None:
        """Arguments for :func:`servelab.billing.pricing.price_run` (``entry_id`` included), or None
        when the target has no price entry. May add ``notes`` (a list) saying what it assumed."""
        if not self.spec.price_entry:
            return None
        return {"entry_id": self.spec.price_entry}
