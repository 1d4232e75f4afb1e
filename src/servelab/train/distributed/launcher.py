"""Start a job's processes on this machine, watch them, and collect what they measured.

Processes start with the ``forkserver`` method, whose server has imported torch once: children
start fast, and none inherits the parent's OpenMP thread pool (forking after torch ran parallel
work can hang the child). The launcher holds the TCP store the processes rendezvous on (a free
port, so no port race between concurrent jobs).

Supervision: the launcher waits on every process's sentinel. The first process that exits with a
non-zero status (an exception, or killed by a signal) stops the job: the others are terminated
and :class:`WorkerFailedError` names the process, its pid and its exit status or traceback. A
peer blocked in a receive from the dead process is never left waiting.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from servelab.errors import ConfigError, WorkerFailedError
from servelab.train.cluster import ClusterConfig, Framework, framework_for
from servelab.train.distributed._common import Role, latest_complete
from servelab.train.distributed.spec import TrainResult, TrainSpec

# torch._dynamo: the first optimizer step imports it (~1 s and 800 modules); import it once, in the server
_PRELOAD = ["torch", "torch._dynamo", "torch.nn.parallel"] + [
    f"servelab.train.distributed.{m}" for m in ("worker", "allreduce", "ps", "hogwild")
]
_TERM_GRACE_S = 3.0
_PS = ("sync-ps", "async-ps")


def _context() -> Any:
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # no effect once the server runs; harmless
    return ctx


def check_framework(cluster: ClusterConfig, framework: Framework) -> None:
    """A framework forced on a cluster (benchmarks do) must fit where its servers are."""
    if (framework in _PS) != cluster.server_worker_separate:
        raise ConfigError(
            f"framework {framework!r} needs server_worker_separate: {framework in _PS} in the cluster section"
        )
    if framework == "local" and cluster.nworkers != 1:
        raise ConfigError(f"framework 'local' runs one worker, the cluster has {cluster.nworkers}")
    if framework == "hogwild" and (cluster.device != "cpu" or cluster.nworkers_per_group != 1):
        raise ConfigError("Hogwild needs device: cpu and nworkers_per_group: 1")


def launch_spec(
    spec: TrainSpec,
    cluster: ClusterConfig,
    *,
    out_dir: Path,
    framework: Framework | None = None,
    timeout_s: float | None = None,
) -> TrainResult:
    """Run ``spec`` on ``cluster``'s topology; ``framework`` overrides the topology's (for benchmarks).

    Writes ``rank-N.json`` per process and ``model.pt`` (worker 0's final state) under ``out_dir``.
    Raises WorkerFailedError if a process dies or raises, or the job outlives ``timeout_s``.
    """
    framework = framework or framework_for(cluster)
    check_framework(cluster, framework)
    if spec.model_parallel and framework not in ("local", "allreduce"):
        raise ConfigError(
            f"partition_dim 1 (model parallel) layers are implemented for the allreduce framework, not {framework!r}: "
            "use partition_dim 0 for them or server_worker_separate: false with one worker group"
        )
    if spec.precision != "fp32" and framework not in ("local", "allreduce"):
        raise ConfigError(f"precision {spec.precision} is implemented for the local and allreduce frameworks, not "
                          f"{framework!r}: use precision: fp32 there")
    if spec.precision == "fp16" and cluster.device != "cuda":
        raise ConfigError("precision fp16 (with loss scaling) runs on device: cuda; on CPU use precision: bf16")
    latest_complete(spec.checkpoint_path, framework)  # refuses another framework's checkpoints before starting
    import torch

    if cluster.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("cluster device is 'cuda' but torch.cuda.is_available() is False here: set device: cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("rank-*.json"), *out_dir.glob("rank-*.error"), out_dir / "model.pt"]:
        old.unlink(missing_ok=True)

    rdv = cluster.rendezvous
    world = cluster.world_size
    if world % rdv.nnodes:
        raise ConfigError(f"{world} processes cannot be spread evenly over {rdv.nnodes} nodes")
    per_node = world // rdv.nnodes
    ranks = range(rdv.node_rank * per_node, (rdv.node_rank + 1) * per_node)

    import torch.distributed as dist

    store, port = None, None
    shared: Any = None  # Hogwild's shared tensors, or the shared-memory all-reduce block
    if framework == "hogwild":
        from servelab.train.distributed.hogwild import shared_state

        shared = shared_state(spec, framework)
    elif framework != "local":
        port = rdv.master_port
        if rdv.node_rank == 0:
            store = dist.TCPStore(rdv.master_addr, port, is_master=True, wait_for_workers=False,
                                  timeout=timedelta(seconds=rdv.timeout_s))
            port = store.port

    from servelab.train.distributed.worker import child

    ctx = _context()
    if framework == "allreduce" and cluster.nworkers > 1 and cluster.resolved_backend == "shm" and port is not None:
        shared = _shm_block(ctx, spec, cluster)
    procs = {
        r: ctx.Process(target=child, args=(r, framework, spec, cluster, out_dir, port, shared),
                       name=f"servelab-train-rank{r}", daemon=True)
        for r in ranks
    }
    roles = {r: Role(rank=r, framework=framework, cluster=cluster, out_dir=out_dir) for r in ranks}
    try:
        for p in procs.values():
            p.start()
        _supervise(procs, roles, out_dir, timeout_s)
    finally:
        _stop(procs)
        del store
    return _collect(framework, cluster, spec, out_dir, ranks, shared)


def _shm_block(ctx: Any, spec: TrainSpec, cluster: ClusterConfig) -> Any:
    """The shared-memory all-reduce block, or None (DDP over gloo) when ``auto`` finds too little
    shared memory: filling a tmpfs past its size would kill the launcher with SIGBUS."""
    from servelab.train.distributed import shm
    from servelab.train.distributed._common import seeded_model

    numel = sum(p.numel() for p in seeded_model(spec).parameters() if p.requires_grad)
    need, free = shm.shm_bytes(numel, cluster.nworkers), shm.shm_free_bytes()
    if free is not None and need > free:
        if cluster.backend == "shm":
            raise ConfigError(
                f"backend 'shm' needs {need / 1e6:.0f} MB in {shm.SHM_DIR}, which has {free / 1e6:.0f} MB free: "
                "use backend: gloo, or give the machine more shared memory (docker run --shm-size)"
            )
        return None  # auto: DDP over gloo instead
    return shm.shm_state(ctx, numel, cluster.nworkers, cluster.rendezvous.timeout_s)


def _supervise(procs: dict[int, Any], roles: dict[int, Role], out_dir: Path, timeout_s: float | None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    alive = dict(procs)
    while alive:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = wait([p.sentinel for p in alive.values()], timeout=remaining)
        if not ready:
            names = ", ".join(roles[r].name for r in alive)
            raise WorkerFailedError(
                f"the training job did not finish within {timeout_s:g} s and was stopped; still running: {names}",
                role="job", rank=-1, pid=None, exitcode=None,
            )
        for r in [r for r, p in alive.items() if p.sentinel in ready]:
            alive.pop(r).join()
        failed = [r for r, p in procs.items() if p.exitcode not in (None, 0)]
        if failed:
            # the cause first: killed by a signal, else the first to write its traceback (the others
            # typically raised after it, "connection closed by peer")
            failed.sort(key=lambda r: (procs[r].exitcode >= 0, _error_time(out_dir, r), r))
            raise _failure(procs, roles, out_dir, failed)


def _error_time(out_dir: Path, rank: int) -> int:
    err = out_dir / f"rank-{rank}.error"
    return err.stat().st_mtime_ns if err.exists() else 2**63


def _failure(procs: dict[int, Any], roles: dict[int, Role], out_dir: Path, failed: list[int]) -> WorkerFailedError:
    r = failed[0]
    p, role = procs[r], roles[r]
    code = p.exitcode
    err = out_dir / f"rank-{r}.error"
    detail = err.read_text() if err.exists() else ""
    if code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        last = detail.strip().splitlines()[-1] if detail.strip() else "see its stderr"
        how = f"exited with status {code}: {last}"
    others = f"; {len(failed) - 1} other process(es) failed after it" if len(failed) > 1 else ""
    return WorkerFailedError(
        f"{role.name}, pid {p.pid}, {how}; the job was stopped{others}. "
        "Resume from the last checkpoint (checkpoint_freq / checkpoint_path) once the cause is fixed.",
        role=role.kind, rank=r, pid=p.pid, exitcode=code, detail=detail,
    )


def _stop(procs: dict[int, Any]) -> None:
    """Terminate what is still running: SIGTERM, then SIGKILL after a grace period."""
    running = [p for p in procs.values() if p.exitcode is None and p.pid is not None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + _TERM_GRACE_S
    for p in running:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            p.kill()
            p.join()


def _collect(framework: Framework, cluster: ClusterConfig, spec: TrainSpec, out_dir: Path, ranks: range,
             shared: Any) -> TrainResult:
    import torch

    logs = {r: json.loads((out_dir / f"rank-{r}.json").read_text()) for r in ranks}
    workers = [v for v in logs.values() if v["kind"] == "worker"]
    servers = [v for v in logs.values() if v["kind"] == "server"]
    if framework == "hogwild":  # the shared tensors are the model
        final = {k: v.clone() for k, v in shared[0].items()}
        torch.save(final, out_dir / "model.pt")
    elif (out_dir / "model.pt").exists():
        final = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
    else:
        final = {}  # another node holds worker 0
    first = logs.get(0, min(workers, key=lambda w: w["rank"]) if workers else {})
    staleness: dict[str, float] = {}
    if framework == "async-ps" and servers:
        staleness = {
            "max": max(s["staleness_max"] for s in servers),
            "mean": sum(s["staleness_mean"] for s in servers) / len(servers),
            "dropped": sum(s["dropped"] for s in servers),
            "updates": sum(s["applied"] for s in servers) // cluster.nservers_per_group,
        }
    return TrainResult(
        framework=framework,
        nworkers=cluster.nworkers,
        nservers=cluster.nservers,
        start_step=int(first.get("start_step", 0)),
        steps=spec.steps,
        samples=sum(w["samples"] for w in workers),
        train_s=(max(w["t1"] for w in workers) - min(w["t0"] for w in workers)) if workers else 0.0,
        losses=list(first.get("losses", [])),
        final_state=final,
        eval_log=[tuple(e) for e in first.get("eval_log", [])],
        staleness=staleness,
        out_dir=out_dir,
        log_rank=int(first.get("rank", -1)),
        node_rank=cluster.rendezvous.node_rank,
    )
