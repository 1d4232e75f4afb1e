"""What the core needs to know about one function (or endpoint, or server pool).

Built once from a platform ``FunctionConfig`` or a simulator config; frozen. The three scaling
modes share every rule but one — who starts instances:

* ``per-request`` (serverless): an arriving request that finds no free instance starts one
  (up to ``max_instances``), idle instances are reclaimed by the keep-alive policy;
* ``target-tracking`` (a managed endpoint): only the autoscaler adds or removes instances,
  once per metric period; requests queue for the instances that exist;
* ``fixed`` (an always-on server pool): ``min_instances`` instances, never more, never fewer.

Times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from servelab.core.policies import (
    AdmissionMode,
    FixedKeepAlive,
    KeepAlivePolicy,
    ScaleRateKind,
    TargetTracking,
)
from servelab.errors import ConfigError

CoreScaling = Literal["per-request", "target-tracking", "fixed"]
CORE_SCALINGS: tuple[CoreScaling, ...] = get_args(CoreScaling)


@dataclass(frozen=True)
class CoreConfig:
    """One function's scheduling settings. ``min_instances`` are started at boot as
    ``provisioned`` environments (provisioned concurrency; a server's machines; a managed
    endpoint's minimum) and never reclaimed."""

    scaling: CoreScaling = "per-request"
    max_instances: int = 1000
    min_instances: int = 0
    slots: int = 1  # requests (batches) one instance runs at a time
    admission: AdmissionMode = "throttle"
    max_queue: int = 100
    max_queue_wait_s: float = 10.0
    max_batch_size: int = 1
    max_wait_s: float = 0.0
    keepalive: KeepAlivePolicy = field(default_factory=FixedKeepAlive)
    autoscaler: TargetTracking | None = None
    scale_rate: ScaleRateKind = "none"
    # scale from zero as a contract: at most this many requests wait for instances to start (or
    # free up); the next gets a 429 with Retry-After. None: only max_queue / admission bound them.
    max_held_requests: int | None = None

    def __post_init__(self) -> None:
        if self.scaling not in CORE_SCALINGS:
            raise ConfigError(f"unknown scaling {self.scaling!r}; choose one of: {', '.join(CORE_SCALINGS)}")
        if self.max_instances < 1 or self.slots < 1 or self.max_batch_size < 1:
            raise ConfigError("max_instances, slots and max_batch_size must be >= 1, got "
                              f"{self.max_instances}, {self.slots}, {self.max_batch_size}")
        if not 0 <= self.min_instances <= self.max_instances:
            raise ConfigError(f"min_instances ({self.min_instances}) must be between 0 and max_instances "
                              f"({self.max_instances})")
        if self.max_held_requests is not None and self.max_held_requests < 1:
            raise ConfigError(f"max_held_requests must be >= 1 (or None: no bound), got {self.max_held_requests}")
        if self.scaling == "target-tracking" and self.autoscaler is None:
            raise ConfigError("scaling 'target-tracking' needs an autoscaler (TargetTracking settings)")
        if self.scaling == "fixed" and self.min_instances < 1:
            raise ConfigError("scaling 'fixed' needs min_instances >= 1 (the pool's size)")
