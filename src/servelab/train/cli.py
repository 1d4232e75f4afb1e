"""``servelab train JOB.yaml``: train, export to ONNX, check parity, push, optionally deploy.

Module-level imports stay cheap (no torch): the heavy modules load inside the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from servelab.errors import ConfigError

console = Console()


def _summary_table(net: Any) -> Table:
    t = Table("layer", "type", "srclayers", "output (per sample)", "params", "partition", "phases",
              title="neuralnet")
    total = 0
    for row in net.summary():
        total += row["params"]
        t.add_row(row["name"], row["type"], ", ".join(row["srclayers"]),
                  " | ".join(str(tuple(s)) for s in row["output_shapes"]), f"{row['params']:,}",
                  "-" if row["partition_dim"] is None else str(row["partition_dim"]), ",".join(row["phases"]))
    t.caption = f"{total:,} parameters"
    return t


def _distributed(job: Any, out_dir: Path, workers: int, *, resume: bool) -> Any:
    """Hand a multi-worker job to servelab.train.distributed (the cluster frameworks)."""
    ckpt_dir = out_dir / job.checkpoint_path
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        # the distributed frameworks always pick up their checkpoints: ask, as train_local does
        raise ConfigError(f"{ckpt_dir} holds checkpoints of an earlier run; resume it (--resume) "
                          "or choose another output directory")
    try:
        from servelab.train import distributed
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("servelab.train.distributed"):
            raise ConfigError(f"the job's cluster section asks for {workers} workers, but this servelab has no "
                              "distributed trainer (servelab.train.distributed); remove the cluster section "
                              "to train in one process") from None
        raise
    launch = getattr(distributed, "launch", None)
    if launch is None:
        raise ConfigError("servelab.train.distributed has no launch(job, out_dir=…); cannot run a cluster job")
    return launch(job, out_dir=out_dir)


def with_rendezvous(job: Any, **overrides: Any) -> Any:
    """The job with command-line rendezvous settings (``--node-rank`` …) merged into its cluster section,
    so every node runs the same file, as with torchrun."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return job
    cluster = dict(job.cluster)
    cluster["rendezvous"] = {**dict(cluster.get("rendezvous") or {}), **given}
    return job.model_copy(update={"cluster": cluster})


def _trained_net(job: Any, result: Any, out_dir: Path) -> Any:
    """The trained net: the result's own, else rebuilt from the result's ``final_state`` (the
    distributed trainer's), ``out_dir/model.pt``, or the newest checkpoint, in that order."""
    net = getattr(result, "net", None)
    if net is not None:
        return net
    import torch

    from servelab.train.checkpoint import latest_checkpoint, load_checkpoint
    from servelab.train.trainer import build_for_job

    state = getattr(result, "final_state", None)
    if state is None and (out_dir / "model.pt").is_file():
        state = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
    if state is None:
        ckpt = latest_checkpoint(out_dir / job.checkpoint_path)
        if ckpt is None:
            return None
        state = load_checkpoint(ckpt)["model"]
    net, _, _ = build_for_job(job)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"the trained parameters in {out_dir} do not fit the job's net: {e}") from None
    return net


def train(
    job_file: Path = typer.Argument(..., help="The job: neuralnet, train_one_batch, updater, data, cluster, …"),
    out: Path = typer.Option(None, "--out", help="Output directory (default: runs/JOB_NAME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    deploy: str = typer.Option(None, "--deploy", help="Deploy the trained model as this function on the platform."),
    check: bool = typer.Option(False, "--check", help="Validate the job and print the net's layers; do not train."),
    export: bool = typer.Option(True, "--export/--no-export", help="Export ONNX, check parity, push to the store."),
    output: str = typer.Option(None, "--output", help="Layer to export and serve (default: the loss's scores)."),
    model_name: str = typer.Option(None, "--model-name", help="Name in the model store (default: the job name)."),
    tolerance: float = typer.Option(1e-4, help="Largest |ONNX Runtime - PyTorch| accepted on held-out inputs."),
    store: str = typer.Option(None, help="Model store URL (default: the local store in $SERVELAB_HOME)."),
    memory_mb: int = typer.Option(1024, help="--deploy: the function's memory size, MB."),
    url: str = typer.Option(None, "--platform", help="--deploy: platform URL (default: $SERVELAB_PLATFORM or "
                                                     "http://127.0.0.1:8080)."),
    token: str = typer.Option(None, "--token", help="--deploy: management token (default: $SERVELAB_TOKEN)."),
    threads: int = typer.Option(None, help="torch intra-op threads (default: the job's threads, else torch's)."),
    node_rank: int = typer.Option(None, "--node-rank", help="Several machines: this node's rank (0 on the node "
                                                           "that holds the store and worker 0)."),
    nnodes: int = typer.Option(None, "--nnodes", help="Several machines: how many nodes run this job."),
    master_addr: str = typer.Option(None, "--master-addr", help="Several machines: node 0's address."),
    master_port: int = typer.Option(None, "--master-port", help="Several machines: node 0's rendezvous port."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a SINGA-style job (layers, BP/BPTT, updater) and hand the model to serving."""
    import torch

    from servelab.train.job import cluster_workers, load_job
    from servelab.train.net import build_net

    job = load_job(job_file)
    if threads is not None:
        job = job.model_copy(update={"threads": threads})
    job = with_rendezvous(job, node_rank=node_rank, nnodes=nnodes, master_addr=master_addr, master_port=master_port)
    out_dir = out or Path("runs") / job.name
    if check:
        torch.manual_seed(job.seed)
        console.print(_summary_table(build_net(job.neuralnet)))
        console.print(f"[green]ok[/] {job_file}: {job.train_steps} steps of {job.batch_size}, "
                      f"{job.train_one_batch.alg}, {job.updater.type}, data {job.data.type}")
        return
    workers = cluster_workers(job.cluster)
    # more than one process (workers, separate servers, or nodes): the distributed frameworks
    from servelab.train.cluster import cluster_from

    cluster = cluster_from({"device": job.device, **job.cluster})
    if cluster.world_size > 1 or cluster.rendezvous.nnodes > 1:
        result = _distributed(job, out_dir, workers, resume=resume)
        t = Table("framework", "workers", "servers", "steps", "train loss", "test accuracy", "samples/s", "time s",
                  title=f"{job.name} (losses and accuracy from worker {result.log_rank})")
        last_eval = result.eval_log[-1][2] if result.eval_log else None
        t.add_row(result.framework, str(result.nworkers), str(result.nservers), str(result.steps),
                  f"{result.losses[-1]:.4f}" if result.losses else "-",
                  "-" if last_eval is None else f"{last_eval:.4f}", f"{result.samples_per_s:,.0f}",
                  f"{result.train_s:.1f}")
        console.print(t)
        if result.net is None:  # another node holds worker 0: it exports, pushes and deploys
            console.print(f"node {result.node_rank} done; worker 0 and the trained model are on node 0 "
                          f"(its --out); results of this node's processes: {out_dir}")
            return
    else:
        from servelab.train.trainer import train_local

        result = train_local(job, out_dir=out_dir, progress=not quiet, resume=resume)
        t = Table("steps", "train loss", "test loss", "test accuracy", "samples/s", "time s", title=job.name)
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        t.add_row(str(result.steps), fmt(result.train_loss, ".4f"), fmt(result.test_loss, ".4f"),
                  fmt(result.test_accuracy, ".4f"), fmt(result.samples_per_s, ",.0f"), fmt(result.elapsed_s, ".1f"))
        console.print(t)
    console.print(f"metrics: {out_dir / 'metrics.jsonl'}")
    if not export:
        if deploy:
            raise ConfigError("--deploy needs the export: drop --no-export")
        return
    _export_and_serve(job, result, out_dir, output=output, model_name=model_name or job.name, tolerance=tolerance,
                      store=store, deploy=deploy, memory_mb=memory_mb, url=url, token=token)


def _export_and_serve(job: Any, result: Any, out_dir: Path, *, output: str | None, model_name: str,
                      tolerance: float, store: str | None, deploy: str | None, memory_mb: int, url: str | None,
                      token: str | None) -> None:
    from servelab.train.export import deploy as deploy_fn
    from servelab.train.export import export_onnx, push, push_to_platform

    net = _trained_net(job, result, out_dir)
    if net is None:
        raise ConfigError(f"no trained model to export: no result net and no checkpoint in {out_dir}")
    ex = export_onnx(net, job, out_dir / "model.onnx", output, tolerance=tolerance)
    where = "held-out" if ex.held_out else "training (no test split)"
    console.print(f"exported {ex.path} (output {ex.output!r}, inputs {ex.input_names}); ONNX Runtime vs PyTorch on "
                  f"{ex.samples} {where} samples: max |diff| {ex.max_abs_diff:.2e} (tolerance {ex.tolerance:g})")
    if deploy:
        from servelab.platform.client import DEFAULT_URL, PlatformClient

        client = PlatformClient(url or os.environ.get("SERVELAB_PLATFORM", DEFAULT_URL),
                                token=token or os.environ.get("SERVELAB_TOKEN"))
        ref = push_to_platform(client, ex.path, model_name)
        console.print(f"pushed {ref}")
        cfg = deploy_fn(client, deploy, ref, memory_mb=memory_mb)
        console.print(f"[green]deployed[/] function {cfg['FunctionName']} ({cfg['MemorySize']} MB); try: "
                      f"servelab invoke {cfg['FunctionName']} --random 1")
    else:
        from servelab.config import default_home

        ref = push(ex.path, model_name, home=default_home(), store_url=store)
        console.print(f"pushed {ref}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
