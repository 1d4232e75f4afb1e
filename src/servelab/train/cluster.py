"""The cluster section of a training job, and the framework its topology gives.

SINGA (Wang et al., ACM MM 2015; ``ClusterProto`` in v0.3) never had a "framework" switch: a job
describes *worker groups* and *server groups* and the framework follows from their shape.

- A worker group trains one model replica; workers inside a group are synchronous, groups are
  asynchronous to each other.
- A server group holds one replica of the parameters, each server a slice of it; servers either
  run beside the workers (``server_worker_separate: false``) or as processes of their own.

The mapping, from SINGA's ``frameworks.md`` table (see ``docs/training-distributed.md``):

=================  =============  ==============  ========================  ==========================
nworker_groups     nworkers/grp   separate        framework                 SINGA's name (origin)
=================  =============  ==============  ========================  ==========================
1                  1              false           ``local``                 (one worker)
1                  > 1            false           ``allreduce``             AllReduce (Baidu Deep Image)
1                  any            true            ``sync-ps``               Sandblaster (DistBelief)
> 1                any            true            ``async-ps``              Downpour (DistBelief); with
                                                                            ``nserver_groups > 1``: replicated
                                                                            server groups (SINGA's topology)
> 1                1              false           ``hogwild``               Hogwild (Caffe), one node
=================  =============  ==============  ========================  ==========================

The same table lives in :data:`TOPOLOGY_TABLE` so the docs and the tests read one source.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from servelab.errors import ConfigError

Framework = Literal["local", "allreduce", "sync-ps", "async-ps", "hogwild"]
Backend = Literal["auto", "gloo", "nccl", "shm"]
DeviceKind = Literal["cpu", "cuda"]

#: What each framework is, in one line; the keys are the only frameworks there are.
FRAMEWORKS: dict[Framework, str] = {
    "local": "one worker, no communication",
    "allreduce": "synchronous data parallel: gradients all-reduced every step (torch DDP)",
    "sync-ps": "synchronous parameter server (Sandblaster): servers apply the mean gradient, workers wait",
    "async-ps": "asynchronous parameter server (Downpour): worker groups push and pull without waiting",
    "hogwild": "lock-free shared-memory parameters among worker processes on one machine",
}

#: (multiple worker groups?, multiple workers per group?, servers separate?) -> framework.
TOPOLOGY_TABLE: dict[tuple[bool, bool, bool], Framework] = {
    (False, False, False): "local",
    (False, True, False): "allreduce",
    (False, False, True): "sync-ps",
    (False, True, True): "sync-ps",
    (True, False, True): "async-ps",
    (True, True, True): "async-ps",
    (True, False, False): "hogwild",
    # (True, True, False) is SINGA's distributed Hogwild with synchronous groups: not implemented.
}


class Rendezvous(BaseModel):
    """Where the processes of one job meet (torch.distributed's TCP store).

    On one machine the defaults need no change: the launcher opens the store on a free port.
    For several machines every node runs the same job with its own ``node_rank`` and the same
    ``master_addr``/``master_port`` (node 0's address; node 0 opens the store there).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    master_addr: str = "127.0.0.1"
    master_port: int = Field(default=0, ge=0, le=65535, description="0: a free port (one machine only)")
    nnodes: int = Field(default=1, ge=1)
    node_rank: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=300.0, gt=0, description="how long a process waits for the others to join")

    @model_validator(mode="after")
    def _check(self) -> Rendezvous:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1 and self.master_port == 0:
            raise ValueError("several nodes need a fixed master_port (node 0's), not 0")
        return self


class ClusterConfig(BaseModel):
    """SINGA's ``ClusterProto`` fields plus what torch.distributed needs (backend, device, rendezvous)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nworker_groups: int = Field(default=1, ge=1)
    nserver_groups: int = Field(default=1, ge=1)
    nworkers_per_group: int = Field(default=1, ge=1)
    nservers_per_group: int = Field(default=1, ge=1, description="parameter-server shards (PS frameworks)")
    server_worker_separate: bool = False
    backend: Backend = "auto"
    device: DeviceKind = "cpu"
    threads_per_worker: int = Field(default=1, ge=1, description="torch intra-op threads per process")
    max_staleness: int | None = Field(
        default=None, ge=0, description="async-ps: a gradient computed more than this many versions ago is dropped"
    )
    sync_freq: int = Field(
        default=10, ge=1, description="several server groups: they average their parameters every sync_freq steps")
    rendezvous: Rendezvous = Field(default_factory=Rendezvous)

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        if self.backend == "nccl" and self.device != "cuda":
            raise ValueError("backend 'nccl' needs device 'cuda'; use backend 'gloo' (or 'auto') on cpu")
        if self.backend == "shm" and (self.device != "cpu" or self.rendezvous.nnodes > 1):
            raise ValueError("backend 'shm' averages gradients in this machine's memory: it needs device 'cpu' "
                             "and rendezvous.nnodes 1; use 'gloo' (or 'auto') otherwise")
        framework_for(self)  # raises for topologies no framework implements
        return self

    @property
    def nworkers(self) -> int:
        return self.nworker_groups * self.nworkers_per_group

    @property
    def nservers(self) -> int:
        """Server processes of their own (0 when servers are co-located with workers)."""
        return self.nservers_per_group * self.nserver_groups if self.server_worker_separate else 0

    @property
    def world_size(self) -> int:
        return self.nworkers + self.nservers

    @property
    def resolved_backend(self) -> Literal["gloo", "nccl", "shm"]:
        """How all-reduce workers average gradients: ``auto`` is nccl on cuda, shared memory on one
        CPU machine (see ``servelab.train.distributed.shm``: gloo over loopback TCP loses there),
        gloo across CPU machines."""
        if self.backend != "auto":
            return self.backend
        if self.device == "cuda":
            return "nccl"
        return "shm" if self.rendezvous.nnodes == 1 else "gloo"


def framework_for(cfg: ClusterConfig) -> Framework:
    """The framework SINGA's topology gives (see the module docstring's table).

    Several server groups (``nserver_groups > 1``) replicate the parameters: worker group ``g``
    talks to server group ``g % nserver_groups``, and the server groups average their replicas
    every ``sync_freq`` steps (SINGA's Downpour with replicated server groups). They need separate
    servers and at least one worker group each. Raises ConfigError for what SINGA had and servelab
    does not implement: server groups co-located with workers (distributed Hogwild), and several
    multi-worker groups sharing memory without servers.
    """
    if cfg.nserver_groups > 1 and not cfg.server_worker_separate:
        raise ConfigError(
            f"nserver_groups={cfg.nserver_groups} with co-located servers (SINGA's distributed Hogwild) is not "
            "implemented; set server_worker_separate: true (replicated parameter-server groups) or nserver_groups: 1"
        )
    if cfg.nserver_groups > 1 and cfg.nworker_groups < cfg.nserver_groups:
        raise ConfigError(
            f"{cfg.nserver_groups} server groups need at least as many worker groups (each server group serves "
            f"worker groups g with g % nserver_groups equal to its index); got nworker_groups={cfg.nworker_groups}"
        )
    key = (cfg.nworker_groups > 1, cfg.nworkers_per_group > 1, cfg.server_worker_separate)
    framework = TOPOLOGY_TABLE.get(key)
    if framework is None:
        raise ConfigError(
            f"{cfg.nworker_groups} worker groups of {cfg.nworkers_per_group} workers with co-located servers "
            "is not implemented: use nworkers_per_group: 1 (Hogwild) or server_worker_separate: true (Downpour)"
        )
    if framework == "hogwild" and cfg.device != "cpu":
        raise ConfigError("Hogwild shares parameters in CPU memory: set device: cpu (or server_worker_separate: true)")
    if framework == "hogwild" and cfg.rendezvous.nnodes > 1:
        raise ConfigError("Hogwild shares memory on one machine: set rendezvous.nnodes: 1")
    return framework


def cluster_from(raw: dict[str, Any] | ClusterConfig | None) -> ClusterConfig:
    """Validate a job's ``cluster`` section (an opaque dict in the job config) into a ClusterConfig."""
    if isinstance(raw, ClusterConfig):
        return raw
    try:
        return ClusterConfig.model_validate(raw or {})
    except ValidationError as exc:
        where = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        problems = "; ".join(f"cluster.{w or '(root)'}: {e['msg']}" for w, e in zip(where, exc.errors(), strict=True))
        raise ConfigError(f"invalid cluster section: {problems}") from None
