"""A pool of always-loaded instances with a FIFO queue: the engine of the managed-endpoint and
server models (:mod:`servelab.sim.managed`, :mod:`servelab.sim.server`).

Each instance has ``slots`` (per-instance concurrency) and runs batches: whenever a slot is
free, :func:`decide_batch` says whether to run the queued requests now or wait; a batch's
execution time comes from the profile's curve for that batch size (the throughput curve).
Arrivals ask :func:`admit` (mode ``queue``, the limit being the slots that exist now: requests
never start instances here) whether to run, wait, or be refused (429) when ``max_queue`` is
full; a request that waited ``max_queue_wait_s`` is refused too (:func:`queue_timed_out`).

With an autoscaler (:class:`~servelab.platform.policies.TargetTracking`) the pool changes size
the way the real platform's managed mode does: the in-flight load is averaged by
:class:`LoadAverager`, and once per metric period :func:`target_tracking` decides; a scale-out
waits ``scale_out_delay_s`` (provisioning) and then the instance's own start (the profile's init
time); a scale-in removes idle instances, least recently used first, never the minimum ones.

Assumed: slots of one instance do not slow each other down (true while slots <= vCPUs for a
single-threaded runtime; for more, measure a profile at that concurrency).

Times are seconds on the simulation clock; durations ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from servelab.platform.policies import (
    AdmissionSnapshot,
    LoadAverager,
    ScaleDecision,
    TargetTracking,
    admit,
    decide_batch,
    queue_timed_out,
    target_tracking,
)
from servelab.sim.core import PREWARMED, THROTTLED, TIMEOUT, WARM, EventLoop, Outcomes, stream
from servelab.sim.profile import Device, Profile


@dataclass(frozen=True)
class PoolSpec:
    """The engine's settings; the managed and server configs translate to this."""

    instances: int  # at t = 0 (ready), and the minimum under an autoscaler
    slots: int = 1
    memory_mb: int | None = None
    device: Device = "cpu"
    max_batch_size: int = 1
    max_wait_s: float = 0.0
    max_queue: int = 1_000_000
    max_queue_wait_s: float = 30.0
    timeout_s: float = 60.0
    autoscaler: TargetTracking | None = None


@dataclass
class PoolTrace:
    """What the pool did besides serving requests: scaling decisions, for reports and tests."""

    decisions: list[tuple[float, ScaleDecision]] = field(default_factory=list)


def simulate_pool(spec: PoolSpec, profile: Profile, times: np.ndarray, *, rng: np.random.Generator,
                  trace: PoolTrace | None = None) -> Outcomes:
    arrivals: list[float] = np.asarray(times, dtype=np.float64).tolist()
    n = len(arrivals)
    out = Outcomes(n, arrivals_s=arrivals)
    out.hold_ms = profile.dispatch_overhead_ms.sample(rng.spawn(1)[0], n)
    hold_ms = out.hold_ms.tolist()
    rngs = rng.spawn(3)
    loop = EventLoop()
    streams: dict[int, object] = {}

    def service(size: int) -> float:
        it = streams.get(size)
        if it is None:
            it = streams[size] = stream(profile.service(batch=size, memory_mb=spec.memory_mb, device=spec.device),
                                        rngs[0])
        return next(it)  # type: ignore[call-overload]

    init_it = stream(profile.init(memory_mb=spec.memory_mb, device=spec.device), rngs[1])
    extra_it = stream(profile.cold_start.first_inference_extra_ms, rngs[2])
    c = spec.slots
    mbs = spec.max_batch_size
    timeout_ms = spec.timeout_s * 1000.0
    auto = spec.autoscaler

    free: deque[int] = deque()  # one entry per free slot (instance id), most recently freed at the right
    free_count: list[int] = []  # per instance
    fresh: list[bool] = []
    pending: deque[int] = deque()
    state = {"starting": 0, "alive": 0, "busy_slots": 0, "running": 0, "provisioning": 0, "timer": False,
             "last_out": None, "last_in": None}
    averager = LoadAverager(0.0)

    def observe(now: float) -> None:
        if auto is not None:
            averager.update(now, state["running"] + len(pending))

    def new_instance(now: float, *, ready_now: bool, minimum: bool) -> None:
        init_ms = next(init_it)
        ready = now if ready_now else now + init_ms / 1000.0
        k = out.new_instance(start_s=now, ready_s=ready, init_ms=init_ms, kind=PREWARMED, provisioned=minimum)
        free_count.append(0)
        fresh.append(True)
        state["alive"] += 1
        if ready_now:
            serve(k, now)
        else:
            state["starting"] += 1
            loop.at(ready, on_ready, k)

    def on_ready(now: float, k: object) -> None:
        state["starting"] -= 1
        serve(k, now)  # type: ignore[arg-type]

    def serve(k: int, now: float) -> None:
        free_count[k] = c
        free.extend([k] * c)
        pump(now)

    def on_arrival(i: int, now: float) -> None:
        # counted in slots; the limit is the slots that exist now (requests never start instances)
        action = admit(AdmissionSnapshot(idle=len(free), starting=state["starting"] * c,
                                         busy=state["busy_slots"], waiting=len(pending),
                                         max_concurrency=state["alive"] * c,
                                         max_queue=spec.max_queue, mode="queue"))
        if action == "throttle":
            out.status[i] = THROTTLED
            out.done_s[i] = now
            out.error[i] = "Rate Exceeded."
            return
        pending.append(i)
        if action == "queue":
            loop.at(now + spec.max_queue_wait_s, on_expire, i)
        observe(now)
        pump(now)

    def on_expire(now: float, i: object) -> None:
        j: int = i  # type: ignore[assignment]
        if out.instance[j] >= 0 or out.status[j] != 0:
            return
        if queue_timed_out(enqueued_s=arrivals[j], now_s=now, max_wait_s=spec.max_queue_wait_s):
            pending.remove(j)
            out.status[j] = THROTTLED
            out.done_s[j] = now
            out.error[j] = f"Rate Exceeded: waited {spec.max_queue_wait_s:g} s in the queue for an instance"
            observe(now)

    def pump(now: float) -> None:
        while pending and free:
            q = len(pending)
            d = decide_batch(queued=q, oldest_enqueued_s=arrivals[pending[0]], now_s=now, max_batch_size=mbs,
                             max_wait_s=spec.max_wait_s)
            if d.take == 0:
                if not state["timer"]:
                    state["timer"] = True
                    loop.at(now + d.wait_s, on_timer, None)
                return
            k = free.pop()
            free_count[k] -= 1
            batch = [pending.popleft() for _ in range(d.take)]
            run(k, batch, now)

    def on_timer(now: float, _: object) -> None:
        state["timer"] = False
        pump(now)

    def run(k: int, batch: list[int], now: float) -> None:
        size = len(batch)
        dur = service(size)
        first = fresh[k]
        if first:
            fresh[k] = False
            dur += next(extra_it)
        timed_out = dur > timeout_ms
        dur = min(dur, timeout_ms)
        for j in batch:
            out.dispatch_s[j] = now
            out.instance[j] = k
            out.batch[j] = size
            out.duration_ms[j] = dur
            out.kind[j] = PREWARMED if first else WARM
        state["busy_slots"] += 1
        state["running"] += size
        loop.at(now + (dur + hold_ms[batch[0]]) / 1000.0, on_done, (k, batch, timed_out))

    def on_done(now: float, arg: object) -> None:
        k, batch, timed_out = arg  # type: ignore[misc]
        state["busy_slots"] -= 1
        state["running"] -= len(batch)
        for j in batch:
            out.done_s[j] = now
            if timed_out:
                out.status[j] = TIMEOUT
                out.error[j] = f"Task timed out after {spec.timeout_s:g} seconds"
        observe(now)
        if out.inst_end_s[k] != float("inf"):  # removed while busy: should not happen (scale-in takes idle only)
            return
        free_count[k] += 1
        free.append(k)
        pump(now)

    def on_metric(now: float, _: object) -> None:
        assert auto is not None
        mean = averager.take(now) / c  # per slot: target_utilisation is a share of the slots
        current = state["alive"] + state["provisioning"]
        d = target_tracking(auto, now_s=now, current=current, mean_load=mean,
                            last_scale_out_s=state["last_out"], last_scale_in_s=state["last_in"])
        if trace is not None:
            trace.decisions.append((now, d))
        if d.action == "out":
            state["last_out"] = now
            more = d.desired - current
            state["provisioning"] += more
            loop.at(now + auto.scale_out_delay_s, on_provisioned, more)
        elif d.action == "in":
            state["last_in"] = now
            excess = current - d.desired
            for k in list(dict.fromkeys(free)):  # least recently used first
                if excess <= 0:
                    break
                if free_count[k] == c and not out.inst_provisioned[k] and out.inst_end_s[k] == float("inf"):
                    for _ in range(c):
                        free.remove(k)
                    free_count[k] = 0
                    out.inst_end_s[k] = now
                    state["alive"] -= 1
                    excess -= 1
        if loop.next_arrival < n or pending or state["running"]:
            loop.at(now + auto.metric_period_s, on_metric, None)

    def on_provisioned(now: float, more: object) -> None:
        state["provisioning"] -= more  # type: ignore[operator]
        for _ in range(more):  # type: ignore[call-overload]
            new_instance(now, ready_now=False, minimum=False)

    for _ in range(spec.instances):
        new_instance(0.0, ready_now=True, minimum=True)
    if auto is not None:
        loop.at(auto.metric_period_s, on_metric, None)
    loop.run(arrivals, on_arrival)
    return out
