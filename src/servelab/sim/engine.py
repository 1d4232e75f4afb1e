"""The simulator's driver of the core: a virtual clock, an event heap, and times from a profile.

Every decision is the core's (:class:`servelab.core.FunctionCore`, the same object the live
platform drives); this module only plays the part of the real world around it, as SimPy-style
plain code:

* arrivals come from the workload's sorted array (never copied into the heap);
* a :class:`~servelab.core.actions.StartInstance` becomes a ``Ready`` event after an init time
  drawn from the profile (environments asked for at boot — provisioned concurrency, a server's
  machines, a managed endpoint's minimum — are ready at t = 0: the bench targets wait for them
  before the load starts);
* a :class:`~servelab.core.actions.Dispatch` becomes a ``Finished`` event after the batch's
  execution time from the profile (plus the first-inference extra on a fresh instance, and the
  dispatch overhead); a batch longer than the function's timeout ends at the timeout and takes
  its instance with it, as on the platform;
* the core's timers and the platform's reconcile period (``reap_interval_s``) are heap events;
* optionally (``host_cpus``), instances share one host's cores, as on servelab's own platform:
  every init and batch is work in core-milliseconds (its time at full speed × the CPU it can use,
  the memory size's vCPU share capped at one thread), and when the running ones ask for more
  cores than the host has, each progresses at ``host_cpus / demand`` of its speed (processor
  sharing, as CFS gives runnable threads equal shares). Without it, every instance has its own
  CPU, as in the cloud.

At equal times heap events run before arrivals (a request arriving exactly when an instance frees
up finds it free), then in order of kind (finish, ready, timer, tick) and of scheduling, so a run
is deterministic for a seed.

Times are seconds on the simulation clock; durations ms.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servelab.core import CoreConfig, FunctionCore
from servelab.core.actions import Action, Dispatch, FailRequests, SetTimer, StartInstance, StopInstance, Throttle
from servelab.core.policies import ScaleDecision
from servelab.core.resources import cpus_for_memory
from servelab.sim.outcomes import (
    COLD,
    ERROR,
    ON_DEMAND,
    PREWARMED,
    PREWARMED_INSTANCE,
    PROVISIONED,
    THROTTLED,
    TIMEOUT,
    WARM,
    Outcomes,
    stream,
)
from servelab.sim.profile import Device, Profile

_KIND = {"warm": WARM, "prewarmed": PREWARMED, "cold": COLD}
_INSTANCE_KIND = {"on_demand": ON_DEMAND, "prewarmed": PREWARMED_INSTANCE, "provisioned": PROVISIONED}
# heap event codes, in the order they run at equal times
_DONE, _READY, _TIMER, _TICK = range(4)


@dataclass(frozen=True)
class EngineSpec:
    """The core's settings plus what the world around it needs: where times come from."""

    core: CoreConfig
    memory_mb: int | None = None
    device: Device = "cpu"
    timeout_s: float = 30.0  # the function's timeout: a longer batch fails and its instance is replaced
    reap_interval_s: float = 0.1  # the platform's reconcile period
    host_cpus: float | None = None  # instances share this many cores (None: each has its own, the cloud)


@dataclass
class SimTrace:
    """What the core decided besides serving requests (scaling decisions), for reports and tests."""

    decisions: list[tuple[float, ScaleDecision]] = field(default_factory=list)


def run(spec: EngineSpec, profile: Profile, times: np.ndarray, *, rng: np.random.Generator,
        trace: SimTrace | None = None) -> Outcomes:
    """Run ``times`` (sorted arrival seconds) through one function; return every request's outcome."""
    arrivals: list[float] = np.asarray(times, dtype=np.float64).tolist()
    n = len(arrivals)
    out = Outcomes(n, arrivals_s=arrivals)
    rngs = rng.spawn(6)
    mem, device = spec.memory_mb, spec.device
    svc1: list[float] = profile.service(batch=1, memory_mb=mem, device=device).sample(rngs[0], n).tolist()
    out.hold_ms = profile.dispatch_overhead_ms.sample(rngs[1], n)
    hold_ms: list[float] = out.hold_ms.tolist()
    batch_streams: dict[int, Any] = {}

    def service(size: int) -> float:
        it = batch_streams.get(size)
        if it is None:
            it = batch_streams[size] = stream(profile.service(batch=size, memory_mb=mem, device=device), rngs[2])
        return float(next(it))

    init_it = stream(profile.init(memory_mb=mem, device=device), rngs[3])
    extra_it = stream(profile.cold_start.first_inference_extra_ms, rngs[4])
    timeout_ms = spec.timeout_s * 1000.0
    reap_s = spec.reap_interval_s

    core = FunctionCore(spec.core, now_s=0.0)
    heap: list[tuple[float, int, int, Any]] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    fresh: list[bool] = []  # per instance: has not run a batch yet (its first inference is slower)
    status, dispatch_s, done_s = out.status, out.dispatch_s, out.done_s
    instance_of, batch_of, duration_of, kind_of = out.instance, out.batch, out.duration_ms, out.kind
    booting = True

    # ---- processor sharing on one host (host_cpus set) --------------------------------------
    shared = spec.host_cpus is not None
    host_cpus = float(spec.host_cpus or 0.0)
    cap = min(1.0, cpus_for_memory(mem)) if mem else 1.0  # cores one instance's single thread can use
    # job id -> [remaining core-ms, version, started_s, kind ("init"/"batch"), payload]
    jobs: dict[int, list[Any]] = {}
    ps_last_s, ps_factor, ps_next = 0.0, 1.0, 0

    def ps_advance(now: float) -> None:
        nonlocal ps_last_s
        dt_ms = (now - ps_last_s) * 1000.0
        if dt_ms > 0:
            used = cap * ps_factor * dt_ms
            for job in jobs.values():
                job[0] -= used
        ps_last_s = now

    def ps_reschedule(now: float) -> None:
        nonlocal seq, ps_factor
        demand = cap * len(jobs)
        ps_factor = min(1.0, host_cpus / demand) if demand > 0 else 1.0
        speed = cap * ps_factor  # core-ms of work done per ms
        for jid, job in jobs.items():
            job[1] += 1
            seq += 1
            code = _READY if job[3] == "init" else _DONE
            push(heap, (now + max(0.0, job[0]) / speed / 1000.0, code, seq, ("job", jid, job[1])))

    def ps_submit(now: float, work_ms: float, kind: str, payload: Any) -> int:
        nonlocal ps_next
        ps_advance(now)
        jid = ps_next
        ps_next += 1
        jobs[jid] = [work_ms * cap, 0, now, kind, payload]
        ps_reschedule(now)
        return jid

    def ps_finish(jid: int, now: float) -> list[Any]:
        ps_advance(now)
        job = jobs.pop(jid)
        ps_reschedule(now)
        return job

    def apply(acts: list[Action], now: float) -> None:
        nonlocal seq
        for a in acts:
            t = type(a)
            if t is Dispatch:
                run_batch(a, now)  # type: ignore[arg-type]
            elif t is StartInstance:
                start(a, now)  # type: ignore[arg-type]
            elif t is Throttle:
                j = a.request  # type: ignore[union-attr]
                status[j] = THROTTLED
                done_s[j] = now
                out.error[j] = a.reason  # type: ignore[union-attr]
            elif t is SetTimer:
                seq += 1
                push(heap, (a.at_s, _TIMER, seq, (a.tag, a.arg)))  # type: ignore[union-attr]
            elif t is StopInstance:
                out.inst_end_s[a.instance] = now  # type: ignore[union-attr]
                out.inst_end_reason[a.instance] = a.reason  # type: ignore[union-attr]
            elif t is FailRequests:
                for j in a.requests:  # type: ignore[union-attr]
                    status[j] = ERROR
                    done_s[j] = now
                    out.error[j] = a.reason  # type: ignore[union-attr]

    def start(a: StartInstance, now: float) -> None:
        nonlocal seq
        init_ms = float(next(init_it))
        at_boot = booting and a.kind == "provisioned"
        ready = now if at_boot else now + init_ms / 1000.0
        k = out.new_instance(start_s=now, ready_s=ready, init_ms=init_ms, kind=_INSTANCE_KIND[a.kind])
        assert k == a.instance, "the engine and the core number instances alike"
        fresh.append(True)
        if at_boot:  # started before the run: the bench targets wait for them
            apply(core.ready(k, now), now)
        elif shared:
            ps_submit(now, init_ms, "init", k)
        else:
            seq += 1
            push(heap, (ready, _READY, seq, k))

    def run_batch(a: Dispatch, now: float) -> None:
        nonlocal seq
        k, batch = a.instance, a.requests
        size = len(batch)
        dur = svc1[batch[0]] if size == 1 else service(size)
        if fresh[k]:
            fresh[k] = False
            dur += float(next(extra_it))
        for j, kind in zip(batch, a.kinds, strict=True):
            dispatch_s[j] = now
            instance_of[j] = k
            batch_of[j] = size
            kind_of[j] = _KIND[kind]
        if shared:  # the batch (and the platform's own time around it) shares the host's cores
            hold = hold_ms[batch[0]]
            jid = ps_submit(now, dur + hold, "batch", (k, batch, dur / (dur + hold) if dur + hold > 0 else 1.0))
            seq += 1
            push(heap, (now + spec.timeout_s, _DONE, seq, ("timeout", jid, -1)))
            return
        timed_out = dur > timeout_ms
        if timed_out:
            dur = timeout_ms
        for j in batch:
            duration_of[j] = dur
        seq += 1
        push(heap, (now + (dur + hold_ms[batch[0]]) / 1000.0, _DONE, seq, (k, batch, timed_out)))

    def done(k: int, batch: tuple[int, ...], timed_out: bool, now: float) -> None:
        for j in batch:
            done_s[j] = now
        if timed_out:  # the platform kills and replaces a timed-out instance
            msg = f"Task timed out after {spec.timeout_s:g} seconds"
            for j in batch:
                status[j] = TIMEOUT
                out.error[j] = msg
            out.inst_end_s[k] = now
            out.inst_end_reason[k] = "timeout"
            apply(core.finish(k, batch, now, failure="timeout"), now)
        else:
            apply(core.finish(k, batch, now), now)

    apply(core.boot(0.0), 0.0)
    booting = False
    tick_armed = False
    last_decision: ScaleDecision | None = None
    arrivals.append(math.inf)  # a sentinel: "no more arrivals" compares after every event
    next_s = arrivals[0]
    i = 0
    while True:
        if heap and heap[0][0] <= next_s:
            now, code, _, arg = pop(heap)
            if shared and code <= _READY and isinstance(arg, tuple) and isinstance(arg[0], str):
                what, jid, version = arg
                job = jobs.get(jid)
                if job is None or (what == "job" and job[1] != version):
                    continue  # finished already, or rescheduled since
                job = ps_finish(jid, now)
                if job[3] == "init":
                    out.inst_ready_s[job[4]] = now
                    apply(core.ready(job[4], now), now)
                else:
                    k, batch, busy_share = job[4]
                    elapsed_ms = (now - job[2]) * 1000.0
                    for j in batch:
                        duration_of[j] = elapsed_ms * busy_share if what == "job" else timeout_ms
                    done(k, batch, what == "timeout", now)
            elif code == _DONE:
                done(arg[0], arg[1], arg[2], now)
            elif code == _READY:
                apply(core.ready(arg, now), now)
            elif code == _TIMER:
                apply(core.timer(arg[0], arg[1], now), now)
            else:
                tick_armed = False
                apply(core.tick(now), now)
                if trace is not None and core.last_scale is not None and core.last_scale is not last_decision:
                    last_decision = core.last_scale
                    trace.decisions.append((now, last_decision))
                if i < n or core.wants_tick():
                    tick_armed = True
                    seq += 1
                    push(heap, (now + reap_s, _TICK, seq, None))
        elif i < n:
            now = next_s
            j = i
            i += 1
            next_s = arrivals[i]
            acts = core.arrive(j, now)
            if acts:
                apply(acts, now)
            if not tick_armed:
                tick_armed = True
                seq += 1
                push(heap, (now + reap_s, _TICK, seq, None))
        else:
            break
    arrivals.pop()
    return out
