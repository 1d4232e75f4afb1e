"""One process of a distributed job: what the launcher starts, and the ``torchrun`` entry point.

Several machines, with torchrun's own rendezvous and supervision (run on every node)::

    torchrun --nnodes 2 --node-rank $NODE --nproc-per-node $PER_NODE \\
        --master-addr $NODE0_ADDR --master-port 29500 \\
        -m servelab.train.distributed.worker JOB.yaml --out runs/job1

``nnodes * nproc-per-node`` must equal the cluster's world size (workers plus separate servers).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from servelab.train.cluster import ClusterConfig, Framework
from servelab.train.distributed._common import Role
from servelab.train.distributed.spec import TrainSpec


def run_role(role: Role, spec: TrainSpec, *, port: int | None, shared: Any = None) -> None:
    """Run this process's part of the job: worker or server of its framework."""
    import torch
    import torch.distributed as dist

    from servelab.train.distributed import _common, allreduce, hogwild, ps

    torch.set_num_threads(role.cluster.threads_per_worker)
    fw = role.framework
    if fw == "hogwild":
        hogwild.run(role, spec, shared)
        return
    if fw != "local":
        backend = role.cluster.resolved_backend if fw == "allreduce" else "gloo"  # PS traffic is CPU tensors
        # shm: gradients go through shared memory; checkpoints and feature-parallel layers still use gloo
        _common.init_group(role, backend="gloo" if backend == "shm" else backend, port=port)
    try:
        if fw in ("local", "allreduce"):
            allreduce.run(role, spec, shm=shared)
        elif role.kind == "server":
            (ps.run_sync_server if fw == "sync-ps" else ps.run_async_server)(role, spec)
        else:
            (ps.run_sync_worker if fw == "sync-ps" else ps.run_async_worker)(role, spec)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def child(rank: int, framework: Framework, spec: TrainSpec, cluster: ClusterConfig, out_dir: Path,
          port: int | None, shared: Any) -> None:
    """Launcher target: on any exception, leave the traceback where the launcher reads it, then exit 1."""
    faulthandler.enable()
    role = Role(rank=rank, framework=framework, cluster=cluster, out_dir=out_dir)
    try:
        run_role(role, spec, port=port, shared=shared)
    except BaseException:
        (out_dir / f"rank-{rank}.error").write_text(traceback.format_exc())
        raise


def main(argv: list[str] | None = None) -> int:
    """torchrun entry: RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT come from the environment."""
    ap = argparse.ArgumentParser(prog="python -m servelab.train.distributed.worker", description=__doc__)
    ap.add_argument("job", type=Path, help="the job YAML (the same file on every node)")
    ap.add_argument("--out", type=Path, required=True, help="where this process writes its results")
    args = ap.parse_args(argv)

    from servelab.errors import ConfigError
    from servelab.train.cluster import cluster_from, framework_for
    from servelab.train.distributed.spec import spec_from_job
    from servelab.train.job import load_job

    job = load_job(args.job)
    raw = {"device": job.device, **job.cluster}
    cluster = cluster_from(raw)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cluster.world_size:
        raise ConfigError(
            f"torchrun started {world} processes but the cluster section needs {cluster.world_size} "
            f"({cluster.nworkers} workers + {cluster.nservers} servers): make nnodes * nproc-per-node equal that"
        )
    framework = framework_for(cluster)
    if framework == "hogwild":
        raise ConfigError("Hogwild shares memory inside one launcher: run it with `servelab train`, not torchrun")
    args.out.mkdir(parents=True, exist_ok=True)
    spec = spec_from_job(job, out_dir=args.out)
    run_role(Role(rank=rank, framework=framework, cluster=cluster, out_dir=args.out), spec, port=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
