"""Gradient averaging through shared memory, for all-reduce workers on one machine (``backend: shm``).

Why: gloo all-reduces over TCP on loopback. On a machine with as many cores as workers, its
ring runs in a background thread of each worker that competes with that worker's own backward
pass for the one core it has, and every byte goes through the kernel's socket buffers twice.
Profiled on the 2-core development machine (``benchmarks/bench_train_scaling.py --profile``,
MLP 64-2048-4, 256 rows per worker), a DDP step over gloo took 10.3 ms against 7.6 ms with this
module, and two gloo workers trained *slower* than one (docs/training-distributed.md#benchmark).

How: the launcher allocates one shared float32 block with a row per worker plus a result row
(``Tensor.share_memory_()``, as Hogwild shares its parameters) and a process barrier. Each step:

1. every worker copies its flattened gradients into its own row; barrier;
2. worker ``r`` sums column chunk ``r`` over all rows and divides by the world size into the
   result row (a reduce-scatter: the reduction work is split evenly); barrier;
3. every worker copies the result row back into its gradients.

Every replica reads the same result, so replicas stay bit-identical. Two barriers suffice: a
worker writes its row of step ``t + 1`` only after the second barrier of step ``t``, and the result
of step ``t + 1`` is written only after the first barrier of ``t + 1``, which every reader of step
``t``'s result has passed. Unused parameters (no gradient) count as zeros.

Only the launcher can set this up (it starts every process of the node): under torchrun, or
with several nodes, the all-reduce stays on the process group's backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from servelab.errors import WorkerFailedError


@dataclass
class ShmAllReduce:
    """What the launcher hands to each all-reduce worker: the shared rows and the barrier."""

    rows: torch.Tensor  # (world + 1, numel): one row per worker, the last row the mean
    barrier: Any  # a multiprocessing Barrier of the launcher's context, for ``world`` parties
    timeout_s: float

    @property
    def world(self) -> int:
        return self.rows.shape[0] - 1


SHM_DIR = "/dev/shm"  # where torch's shared tensors live on Linux (a tmpfs; Docker's default is 64 MB)


def shm_bytes(numel: int, world: int) -> int:
    """The shared block's size for ``numel`` gradient values and ``world`` workers."""
    return (world + 1) * max(numel, 1) * 4


def shm_free_bytes() -> int | None:
    """Free bytes in the shared-memory file system, or None where there is none to ask."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def shm_state(ctx: Any, numel: int, world: int, timeout_s: float) -> ShmAllReduce:
    """Allocate the block for ``numel`` gradient values and ``world`` workers (launcher side)."""
    rows = torch.zeros(world + 1, max(numel, 1)).share_memory_()
    return ShmAllReduce(rows=rows, barrier=ctx.Barrier(world), timeout_s=timeout_s)


class GradientAverager:
    """One worker's side: ``average()`` replaces every parameter's gradient by the mean over workers."""

    def __init__(self, shm: ShmAllReduce, rank: int, params: list[torch.nn.Parameter]) -> None:
        self.shm = shm
        self.rank = rank
        self.params = params
        self.numel = sum(p.numel() for p in params)
        if self.numel > shm.rows.shape[1]:
            raise ValueError(f"shared block holds {shm.rows.shape[1]} values, the gradients need {self.numel}")
        world = shm.world
        step = -(-self.numel // world)
        self.lo, self.hi = min(rank * step, self.numel), min((rank + 1) * step, self.numel)
        self.mine = shm.rows[rank, : self.numel]
        self.result = shm.rows[world, : self.numel]
        # views of the result row shaped like each parameter: step 3 is one copy per parameter
        self.views: list[torch.Tensor] = []
        offset = 0
        for p in params:
            self.views.append(self.result[offset: offset + p.numel()].view_as(p))
            offset += p.numel()

    def _wait(self) -> None:
        try:
            self.shm.barrier.wait(self.shm.timeout_s)
        except Exception as e:  # threading.BrokenBarrierError: a peer died or timed out
            raise WorkerFailedError(
                f"worker {self.rank}: a peer did not reach the gradient barrier within {self.shm.timeout_s:g} s",
                role="worker", rank=self.rank, pid=None, exitcode=None,
            ) from e

    @torch.no_grad()
    def average(self) -> None:
        offset = 0
        for p in self.params:
            n = p.numel()
            if p.grad is None:
                self.mine[offset: offset + n].zero_()
            else:
                self.mine[offset: offset + n].copy_(p.grad.reshape(-1))
            offset += n
        self._wait()
        world = self.shm.world
        if self.hi > self.lo:
            chunk = self.shm.rows[:world, self.lo: self.hi]
            torch.sum(chunk, dim=0, out=self.result[self.lo: self.hi])
            self.result[self.lo: self.hi].mul_(1.0 / world)
        self._wait()
        for p, view in zip(self.params, self.views, strict=True):
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
