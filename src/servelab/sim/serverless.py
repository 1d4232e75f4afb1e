"""A serverless platform (AWS Lambda, Cloud Functions, servelab's own) as simulator settings.

The behaviour is the core's (:class:`servelab.core.FunctionCore`, the one the live platform
drives): admission, cold starts, batching, keep-alive and pre-warming, queue timeouts,
provisioned concurrency and the scale-out rate limit (:class:`~servelab.core.policies.ScaleRateLimit`).
:meth:`ServerlessConfig.engine_spec` turns these settings into the core's; the engine
(:mod:`servelab.sim.engine`) supplies times from a profile. Billing follows
:mod:`servelab.billing.rules` (see :mod:`servelab.sim.output`).

Times are seconds on the simulation clock; durations ms.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servelab.core import CoreConfig
from servelab.core.policies import AdmissionMode, KeepAliveKind, KeepAlivePolicy, ScaleRateKind, keepalive_from
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB
from servelab.sim.engine import EngineSpec


class ServerlessConfig(BaseModel):
    """One simulated serverless function. Field names and defaults follow the platform's
    ``FunctionConfig`` where they mean the same thing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["serverless"] = "serverless"
    name: str = "fn"
    price_entry: str = "aws-lambda-x86-us-east-1"
    memory_mb: int = Field(1769, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    max_concurrency: int = Field(1000, ge=1)
    provisioned: int = Field(0, ge=0)
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0)
    keep_alive: KeepAliveKind = "fixed"
    keep_alive_s: float = Field(600.0, ge=0)
    keep_alive_params: dict[str, float] = Field(default_factory=dict)
    admission: AdmissionMode = "throttle"
    max_queue: int = Field(100, ge=0)
    max_queue_wait_s: float = Field(10.0, ge=0)
    max_held_requests: int | None = Field(None, ge=1)  # as FunctionConfig: scale-from-zero's bound, then 429
    scale_rate: ScaleRateKind = "aws"
    billing_rounding_ms: int = Field(1, ge=1)
    timeout_s: float = Field(30.0, gt=0)  # the function's timeout: a longer batch fails, its instance is replaced
    reap_interval_s: float = Field(0.1, gt=0)  # the platform's reconcile period
    # instances share this many cores (servelab's own platform on one machine); None: each
    # instance has its own CPU, as in the cloud
    host_cpus: float | None = Field(None, gt=0)
    client_timeout_s: float = Field(30.0, gt=0)  # the load generator's per-request timeout

    @model_validator(mode="after")
    def _consistent(self) -> ServerlessConfig:
        if self.provisioned > self.max_concurrency:
            raise ValueError(f"provisioned ({self.provisioned}) cannot exceed max_concurrency ({self.max_concurrency})")
        self.keepalive_policy()  # parameters checked now, not mid-run
        return self

    def keepalive_policy(self) -> KeepAlivePolicy:
        """The policy the platform would build for this function (same constructor)."""
        return keepalive_from(self.keep_alive, self.keep_alive_s, self.keep_alive_params)

    def engine_spec(self) -> EngineSpec:
        core = CoreConfig(scaling="per-request", max_instances=self.max_concurrency, min_instances=self.provisioned,
                          admission=self.admission, max_queue=self.max_queue, max_queue_wait_s=self.max_queue_wait_s,
                          max_batch_size=self.max_batch_size, max_wait_s=self.max_wait_ms / 1000.0,
                          keepalive=self.keepalive_policy(), scale_rate=self.scale_rate,
                          max_held_requests=self.max_held_requests)
        return EngineSpec(core=core, memory_mb=self.memory_mb, timeout_s=self.timeout_s,
                          reap_interval_s=self.reap_interval_s, host_cpus=self.host_cpus)
