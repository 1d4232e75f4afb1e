"""What a distributed run needs from the model side, and what it gives back.

The frameworks depend on this small protocol, not on the layer-config net, so they can be tested
with plain torch modules and driven by anything that builds a model, an optimizer and batches.
``spec_from_job`` adapts a ``servelab.train.job.JobConfig`` to it.

Everything in a TrainSpec crosses a process boundary (the launcher starts its processes with the
``forkserver`` method), so its callables must be picklable: module-level functions, classes and
``functools.partial`` of them; not lambdas or closures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch
    from torch import nn

    from servelab.train.cluster import Framework
    from servelab.train.job import JobConfig

Batch = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class TrainSpec:
    """One training job, as the frameworks see it.

    - ``make_model()`` builds the model; ``model(batch)`` returns a dict with the scalar ``"loss"``.
      Every process calls it after ``torch.manual_seed(seed)``, so replicas start identical.
    - ``make_optimizer(params)`` builds the updater; in the PS frameworks it runs on the servers,
      over the parameters each server holds.
    - ``make_data(shard, num_shards)`` yields this worker's batches (dicts of tensors), forever or
      until exhausted (then it is called again: the next epoch). Worker ``w`` of ``W`` (all groups
      together, group-major) reads shard ``w`` of ``W``; one group's shards together form one
      mini-batch (SINGA's ``partition_dim: 0``).
    - ``steps``: updates per worker group. ``checkpoint_freq`` (steps, 0 = never) writes a
      checkpoint under ``checkpoint_path`` that a restarted run resumes from.
    - ``model_parallel``: qualified names of inner-product or convolution layers (an ``nn.Linear``
      or ``nn.Conv2d``, or a module holding exactly one) split by output feature (channel) across
      the workers of a group (SINGA's ``partition_dim: 1``; allreduce only).
    - ``evaluate(model) -> float`` (e.g. accuracy on held-out data), run by worker 0 every
      ``eval_every`` steps and at the end; its log gives time-to-accuracy.
    - ``clip_grad_norm``: clip each update's gradient norm (allreduce: the averaged gradient;
      parameter servers and Hogwild: each worker's own gradient).
    - ``precision``: ``fp32``, ``bf16`` or ``fp16`` (``servelab.train.precision``); local and
      allreduce only.

    A model with a ``param_groups()`` method (the layer net) has its groups' ``lr_scale`` and
    ``wd_scale`` passed to ``make_optimizer`` as parameter-group dicts, on servers too.
    """

    make_model: Callable[[], nn.Module]
    make_optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer]  # parameters, or group dicts (above)
    make_data: Callable[[int, int], Iterable[Batch]]
    steps: int
    seed: int = 0
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    checkpoint_freq: int = 0
    checkpoint_path: Path | None = None
    model_parallel: tuple[str, ...] = ()
    evaluate: Callable[[nn.Module], float] | None = None
    eval_every: int = 0
    clip_grad_norm: float | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from servelab.errors import ConfigError

        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.steps >= 2**24:  # step numbers travel in float32 message headers (async-ps)
            raise ConfigError(f"steps must be below {2**24}, got {self.steps}")
        if self.checkpoint_freq < 0 or self.eval_every < 0:
            raise ConfigError("checkpoint_freq and eval_every must be >= 0")
        if self.checkpoint_freq and self.checkpoint_path is None:
            raise ConfigError("checkpoint_freq is set but checkpoint_path is not: say where checkpoints go")


@dataclass
class TrainResult:
    """What a run measured. Times in seconds; ``losses`` are worker ``log_rank``'s, one per step it ran.

    ``log_rank`` is 0 except on a node of a multi-node job that does not hold worker 0 (its first
    worker then; -1 when it runs only servers); there ``final_state`` is empty: node 0 has the model.
    """

    framework: Framework
    nworkers: int
    nservers: int
    start_step: int
    steps: int
    samples: int
    train_s: float
    losses: list[float]
    final_state: dict[str, torch.Tensor]
    eval_log: list[tuple[float, int, float]] = field(default_factory=list)  # (elapsed_s, step, metric)
    staleness: dict[str, float] = field(default_factory=dict)  # async-ps: max, mean, dropped, updates
    out_dir: Path | None = None
    net: Any = None  # launch(job) puts the trained layer net here, for export
    log_rank: int = 0
    node_rank: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_s if self.train_s > 0 else 0.0

    def time_to(self, target: float) -> float | None:
        """Seconds from the start of training until ``evaluate`` first reached ``target``."""
        return next((t for t, _, m in self.eval_log if m >= target), None)


def _job_model(job: JobConfig) -> nn.Module:
    from servelab.train.net import build_net

    return build_net(job.neuralnet)


def _job_optimizer(params: Iterable[Any], *, job: JobConfig) -> torch.optim.Optimizer:
    from servelab.train.updaters import make_optimizer

    return make_optimizer(params, job.updater)


def _job_scheduler(opt: torch.optim.Optimizer, *, job: JobConfig) -> Any:
    from servelab.train.updaters import make_scheduler

    return make_scheduler(opt, job.updater.learning_rate)


def _job_data(shard: int, num_shards: int, *, job: JobConfig) -> Iterator[Batch]:
    from servelab.train.data import make_data

    return make_data(job, "train", shard=shard, num_shards=num_shards)


def _job_accuracy(net: nn.Module, *, job: JobConfig) -> float:
    """Test-split accuracy (the net's accuracy layer), else minus the test loss: higher is better either way."""
    from servelab.train.data import make_data
    from servelab.train.net import Net
    from servelab.train.trainer import evaluate

    device = next(net.parameters()).device
    # TrainSpec types models as nn.Module; a job's model is always the Net that _job_model builds
    r = evaluate(cast(Net, net), make_data(job, "test"), max_batches=job.test_steps, device=device)
    return float(r["accuracy"]) if r.get("accuracy") is not None else -float(r["loss"])


def model_parallel_layers(net: nn.Module) -> tuple[str, ...]:
    """Qualified module names of the inner-product and convolution layers a net marks ``partition_dim: 1``."""
    from torch import nn

    from servelab.errors import ConfigError

    names: list[str] = []
    by_id = {id(m): n for n, m in net.named_modules()}
    for layer in getattr(net, "layers", []):
        if getattr(layer, "partition_dim", None) != 1:
            continue
        linears = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if len(linears) != 1 or id(layer) not in by_id:
            raise ConfigError(
                f"layer {getattr(layer, 'name', '?')!r} ({getattr(layer, 'type', '?')}) has partition_dim 1, but only "
                "inner-product and convolution layers can be split by feature (channel); use partition_dim 0 or -1 "
                "for it"
            )
        names.append(by_id[id(layer)])
    return tuple(names)


def spec_from_job(job: JobConfig, *, out_dir: Path | None = None) -> TrainSpec:
    """Adapt a ``servelab.train.job.JobConfig``: its net, updater and schedule, data, checkpoints, test.

    The job's ``batch_size`` is one worker group's mini-batch, split across the group's workers
    (SINGA's data partitioning), so each worker loads ``batch_size // nworkers_per_group``.
    ``checkpoint_path`` is relative to ``out_dir``; ``checkpoint_freq: 0`` checkpoints at the end.
    """
    import torch

    from servelab.errors import ConfigError
    from servelab.train.cluster import cluster_from

    cluster = cluster_from(job.cluster)
    per_worker, rest = divmod(job.batch_size, cluster.nworkers_per_group)
    if rest or per_worker == 0:
        raise ConfigError(
            f"batch_size {job.batch_size} must be a positive multiple of nworkers_per_group "
            f"{cluster.nworkers_per_group} (each worker of a group takes an equal slice)"
        )
    tob = job.train_one_batch
    if tob.alg == "bptt" and tob.unroll_len is not None:
        raise ConfigError(
            "train_one_batch.unroll_len (truncated BPTT, several updates per batch) is not implemented in the "
            "distributed frameworks: drop unroll_len (BPTT over whole sequences) or train in one process"
        )
    if job.pretrain:
        raise ConfigError("pretrain (greedy RBM stages) runs in one process: train this job without a cluster "
                          "section (an rbm job without pretrain, trained by its contrastive_divergence loss, "
                          "runs on every framework)")
    worker_job = job.model_copy(update={"batch_size": per_worker})
    torch.manual_seed(job.seed)
    probe = _job_model(job)
    root = Path(out_dir) if out_dir is not None else Path(".")
    return TrainSpec(
        make_model=functools.partial(_job_model, job),
        make_optimizer=functools.partial(_job_optimizer, job=job),
        make_scheduler=functools.partial(_job_scheduler, job=job),
        make_data=functools.partial(_job_data, job=worker_job),
        steps=job.train_steps,
        seed=job.seed,
        checkpoint_freq=job.checkpoint_freq or job.train_steps,
        checkpoint_path=root / job.checkpoint_path,
        model_parallel=model_parallel_layers(probe),
        evaluate=functools.partial(_job_accuracy, job=job) if job.data.has_test else None,
        eval_every=job.test_freq,
        clip_grad_norm=tob.clip_grad_norm,
        precision=job.precision,
    )
