"""The simulator's core: a heap-based event loop on a virtual clock, and per-request outcomes.

The loop merges two sources of events in time order: the workload's arrival array (already
sorted, never copied into the heap) and a heap of ``(time_s, seq, code, arg)`` entries that the
models push (an instance becomes ready, a batch completes, a timer fires). ``seq`` breaks ties
in push order, so a run is deterministic. At equal times heap events run before arrivals: a
request arriving exactly when an instance frees up finds it free.

Per-event work is kept tiny on purpose (the serverless model simulates > 1 M requests per second
of wall time): models keep state in plain lists and ints, and write each request's outcome into
:class:`Outcomes` (preallocated Python lists); the record table is built once, vectorised, at
the end (:mod:`servelab.sim.records`).

Times are seconds (``*_s``) on the simulation clock (0 = the run's start); durations in ms.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from servelab.sim.profile import Dist

# status codes (index into servelab.records.STATUSES order) and start kinds
OK, ERROR, THROTTLED, TIMEOUT = 0, 1, 2, 3
WARM, PREWARMED, COLD = 0, 1, 2
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
    inst_kind: list[int] = field(default_factory=list)  # COLD or PREWARMED (how it was started)
    inst_provisioned: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.n
        self.status = [OK] * n
        self.dispatch_s = list(self.arrivals_s) if self.arrivals_s is not None else [NAN] * n
        self.done_s = [NAN] * n
        self.instance = [-1] * n
        self.batch = [1] * n
        self.duration_ms = [NAN] * n
        self.kind = [WARM] * n

    def new_instance(self, *, start_s: float, ready_s: float, init_ms: float, kind: int,
                     provisioned: bool = False) -> int:
        self.inst_start_s.append(start_s)
        self.inst_ready_s.append(ready_s)
        self.inst_end_s.append(math.inf)
        self.inst_init_ms.append(init_ms)
        self.inst_kind.append(kind)
        self.inst_provisioned.append(provisioned)
        return len(self.inst_ready_s) - 1

    @property
    def instances(self) -> int:
        return len(self.inst_ready_s)

    def instance_seconds(self, end_s: float) -> float:
        """Instance lifetime summed over instances, from start asked to removal (or ``end_s``)."""
        start = np.asarray(self.inst_start_s)
        end = np.minimum(np.asarray(self.inst_end_s), end_s)
        return float(np.sum(np.maximum(0.0, end - start)))


Handler = Callable[[float, object], None]


class EventLoop:
    """A heap of timed events merged with a sorted array of arrivals.

    ``at(time_s, handler, arg)`` schedules ``handler(time_s, arg)``; ``run(times, on_arrival)``
    calls ``on_arrival(index, time_s)`` for each arrival in order, interleaved with the heap's
    events, until both are exhausted. A model that must stop (say, periodic ticks) simply
    stops rescheduling.
    """

    __slots__ = ("_heap", "_seq", "next_arrival", "now_s")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Handler, object]] = []
        self._seq = 0
        self.now_s = 0.0
        self.next_arrival = 0  # index of the next arrival not yet delivered

    def at(self, time_s: float, handler: Handler, arg: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_s, self._seq, handler, arg))

    def run(self, times: list[float], on_arrival: Callable[[int, float], None]) -> None:
        heap = self._heap
        pop = heapq.heappop
        n = len(times)
        i = 0
        while True:
            if heap and (i >= n or heap[0][0] <= times[i]):
                t, _, handler, arg = pop(heap)
                self.now_s = t
                handler(t, arg)
            elif i < n:
                t = times[i]
                self.now_s = t
                i += 1
                self.next_arrival = i
                on_arrival(i - 1, t)
            else:
                return

    @property
    def pending_events(self) -> int:
        return len(self._heap)
