"""What every process of a run shares: its role, the process group, batches, checkpoints, results.

Rank layout (one torch.distributed world): workers first, group-major (worker ``i`` of group
``g`` is rank ``g * nworkers_per_group + i``), then separate servers. Times are seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from servelab.errors import ConfigError
from servelab.train.cluster import ClusterConfig, Framework
from servelab.train.distributed.spec import Batch, TrainSpec


@dataclass(frozen=True)
class Role:
    rank: int
    framework: Framework
    cluster: ClusterConfig
    out_dir: Path

    @property
    def kind(self) -> Literal["worker", "server"]:
        return "worker" if self.rank < self.cluster.nworkers else "server"

    @property
    def group(self) -> int:
        return self.rank // self.cluster.nworkers_per_group

    @property
    def rank_in_group(self) -> int:
        return self.rank % self.cluster.nworkers_per_group

    @property
    def server(self) -> int:
        """This server's index among all servers (server group major)."""
        return self.rank - self.cluster.nworkers

    @property
    def server_group(self) -> int:
        """A server's group; for a worker, the server group it talks to."""
        if self.kind == "server":
            return self.server // self.cluster.nservers_per_group
        return self.group % self.cluster.nserver_groups

    @property
    def server_slice(self) -> int:
        """Which slice of the parameters a server holds (the same slice in every server group)."""
        return self.server % self.cluster.nservers_per_group

    def group_ranks(self, g: int) -> list[int]:
        n = self.cluster.nworkers_per_group
        return list(range(g * n, (g + 1) * n))

    def server_rank(self, j: int, server_group: int = 0) -> int:
        """The rank of the server holding slice ``j`` in ``server_group``."""
        return self.cluster.nworkers + server_group * self.cluster.nservers_per_group + j

    @property
    def name(self) -> str:
        if self.kind == "server":
            return f"server {self.server} (rank {self.rank})"
        return f"worker {self.rank_in_group} of group {self.group} (rank {self.rank})"


def device_for(role: Role) -> torch.device:
    if role.cluster.device == "cpu" or role.kind == "server":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("cluster.device is 'cuda' but torch sees no GPU here: use device: cpu")
    local = int(os.environ.get("LOCAL_RANK", role.rank)) % torch.cuda.device_count()
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def init_group(role: Role, *, backend: str, port: int | None) -> None:
    """Join the job's process group: the launcher's TCP store, or torchrun's environment when port is None."""
    rdv = role.cluster.rendezvous
    timeout = timedelta(seconds=rdv.timeout_s)
    if port is None:
        dist.init_process_group(backend, timeout=timeout)  # env://, set by torchrun
        return
    store = dist.TCPStore(rdv.master_addr, port, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=role.rank, world_size=role.cluster.world_size, timeout=timeout)


def batches(spec: TrainSpec, shard: int, num_shards: int, device: torch.device, *, skip: int = 0) -> Iterator[Batch]:
    """This worker's batches forever: when ``make_data``'s iterator ends, the next epoch starts.

    ``skip`` batches are read and dropped first, so a resumed job sees the batches the
    uninterrupted job would have seen (exactly, when ``make_data`` is deterministic).
    """
    while True:
        empty = True
        for batch in spec.make_data(shard, num_shards):
            empty = False
            if skip:
                skip -= 1
                continue
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if empty:
            raise ConfigError(f"the data of shard {shard} of {num_shards} is empty: use fewer workers or more data")


def batch_rows(batch: Batch) -> int:
    return next(iter(batch.values())).shape[0]


def seeded_model(spec: TrainSpec) -> torch.nn.Module:
    torch.manual_seed(spec.seed)
    return spec.make_model()


def optimizer_for(spec: TrainSpec, model: torch.nn.Module,
                  subset: list[tuple[str, torch.nn.Parameter]] | None = None) -> torch.optim.Optimizer:
    """``spec.make_optimizer`` over ``subset`` (name, parameter) of ``model``'s parameters (default: all).

    A model with ``param_groups()`` (the layer net: per-layer ``lr_scale``/``wd_scale``) gets
    groups with those options, also for a server's slice, whose parameters are copies.
    """
    own = list(model.named_parameters())
    subset = own if subset is None else subset
    param_groups = getattr(model, "param_groups", None)
    if param_groups is None:
        return spec.make_optimizer([p for _, p in subset])
    options = {id(p): {k: v for k, v in g.items() if k != "params"} for g in param_groups() for p in g["params"]}
    by_name = {n: tuple(sorted(options.get(id(p), {}).items())) for n, p in own}
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for name, p in subset:
        groups.setdefault(by_name[name], []).append(p)
    return spec.make_optimizer([{"params": ps, **dict(key)} for key, ps in groups.items()])


def clip(spec: TrainSpec, model: torch.nn.Module) -> None:
    if spec.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_grad_norm)


def final_eval_due(spec: TrainSpec, start: int) -> bool:
    """Evaluate after the loop unless the loop's last step already did."""
    return not (spec.eval_every and spec.steps % spec.eval_every == 0 and start < spec.steps)


def evaluate(spec: TrainSpec, model: torch.nn.Module) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metric = float(spec.evaluate(model))  # type: ignore[misc]
    model.train(was_training)
    return metric


@dataclass
class Log:
    """What one process reports to the launcher (rank-N.json; worker 0 also writes model.pt)."""

    role: Role
    start_step: int = 0
    losses: list[float] = field(default_factory=list)
    samples: int = 0
    eval_log: list[tuple[float, int, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.time)
    t1: float = 0.0

    def start(self) -> None:
        self.t0 = time.time()

    def step(self, loss: float, rows: int) -> None:
        self.losses.append(loss)
        self.samples += rows

    def eval(self, step: int, metric: float) -> None:
        self.eval_log.append((time.time() - self.t0, step, metric))

    def write(self) -> None:
        self.t1 = self.t1 or time.time()
        data = {
            "rank": self.role.rank, "kind": self.role.kind, "start_step": self.start_step, "losses": self.losses,
            "samples": self.samples, "eval_log": self.eval_log, "t0": self.t0, "t1": self.t1, **self.extra,
        }
        _write_text(self.role.out_dir / f"rank-{self.role.rank}.json", json.dumps(data))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- checkpoints: tensors and plain containers only, loaded with weights_only=True ----------------

def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def mark_complete(root: Path, step: int, framework: Framework, keep: int = 2) -> None:
    """Written last, by one process, once every part of step ``step`` is on disk; older ones are pruned.

    The parts may have been written on other nodes (a server's shard): with several machines the
    checkpoint path must be a shared file system for a resume to find them; without one, the
    marker still records the step on this node and no part is lost on the nodes that wrote them.
    """
    step_dir(root, step).mkdir(parents=True, exist_ok=True)
    _write_text(step_dir(root, step) / "complete.json", json.dumps({"step": step, "framework": framework}))
    done = sorted(p for p in root.glob("step-*") if (p / "complete.json").exists())
    for old in done[:-keep]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def latest_complete(root: Path | None, framework: Framework) -> tuple[int, Path] | None:
    """The newest checkpoint every part of which was written, or None."""
    if root is None or not root.exists():
        return None
    for d in sorted(root.glob("step-*"), reverse=True):
        marker = d / "complete.json"
        if marker.exists():
            meta = json.loads(marker.read_text())
            if meta["framework"] != framework:
                raise ConfigError(
                    f"checkpoint {d} was written by framework {meta['framework']!r}, this job runs {framework!r}: "
                    "resume with the same cluster section, or point checkpoint_path elsewhere"
                )
            return int(meta["step"]), d
    return None


def checkpoint_due(spec: TrainSpec, step: int) -> bool:
    """Is a checkpoint due once step ``step`` (0-based) is applied, i.e. after ``step + 1`` updates?"""
    return bool(spec.checkpoint_freq) and (step + 1) % spec.checkpoint_freq == 0


def scheduler_state(sched: Any) -> dict[str, Any]:
    return sched.state_dict() if sched is not None else {}
