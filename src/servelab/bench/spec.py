"""The experiment spec: one YAML file that names every configuration a study compares.

An experiment is a grid — targets × models × runtimes × memory sizes × batch sizes ×
provisioned concurrency × workloads × repetitions — with per-target overrides of any axis and
exclusions (partial matches) cut out of it. This module only validates the file into frozen
pydantic models; :mod:`~servelab.bench.planner` expands the grid into runs.

Errors are :class:`~servelab.errors.ConfigError` and name the bad key (``targets[1].workers``)
and what is allowed, never a pydantic traceback.

Units: seconds (``*_s``), milliseconds (``*_ms``), megabytes (``*_mb``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from servelab.bench import registry
from servelab.bench.target_spec import (
    AXIS_KEYS,
    AxisOverrides,
    RuntimeName,
    TargetSpecBase,
    WorkloadEntry,
    _listify,
    _Model,
    exclusion_keys,
)
from servelab.config import validate_name
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB
from servelab.errors import ConfigError, ServelabError

# The built-in kinds. More are added with servelab.bench.registry.register_target (cloud targets),
# so a target's ``kind`` is validated against the registry, not against this alias.
TargetKind = Literal["serverless", "server", "gpu-server", "managed", "http"]
StartMode = Literal["fork", "spawn"]
class _PlatformTargetSpec(TargetSpecBase):
    url: str | None = None  # an already-running platform; default: the executor starts its own
    start_mode: StartMode = "fork"
    batch_wait_ms: float = Field(0.0, ge=0, le=60_000)
    function_timeout_s: float = Field(30.0, gt=0, le=900)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v


class ServerlessTargetSpec(_PlatformTargetSpec):
    """The local serverless platform: on-demand instances, cold starts, scale to zero."""

    kind: Literal["serverless"] = "serverless"
    keep_alive_s: float = Field(600.0, ge=0)
    keep_alive_policy: Literal["fixed", "hybrid"] = "fixed"
    max_concurrency: int = Field(4, ge=1, le=1000)
    admission: Literal["throttle", "queue"] = "throttle"
    max_queue: int = Field(100, ge=0)
    DEFAULT_PRICE: ClassVar[str | None] = "aws-lambda-x86-us-east-1"


class ServerTargetSpec(_PlatformTargetSpec):
    """An always-on CPU server: ``workers`` instances started before the run, a bounded queue."""

    kind: Literal["server"] = "server"
    workers: int = Field(2, ge=1, le=256)
    max_queue: int = Field(10_000, ge=0)
    machines: int = Field(1, ge=1)  # instances of the price entry billed for the run's window
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"provisioned"})
    DEFAULT_PRICE: ClassVar[str | None] = "aws-ec2-c5.large-us-east-1"


class GpuServerTargetSpec(ServerTargetSpec):
    """The same server with its instances on the GPU (the platform's ``device: cuda``: onnxruntime's
    CUDA execution provider, CPU as fallback); skipped where there is no GPU."""

    kind: Literal["gpu-server"] = "gpu-server"  # type: ignore[assignment]
    workers: int = Field(1, ge=1, le=256)
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"provisioned", "runtime"})
    DEFAULT_PRICE: ClassVar[str | None] = "aws-ec2-g4dn.xlarge-us-east-1"


class ManagedTargetSpec(_PlatformTargetSpec):
    """A SageMaker / AI Platform-like endpoint: ``min_instances`` always on, more on demand.

    Runs on the platform's target-tracking autoscaler (docs/policies.md, "Scaling"): every
    ``metric_period_s`` it compares the load per instance with ``target_utilisation`` and adds
    instances, which serve ``scale_out_delay_s`` later (the alarm and the instance start of a real
    endpoint); idle instances above the minimum go after ``scale_in_idle_s``. Requests above
    the instances queue (up to ``max_queue``); none waits for a cold start it caused.
    """

    kind: Literal["managed"] = "managed"
    min_instances: int = Field(1, ge=0, le=1000)
    max_instances: int = Field(4, ge=1, le=1000)
    target_utilisation: float = Field(0.7, gt=0, le=1)
    scale_out_delay_s: float = Field(60.0, ge=0)  # from the decision to a serving instance
    scale_in_idle_s: float = Field(300.0, ge=0)  # scale-in cooldown: an extra instance idle this long goes
    metric_period_s: float = Field(60.0, gt=0)  # how often the load is measured (CloudWatch: 1 min)
    scale_out_cooldown_s: float = Field(300.0, ge=0)  # no second scale-out sooner than this
    max_queue: int = Field(10_000, ge=0)
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"provisioned"})
    DEFAULT_PRICE: ClassVar[str | None] = "aws-sagemaker-ml.c5.large-us-east-1"

    @model_validator(mode="after")
    def _bounds(self) -> ManagedTargetSpec:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) cannot exceed max_instances "
                             f"({self.max_instances})")
        return self


class HttpTargetSpec(TargetSpecBase):
    """Any URL servelab does not manage: no deploy, no cooldown beyond the pause, no price by default."""

    kind: Literal["http"] = "http"
    url: str
    protocol: Literal["http", "lambda", "v2"] = "http"  # plain POST, Lambda Invoke API, Open Inference
    function: str | None = None  # the function (lambda) or model (v2) name
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"runtime", "memory_mb", "batch_size", "provisioned"})

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v

    @model_validator(mode="after")
    def _function(self) -> HttpTargetSpec:
        if self.protocol in ("lambda", "v2") and not self.function:
            raise ValueError(f"protocol {self.protocol!r} needs 'function' (the function or model name)")
        return self


def _target_from(v: Any) -> Any:
    """Validate one target mapping with the spec class its ``kind`` is registered with."""
    if isinstance(v, TargetSpecBase):
        return v
    if isinstance(v, str):
        v = {"kind": v}
    if not isinstance(v, dict):
        raise PydanticCustomError("target_type", "a target is a kind name or a mapping with 'kind' (got {got})",
                                  {"got": type(v).__name__})
    if "kind" not in v:
        raise PydanticCustomError("target_kind_missing", "a target needs 'kind' (one of {kinds})",
                                  {"kinds": ", ".join(registry.target_kinds())})
    try:
        cls = registry.spec_class(str(v["kind"]))
    except ConfigError as e:
        raise PydanticCustomError("target_kind_unknown", "{msg}", {"msg": str(e)}) from None
    return cls.model_validate(v)


# Any registered target: validated by its kind's class, dumped with all of that class's fields.
AnyTargetSpec = Annotated[SerializeAsAny[TargetSpecBase], BeforeValidator(_target_from)]


class Experiment(_Model):
    """A whole experiment. ``base_dir`` (the YAML file's folder) resolves relative paths."""

    name: str
    description: str = ""
    seed: int = Field(0, ge=0)
    # Each configuration runs this many times, repetition r with seed + r (every target of one
    # repetition sees the same arrivals). The report pools them and bootstraps intervals over
    # runs and requests (servelab.analysis.stats); with 1 the intervals are request-level only,
    # so 3 or more is what a comparison needs. The default stays 1: a first run should be quick.
    repetitions: int = Field(1, ge=1, le=1000)
    slo_p95_ms: float | None = Field(None, gt=0)  # the p95 objective the report's headline checks
    duration_s: float | None = Field(None, gt=0)  # None: each workload's own duration
    timeout_s: float = Field(30.0, gt=0)  # per request, counted from its send
    payloads: int = Field(8, ge=1, le=1000)  # distinct seeded request bodies per run
    models: tuple[str, ...] = Field(min_length=1)
    runtimes: tuple[RuntimeName, ...] = Field(("onnxruntime",), min_length=1)
    memory_mb: tuple[Annotated[int, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)], ...] = Field((1769,), min_length=1)
    batch_size: tuple[Annotated[int, Field(ge=1, le=1024)], ...] = Field((1,), min_length=1)
    provisioned: tuple[Annotated[int, Field(ge=0, le=1000)], ...] = Field((0,), min_length=1)
    workloads: tuple[WorkloadEntry, ...] = Field(min_length=1)
    targets: tuple[AnyTargetSpec, ...] = Field(min_length=1)
    exclude: tuple[dict[str, Any], ...] = ()
    base_dir: str = Field(".", exclude=True)

    _wrap = field_validator("models", "runtimes", "memory_mb", "batch_size", "provisioned", "workloads",
                            "exclude", mode="before")(_listify)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, what="experiment name")

    @field_validator("targets", mode="before")
    @classmethod
    def _short_targets(cls, v: Any) -> Any:
        """``targets: [serverless, server]`` is short for ``[{kind: serverless}, {kind: server}]``."""
        v = _listify(v)
        if isinstance(v, (list, tuple)):
            return [{"kind": t} if isinstance(t, str) else t for t in v]
        return v

    def axis_values(self, target: TargetSpecBase, axis: str) -> tuple[Any, ...]:
        """The values ``axis`` takes for ``target``: its override, else the experiment's list."""
        key = AXIS_KEYS[axis]
        own = getattr(target, key)
        return tuple(own) if own is not None else tuple(getattr(self, key))


# ------------------------------------------------------------------------------------- loading


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment YAML file (every check, including models and workloads)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_experiment(data, base_dir=p.parent, source=str(p))


def parse_experiment(data: Any, *, base_dir: str | os.PathLike = ".",
                     source: str = "experiment") -> Experiment:
    """Validate a mapping into an :class:`Experiment`; raise ConfigError naming the bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment is a mapping of keys ({', '.join(_keys(Experiment))}); "
                          f"got {type(data).__name__}")
    if "base_dir" in data:
        raise ConfigError(f"{source}: unknown key 'base_dir'; allowed keys: {', '.join(_keys(Experiment))}")
    try:
        exp = Experiment.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
    except ValidationError as e:
        raise ConfigError(f"{source}: " + _explain(e, data)) from None
    check_experiment(exp, source=source)
    return exp


def _keys(cls: type[BaseModel]) -> list[str]:
    """Field names, the class's own first and the per-target axis overrides last."""
    names = [k for k, f in cls.model_fields.items() if not f.exclude]
    axis = [k for k in names if k in AxisOverrides.model_fields and cls is not Experiment]
    return [k for k in names if k not in axis] + axis


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _owner(data: dict[str, Any], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model a key belongs to: a target's spec class under ``targets[i]``, else Experiment."""
    if len(loc) >= 2 and loc[0] == "targets" and isinstance(loc[1], int):
        raw = data.get("targets")
        targets: list[Any] = [raw] if isinstance(raw, (str, dict)) else list(raw or [])
        try:
            item = targets[loc[1]]
            kind = item if isinstance(item, str) else item["kind"]
            return registry.spec_class(str(kind))
        except (TypeError, KeyError, IndexError, ConfigError):
            return TargetSpecBase
    return Experiment


def _explain(err: ValidationError, data: dict[str, Any]) -> str:
    """pydantic's errors as one line each: key path, problem, allowed keys or values."""
    msgs: list[str] = []
    errors = err.errors()
    # A list whose items failed is also reported "too short" (0 valid items): noise, drop it.
    failed_lists = {e["loc"][:1] for e in errors if len(e["loc"]) > 1}
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] == "too_short" and loc[:1] in failed_lists and len(loc) == 1:
            continue
        key = _loc_str(loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            msgs.append(f"unknown key {key!r}; allowed keys: {', '.join(_keys(_owner(data, loc)))}")
        elif kind == "missing":
            msgs.append(f"missing key {key!r}")
        elif kind in ("target_kind_unknown", "target_kind_missing", "target_type"):
            msgs.append(f"{key}: {e['msg']}")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msgs.append(f"{key or 'experiment'}: {msg}{shown}")
    return "; ".join(msgs)


def check_experiment(exp: Experiment, *, source: str = "experiment") -> None:
    """Checks that need more than types: names unique, models and workloads that resolve,
    exclusions that name real axes, price entries that exist, provisioned within limits."""

    labels = [t.label for t in exp.targets]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{source}: targets {dup} appear more than once; give each a distinct 'name'")
    for i, t in enumerate(exp.targets):
        where = f"targets[{i}].models" if t.models is not None else "models"
        for m in exp.axis_values(t, "model"):
            _check_model(m, exp.base_dir, f"{source}: {where}")
        where = f"targets[{i}].workloads" if t.workloads is not None else "workloads"
        for w in exp.axis_values(t, "workload"):
            resolve_workload(w, exp.base_dir, where=f"{source}: {where}")
        if isinstance(t, ServerlessTargetSpec):
            top = max(exp.axis_values(t, "provisioned"))
            if top > t.max_concurrency:
                raise ConfigError(f"{source}: targets[{i}] ({t.label}): provisioned {top} exceeds its "
                                  f"max_concurrency {t.max_concurrency}; raise max_concurrency or lower "
                                  "provisioned")
    allowed = exclusion_keys()
    for j, ex in enumerate(exp.exclude):
        if not ex:
            raise ConfigError(f"{source}: exclude[{j}] is empty (it would exclude every run)")
        bad = sorted(set(ex) - set(allowed))
        if bad:
            raise ConfigError(f"{source}: exclude[{j}] has unknown key(s) {bad}; allowed keys: "
                              f"{', '.join(allowed)}")
    entries = {t.price_entry for t in exp.targets if t.price_entry}
    if entries:
        from servelab.billing.catalog import load_catalog

        catalog = load_catalog()
        for i, t in enumerate(exp.targets):
            if t.price_entry and t.price_entry not in catalog:
                raise ConfigError(f"{source}: targets[{i}].price: no price-catalog entry {t.price_entry!r} "
                                  "(`servelab cost catalog` lists the ids)")


def model_path(name: str, base_dir: str) -> Path | None:
    """The ONNX file a model entry names (relative to the spec's folder), or None for a zoo name."""
    if name.endswith(".onnx") or "/" in name or os.sep in name:
        p = Path(name).expanduser()
        return p if p.is_absolute() else Path(base_dir) / p
    return None


def _check_model(name: str, base_dir: str, where: str) -> None:
    path = model_path(name, base_dir)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{where}: model file {path} does not exist "
                              "(a model is a zoo name or an ONNX path)")
        return
    from servelab.models.zoo import ZOO  # imports onnx: only when a spec is checked

    if name not in ZOO:
        raise ConfigError(f"{where}: unknown model {name!r}; zoo models: {', '.join(ZOO)} "
                          "(or an ONNX file path)")


def workload_label(entry: WorkloadEntry) -> str:
    """How a workload entry is named in run ids, tables and exclusions."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and "name" in entry:
        return str(entry["name"])
    return resolve_workload(entry, ".").to_inline()


def resolve_workload(entry: WorkloadEntry, base_dir: str, *, where: str = "workloads") -> Any:
    """The :mod:`servelab.workload` spec an entry names: a preset, an inline string, a YAML/JSON
    file (relative to the experiment's folder), or a mapping (with an optional ``name``)."""
    from servelab.workload import load_spec, parse_spec

    try:
        if isinstance(entry, dict):
            return parse_spec({k: v for k, v in entry.items() if k != "name"}, source=where)
        text = entry.strip()
        local = Path(base_dir) / text
        is_file = local.suffix.lower() in {".yaml", ".yml", ".json"} and local.is_file()
        if not Path(text).is_absolute() and is_file:
            text = str(local)
        return load_spec(text)
    except ServelabError as e:
        raise ConfigError(f"{where}: {e}") from None
