"""Distributed training frameworks chosen by the cluster topology (SINGA's worker and server groups).

``launch(job, out_dir=...)`` runs a JobConfig; ``launch_spec(spec, cluster, out_dir=...)`` runs any
model that fits the small :class:`TrainSpec` protocol. See docs/training-distributed.md.
Importing this package is cheap: torch is imported by the functions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from servelab.errors import WorkerFailedError
from servelab.train.distributed.spec import TrainResult, TrainSpec, spec_from_job

if TYPE_CHECKING:
    from servelab.train.cluster import ClusterConfig, Framework
    from servelab.train.job import JobConfig

__all__ = ["TrainResult", "TrainSpec", "WorkerFailedError", "launch", "launch_spec", "spec_from_job"]


def launch(job: JobConfig, *, out_dir: Path, timeout_s: float | None = None) -> TrainResult:
    """Run a job on the framework its ``cluster`` section gives (called by ``servelab train``).

    The job's ``device`` and ``threads`` apply unless the cluster section sets ``device`` /
    ``threads_per_worker``. Writes ``model.pt``, ``rank-N.json`` and ``metrics.jsonl`` under
    ``out_dir``, checkpoints under ``out_dir / job.checkpoint_path``; the result's ``net`` is the
    trained layer net (worker 0's parameters).

    With several nodes (``cluster.rendezvous.nnodes``) only node 0 holds worker 0: there the
    result carries the net and ``model.pt``; on the other nodes ``net`` is None and
    ``metrics.jsonl`` holds the losses of the node's first worker (none if it runs only servers).
    """
    import json

    import torch

    from servelab.train.cluster import cluster_from
    from servelab.train.net import build_net

    raw = dict(job.cluster)
    raw.setdefault("device", job.device)
    if job.threads is not None:
        raw.setdefault("threads_per_worker", job.threads)
    out_dir = Path(out_dir)
    result = launch_spec(spec_from_job(job, out_dir=out_dir), cluster_from(raw), out_dir=out_dir,
                         timeout_s=timeout_s)
    if result.final_state:  # this node holds worker 0 (always so on one node)
        torch.manual_seed(job.seed)
        result.net = build_net(job.neuralnet)
        result.net.load_state_dict(result.final_state)
    with (out_dir / "metrics.jsonl").open("a") as f:
        for i, loss in enumerate(result.losses):
            step = result.start_step + i + 1
            f.write(json.dumps({"phase": "train", "step": step, "loss": loss, "worker": result.log_rank}) + "\n")
        for elapsed_s, step, metric in result.eval_log:
            f.write(json.dumps({"phase": "test", "step": step, "accuracy": metric, "elapsed_s": elapsed_s}) + "\n")
    return result


def launch_spec(
    spec: TrainSpec,
    cluster: ClusterConfig,
    *,
    out_dir: Path,
    framework: Framework | None = None,
    timeout_s: float | None = None,
) -> TrainResult:
    """See :func:`servelab.train.distributed.launcher.launch_spec`."""
    from servelab.train.distributed.launcher import launch_spec as _launch_spec

    return _launch_spec(spec, cluster, out_dir=out_dir, framework=framework, timeout_s=timeout_s)
