"""Parameter servers: synchronous (SINGA's Sandblaster) and asynchronous (Downpour).

Servers are processes of their own (``server_worker_separate: true``). Each of the
``nservers_per_group`` servers holds a slice of the parameters (whole tensors, balanced by size,
as SINGA sliced Params for load balance) and runs the updater on it; workers hold no optimizer.
All traffic is point-to-point gloo send/recv of flat float32 tensors (CPU; a GPU worker copies).

- **sync-ps**: each step every worker sends its gradient slice to each server; a server waits for
  all workers, applies the mean, and sends the new slice back; workers wait for every slice
  (SINGA's ``Collect`` blocking on the fresh version). All replicas stay identical.
- **async-ps**: worker groups are not synchronised. A group's leader (its worker 0) pushes
  ``[step, version it computed on, gradient]``; the server applies it at once, counts the
  staleness (its version minus the one the gradient was computed on), and answers with its
  current slice and version. With ``max_staleness`` set, older gradients are dropped (counted).
  Workers inside a group are synchronous: they all-reduce gradients in a subgroup first, and the
  leader broadcasts the pulled parameters.

Checkpoints: sync-ps writes ``step-N/server-J.pt`` before answering step N, and worker 0 marks the
step complete once every server answered. async-ps servers each write ``async/server-J.pt`` (their
slice, updater state, version and the steps applied per group); on restart a group resumes at
the smallest count any server has for it, and servers skip pushes they already applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from servelab.train.distributed import _common as c
from servelab.train.distributed.spec import TrainSpec

HEADER = 2  # async push: [step, version]; async reply / initial pull: [version or step, count]


def assign(sizes: list[int], nservers: int) -> list[list[int]]:
    """Parameter indices per server: largest first onto the least-loaded server (ties: lowest index)."""
    load = [0] * nservers
    owned: list[list[int]] = [[] for _ in range(nservers)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        j = min(range(nservers), key=lambda j: (load[j], j))
        owned[j].append(i)
        load[j] += sizes[i]
    return [sorted(o) for o in owned]


def _slices(model: torch.nn.Module, nservers: int) -> tuple[list[tuple[str, torch.nn.Parameter]], list[list[int]]]:
    named = list(model.named_parameters())
    return named, assign([p.numel() for _, p in named], nservers)


def _flat(tensors: Sequence[torch.Tensor], header: list[float] | None = None) -> torch.Tensor:
    parts = [t.detach().reshape(-1).to("cpu", torch.float32) for t in tensors]
    if header is not None:
        parts.insert(0, torch.tensor(header, dtype=torch.float32))
    return torch.cat(parts) if parts else torch.zeros(0)


def _unflat(flat: torch.Tensor, into: Sequence[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in into:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def _numel(params: Sequence[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


# ---- servers ------------------------------------------------------------------------------------

class _Shard:
    """One server's parameters (copies on CPU) with their updater."""

    def __init__(self, role: c.Role, spec: TrainSpec) -> None:
        model = c.seeded_model(spec)  # same seed as the workers: same initial values
        named, owned = _slices(model, role.cluster.nservers_per_group)
        mine = owned[role.server_slice]
        self.names = [named[i][0] for i in mine]
        self.params = [torch.nn.Parameter(named[i][1].detach().clone()) for i in mine]
        subset = list(zip(self.names, self.params, strict=True))
        self.opt = c.optimizer_for(spec, model, subset) if self.params else None
        self.sched = spec.make_scheduler(self.opt) if spec.make_scheduler and self.opt else None
        self.size = _numel(self.params)

    def apply(self, grad: torch.Tensor) -> None:
        if self.opt is None:
            return
        offset = 0
        for p in self.params:
            p.grad = grad[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def state(self) -> dict[str, Any]:
        return {
            "params": {n: p.detach().clone() for n, p in zip(self.names, self.params, strict=True)},
            "optim": self.opt.state_dict() if self.opt else {},
            "sched": c.scheduler_state(self.sched),
        }

    def load(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p in zip(self.names, self.params, strict=True):
                p.copy_(state["params"][n])
        if self.opt:
            self.opt.load_state_dict(state["optim"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])


def run_sync_server(role: c.Role, spec: TrainSpec) -> None:
    shard = _Shard(role, spec)
    workers = range(role.cluster.nworkers)
    start = 0
    found = c.latest_complete(spec.checkpoint_path, role.framework)
    if found:
        start, path = found
        shard.load(c.load_checkpoint(path / f"server-{role.server}.pt"))
    _send_each({w: _flat(shard.params, [float(start), 0.0]) for w in workers})
    grad = torch.zeros(shard.size)
    total = torch.zeros(shard.size)
    for step in range(start, spec.steps):
        total.zero_()
        for w in workers:
            dist.recv(grad, src=w)
            total += grad
        shard.apply(total / len(workers))
        if c.checkpoint_due(spec, step):
            assert spec.checkpoint_path is not None
            c.save_atomic(shard.state(), c.step_dir(spec.checkpoint_path, step + 1) / f"server-{role.server}.pt")
        flat = _flat(shard.params)
        _send_each({w: flat for w in workers})
    c.Log(role, start_step=start).write()


def run_async_server(role: c.Role, spec: TrainSpec) -> None:
    shard = _Shard(role, spec)
    groups = role.cluster.nworker_groups
    nsg = role.cluster.nserver_groups
    mine = [g for g in range(groups) if g % nsg == role.server_group]  # the worker groups this server group serves
    leaders = {role.group_ranks(g)[0]: g for g in mine}
    replicas = _ReplicaSync(role, spec, shard) if nsg > 1 else None
    version, counts = 0, [0] * groups
    ckpt = spec.checkpoint_path / "async" / f"server-{role.server}.pt" if spec.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = c.load_checkpoint(ckpt)
        shard.load(state)
        version, counts = int(state["version"]), [int(x) for x in state["counts"]]
    _send_each({leader: _flat(shard.params, [float(version), float(counts[g])]) for leader, g in leaders.items()})

    staleness: list[int] = []
    dropped = applied = 0
    pending: dict[int, Any] = {}  # the last reply to each leader, sent without waiting for it to be received
    buf = torch.zeros(HEADER + shard.size)
    while min(counts[g] for g in mine) < spec.steps:
        src = dist.recv(buf)  # from any group leader, in arrival order: no barrier between groups
        if src in pending:
            pending.pop(src).wait()
        g = leaders[src]
        step, seen = int(buf[0]), int(buf[1])
        if step >= counts[g]:  # after a restart, a push this server already applied is skipped
            counts[g] = step + 1
            stale = version - seen
            staleness.append(stale)
            if role.cluster.max_staleness is not None and stale > role.cluster.max_staleness:
                dropped += 1
            else:
                shard.apply(buf[HEADER:])
                version += 1
                applied += 1
                if ckpt is not None and spec.checkpoint_freq and version % spec.checkpoint_freq == 0:
                    c.save_atomic({**shard.state(), "version": version, "counts": list(counts)}, ckpt)
        pending[src] = dist.isend(_flat(shard.params, [float(version), 0.0]), dst=src)
        if replicas is not None:
            replicas.maybe_sync(min(counts[g] for g in mine))
    for req in pending.values():
        req.wait()
    if replicas is not None:
        replicas.maybe_sync(spec.steps, final=True)
    if ckpt is not None:
        c.save_atomic({**shard.state(), "version": version, "counts": list(counts)}, ckpt)
    log = c.Log(role)
    log.extra = {
        "staleness_max": max(staleness, default=0),
        "staleness_mean": sum(staleness) / len(staleness) if staleness else 0.0,
        "dropped": dropped, "applied": applied, "server_group": role.server_group, "slice": role.server_slice,
        "syncs": replicas.syncs if replicas is not None else 0,
        "checksum": float(sum(p.detach().double().sum() for p in shard.params)),
    }
    log.write()


class _ReplicaSync:
    """Several server groups: the servers holding one slice average it every ``sync_freq`` rounds.

    A round is a step every worker group of this server group has pushed (the least count among
    them), so every server group syncs at the same rounds, the same number of times, and the
    collective never waits on a server group that will not come. Only servers of the same slice
    take part (their own process group), so a sync never waits on workers; each keeps its own
    updater state, as SINGA's server groups did.
    """

    def __init__(self, role: c.Role, spec: TrainSpec, shard: _Shard) -> None:
        cl = role.cluster
        self.shard = shard
        self.every = cl.sync_freq
        self.nsg = cl.nserver_groups
        peers = [role.server_rank(role.server_slice, sg) for sg in range(self.nsg)]
        self.group = dist.new_group(peers, use_local_synchronization=True)
        self.done = 0  # rounds synced through
        self.syncs = 0

    def maybe_sync(self, rounds: int, *, final: bool = False) -> None:
        while self.done + self.every <= rounds:
            self._sync()
            self.done += self.every
        if final and self.done < rounds:  # the last, partial interval: every replica ends identical
            self._sync()
            self.done = rounds

    def _sync(self) -> None:
        flat = _flat(self.shard.params)
        dist.all_reduce(flat, group=self.group)
        _unflat(flat / self.nsg, self.shard.params)
        self.syncs += 1


def _wait_all(requests: Sequence[dist.Work | None]) -> None:
    for req in requests:
        assert req is not None  # None only for a rank outside the group; these use the default (world) group
        req.wait()


def _send_each(messages: dict[int, torch.Tensor]) -> None:
    _wait_all([dist.isend(t, dst=r) for r, t in messages.items()])


# ---- workers ------------------------------------------------------------------------------------

class _Replica:
    """A worker's model, with its parameters grouped by the server that owns them."""

    def __init__(self, role: c.Role, spec: TrainSpec) -> None:
        self.device = c.device_for(role)
        self.model = c.seeded_model(spec).to(self.device)
        named, owned = _slices(self.model, role.cluster.nservers_per_group)
        self.slices = [[named[i][1] for i in idx] for idx in owned]
        # this worker's server group holds every slice
        self.servers = [role.server_rank(j, role.server_group) for j in range(role.cluster.nservers_per_group)]

    def grads(self, j: int) -> list[torch.Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.slices[j]]

    def exchange(self, pushes: list[torch.Tensor] | None, header: int) -> list[torch.Tensor]:
        """Send each server its push (if any) and receive its slice after ``header`` numbers; returns the headers.

        The receives are posted before the sends are waited on: a server answering another
        worker never waits on us (gloo send/recv rendezvous), so no cycle of waits can form.
        """
        bufs = [torch.zeros(header + _numel(s)) for s in self.slices]
        recvs = [dist.irecv(b, src=s) for b, s in zip(bufs, self.servers, strict=True)]
        sends = [dist.isend(p, dst=s) for p, s in zip(pushes, self.servers, strict=True)] if pushes else []
        _wait_all(sends + recvs)
        for b, params in zip(bufs, self.slices, strict=True):
            _unflat(b[header:], params)
        return [b[:header] for b in bufs]


def run_sync_worker(role: c.Role, spec: TrainSpec) -> None:
    rep = _Replica(role, spec)
    log = c.Log(role)
    start = int(min(h[0].item() for h in rep.exchange(None, HEADER)))
    log.start_step = start
    data = c.batches(spec, role.rank, role.cluster.nworkers, rep.device, skip=start)
    log.start()
    for step in range(start, spec.steps):
        batch = next(data)
        rep.model.zero_grad(set_to_none=True)
        loss = rep.model(batch)["loss"]
        loss.backward()
        c.clip(spec, rep.model)  # each worker's own gradient (the servers average after)
        # blocks until every server applied every worker's gradient of this step
        rep.exchange([_flat(rep.grads(j)) for j in range(len(rep.servers))], 0)
        log.step(loss.item(), c.batch_rows(batch))
        if role.rank == 0 and c.checkpoint_due(spec, step):
            assert spec.checkpoint_path is not None
            c.mark_complete(spec.checkpoint_path, step + 1, role.framework)  # every server wrote step+1 already
        _maybe_eval(role, spec, rep.model, log, step)
    _finish_worker(role, spec, rep.model, log)


def run_async_worker(role: c.Role, spec: TrainSpec) -> None:
    rep = _Replica(role, spec)
    log = c.Log(role)
    n = role.cluster.nworkers_per_group
    leader = role.rank_in_group == 0
    subgroups = [dist.new_group(role.group_ranks(g)) for g in range(role.cluster.nworker_groups)] if n > 1 else []
    sub = subgroups[role.group] if subgroups else None
    params = [p for s in rep.slices for p in s]

    versions = [0] * len(rep.servers)
    start_t = torch.zeros(1)
    if leader:
        heads = rep.exchange(None, HEADER)
        versions = [int(h[0]) for h in heads]
        start_t[0] = min(float(h[1]) for h in heads)
    if sub is not None:
        dist.broadcast(start_t, src=role.group_ranks(role.group)[0], group=sub)
        _broadcast_params(params, role, sub)
    start = int(start_t.item())
    log.start_step = start
    data = c.batches(spec, role.rank, role.cluster.nworkers, rep.device, skip=start)
    log.start()
    for step in range(start, spec.steps):
        batch = next(data)
        rep.model.zero_grad(set_to_none=True)
        loss = rep.model(batch)["loss"]
        loss.backward()
        c.clip(spec, rep.model)
        if sub is not None:  # synchronous inside the group
            flat = _flat([g for j in range(len(rep.servers)) for g in rep.grads(j)])
            dist.all_reduce(flat, group=sub)
            _unflat(flat / n, [p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        if leader:
            pushes = [_flat(rep.grads(j), [float(step), float(versions[j])]) for j in range(len(rep.servers))]
            versions = [int(h[0]) for h in rep.exchange(pushes, HEADER)]
        if sub is not None:
            _broadcast_params(params, role, sub)
        log.step(loss.item(), c.batch_rows(batch))
        _maybe_eval(role, spec, rep.model, log, step)
    _finish_worker(role, spec, rep.model, log)


def _broadcast_params(params: list[torch.nn.Parameter], role: c.Role, sub: Any) -> None:
    flat = _flat(params)
    dist.broadcast(flat, src=role.group_ranks(role.group)[0], group=sub)
    _unflat(flat, params)


def _maybe_eval(role: c.Role, spec: TrainSpec, model: torch.nn.Module, log: c.Log, step: int) -> None:
    if role.rank == 0 and spec.evaluate is not None and spec.eval_every and (step + 1) % spec.eval_every == 0:
        log.eval(step + 1, c.evaluate(spec, model))


def _finish_worker(role: c.Role, spec: TrainSpec, model: torch.nn.Module, log: c.Log) -> None:
    log.t1 = c.time.time()
    if role.rank == 0:
        c.save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, role.out_dir / "model.pt")
        if spec.evaluate is not None and c.final_eval_due(spec, log.start_step):
            log.eval(spec.steps, c.evaluate(spec, model))
    log.write()

