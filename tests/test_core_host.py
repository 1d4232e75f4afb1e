"""The host core: many functions share a memory budget; eviction by policy; starts held, never failed.

A hypothesis state machine plays the world around a :class:`HostCore` (arrivals for any
function, inits that finish, batches that finish or crash, idle instances that die, ticks) and
checks after every step: memory held by started instances never exceeds the budget and equals
what the started instances hold; no busy or starting instance is evicted; no request is lost
(at the end, with the world drained, every admitted request was dispatched).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from servelab.core import CoreConfig, Dispatch, StartInstance, StopInstance, Throttle
from servelab.core.host import HostAction, HostCore, HostFunction
from servelab.core.policies import FixedKeepAlive, GreedyDualKeepAlive

NAMES = ("a", "b", "c")


def test_lru_evicts_the_longest_idle_and_holds_a_start_that_cannot_fit() -> None:
    host = HostCore(1000, order="lru")
    for n in NAMES:
        host.add(HostFunction(n, CoreConfig(keepalive=FixedKeepAlive(600)), 500), 0.0)
    host.arrive("a", 0, 0.0)
    host.ready("a", 0, 0.1)
    host.finish("a", 0, (0,), 0.2)  # a idle since 0.2
    host.arrive("b", 1, 1.0)
    host.ready("b", 0, 1.1)  # b busy
    acts = host.arrive("c", 2, 2.0)
    assert acts == [("a", StopInstance(0, "evicted")), ("c", StartInstance(0, "on_demand"))]
    host.ready("c", 0, 2.1)  # c busy, b busy: memory full of busy instances
    assert host.arrive("a", 3, 3.0) == []  # held: nothing to evict
    assert host.counters.held_starts == 1 and host.used_mb == 1000
    freed = host.finish("b", 0, (1,), 4.0)  # b idles: evicted for a's held start
    assert freed == [("b", StopInstance(0, "evicted")), ("a", StartInstance(1, "on_demand"))]
    assert host.ready("a", 1, 4.5) == [("a", Dispatch(1, (3,), ("cold",)))]


def test_greedy_dual_keeps_the_frequent_function() -> None:
    host = HostCore(1000, order="greedy-dual")
    for n in NAMES:
        host.add(HostFunction(n, CoreConfig(keepalive=GreedyDualKeepAlive()), 500, cost_ms=1000.0), 0.0)
    r = 0
    for i in range(5):  # a: 5 invocations, b: 1
        host.arrive("a", r, float(i))
        r += 1
        if i == 0:
            host.ready("a", 0, 0.1)
        else:
            pass
        host.finish("a", 0, (r - 1,), float(i) + 0.2)
        if i < 4:
            continue
    host.arrive("b", r, 10.0)
    host.ready("b", 0, 10.1)
    host.finish("b", 0, (r,), 10.2)
    acts = host.arrive("c", r + 1, 11.0)
    assert ("b", StopInstance(0, "evicted")) in acts  # b (frequency 1) goes, though a idled longer
    assert host.clock == 1000.0 / 500  # the victim's priority: 0 + 1 x 1000 / 500


class HostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_request = 0
        self.starting: set[tuple[str, int]] = set()  # started by the driver, not ready yet
        self.batches: list[tuple[str, int, tuple[int, ...]]] = []
        self.admitted: set[int] = set()
        self.dispatched: set[int] = set()
        self.throttled: set[int] = set()

    @initialize(budget=st.integers(600, 2000), order=st.sampled_from(["lru", "greedy-dual"]),
                mems=st.lists(st.integers(100, 600), min_size=3, max_size=3),
                keep=st.sampled_from([0.0, 1.0, 5.0, float("inf")]), slots=st.integers(1, 2),
                held=st.sampled_from([None, 1, 3]), freq=st.sampled_from(["function", "instance"]))
    def setup(self, budget: int, order: str, mems: list[int], keep: float, slots: int, held: int | None,
              freq: str) -> None:
        self.host = HostCore(budget, order=order, frequency=freq)  # type: ignore[arg-type]
        ka = GreedyDualKeepAlive(keep) if order == "greedy-dual" else FixedKeepAlive(keep)
        for name, mem in zip(NAMES, mems, strict=True):
            cfg = CoreConfig(keepalive=ka, max_instances=4, slots=slots, max_held_requests=held)
            self.apply(self.host.add(HostFunction(name, cfg, mem, cost_ms=float(mem)), 0.0))

    def busy_keys(self) -> set[tuple[str, int]]:
        return {(n, k) for n, k, _ in self.batches}

    def apply(self, acts: list[HostAction]) -> None:
        busy = self.busy_keys()
        for name, a in acts:
            if isinstance(a, StartInstance):
                self.starting.add((name, a.instance))
            elif isinstance(a, Dispatch):
                self.batches.append((name, a.instance, a.requests))
                assert not set(a.requests) & self.dispatched, "a request served twice"
                self.dispatched.update(a.requests)
            elif isinstance(a, Throttle):
                self.throttled.add(a.request)
            elif isinstance(a, StopInstance):
                key = (name, a.instance)
                assert key not in busy, f"busy instance {key} stopped ({a.reason})"
                assert key not in self.starting, f"starting instance {key} stopped ({a.reason})"

    @rule(fn=st.sampled_from(NAMES), dt=st.floats(0, 2))
    def arrive(self, fn: str, dt: float) -> None:
        self.now += dt
        r = self.next_request
        self.next_request += 1
        acts = self.host.arrive(fn, r, self.now)
        if not any(isinstance(a, Throttle) and a.request == r for _, a in acts):
            self.admitted.add(r)
        self.apply(acts)

    @precondition(lambda self: self.starting)
    @rule(pick=st.integers(0, 100), dt=st.floats(0, 1))
    def ready(self, pick: int, dt: float) -> None:
        self.now += dt
        key = sorted(self.starting)[pick % len(self.starting)]
        self.starting.discard(key)
        self.apply(self.host.ready(key[0], key[1], self.now))

    @precondition(lambda self: self.batches)
    @rule(pick=st.integers(0, 100), dt=st.floats(0, 1), crash=st.booleans())
    def finish(self, pick: int, dt: float, crash: bool) -> None:
        self.now += dt
        name, k, reqs = self.batches.pop(pick % len(self.batches))
        if crash:
            self.dispatched.difference_update(reqs)  # requeued: it never ran, it will be dispatched again
            self.apply(self.host.finish(name, k, reqs, self.now, failure="crash", requeue=True))
        else:
            self.apply(self.host.finish(name, k, reqs, self.now))

    @rule(fn=st.sampled_from(NAMES), dt=st.floats(0, 3))
    def tick(self, fn: str, dt: float) -> None:
        self.now += dt
        self.apply(self.host.tick(fn, self.now))

    @invariant()
    def memory_within_budget(self) -> None:
        if not hasattr(self, "host"):
            return
        h = self.host
        assert h.used_mb <= h.budget_mb + 1e-9
        assert abs(h.used_mb - sum(h.specs[n].memory_mb for n, _ in h.started)) < 1e-6
        for n, k in h.started:
            assert k in h.cores[n].instances, "memory held for an instance its core forgot"

    def teardown(self) -> None:
        if not hasattr(self, "host"):
            return
        # drain the world: finish every batch, make every start ready, until nothing is left
        for _ in range(10_000):
            if self.batches:
                name, k, reqs = self.batches.pop(0)
                self.now += 0.1
                self.apply(self.host.finish(name, k, reqs, self.now))
            elif self.starting:
                key = sorted(self.starting)[0]
                self.starting.discard(key)
                self.now += 0.1
                self.apply(self.host.ready(key[0], key[1], self.now))
            else:
                break
        waiting = {r for c in self.host.cores.values() for r in c.waiting}
        assert not waiting, f"requests never served: {sorted(waiting)}"
        assert not self.host.held
        assert self.admitted <= self.dispatched, f"lost: {sorted(self.admitted - self.dispatched)}"


HostMachine.TestCase.settings = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                                         stateful_step_count=30)
TestHostProperties = HostMachine.TestCase
