"""What happened to each simulated request and instance, as preallocated plain lists.

The engine (:mod:`servelab.sim.engine`) writes each request's outcome into :class:`Outcomes`
while it runs; the record table is built once, vectorised, at the end
(:mod:`servelab.sim.output`).

Times are seconds (``*_s``) on the simulation clock (0 = the run's start); durations in ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from servelab.sim.profile import Dist

# status codes (index into servelab.records.STATUSES order), request start kinds (index into
# servelab.billing.rules.START_KINDS) and instance kinds (index into INSTANCE_KINDS)
OK, ERROR, THROTTLED, TIMEOUT = 0, 1, 2, 3
WARM, PREWARMED, COLD = 0, 1, 2
ON_DEMAND, PREWARMED_INSTANCE, PROVISIONED = 0, 1, 2
NAN = math.nan


def stream(dist: Dist, rng: np.random.Generator, chunk: int = 65_536) -> Iterator[float]:
    """An endless iterator of samples of ``dist``, drawn ``chunk`` at a time (``next()`` is ~50 ns)."""
    if dist.values[0] == dist.values[-1]:
        value = dist.values[0]
        while True:
            yield value
    while True:
        yield from dist.sample(rng, chunk).tolist()


@dataclass
class Outcomes:
    """What happened to each request (index = arrival index) and each instance (index = id).

    Filled by a model during the run; :func:`servelab.sim.output.build_table` turns it into
    records. ``dispatch_s`` is when the request's batch started on its instance (it defaults to
    the arrival time, which the fast path leaves as is); ``done_s`` when the platform answered
    (throttles: the arrival time). A request that ran (``instance >= 0``) but has no ``done_s``
    finished at ``dispatch_s + (duration_ms + hold_ms) / 1000``: the fast path does not store it.
    """

    n: int
    arrivals_s: list[float] | None = None
    status: list[int] = field(init=False)
    dispatch_s: list[float] = field(init=False)
    done_s: list[float] = field(init=False)
    instance: list[int] = field(init=False)
    batch: list[int] = field(init=False)
    duration_ms: list[float] = field(init=False)
    kind: list[int] = field(init=False)
    error: dict[int, str] = field(default_factory=dict)  # request -> error text (rare, so sparse)
    hold_ms: np.ndarray | None = None  # per request: the instance's time beyond duration_ms (dispatch overhead)
    # per instance
    inst_start_s: list[float] = field(default_factory=list)  # start asked (provisioning included)
    inst_ready_s: list[float] = field(default_factory=list)
    inst_end_s: list[float] = field(default_factory=list)  # reclaimed / removed (inf: alive at the end)
    inst_init_ms: list[float] = field(default_factory=list)
    inst_kind: list[int] = field(default_factory=list)  # ON_DEMAND, PREWARMED_INSTANCE or PROVISIONED
    inst_end_reason: dict[int, str] = field(default_factory=dict)  # instance -> why it ended

    def __post_init__(self) -> None:
        n = self.n
        self.status = [OK] * n
        self.dispatch_s = list(self.arrivals_s) if self.arrivals_s is not None else [NAN] * n
        self.done_s = [NAN] * n
        self.instance = [-1] * n
        self.batch = [1] * n
        self.duration_ms = [NAN] * n
        self.kind = [WARM] * n

    def new_instance(self, *, start_s: float, ready_s: float, init_ms: float, kind: int) -> int:
        self.inst_start_s.append(start_s)
        self.inst_ready_s.append(ready_s)
        self.inst_end_s.append(math.inf)
        self.inst_init_ms.append(init_ms)
        self.inst_kind.append(kind)
        return len(self.inst_ready_s) - 1

    @property
    def instances(self) -> int:
        return len(self.inst_ready_s)

    def instance_seconds(self, end_s: float) -> float:
        """Instance lifetime summed over instances, from start asked to removal (or ``end_s``)."""
        start = np.asarray(self.inst_start_s)
        end = np.minimum(np.asarray(self.inst_end_s), end_s)
        return float(np.sum(np.maximum(0.0, end - start)))
