"""A managed autoscaling endpoint (SageMaker real-time, Vertex AI / AI Platform prediction).

Always-loaded instances behind a FIFO queue, ``slots`` requests at a time each, resized by a
target-tracking autoscaler: :func:`servelab.core.policies.target_tracking` once per metric
period on the time-weighted in-flight load (:class:`~servelab.core.policies.LoadAverager`),
exactly as the platform's ``scaling.kind: target-tracking`` mode does. A scale-out takes
``scale_out_delay_s`` of provisioning plus the instance's own start; a scale-in removes idle
instances after ``scale_in_cooldown_s``.
The behaviour is the core's (:mod:`servelab.core`), driven by :mod:`servelab.sim.engine`.

Defaults: AWS Application Auto Scaling's 300 s cooldowns and 60 s metric period. The
provisioning delay default (180 s) is **assumed**: AWS and GCP document no figure; "minutes" is
what the study reports qualitatively for managed endpoints under bursts (seed, "Comparison":
"ManagedML's latency is high when request rate rises: autoscaling takes time").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servelab.core import CoreConfig
from servelab.core.policies import TargetTracking
from servelab.sim.engine import EngineSpec
from servelab.sim.profile import Device


class ManagedConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["managed"] = "managed"
    name: str = "endpoint"
    price_entry: str = "aws-sagemaker-ml.c5.large-us-east-1"
    device: Device = "cpu"
    memory_mb: int | None = 1769  # the CPU of one slot, as a Lambda memory size (1769 MB = 1 vCPU)
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(10, ge=1)
    slots: int = Field(1, ge=1)  # per-instance concurrency
    target_utilisation: float = Field(0.7, gt=0, le=1)
    metric_period_s: float = Field(60.0, gt=0)
    scale_out_cooldown_s: float = Field(300.0, ge=0)
    scale_in_cooldown_s: float = Field(300.0, ge=0)
    scale_out_delay_s: float = Field(180.0, ge=0)
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0)
    max_queue: int = Field(1_000_000, ge=0)
    max_queue_wait_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    client_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ManagedConfig:
        self.autoscaler()  # min <= max, target in (0, 1]: the policy's own checks
        return self

    def autoscaler(self) -> TargetTracking:
        return TargetTracking(min_instances=self.min_instances, max_instances=self.max_instances,
                              target_utilisation=self.target_utilisation, metric_period_s=self.metric_period_s,
                              scale_out_cooldown_s=self.scale_out_cooldown_s,
                              scale_in_cooldown_s=self.scale_in_cooldown_s, scale_out_delay_s=self.scale_out_delay_s)

    def engine_spec(self) -> EngineSpec:
        core = CoreConfig(scaling="target-tracking", max_instances=self.max_instances,
                          min_instances=self.min_instances, slots=self.slots, admission="queue",
                          max_queue=self.max_queue, max_queue_wait_s=self.max_queue_wait_s,
                          max_batch_size=self.max_batch_size, max_wait_s=self.max_wait_ms / 1000.0,
                          autoscaler=self.autoscaler())
        return EngineSpec(core=core, memory_mb=self.memory_mb, device=self.device, timeout_s=self.timeout_s)
