"""Many functions on one host: a shared memory budget, eviction by policy, starts held until
memory frees.

A :class:`HostCore` owns one :class:`~servelab.core.FunctionCore` per function and a budget in
MB. It passes each function's events to that function's core and filters the actions that come
back:

* a ``StartInstance`` that fits in the free memory goes out at once; one that does not fit
  evicts idle instances of *any* function, lowest priority first (LRU: the longest idle; Greedy-
  Dual, FaasCache's: ``clock + frequency x cost / size``, see
  :mod:`servelab.core.policies.greedydual`) — each eviction is a ``StopInstance(reason='evicted')``
  for the victim's function; when even evicting every idle instance would not make room, the
  start is **held** (FIFO) until memory frees: its function's core counts it as starting, so its
  requests wait for it (never fail because of the budget);
* a ``StopInstance`` (keep-alive expired, unloaded until pre-warm, evicted) and an instance lost
  to a failure free its memory, and held starts are retried.

Invariants (tests/test_core_host.py checks them over random event sequences): memory held by
started instances never exceeds the budget; no busy or starting instance is evicted; no request
is lost. Like the function core, this does no I/O and reads no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from servelab.core.actions import Action, Dispatch, StartInstance, StopInstance
from servelab.core.config import CoreConfig
from servelab.core.events import FailureKind, TimerTag
from servelab.core.function import FunctionCore
from servelab.core.policies import Candidate, EvictionOrder, gd_priority, pick_victims
from servelab.errors import ConfigError

HostAction = tuple[str, Action]  # (function name, action)


@dataclass(frozen=True)
class HostFunction:
    """One function on the host: its core settings, the memory one instance holds, and the
    Greedy-Dual miss cost (its init time, ms)."""

    name: str
    config: CoreConfig
    memory_mb: float
    cost_ms: float = 1000.0


@dataclass
class HostCounters:
    evictions: int = 0
    held_starts: int = 0  # starts that had to wait for memory
    peak_used_mb: float = 0.0


class HostCore:
    """See the module docstring. ``order``: which idle instance goes first under pressure."""

    def __init__(self, budget_mb: float, *, order: EvictionOrder = "lru",
                 frequency: Literal["function", "instance"] = "function") -> None:
        if not budget_mb > 0:
            raise ConfigError(f"the host memory budget must be > 0 MB, got {budget_mb!r}")
        self.budget_mb = float(budget_mb)
        self.order: EvictionOrder = order
        self.cores: dict[str, FunctionCore] = {}
        self.specs: dict[str, HostFunction] = {}
        self.used_mb = 0.0
        self.started: set[tuple[str, int]] = set()  # instances holding memory
        self.held: deque[tuple[str, StartInstance, float]] = deque()  # (function, start, held since)
        self.held_ids: set[tuple[str, int]] = set()
        self.clock = 0.0  # Greedy-Dual's clock: the priority of the latest victim
        self.frequency: dict[str, int] = {}
        # Greedy-Dual's frequency: the function's invocations (every instance of a hot function
        # ranks high), or the instance's own uses (a hot function's idle burst instances rank low)
        self.frequency_of = frequency
        self.uses: dict[tuple[str, int], int] = {}
        self.last_use_clock: dict[tuple[str, int], float] = {}
        self.counters = HostCounters()
        # how long each held start waited for memory, by (function, instance), for the driver to
        # record (hold time); the driver pops the entry when it carries the start out
        self.last_held_s: dict[tuple[str, int], float] = {}
        # the held queue's head did not fit and nothing has freed or idled since: skip retrying
        # (a retry scans every function's idle instances)
        self._blocked = False

    # ---- functions -----------------------------------------------------------------------
    def add(self, fn: HostFunction, now_s: float) -> list[HostAction]:
        """Place a function on the host; returns its boot actions (provisioned instances)."""
        if fn.name in self.cores:
            raise ConfigError(f"function {fn.name!r} is already on this host")
        if fn.memory_mb > self.budget_mb:
            raise ConfigError(f"function {fn.name!r} needs {fn.memory_mb:g} MB per instance, more than the host's "
                              f"whole budget ({self.budget_mb:g} MB): raise --host-memory-mb or lower its memory")
        if fn.memory_mb <= 0:
            raise ConfigError(f"function {fn.name!r}: memory_mb must be > 0, got {fn.memory_mb!r}")
        core = FunctionCore(fn.config, now_s=now_s)
        self.cores[fn.name] = core
        self.specs[fn.name] = fn
        self.frequency[fn.name] = 0
        return self._filter(fn.name, core.boot(now_s), now_s)

    def attach(self, fn: HostFunction, core: FunctionCore) -> None:
        """Share the budget with a core someone else drives (the platform's FunctionService):
        it then passes every list of actions its core returns through :meth:`route`."""
        self.add(fn, 0.0)  # checks the name and the memory
        self.cores[fn.name] = core

    def detach(self, name: str) -> None:
        """Take a function off the host (deleted or replaced): its memory and held starts go."""
        for key in [k for k in self.started if k[0] == name]:
            self._release(key)
        self.held = deque(h for h in self.held if h[0] != name)
        self.held_ids = {k for k in self.held_ids if k[0] != name}
        self.cores.pop(name, None)
        self.specs.pop(name, None)
        self.frequency.pop(name, None)

    def route(self, name: str, acts: list[Action], now_s: float, *, arrivals: int = 0) -> list[HostAction]:
        """For a driver that calls its core itself: filter the actions one call returned.

        Any call may have freed memory (an instance lost to a failure, a death) or idled an
        instance, so this releases the memory of the function's instances its core forgot and
        retries held starts. ``arrivals``: requests that call admitted (Greedy-Dual's frequency).
        """
        self.frequency[name] = self.frequency.get(name, 0) + arrivals
        core = self.cores[name]
        for key in [k for k in self.started if k[0] == name and k[1] not in core.instances]:
            self._release(key)
        self._blocked = False
        return self._filter(name, acts, now_s)

    # ---- events (each mirrors FunctionCore's method of the same name) ----------------------
    def arrive(self, name: str, request: int, now_s: float) -> list[HostAction]:
        self.frequency[name] += 1
        return self._filter(name, self.cores[name].arrive(request, now_s), now_s)

    def ready(self, name: str, instance: int, now_s: float) -> list[HostAction]:
        self._blocked = False
        return self._filter(name, self.cores[name].ready(instance, now_s), now_s)

    def finish(self, name: str, instance: int, requests: tuple[int, ...], now_s: float, *,
               failure: FailureKind | None = None, requeue: bool = False) -> list[HostAction]:
        self._blocked = False  # an instance may be idle now
        acts = self.cores[name].finish(instance, requests, now_s, failure=failure, requeue=requeue)
        if failure is not None:
            self._forget_if_gone(name, instance)
        return self._filter(name, acts, now_s)

    def init_failed(self, name: str, instance: int, now_s: float, error: str) -> list[HostAction]:
        acts = self.cores[name].init_failed(instance, now_s, error)
        self._forget_if_gone(name, instance)
        return self._filter(name, acts, now_s)

    def died(self, name: str, instance: int, now_s: float, reason: str) -> list[HostAction]:
        acts = self.cores[name].died(instance, now_s, reason)
        self._forget_if_gone(name, instance)
        return self._filter(name, acts, now_s)

    def timer(self, name: str, tag: TimerTag, arg: int, now_s: float) -> list[HostAction]:
        return self._filter(name, self.cores[name].timer(tag, arg, now_s), now_s)

    def tick(self, name: str, now_s: float) -> list[HostAction]:
        return self._filter(name, self.cores[name].tick(now_s), now_s)

    # ---- memory ----------------------------------------------------------------------------
    @property
    def free_mb(self) -> float:
        return self.budget_mb - self.used_mb

    def _release(self, key: tuple[str, int]) -> None:
        if key in self.started:
            self._blocked = False
            self.started.discard(key)
            self.used_mb -= self.specs[key[0]].memory_mb
            self.last_use_clock.pop(key, None)
            self.uses.pop(key, None)

    def _forget_if_gone(self, name: str, instance: int) -> None:
        if instance not in self.cores[name].instances:
            self._release((name, instance))

    def _filter(self, name: str, acts: list[Action], now_s: float) -> list[HostAction]:
        out: list[HostAction] = []
        for a in acts:
            t = type(a)
            if t is StartInstance:
                if self.held or not self._try_start(name, a, now_s, out):  # type: ignore[arg-type]
                    self.held.append((name, a, now_s))  # type: ignore[arg-type]
                    self.held_ids.add((name, a.instance))  # type: ignore[union-attr]
                    self.counters.held_starts += 1
                continue
            if t is StopInstance:
                self._release((name, a.instance))  # type: ignore[union-attr]
            elif t is Dispatch and self.order == "greedy-dual":
                key = (name, a.instance)  # type: ignore[union-attr]
                self.last_use_clock[key] = self.clock
                self.uses[key] = self.uses.get(key, 0) + 1
            out.append((name, a))
        if self.held:
            self._drain(now_s, out)
        return out

    def _try_start(self, name: str, a: StartInstance, now_s: float, out: list[HostAction]) -> bool:
        need = self.specs[name].memory_mb
        if need > self.free_mb + 1e-9:
            ev = pick_victims(self._candidates(), need_mb=need, free_mb=self.free_mb, clock=self.clock,
                              order=self.order)
            if ev is None:
                return False
            self.clock = ev.clock
            for victim, inst in ev.victims:
                for act in self.cores[victim].evict(inst, now_s):
                    out.append((victim, act))
                self._release((victim, inst))
                self.counters.evictions += 1
        key = (name, a.instance)
        self.started.add(key)
        self.used_mb += need
        self.counters.peak_used_mb = max(self.counters.peak_used_mb, self.used_mb)
        if self.order == "greedy-dual":
            self.last_use_clock[key] = self.clock
        out.append((name, a))
        return True

    def _drain(self, now_s: float, out: list[HostAction]) -> None:
        """Start held starts, oldest first, while they fit (evicting idle instances if needed)."""
        while self.held and not self._blocked:
            name, a, since = self.held[0]
            if not self._try_start(name, a, now_s, out):
                self._blocked = True
                return
            self.held.popleft()
            self.last_held_s[(name, a.instance)] = now_s - since
            self.held_ids.discard((name, a.instance))

    def _candidates(self) -> list[Candidate]:
        out: list[Candidate] = []
        gd = self.order == "greedy-dual"
        for name, core in self.cores.items():
            spec = self.specs[name]
            for inst in core.idle_instances():
                key = (name, inst.id)
                if gd:
                    freq = self.frequency[name] if self.frequency_of == "function" else self.uses.get(key, 0)
                    prio = gd_priority(clock=self.last_use_clock.get(key, 0.0), frequency=freq,
                                       cost_ms=spec.cost_ms, size_mb=spec.memory_mb)
                else:
                    prio = inst.idle_since_s if inst.idle_since_s is not None else 0.0
                out.append(Candidate(key, prio, spec.memory_mb))
        return out
