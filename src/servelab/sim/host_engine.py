"""Many functions on one simulated host: the host core (:class:`servelab.core.host.HostCore`) on a
virtual clock.

Like :mod:`servelab.sim.engine` for one function, this plays only the world around the core:
arrivals from each function's sorted array (merged), ``StartInstance`` -> ``Ready`` after the
function's init time, ``Dispatch`` -> ``Finished`` after the request's execution time, the
core's timers and one reconcile tick per ``reap_interval_s`` for every function that still
wants one. Every decision — admission, keep-alive, pre-warm, eviction under the host budget,
holding starts that do not fit — is the core's.

**The layered policy is simulator-only.** It approximates RainbowCake (Yu et al., ASPLOS '24:
layer-wise container pre-warming and keep-alive, a runtime layer shared across functions): a
warm *runtime template* per runtime (a fork server with the runtime and libraries imported),
kept ``template_keep_s`` after its last use and holding ``template_mb``; a cold start whose
runtime's template is warm pays only the model-load part of its init (``load_share``), the
template itself stays (it is forked, not consumed). Full instances follow a fixed keep-alive.
The templates' memory is reserved from the host budget for the whole run (conservative) and
counted as idle memory while they are warm. Not modelled: RainbowCake's sharing-aware
cost model that sizes each layer's keep-alive, its bare (runtime-less) layer, and pre-warming
a template before its first use.

Times are seconds on the simulation clock; durations ms.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from servelab.core import CoreConfig, Dispatch, FailRequests, SetTimer, StartInstance, StopInstance, Throttle
from servelab.core.host import HostAction, HostCore, HostFunction
from servelab.core.policies import EvictionOrder, KeepAlivePolicy, keepalive_from
from servelab.errors import ConfigError
from servelab.workload.azure_synth import SynthFunction

WARM, PREWARMED, COLD, THROTTLED, FAILED, PENDING = range(6)
_KIND = {"warm": WARM, "prewarmed": PREWARMED, "cold": COLD}
_DONE, _READY, _TIMER, _TICK = range(4)


@dataclass(frozen=True)
class HostPolicy:
    """A keep-alive policy for every function on the host, and the eviction order under pressure."""

    name: str
    keepalive: KeepAlivePolicy
    order: EvictionOrder
    layered: bool = False
    template_keep_s: float = 1800.0
    template_mb: float = 150.0
    gd_frequency: Literal["function", "instance"] = "function"


def parse_policy(text: str) -> HostPolicy:
    """``fixed:600`` | ``hybrid`` | ``faascache[:ttl_s]`` | ``faascache-inst[:ttl_s]`` (frequency counted per
    instance, not per function) | ``layered[:keep_s]``; ConfigError naming the choices."""
    kind, _, arg = text.strip().partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise ConfigError(f"policy {text!r}: {arg!r} is not a number of seconds") from None
    if kind == "fixed":
        return HostPolicy(text, keepalive_from("fixed", 600.0 if value is None else value), "lru")
    if kind == "hybrid":  # the paper's defaults: 1-minute bins over 4 hours; fallback keep-alive = range
        return HostPolicy(text, keepalive_from("hybrid", 4 * 3600.0), "lru")
    if kind in ("faascache", "faascache-inst"):
        return HostPolicy(text, keepalive_from("faascache", math.inf if value is None else value), "greedy-dual",
                          gd_frequency="function" if kind == "faascache" else "instance")
    if kind == "layered":
        return HostPolicy(text, keepalive_from("fixed", 60.0 if value is None else value), "lru", layered=True)
    raise ConfigError(f"unknown policy {text!r}; use fixed:SECONDS, hybrid, faascache[:ttl_s], "
                      "faascache-inst[:ttl_s] or layered[:keep_s]")


@dataclass
class HostRun:
    """Every request's outcome and every instance's life, as arrays and lists."""

    fn: np.ndarray  # function index per request (arrival order)
    arrival_s: np.ndarray
    dispatch_s: np.ndarray
    done_s: np.ndarray
    kind: np.ndarray  # WARM / PREWARMED / COLD / THROTTLED / FAILED / PENDING
    memory_mb: list[float] = field(default_factory=list)  # per instance
    start_s: list[float] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    busy_s: list[float] = field(default_factory=list)
    end_reason: list[str] = field(default_factory=list)
    held_s: list[float] = field(default_factory=list)  # how long each start waited for memory
    template_gb_s: float = 0.0
    evictions: int = 0
    peak_used_mb: float = 0.0
    horizon_s: float = 0.0


def run_host(functions: list[SynthFunction], times: list[np.ndarray], durations: list[np.ndarray],
             policy: HostPolicy, *, budget_mb: float, horizon_s: float, rng: np.random.Generator,
             reap_interval_s: float = 1.0, max_instances: int = 100) -> HostRun:
    """Run every function's arrivals through one host; instances still up at ``horizon_s`` end there."""
    template_reserve = policy.template_mb * len({f.runtime for f in functions}) if policy.layered else 0.0
    if budget_mb - template_reserve <= 0:
        raise ConfigError(f"the host budget ({budget_mb:g} MB) does not even hold the runtime templates "
                          f"({template_reserve:g} MB)")
    host = HostCore(budget_mb - template_reserve, order=policy.order, frequency=policy.gd_frequency)
    index: dict[str, int] = {}
    for i, f in enumerate(functions):
        index[f.name] = i
        cfg = CoreConfig(max_instances=max_instances, keepalive=policy.keepalive, admission="throttle")
        host.add(HostFunction(f.name, cfg, float(f.memory_mb), cost_ms=f.init_ms), 0.0)
    fn_of = np.concatenate([np.full(len(t), i, dtype=np.int64) for i, t in enumerate(times)])
    t_all = np.concatenate(times)
    d_all = np.concatenate(durations)
    order = np.argsort(t_all, kind="stable")
    fn_of, t_all, d_all = fn_of[order], t_all[order], d_all[order]
    n = len(t_all)
    out = HostRun(fn=fn_of, arrival_s=t_all, dispatch_s=np.full(n, np.nan), done_s=np.full(n, np.nan),
                  kind=np.full(n, PENDING, dtype=np.int8), horizon_s=horizon_s)
    inst_row: dict[tuple[int, int], int] = {}
    jitter = np.exp(rng.normal(0.0, 0.2, 1 << 16))  # init-time variation per start
    starts = 0
    template_since: dict[str, float] = {}
    template_last: dict[str, float] = {}
    names = [f.name for f in functions]
    dur: list[float] = d_all.tolist()
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    active: set[int] = set()

    def template_warm(rt: str, now: float) -> bool:
        last = template_last.get(rt)
        return last is not None and now - last <= policy.template_keep_s

    def touch_template(rt: str, now: float) -> None:
        if not template_warm(rt, now):
            if rt in template_since:  # close the expired interval
                out.template_gb_s += (min(template_last[rt] + policy.template_keep_s, horizon_s)
                                      - template_since[rt]) * policy.template_mb / 1024
            template_since[rt] = now
        template_last[rt] = now

    def apply(acts: list[HostAction], now: float) -> None:
        nonlocal seq, starts
        for name, a in acts:
            fi = index[name]
            t = type(a)
            if t is Dispatch:
                k = a.instance  # type: ignore[union-attr]
                row = inst_row[(fi, k)]
                j = a.requests[0]  # type: ignore[union-attr]
                d = dur[j] / 1000.0
                out.dispatch_s[j] = now
                out.kind[j] = _KIND[a.kinds[0]]  # type: ignore[union-attr]
                out.busy_s[row] += d
                seq += 1
                heapq.heappush(heap, (now + d, _DONE, seq, (fi, k, a.requests)))  # type: ignore[union-attr]
            elif t is StartInstance:
                f = functions[fi]
                init_ms = f.init_ms * float(jitter[starts % len(jitter)])
                starts += 1
                if policy.layered:
                    if template_warm(f.runtime, now):
                        init_ms *= f.load_share
                    touch_template(f.runtime, now)
                ready = now + init_ms / 1000.0
                inst_row[(fi, a.instance)] = len(out.memory_mb)  # type: ignore[union-attr]
                out.memory_mb.append(float(f.memory_mb))
                out.start_s.append(now)
                out.ready_s.append(ready)
                out.end_s.append(math.nan)
                out.busy_s.append(0.0)
                out.end_reason.append("")
                out.held_s.append(host.last_held_s.pop((name, a.instance), 0.0))  # type: ignore[union-attr]
                seq += 1
                heapq.heappush(heap, (ready, _READY, seq, (fi, a.instance)))  # type: ignore[union-attr]
            elif t is StopInstance:
                row = inst_row[(fi, a.instance)]  # type: ignore[union-attr]
                out.end_s[row] = now
                out.end_reason[row] = a.reason  # type: ignore[union-attr]
            elif t is Throttle:
                out.kind[a.request] = THROTTLED  # type: ignore[union-attr]
                out.done_s[a.request] = now  # type: ignore[union-attr]
            elif t is SetTimer:
                seq += 1
                heapq.heappush(heap, (a.at_s, _TIMER, seq, (fi, a.tag, a.arg)))  # type: ignore[union-attr]
            elif t is FailRequests:
                for j in a.requests:  # type: ignore[union-attr]
                    out.kind[j] = FAILED
                    out.done_s[j] = now
            active.add(fi)

    arrivals: list[float] = t_all.tolist()
    arrivals.append(math.inf)
    fns: list[int] = fn_of.tolist()
    i = 0
    next_tick = reap_interval_s
    while True:
        next_arrival = arrivals[i]
        next_heap = heap[0][0] if heap else math.inf
        if next_tick <= next_heap and next_tick <= next_arrival and next_tick <= horizon_s and (active or i < n):
            now = next_tick
            next_tick += reap_interval_s
            for fi in sorted(active):
                apply(host.tick(names[fi], now), now)
                if not host.cores[names[fi]].wants_tick():
                    active.discard(fi)
            continue
        if next_heap <= next_arrival and heap:
            now, code, _, arg = heapq.heappop(heap)
            if code == _DONE:
                fi, k, reqs = arg
                for j in reqs:
                    out.done_s[j] = now
                apply(host.finish(names[fi], k, reqs, now), now)
            elif code == _READY:
                apply(host.ready(names[arg[0]], arg[1], now), now)
            else:
                apply(host.timer(names[arg[0]], arg[1], arg[2], now), now)
            continue
        if i < n:
            now = next_arrival
            fi = fns[i]
            apply(host.arrive(names[fi], i, now), now)
            i += 1
            continue
        break
    for rt, since in template_since.items():
        out.template_gb_s += (min(template_last[rt] + policy.template_keep_s, horizon_s) - since) \
            * policy.template_mb / 1024
    out.evictions = host.counters.evictions
    out.peak_used_mb = host.counters.peak_used_mb + template_reserve
    return out
