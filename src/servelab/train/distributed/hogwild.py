"""Hogwild: worker processes on one machine update one set of parameters in shared memory, without locks.

SINGA's single-node Hogwild is several worker groups sharing one in-memory server group
(``nworker_groups > 1``, servers co-located). As in PyTorch's Hogwild example, the launcher puts
the model's parameters (and buffers) in shared memory (``Tensor.share_memory_()``); every worker
points its own model at those tensors and runs its own optimizer over them, so each ``step()``
writes straight into the shared values while the other workers read and write them too. No
process group is created: there is no communication at all.

Checkpoints: worker 0 writes the shared values and its optimizer state every ``checkpoint_freq``
of its steps; a restart gives every worker those values and that optimizer state.
"""

from __future__ import annotations

from typing import Any

import torch

from servelab.train.distributed import _common as c
from servelab.train.distributed.spec import TrainSpec


def shared_state(spec: TrainSpec, framework: Any) -> tuple[dict[str, torch.Tensor], int, dict[str, Any]]:
    """Built by the launcher: the shared tensors, the step to start at and the optimizer state to resume."""
    model = c.seeded_model(spec)
    start, optim = 0, {}
    found = c.latest_complete(spec.checkpoint_path, framework)
    if found:
        start, path = found
        state = c.load_checkpoint(path / "hogwild.pt")
        model.load_state_dict(state["model"])
        optim = state["optim"]
    tensors = {k: v.detach().clone().share_memory_() for k, v in model.state_dict(keep_vars=False).items()}
    return tensors, start, optim


def run(role: c.Role, spec: TrainSpec, shared: tuple[dict[str, torch.Tensor], int, dict[str, Any]]) -> None:
    tensors, start, optim_state = shared
    model = c.seeded_model(spec)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name in tensors:  # non-persistent buffers stay private
                t.data = tensors[name]  # this process's model now reads and writes the shared storage
    opt = c.optimizer_for(spec, model)
    sched = spec.make_scheduler(opt) if spec.make_scheduler else None
    if optim_state:
        opt.load_state_dict(optim_state)
    log = c.Log(role, start_step=start)
    data = c.batches(spec, role.rank, role.cluster.nworkers, torch.device("cpu"), skip=start)
    log.start()
    for step in range(start, spec.steps):
        batch = next(data)
        opt.zero_grad(set_to_none=True)
        loss = model(batch)["loss"]
        loss.backward()
        c.clip(spec, model)
        opt.step()  # lock-free: other workers may be writing the same values
        if sched is not None:
            sched.step()
        log.step(loss.item(), c.batch_rows(batch))
        if role.rank == 0 and c.checkpoint_due(spec, step):
            assert spec.checkpoint_path is not None
            state = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "optim": opt.state_dict()}
            c.save_atomic(state, c.step_dir(spec.checkpoint_path, step + 1) / "hogwild.pt")
            c.mark_complete(spec.checkpoint_path, step + 1, role.framework)
        if role.rank == 0 and spec.evaluate is not None and spec.eval_every and (step + 1) % spec.eval_every == 0:
            log.eval(step + 1, c.evaluate(spec, model))
    log.t1 = c.time.time()
    if role.rank == 0 and spec.evaluate is not None and c.final_eval_due(spec, start):
        log.eval(spec.steps, c.evaluate(spec, model))
    log.write()
