"""One function's scheduling state and the step that moves it: events in, actions out.

The live platform (asyncio, real processes) and the simulator (event heap, virtual clock) both
drive a :class:`FunctionCore`; every decision — admission, batching, starting, reclaiming,
pre-warming, autoscaling, and how each request's start is counted — is taken here, by calling the
pure policies in :mod:`servelab.core.policies` and the accounting rules in
:mod:`servelab.billing.rules`. Nothing here does I/O or reads a clock: ``now_s`` comes with each
event, so a test drives the core with plain numbers and a fake backend, without sleeps.

The state is plain data (:class:`InstanceState` per instance, a FIFO of waiting request ids,
counters); :meth:`FunctionCore.step` mutates it and returns the actions the driver must carry out.
The hot paths (:meth:`arrive`, :meth:`finish`) are also callable directly, which is what the
simulator does to keep its per-request cost small.

Invariants (tests/test_core_properties.py checks them over random event sequences):

* every admitted request is dispatched once, throttled once or failed once — never lost, never
  served twice (a requeued batch is dispatched again: it never ran);
* instances never exceed ``max_instances``; a busy instance is never reclaimed;
* cold requests == on-demand environments that served a request.

Times are seconds on the driver's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from servelab.billing.rules import InstanceKind, StartKind, batch_kinds
from servelab.core.actions import (
    Action,
    Dispatch,
    FailRequests,
    SetTimer,
    StartInstance,
    StopInstance,
    Throttle,
)
from servelab.core.config import CoreConfig
from servelab.core.events import (
    Arrived,
    Died,
    Event,
    FailureKind,
    Finished,
    InitFailed,
    Ready,
    Tick,
    TimerFired,
    TimerTag,
)
from servelab.core.policies import (
    AdmissionAction,
    AdmissionSnapshot,
    KeepAliveDecision,
    LoadAverager,
    ScaleDecision,
    ScaleRateLimit,
    admit,
    decide_batch,
    prewarm_at_s,
    queue_timed_out,
    should_reclaim,
    target_tracking,
)

Phase = Literal["starting", "idle", "busy", "gone"]
THROTTLE_REASON = "Rate Exceeded."
_WARM_ONE: tuple[StartKind, ...] = ("warm",)


@dataclass(slots=True)
class InstanceState:
    """One environment as the core sees it. ``batches`` counts the batches it was given (0: its
    next batch is its first, which decides the first request's start kind)."""

    id: int
    kind: InstanceKind
    started_s: float
    ready_s: float | None = None
    idle_since_s: float | None = None
    free_slots: int = 0
    busy_slots: int = 0
    batches: int = 0
    gone: bool = False

    @property
    def phase(self) -> Phase:
        if self.gone:
            return "gone"
        if self.ready_s is None:
            return "starting"
        return "busy" if self.busy_slots else "idle"


@dataclass
class Counters:
    """What the core did, for tests, metrics and lifecycle checks."""

    starts: dict[str, int] = field(default_factory=lambda: {"on_demand": 0, "prewarmed": 0, "provisioned": 0})
    cold: int = 0  # requests dispatched as the first of an on-demand environment
    prewarmed: int = 0
    dispatched: int = 0
    throttled: int = 0
    failed: int = 0
    requeued: int = 0
    reclaimed: int = 0
    evicted: int = 0  # idle instances stopped by the host's memory budget (servelab.core.host)
    held_throttled: int = 0  # requests refused because max_held_requests were already held
    lost: int = 0  # instances that died, failed their init, or were killed with a batch


class FunctionCore:
    """See the module docstring. Construct, then call :meth:`boot` once before other events."""

    def __init__(self, config: CoreConfig, *, now_s: float = 0.0) -> None:
        self.config = config
        self.instances: dict[int, InstanceState] = {}
        self.free: list[int] = []  # one entry per free slot, most recently freed at the end
        self.waiting: deque[int] = deque()  # request ids, oldest at the left
        self.arrived_s: dict[int, float] = {}  # admitted and not yet finished
        self.starting = 0
        self.alive = 0  # instances not gone (starting, idle or busy)
        self.provisioned_alive = 0
        self.busy_slots = 0
        self.running = 0  # requests executing now
        self.counters = Counters()
        self._next_instance = 0
        self._tracking = config.scaling == "target-tracking"
        self._per_request = config.scaling == "per-request"
        self._ka = config.keepalive
        # fixed, faascache and scheduled: observe() is a no-op and decide() a constant
        self._ka_static = self._ka.kind in ("fixed", "faascache", "scheduled")
        self._ka_floor = getattr(self._ka, "min_warm", None)  # scheduled pre-warm: warm instances wanted now
        self._ka_state = self._ka.initial_state()
        self.ka_decision: KeepAliveDecision = self._ka.decide(self._ka_state)
        self.last_arrival_s: float | None = None
        self._prewarmed_for_s: float | None = None
        self._batch_timer = False
        self._rate = ScaleRateLimit(config.scale_rate, now_s=now_s)
        self._admit_memo: dict[tuple[int, int, int, int, int], AdmissionAction] = {}
        # target tracking
        self.load = LoadAverager(now_s)
        self.provisioning = 0
        self.last_scale_out_s: float | None = None
        self.last_scale_in_s: float | None = None
        self.last_scale: ScaleDecision | None = None
        self.closed = False

    # ---- the generic entry point ---------------------------------------------------------
    def step(self, event: Event) -> list[Action]:
        """Apply one event; return what the driver must do."""
        if isinstance(event, Arrived):
            return self.arrive(event.request, event.now_s)
        if isinstance(event, Finished):
            return self.finish(event.instance, event.requests, event.now_s, failure=event.failure,
                               requeue=event.requeue)
        if isinstance(event, Ready):
            return self.ready(event.instance, event.now_s)
        if isinstance(event, TimerFired):
            return self.timer(event.tag, event.arg, event.now_s)
        if isinstance(event, Tick):
            return self.tick(event.now_s)
        if isinstance(event, InitFailed):
            return self.init_failed(event.instance, event.now_s, event.error)
        if isinstance(event, Died):
            return self.died(event.instance, event.now_s, event.reason)
        raise TypeError(f"not a core event: {event!r}")

    def boot(self, now_s: float) -> list[Action]:
        """Start the always-on environments (provisioned concurrency, a pool's machines)."""
        acts: list[Action] = []
        for _ in range(self.config.min_instances):
            self._start(now_s, "provisioned", acts)
        return acts

    # ---- counts --------------------------------------------------------------------------
    @property
    def idle(self) -> int:
        """Free slots (= idle instances when ``slots == 1``)."""
        return len(self.free)

    def by_phase(self) -> dict[Phase, int]:
        out: dict[Phase, int] = {"starting": 0, "idle": 0, "busy": 0}
        for inst in self.instances.values():
            out[inst.phase] += 1
        return out

    # ---- the fast path -------------------------------------------------------------------
    def arrive(self, request: int, now_s: float) -> list[Action]:
        cfg = self.config
        if not self._ka_static:
            self._ka_state = self._ka.observe(self._ka_state, now_s=now_s)
        self.last_arrival_s = now_s
        acts: list[Action] = []
        action = self._admit(now_s)
        if action == "throttle":
            self.counters.throttled += 1
            acts.append(Throttle(request, THROTTLE_REASON))
            return acts
        held = cfg.max_held_requests
        if held is not None and not self.free and len(self.waiting) >= held:
            # scale-from-zero's bound: this many requests already wait for instances to start
            self.counters.throttled += 1
            self.counters.held_throttled += 1
            acts.append(Throttle(request, f"{THROTTLE_REASON} {held} request(s) already held while instances start; "
                                          "retry later"))
            return acts
        self.arrived_s[request] = now_s
        self.waiting.append(request)
        if action == "start":
            self._start(now_s, "on_demand", acts)
        elif action == "queue" and cfg.admission == "queue":
            acts.append(SetTimer(now_s + cfg.max_queue_wait_s, "expire", request))
        if self._tracking:
            self.load.update(now_s, self.running + len(self.waiting))
        if self.free:
            self._pump(now_s, acts)
        return acts

    def _admit(self, now_s: float) -> AdmissionAction:
        slots = self.config.slots
        # under target tracking or a fixed pool only the autoscaler (or nobody) adds instances:
        # the limit is what exists now
        limit = self.config.max_instances * slots if self._per_request else self.alive * slots
        key = (len(self.free), self.starting * slots, self.busy_slots, len(self.waiting), limit)
        action = self._admit_memo.get(key)
        if action is None:
            action = self._admit_memo[key] = admit(AdmissionSnapshot(
                idle=key[0], starting=key[1], busy=key[2], waiting=key[3], max_concurrency=limit,
                max_queue=self.config.max_queue, mode=self.config.admission))
            if len(self._admit_memo) > 100_000:
                self._admit_memo.clear()
        if action == "start" and self._rate.limited and not self._rate.take(now_s):
            # the scaling rate refuses a new instance: the limit is what exists now
            action = admit(AdmissionSnapshot(idle=key[0], starting=key[1], busy=key[2], waiting=key[3],
                                             max_concurrency=self.alive * slots,
                                             max_queue=self.config.max_queue, mode=self.config.admission))
        return action

    def _pump(self, now_s: float, acts: list[Action]) -> None:
        """Hand waiting requests to free slots, in batches when the batching policy says so."""
        cfg = self.config
        mbs = cfg.max_batch_size
        waiting, free = self.waiting, self.free
        while waiting and free:
            q = len(waiting)
            if q >= mbs:
                take = mbs  # a full batch runs at once (decide_batch's documented rule)
            else:
                d = decide_batch(queued=q, oldest_enqueued_s=self.arrived_s[waiting[0]], now_s=now_s,
                                 max_batch_size=mbs, max_wait_s=cfg.max_wait_s)
                take = d.take
                if take == 0:
                    if not self._batch_timer:
                        self._batch_timer = True
                        acts.append(SetTimer(now_s + d.wait_s, "batch"))
                    return
            k = free.pop()
            inst = self.instances[k]
            inst.free_slots -= 1
            inst.busy_slots += 1
            batch = (waiting.popleft(),) if take == 1 else tuple(waiting.popleft() for _ in range(take))
            if inst.batches == 0:
                kinds = batch_kinds(inst.kind, True, take)
                if kinds[0] == "cold":
                    self.counters.cold += 1
                else:
                    self.counters.prewarmed += 1
            else:
                kinds = _WARM_ONE if take == 1 else batch_kinds(inst.kind, False, take)
            inst.batches += 1
            self.busy_slots += 1
            self.running += take
            self.counters.dispatched += take
            acts.append(Dispatch(k, batch, kinds))

    def finish(self, instance: int, requests: tuple[int, ...], now_s: float, *,
               failure: FailureKind | None = None, requeue: bool = False) -> list[Action]:
        """A batch ended (see :class:`~servelab.core.events.Finished`)."""
        inst = self.instances.get(instance)  # None: gone already (another slot's batch failed)
        acts: list[Action] = []
        self.busy_slots -= 1
        self.running -= len(requests)
        if inst is not None:
            inst.busy_slots -= 1
        if failure is not None or inst is None:
            if inst is not None:
                self._remove(inst)
                self.counters.lost += 1
            if requeue:
                self.counters.requeued += len(requests)
                self.counters.dispatched -= len(requests)
                self.waiting.extendleft(reversed(requests))
            else:
                for r in requests:
                    self.arrived_s.pop(r, None)
            self._ensure_capacity(now_s, acts)
        else:
            for r in requests:
                self.arrived_s.pop(r, None)
            self._release(inst, now_s, acts)
        if self._tracking:
            self.load.update(now_s, self.running + len(self.waiting))
        if self.free and self.waiting:
            self._pump(now_s, acts)
        return acts

    def _release(self, inst: InstanceState, now_s: float, acts: list[Action]) -> None:
        """After a batch: a slot is free again, or the instance is unloaded until its pre-warm."""
        if not self._ka_static:
            self.ka_decision = self._ka.decide(self._ka_state)
            if (self.ka_decision.prewarm_after_s > 0 and self._per_request and inst.kind != "provisioned"
                    and not self.waiting and inst.busy_slots == 0):
                self._remove(inst)
                acts.append(StopInstance(inst.id, "unloaded until pre-warm"))
                return
        inst.free_slots += 1
        inst.idle_since_s = now_s
        self.free.append(inst.id)

    # ---- instances -----------------------------------------------------------------------
    def _start(self, now_s: float, kind: InstanceKind, acts: list[Action]) -> None:
        k = self._next_instance
        self._next_instance += 1
        self.instances[k] = InstanceState(id=k, kind=kind, started_s=now_s)
        self.starting += 1
        self.alive += 1
        if kind == "provisioned":
            self.provisioned_alive += 1
        self.counters.starts[kind] += 1
        acts.append(StartInstance(k, kind))

    def ready(self, instance: int, now_s: float) -> list[Action]:
        inst = self.instances[instance]
        acts: list[Action] = []
        if inst.gone:
            return acts
        self.starting -= 1
        inst.ready_s = inst.idle_since_s = now_s
        slots = self.config.slots
        inst.free_slots = slots
        self.free.extend([instance] * slots)
        self._pump(now_s, acts)
        return acts

    def init_failed(self, instance: int, now_s: float, error: str) -> list[Action]:
        """An init failure fails the waiting requests that no other instance will serve."""
        inst = self.instances[instance]
        acts: list[Action] = []
        if inst.gone:
            return acts
        self._remove(inst)
        self.counters.lost += 1
        if self.alive == 0 and self.waiting:
            failed = tuple(self.waiting)
            self.waiting.clear()
            for r in failed:
                self.arrived_s.pop(r, None)
            self.counters.failed += len(failed)
            acts.append(FailRequests(failed, f"init failed: {error}"))
        return acts

    def died(self, instance: int, now_s: float, reason: str) -> list[Action]:
        """An instance that ran no batch went away: forget it, replace it for waiting requests."""
        inst = self.instances[instance]
        if inst.gone:
            return []
        if inst.busy_slots:
            raise ValueError(f"instance {instance} is running a batch: report Finished(failure=...) instead")
        if inst.ready_s is None:
            return self.init_failed(instance, now_s, reason)
        acts: list[Action] = []
        self._remove(inst)
        self.counters.lost += 1
        self._ensure_capacity(now_s, acts)
        return acts

    def _remove(self, inst: InstanceState) -> None:
        if inst.gone:
            return
        if inst.ready_s is None:
            self.starting -= 1
        if inst.free_slots:
            self.free = [k for k in self.free if k != inst.id]
            inst.free_slots = 0
        inst.gone = True
        self.alive -= 1
        if inst.kind == "provisioned":
            self.provisioned_alive -= 1
        del self.instances[inst.id]

    def _ensure_capacity(self, now_s: float, acts: list[Action]) -> None:
        """Replace lost instances for requests still waiting (never above the limit)."""
        if not self._per_request or self.closed:
            return
        slots = self.config.slots
        while (self.waiting and self.starting * slots < len(self.waiting)
               and self.alive < self.config.max_instances and self._rate.take(now_s)):
            self._start(now_s, "on_demand", acts)

    # ---- timers --------------------------------------------------------------------------
    def timer(self, tag: TimerTag, arg: int, now_s: float) -> list[Action]:
        acts: list[Action] = []
        if tag == "batch":
            self._batch_timer = False
            self._pump(now_s, acts)
        elif tag == "expire":
            self._expire(arg, now_s, acts)
        elif tag == "provisioned":
            self.provisioning -= arg
            if not self.closed:
                for _ in range(arg):
                    self._start(now_s, "prewarmed", acts)
        else:
            raise ValueError(f"unknown timer {tag!r}")
        return acts

    def _expire(self, request: int, now_s: float, acts: list[Action]) -> None:
        arrived = self.arrived_s.get(request)
        if arrived is None or not self.waiting or self.arrived_s[self.waiting[0]] > arrived:
            return  # gone, or dispatched (the queue is FIFO: everything older has left it)
        if request not in self.waiting:  # scans from the oldest, where an expiring request sits
            return
        wait_s = self.config.max_queue_wait_s
        if queue_timed_out(enqueued_s=arrived, now_s=now_s, max_wait_s=wait_s):
            self.waiting.remove(request)
            del self.arrived_s[request]
            self.counters.throttled += 1
            if self._tracking:
                self.load.update(now_s, self.running + len(self.waiting))
            acts.append(Throttle(request, f"Rate Exceeded: waited {wait_s:g} s in the queue for an instance"))

    # ---- the slow path -------------------------------------------------------------------
    def tick(self, now_s: float) -> list[Action]:
        """Reclaim idle instances past their keep-alive, keep the always-on ones up, pre-warm
        when the keep-alive policy says so, and (target tracking) autoscale once per period."""
        acts: list[Action] = []
        if self.closed:
            return acts
        self._restore_min(now_s, acts)
        if self._tracking:
            self._autoscale(now_s, acts)
            return acts
        if not self._per_request:
            return acts
        if not self._ka_static:
            self.ka_decision = self._ka.decide(self._ka_state)
        keep_s = self.ka_decision.keep_alive_s
        floor = self._ka_floor(now_s) if self._ka_floor is not None else 0
        reclaim: list[InstanceState] = []
        seen: set[int] = set()
        for k in self.free:  # least recently freed first: stop at the first that stays
            if k in seen:
                continue
            seen.add(k)
            inst = self.instances[k]
            if inst.busy_slots or inst.kind == "provisioned":
                continue
            if self.alive - len(reclaim) <= floor:
                break  # a scheduled window wants these warm
            if not should_reclaim(idle_since_s=inst.idle_since_s if inst.idle_since_s is not None else now_s,
                                  now_s=now_s, keep_alive_s=keep_s, provisioned=False, busy=False):
                break  # every instance after it was freed later, so it stays too
            reclaim.append(inst)
        for inst in reclaim:
            self._remove(inst)
            self.counters.reclaimed += 1
            acts.append(StopInstance(inst.id, "keep-alive expired"))
        while self.alive < min(floor, self.config.max_instances):
            self._start(now_s, "prewarmed", acts)  # scheduled pre-warm
        last = self.last_arrival_s
        if not self._ka_static and last is not None and self._prewarmed_for_s != last:
            at = prewarm_at_s(self.ka_decision, last_invocation_s=last)
            if at is not None and now_s >= at and self.alive == 0:
                self._prewarmed_for_s = last
                self._start(now_s, "prewarmed", acts)
        return acts

    def wants_tick(self) -> bool:
        """Whether a tick could still change anything (the simulator stops ticking otherwise)."""
        if self.waiting or self.running or self.starting or self.provisioning:
            return True
        if self._tracking:
            return self.alive > self.config.min_instances
        if not self._per_request:
            return False
        if self.ka_decision.keep_alive_s != float("inf") and self.alive > self.provisioned_alive:
            return True
        if self._ka_floor is not None:
            return self.alive > self.provisioned_alive
        return not self._ka_static and self.last_arrival_s != self._prewarmed_for_s

    def _restore_min(self, now_s: float, acts: list[Action]) -> None:
        have = self.provisioned_alive
        room = self.config.max_instances - self.alive - self.provisioning  # on-demand ones may fill it for now
        for _ in range(min(self.config.min_instances - have, room)):
            self._start(now_s, "provisioned", acts)

    def _autoscale(self, now_s: float, acts: list[Action]) -> None:
        """Once per metric period: ask :func:`target_tracking` and apply its answer."""
        policy = self.config.autoscaler
        assert policy is not None  # CoreConfig checks it
        if self.load.elapsed_s(now_s) < policy.metric_period_s - 1e-9:
            return
        slots = self.config.slots
        current = self.alive + self.provisioning
        self.load.update(now_s, self.running + len(self.waiting))
        d = target_tracking(policy, now_s=now_s, current=current, mean_load=self.load.take(now_s) / slots,
                            last_scale_out_s=self.last_scale_out_s, last_scale_in_s=self.last_scale_in_s)
        self.last_scale = d
        if d.action == "out":
            self.last_scale_out_s = now_s
            n = d.desired - current
            self.provisioning += n
            acts.append(SetTimer(now_s + policy.scale_out_delay_s, "provisioned", n))
        elif d.action == "in":
            self.last_scale_in_s = now_s
            excess = current - d.desired
            for k in list(dict.fromkeys(self.free)):  # least recently used first; busy ones finish
                if excess <= 0:
                    break
                inst = self.instances[k]
                if inst.busy_slots == 0 and inst.kind != "provisioned":
                    self._remove(inst)
                    self.counters.reclaimed += 1
                    acts.append(StopInstance(k, "scaled in"))
                    excess -= 1

    # ---- for a host that shares memory between functions (servelab.core.host) ----------
    def idle_instances(self) -> list[InstanceState]:
        """Instances that run nothing and may be evicted: ready, no busy slot, not provisioned;
        least recently freed first."""
        out: list[InstanceState] = []
        for k in dict.fromkeys(self.free):
            inst = self.instances[k]
            if inst.busy_slots == 0 and inst.kind != "provisioned":
                out.append(inst)
        return out

    def evict(self, instance: int, now_s: float) -> list[Action]:
        """Stop an idle instance because the host needs its memory (reason ``evicted``)."""
        inst = self.instances.get(instance)
        if inst is None or inst.ready_s is None or inst.busy_slots or inst.kind == "provisioned":
            raise ValueError(f"instance {instance} is not an idle, evictable instance")
        self._remove(inst)
        self.counters.evicted += 1
        return [StopInstance(instance, "evicted")]

    def close(self) -> None:
        """Stop starting instances (the function is being deleted); the driver stops the rest."""
        self.closed = True
