"""An always-on server pool (the study's self-rented CPU or GPU servers).

``instances`` machines, each running ``slots`` workers, all loaded before the run, behind one
FIFO queue; no scaling. Batching follows the shared :func:`~servelab.core.policies.decide_batch`
policy and a batch's time comes from the profile's throughput curve (execution time per batch
size, per device). Past its capacity a server's queue — and latency — grows without bound until
requests hit ``max_queue_wait_s`` or the client's timeout.
The behaviour is the core's (:mod:`servelab.core`), driven by :mod:`servelab.sim.engine`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from servelab.core import CoreConfig
from servelab.sim.engine import EngineSpec
from servelab.sim.profile import Device


class ServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["server"] = "server"
    name: str = "server"
    price_entry: str = "aws-ec2-c5.large-us-east-1"
    device: Device = "cpu"
    memory_mb: int | None = 1769  # CPU servers: one slot's CPU as a Lambda memory size (1769 MB = 1 vCPU)
    instances: int = Field(1, ge=1)
    slots: int = Field(1, ge=1)
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0)
    max_queue: int = Field(1_000_000, ge=0)
    max_queue_wait_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    client_timeout_s: float = Field(30.0, gt=0)

    def engine_spec(self) -> EngineSpec:
        core = CoreConfig(scaling="fixed", max_instances=self.instances, min_instances=self.instances,
                          slots=self.slots, admission="queue", max_queue=self.max_queue,
                          max_queue_wait_s=self.max_queue_wait_s, max_batch_size=self.max_batch_size,
                          max_wait_s=self.max_wait_ms / 1000.0)
        return EngineSpec(core=core, memory_mb=self.memory_mb, device=self.device, timeout_s=self.timeout_s)
