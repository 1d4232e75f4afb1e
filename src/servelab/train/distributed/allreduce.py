"""Synchronous all-reduce (SINGA's AllReduce, Baidu's Deep Image) and the one-worker ``local`` run.

Each worker holds a full replica (the server is co-located: ``server_worker_separate: false``),
trains on its slice of the mini-batch and averages gradients with every other worker each step
through ``DistributedDataParallel`` (gloo on CPU, nccl on GPU), so all replicas apply the same
update. Layers marked feature-parallel hold only their shard and are left out of DDP's
averaging (see ``partition.py``): that is hybrid partitioning inside one group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from servelab.train.distributed import _common as c
from servelab.train.distributed.partition import apply_model_parallel, full_state_dict
from servelab.train.distributed.shm import GradientAverager, ShmAllReduce
from servelab.train.distributed.spec import TrainSpec
from servelab.train.precision import MixedPrecision


def run(role: c.Role, spec: TrainSpec, shm: ShmAllReduce | None = None) -> None:
    """Train as worker ``role.rank``; with ``shm`` (the launcher's shared block, one machine) the
    gradients are averaged in shared memory instead of by DDP over the process group."""
    world = role.cluster.nworkers
    device = c.device_for(role)
    log = c.Log(role)
    model = c.seeded_model(spec)
    sharded: list[str] = []
    mp_group = None
    if spec.model_parallel and world > 1:
        # the feature-parallel collectives get their own group, so they never interleave with DDP's buckets
        mp_group = dist.new_group(list(range(world)))
        sharded = apply_model_parallel(model, spec.model_parallel, group=mp_group)
    model.to(device)
    opt = c.optimizer_for(spec, model)
    sched = spec.make_scheduler(opt) if spec.make_scheduler else None
    amp = MixedPrecision(spec.precision, device, opt)  # type: ignore[arg-type]

    start = 0
    found = c.latest_complete(spec.checkpoint_path, role.framework)
    if found:
        start, path = found
        state = c.load_checkpoint(path / f"rank-{role.rank}.pt")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
    log.start_step = start

    net = model
    replicated = [n for n, p in model.named_parameters() if p.requires_grad and n not in sharded]
    averager = None
    if world > 1 and replicated and shm is not None:
        params = dict(model.named_parameters())
        averager = GradientAverager(shm, role.rank, [params[n] for n in replicated])
    elif world > 1 and replicated:  # (every parameter sharded: nothing for DDP to average)
        if sharded:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sharded)
        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)  # also broadcasts rank 0's replicated state

    log.extra["grad_sync"] = "shm" if averager is not None else ("ddp" if net is not model else "none")
    data = c.batches(spec, role.rank, world, device, skip=start)
    evaluate_here = spec.evaluate is not None and (role.rank == 0 or mp_group is not None)
    log.start()
    for step in range(start, spec.steps):
        batch = next(data)
        with amp.autocast():
            loss = net(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)  # fp16: scaled; averaging a scaled gradient is scaling the average
        if averager is not None:
            averager.average()
        amp.unscale()
        c.clip(spec, model)  # after the gradients were averaged: the global norm
        amp.step()
        if sched is not None:
            sched.step()
        log.step(loss.item(), c.batch_rows(batch))
        if c.checkpoint_due(spec, step):
            _checkpoint(role, spec, step + 1, model, opt, sched, world)
        if evaluate_here and spec.eval_every and (step + 1) % spec.eval_every == 0:
            metric = c.evaluate(spec, model)
            if role.rank == 0:
                log.eval(step + 1, metric)
    log.t1 = c.time.time()
    final = full_state_dict(model) if mp_group is not None else None
    if role.rank == 0:
        final = final if final is not None else {k: v.detach().cpu() for k, v in model.state_dict().items()}
        c.save_atomic(final, role.out_dir / "model.pt")
    if evaluate_here and c.final_eval_due(spec, start):  # decided alike on every rank: MP eval communicates
        metric = c.evaluate(spec, model)
        if role.rank == 0:
            log.eval(spec.steps, metric)
    log.write()


def _checkpoint(role: c.Role, spec: TrainSpec, done: int, model: torch.nn.Module, opt, sched, world: int) -> None:
    assert spec.checkpoint_path is not None
    part = {"model": model.state_dict(), "optim": opt.state_dict(), "sched": c.scheduler_state(sched)}
    c.save_atomic(part, c.step_dir(spec.checkpoint_path, done) / f"rank-{role.rank}.pt")
    if world > 1:
        dist.barrier()  # every rank's part is on disk before the marker says so
    if role.rank == 0:
        c.mark_complete(spec.checkpoint_path, done, role.framework)
