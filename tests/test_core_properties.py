"""The core's invariants over random event sequences (hypothesis), with a fake world around it.

The fake world plays the instance backend and the clock: it starts what the core asks for,
reports instances ready, finishes, kills or crashes batches, kills idle instances, fires the
core's timers and ticks — in any order hypothesis chooses, on a virtual clock. Whatever the
order, the core must never lose a request or serve one twice, never exceed its instance limit,
never reclaim a busy instance, and count exactly one cold request per on-demand environment that
served a request.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from servelab.core import (
    CoreConfig,
    Dispatch,
    FailRequests,
    FunctionCore,
    SetTimer,
    StartInstance,
    StopInstance,
    Throttle,
)
from servelab.core.policies import TargetTracking, make_keepalive


class CoreWorld(RuleBasedStateMachine):
    """The fake backend: instances are ids with a phase; batches run until a rule ends them."""

    @initialize(
        max_instances=st.integers(1, 4),
        min_instances=st.integers(0, 2),
        slots=st.integers(1, 2),
        max_batch=st.integers(1, 3),
        queue=st.booleans(),
        keep_alive_s=st.sampled_from([0.0, 0.5, 5.0, math.inf]),
        scaling=st.sampled_from(["per-request", "per-request", "target-tracking", "fixed"]),
        hybrid=st.booleans(),
    )
    def setup(self, max_instances, min_instances, slots, max_batch, queue, keep_alive_s, scaling, hybrid):
        min_instances = min(min_instances, max_instances)
        if scaling in ("target-tracking", "fixed"):
            min_instances = max(1, min_instances)
            queue = True
        keepalive = (make_keepalive("hybrid", fallback_keep_alive_s=keep_alive_s, range_s=60, bin_s=1)
                     if hybrid and scaling == "per-request" else make_keepalive("fixed", keep_alive_s=keep_alive_s))
        auto = (TargetTracking(min_instances=min_instances, max_instances=max_instances, metric_period_s=1.0,
                               scale_out_cooldown_s=0.5, scale_in_cooldown_s=0.5, scale_out_delay_s=0.3)
                if scaling == "target-tracking" else None)
        self.cfg = CoreConfig(scaling=scaling, max_instances=max_instances, min_instances=min_instances,
                              slots=1 if scaling == "per-request" else slots,
                              admission="queue" if queue else "throttle",
                              max_queue=3, max_queue_wait_s=1.0, max_batch_size=max_batch, max_wait_s=0.2,
                              keepalive=keepalive, autoscaler=auto)
        self.core = FunctionCore(self.cfg, now_s=0.0)
        self.now = 0.0
        self.next_request = 0
        self.starting: set[int] = set()
        self.ready: set[int] = set()
        self.kinds: dict[int, str] = {}
        self.served_by: dict[int, int] = {}  # instance -> requests it was given
        self.running: dict[tuple[int, tuple[int, ...]], None] = {}  # (instance, batch)
        self.timers: list[SetTimer] = []
        self.outcome: dict[int, str] = {}  # request -> dispatched / throttled / failed
        self.dispatched_twice: list[int] = []
        self.cold: list[int] = []
        self.stopped_busy: list[int] = []
        self.apply(self.core.boot(0.0))

    # ---- the world's side of the actions -------------------------------------------------
    def apply(self, actions):
        for a in actions:
            if isinstance(a, StartInstance):
                self.starting.add(a.instance)
                self.kinds[a.instance] = a.kind
            elif isinstance(a, Dispatch):
                assert a.instance in self.ready, "dispatched to an instance that is not ready"
                assert len(a.requests) <= self.cfg.max_batch_size
                for r, kind in zip(a.requests, a.kinds, strict=True):
                    if self.outcome.get(r) in ("dispatched", "throttled", "failed"):
                        self.dispatched_twice.append(r)
                    self.outcome[r] = "dispatched"
                    if kind == "cold":
                        self.cold.append(a.instance)
                self.served_by[a.instance] = self.served_by.get(a.instance, 0) + len(a.requests)
                self.running[(a.instance, a.requests)] = None
            elif isinstance(a, Throttle):
                assert self.outcome.get(a.request) in (None, "queued")
                self.outcome[a.request] = "throttled"
            elif isinstance(a, FailRequests):
                for r in a.requests:
                    assert self.outcome.get(r) in (None, "queued")
                    self.outcome[r] = "failed"
            elif isinstance(a, StopInstance):
                if any(k == a.instance for k, _ in self.running):
                    self.stopped_busy.append(a.instance)
                self.ready.discard(a.instance)
                self.starting.discard(a.instance)
            elif isinstance(a, SetTimer):
                self.timers.append(a)

    def advance(self, dt):
        self.now += dt

    # ---- rules ---------------------------------------------------------------------------
    @rule(dt=st.floats(0, 0.3))
    def arrive(self, dt):
        self.advance(dt)
        r = self.next_request
        self.next_request += 1
        self.outcome[r] = "queued"
        self.apply(self.core.arrive(r, self.now))

    @precondition(lambda self: self.starting)
    @rule(data=st.data(), dt=st.floats(0, 0.3))
    def instance_ready(self, data, dt):
        self.advance(dt)
        k = data.draw(st.sampled_from(sorted(self.starting)))
        self.starting.discard(k)
        self.ready.add(k)
        self.apply(self.core.ready(k, self.now))

    @precondition(lambda self: self.starting)
    @rule(data=st.data())
    def init_fails(self, data):
        k = data.draw(st.sampled_from(sorted(self.starting)))
        self.starting.discard(k)
        self.apply(self.core.init_failed(k, self.now, "boom"))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), dt=st.floats(0, 0.3), fate=st.sampled_from(["ok", "ok", "ok", "timeout", "crash", "lost"]))
    def batch_ends(self, data, dt, fate):
        self.advance(dt)
        k, batch = data.draw(st.sampled_from(sorted(self.running)))
        del self.running[(k, batch)]
        if fate == "ok":
            self.apply(self.core.finish(k, batch, self.now))
            return
        self.ready.discard(k)
        for other in [key for key in self.running if key[0] == k]:  # the instance's other slots die too
            del self.running[other]
            self.apply(self.core.finish(k, other[1], self.now, failure="crash"))
        if fate == "lost":  # died before reading the batch: it goes back to the queue
            for r in batch:
                self.outcome[r] = "queued"
            self.apply(self.core.finish(k, batch, self.now, failure="crash", requeue=True))
        else:
            self.apply(self.core.finish(k, batch, self.now, failure=fate))

    @precondition(lambda self: any(k not in {i for i, _ in self.running} for k in self.ready))
    @rule(data=st.data())
    def idle_instance_dies(self, data):
        busy = {i for i, _ in self.running}
        k = data.draw(st.sampled_from(sorted(k for k in self.ready if k not in busy)))
        self.ready.discard(k)
        self.apply(self.core.died(k, self.now, "killed"))

    @precondition(lambda self: self.timers)
    @rule(data=st.data())
    def timer_fires(self, data):
        t = data.draw(st.sampled_from(self.timers))
        self.timers.remove(t)
        self.now = max(self.now, t.at_s)
        self.apply(self.core.timer(t.tag, t.arg, self.now))

    @rule(dt=st.floats(0, 2.0))
    def tick(self, dt):
        self.advance(dt)
        self.apply(self.core.tick(self.now))

    # ---- invariants ----------------------------------------------------------------------
    @invariant()
    def no_request_served_twice_or_lost(self):
        assert not self.dispatched_twice
        waiting = set(self.core.waiting)
        for r, state in self.outcome.items():
            if state == "queued":  # admitted and not yet dispatched: the core must still hold it
                assert r in waiting, f"request {r} was lost"
        assert len(waiting) == len(self.core.waiting), "a request waits twice"

    @invariant()
    def instances_within_limits(self):
        assert self.core.alive <= self.cfg.max_instances
        assert len(self.starting) + len(self.ready) == self.core.alive

    @invariant()
    def busy_instances_are_never_reclaimed(self):
        assert not self.stopped_busy

    @invariant()
    def cold_requests_are_on_demand_environments_that_served(self):
        on_demand_served = [k for k, n in self.served_by.items() if n and self.kinds[k] == "on_demand"]
        assert sorted(self.cold) == sorted(on_demand_served)
        assert self.core.counters.cold == len(self.cold)


TestCoreProperties = CoreWorld.TestCase
TestCoreProperties.settings = settings(max_examples=300, stateful_step_count=60, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
