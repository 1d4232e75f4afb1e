"""A function's configuration, its persistence (SQLite), and its mapping to AWS Lambda's API.

A function is a model (a store ref) + a runtime + limits and policies. Every setting lives in
:class:`FunctionConfig`, validated once; the platform never reads a loose dict.

Lambda's ``CreateFunction`` has no fields for models or batching, so servelab reads them from
the function's environment variables (or tags) with the ``SERVELAB_`` prefix — see
:data:`LAMBDA_ENV_KEYS` and docs/platform.md for the full mapping.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servelab.config import validate_name
from servelab.core import CoreConfig
from servelab.core.policies import (
    AdmissionMode,
    KeepAliveKind,
    KeepAlivePolicy,
    ScalingKind,
    TargetTracking,
    keepalive_from,
)
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB
from servelab.errors import ConfigError, FunctionExistsError, FunctionNotFoundError
from servelab.platform.backends.base import StartMode

BUILTIN_MODEL_HANDLER = "servelab.model"
RuntimeName = Literal["onnxruntime", "torch"]


class BatchingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0, le=60_000)


class KeepAliveConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: KeepAliveKind = "fixed"
    keep_alive_s: float = Field(600.0, ge=0)  # the clouds keep an idle instance ~10 minutes
    params: dict[str, int | float] = Field(default_factory=dict)  # extra parameters of the hybrid policy


class ScalingConfig(BaseModel):
    """How the instance count changes: ``per-request`` (serverless: a request that finds no free
    instance starts one), ``target-tracking`` (a managed endpoint's autoscaler: see
    core/policies/autoscale.py; ``provisioned`` is the minimum instance count and
    ``max_concurrency`` the maximum) or ``fixed`` (an always-on server pool: ``provisioned``
    instances, never more, never fewer). The last two need ``admission: queue``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ScalingKind = "per-request"
    target_utilisation: float = Field(0.7, gt=0, le=1)
    metric_period_s: float = Field(60.0, gt=0)
    scale_out_cooldown_s: float = Field(300.0, ge=0)
    scale_in_cooldown_s: float = Field(300.0, ge=0)
    scale_out_delay_s: float = Field(0.0, ge=0)


def keepalive_policy(cfg: KeepAliveConfig) -> KeepAlivePolicy:
    """The keep-alive policy a config describes; for ``hybrid``, ``keep_alive_s`` is its fallback."""
    return keepalive_from(cfg.kind, cfg.keep_alive_s, cfg.params)


class FunctionConfig(BaseModel):
    """Everything about one function. Units are in the names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model: str | None = None  # a store ref "name@sha256:…" (deploy puts a local file into the store)
    runtime: RuntimeName = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"  # cuda: the model runs on the first NVIDIA GPU (a GPU server)
    handler: str = BUILTIN_MODEL_HANDLER  # or "module.function" from the function's code
    memory_mb: int = Field(1024, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    timeout_s: float = Field(30.0, gt=0, le=900)
    max_concurrency: int = Field(4, ge=1, le=1000)
    provisioned: int = Field(0, ge=0)
    batching: BatchingConfig = BatchingConfig()
    keep_alive: KeepAliveConfig = KeepAliveConfig()
    scaling: ScalingConfig = ScalingConfig()
    admission: AdmissionMode = "throttle"  # Lambda's default: 429 above the concurrency limit
    max_queue: int = Field(100, ge=0)
    max_queue_wait_s: float = Field(10.0, ge=0)
    # scale from zero as a contract: at most this many requests wait while instances start; the
    # next one gets 429 with Retry-After (None: only max_queue / admission bound them)
    max_held_requests: int | None = Field(None, ge=1)
    start_mode: StartMode = "fork"
    threads: int | None = Field(None, ge=1, le=64)  # default: from the memory size's vCPUs
    env: dict[str, str] = Field(default_factory=dict)
    # names of the platform's own environment variables its instances receive (instances start from
    # a minimal environment: docs/isolation.md); e.g. AWS credentials for a moto/S3 endpoint, as
    # Lambda injects its execution role's
    pass_env: list[str] = Field(default_factory=list)
    description: str = ""
    billing_rounding_ms: int = Field(1, ge=1)  # AWS Lambda bills in 1 ms steps
    code_sha256: str | None = None
    code_size: int = 0
    lambda_runtime: str = "python3.11"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, what="function name")

    @model_validator(mode="after")
    def _consistent(self) -> FunctionConfig:
        if self.provisioned > self.max_concurrency:
            raise ValueError(f"provisioned ({self.provisioned}) cannot exceed max_concurrency "
                             f"({self.max_concurrency})")
        if self.handler == BUILTIN_MODEL_HANDLER and not self.model:
            raise ValueError("the built-in model handler needs a model: set 'model' (or SERVELAB_MODEL)")
        keepalive_policy(self.keep_alive)  # its parameters are checked at deploy, not at first request
        if self.scaling.kind != "per-request" and self.admission != "queue":
            raise ValueError(f"{self.scaling.kind} scaling needs admission 'queue' (requests wait for the "
                             "instances that exist; they never start one)")
        if self.scaling.kind == "target-tracking":
            self.autoscaler()  # checks provisioned (the minimum) >= 1
        if self.scaling.kind == "fixed" and self.provisioned < 1:
            raise ValueError("fixed scaling needs provisioned >= 1 (the pool's size)")
        return self

    def autoscaler(self) -> TargetTracking:
        """The target-tracking settings: minimum = ``provisioned``, maximum = ``max_concurrency``."""
        s = self.scaling
        return TargetTracking(min_instances=self.provisioned, max_instances=self.max_concurrency,
                              target_utilisation=s.target_utilisation, metric_period_s=s.metric_period_s,
                              scale_out_cooldown_s=s.scale_out_cooldown_s,
                              scale_in_cooldown_s=s.scale_in_cooldown_s, scale_out_delay_s=s.scale_out_delay_s)

    def core_config(self) -> CoreConfig:
        """The core's view of this function (:class:`servelab.core.CoreConfig`)."""
        tracking = self.scaling.kind == "target-tracking"
        fixed = self.scaling.kind == "fixed"
        return CoreConfig(scaling=self.scaling.kind,
                          max_instances=self.provisioned if fixed else self.max_concurrency,
                          min_instances=self.provisioned,
                          admission=self.admission, max_queue=self.max_queue, max_queue_wait_s=self.max_queue_wait_s,
                          max_batch_size=self.batching.max_batch_size, max_wait_s=self.batching.max_wait_ms / 1000.0,
                          keepalive=keepalive_policy(self.keep_alive),
                          autoscaler=self.autoscaler() if tracking else None,
                          max_held_requests=self.max_held_requests)

    def updated(self, **changes: Any) -> FunctionConfig:
        return make_config({**self.model_dump(), **changes})


def make_config(data: dict[str, Any]) -> FunctionConfig:
    """Validate ``data`` into a config; errors name the field and what is allowed."""
    try:
        return FunctionConfig.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                         for err in e.errors())
        raise ConfigError(f"invalid function configuration: {msgs}") from None


# Lambda environment variable (or tag) -> (FunctionConfig path, type)
LAMBDA_ENV_KEYS: dict[str, tuple[str, Any]] = {
    "SERVELAB_MODEL": ("model", str),
    "SERVELAB_RUNTIME": ("runtime", str),
    "SERVELAB_DEVICE": ("device", str),
    "SERVELAB_BATCH_SIZE": ("batching.max_batch_size", int),
    "SERVELAB_BATCH_WAIT_MS": ("batching.max_wait_ms", float),
    "SERVELAB_KEEP_ALIVE_POLICY": ("keep_alive.kind", str),
    "SERVELAB_KEEP_ALIVE_S": ("keep_alive.keep_alive_s", float),
    "SERVELAB_KEEP_ALIVE_PARAMS": ("keep_alive.params", json.loads),  # e.g. {"bin_s": 1, "range_s": 600}
    "SERVELAB_SCALING": ("scaling.kind", str),
    # e.g. {"target_utilisation": 0.7, "metric_period_s": 5, "scale_out_delay_s": 10}
    "SERVELAB_SCALING_PARAMS": ("scaling", json.loads),
    "SERVELAB_ADMISSION": ("admission", str),
    "SERVELAB_MAX_QUEUE": ("max_queue", int),
    "SERVELAB_MAX_QUEUE_WAIT_S": ("max_queue_wait_s", float),
    "SERVELAB_START_MODE": ("start_mode", str),
    "SERVELAB_THREADS": ("threads", int),
    "SERVELAB_MAX_CONCURRENCY": ("max_concurrency", int),
    "SERVELAB_PROVISIONED": ("provisioned", int),  # the minimum instance count under target-tracking
    "SERVELAB_BILLING_ROUNDING_MS": ("billing_rounding_ms", int),
    "SERVELAB_PASS_ENV": ("pass_env", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
}


_ENV_OF_FIELD = {path: key for key, (path, _) in LAMBDA_ENV_KEYS.items() if key != "SERVELAB_SCALING_PARAMS"}


def servelab_vars(settings: dict[str, Any]) -> dict[str, str]:
    """The ``SERVELAB_*`` environment variables that set ``settings`` — a mapping from
    :class:`FunctionConfig` field paths (``"max_concurrency"``, ``"batching.max_batch_size"``,
    ``"keep_alive.params"`` …) to values — on a function created through the Lambda API. The one
    inverse of :func:`apply_servelab_vars`; ``None`` values are left out."""
    out: dict[str, str] = {}
    for path, value in settings.items():
        if value is None:
            continue
        key = "SERVELAB_SCALING_PARAMS" if path == "scaling" else _ENV_OF_FIELD.get(path)
        if key is None:
            raise ConfigError(f"no SERVELAB_* variable sets {path!r}; settable: {', '.join(sorted(_ENV_OF_FIELD))}")
        out[key] = (json.dumps(value) if isinstance(value, dict) else ",".join(value) if isinstance(value, list)
                    else str(value))
    return out


def apply_servelab_vars(data: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    """Move ``SERVELAB_*`` settings from ``variables`` into ``data``; return the rest (the
    function's own environment). Unknown ``SERVELAB_*`` keys are an error, not ignored."""
    rest: dict[str, str] = {}
    for key, value in variables.items():
        if not key.startswith("SERVELAB_"):
            rest[key] = value
            continue
        if key not in LAMBDA_ENV_KEYS:
            raise ConfigError(f"unknown setting {key}; servelab reads {', '.join(sorted(LAMBDA_ENV_KEYS))}")
        path, typ = LAMBDA_ENV_KEYS[key]
        try:
            converted = typ(value)
        except ValueError:
            what = "JSON object" if typ is json.loads else typ.__name__
            raise ConfigError(f"{key}={value!r} is not a valid {what}") from None
        target = data
        *parents, leaf = path.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        if isinstance(converted, dict) and isinstance(target.get(leaf), dict):
            converted = {**target[leaf], **converted}  # SERVELAB_SCALING and its _PARAMS, in any order
        target[leaf] = converted
    return rest


def lambda_configuration(cfg: FunctionConfig, *, last_modified: str) -> dict[str, Any]:
    """The function as Lambda's ``FunctionConfiguration`` shape shows it."""
    env = {**cfg.env, **servelab_vars({
        "model": cfg.model, "runtime": cfg.runtime, "device": cfg.device if cfg.device != "cpu" else None,
        "batching.max_batch_size": cfg.batching.max_batch_size, "batching.max_wait_ms": cfg.batching.max_wait_ms,
        "keep_alive.kind": cfg.keep_alive.kind, "keep_alive.keep_alive_s": cfg.keep_alive.keep_alive_s,
        "admission": cfg.admission, "start_mode": cfg.start_mode, "pass_env": cfg.pass_env or None,
        "scaling": cfg.scaling.model_dump() if cfg.scaling.kind != "per-request" else None})}
    return {
        "FunctionName": cfg.name,
        "FunctionArn": f"arn:aws:lambda:local:000000000000:function:{cfg.name}",
        "Runtime": cfg.lambda_runtime,
        "Role": "arn:aws:iam::000000000000:role/servelab",
        "Handler": cfg.handler,
        "CodeSize": cfg.code_size,
        "CodeSha256": cfg.code_sha256 or "",
        "Description": cfg.description,
        "Timeout": int(cfg.timeout_s) if float(cfg.timeout_s).is_integer() else cfg.timeout_s,
        "MemorySize": cfg.memory_mb,
        "LastModified": last_modified,
        "Version": "$LATEST",
        "Environment": {"Variables": env},
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
    }


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


class FunctionRegistry:
    """Deployed functions, persisted in SQLite so a restarted platform still knows them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS functions (name TEXT PRIMARY KEY, config TEXT NOT NULL,"
                         " created TEXT NOT NULL, modified TEXT NOT NULL)")
        self._lock = threading.Lock()

    def create(self, cfg: FunctionConfig) -> str:
        ts = now_iso()
        with self._lock:
            try:
                self._db.execute("INSERT INTO functions VALUES (?, ?, ?, ?)",
                                 (cfg.name, cfg.model_dump_json(), ts, ts))
            except sqlite3.IntegrityError:
                raise FunctionExistsError(f"function {cfg.name!r} already exists",
                                          function=cfg.name) from None
        return ts

    def update(self, cfg: FunctionConfig) -> str:
        ts = now_iso()
        with self._lock:
            cur = self._db.execute("UPDATE functions SET config = ?, modified = ? WHERE name = ?",
                                   (cfg.model_dump_json(), ts, cfg.name))
        if cur.rowcount == 0:
            raise FunctionNotFoundError(f"function {cfg.name!r} not found", function=cfg.name)
        return ts

    def get(self, name: str) -> tuple[FunctionConfig, str]:
        with self._lock:
            row = self._db.execute("SELECT config, modified FROM functions WHERE name = ?",
                                   (name,)).fetchone()
        if row is None:
            raise FunctionNotFoundError(f"function {name!r} not found", function=name)
        return FunctionConfig.model_validate(json.loads(row[0])), row[1]

    def list(self) -> list[tuple[FunctionConfig, str]]:
        with self._lock:
            rows = self._db.execute("SELECT config, modified FROM functions ORDER BY name").fetchall()
        return [(FunctionConfig.model_validate(json.loads(c)), m) for c, m in rows]

    def delete(self, name: str) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM functions WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise FunctionNotFoundError(f"function {name!r} not found", function=name)

    def close(self) -> None:
        self._db.close()
