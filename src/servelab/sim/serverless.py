"""A serverless platform (AWS Lambda, Cloud Functions, servelab's own) as a discrete-event model.

What it models, and which shared policy decides it (``servelab.platform.policies``, the very
functions the real platform's dispatcher calls — imported, not copied):

* **admission** — every arrival asks :func:`admit` with the function's instance counts: run on
  an idle instance, wait for a starting one, start one (a cold start), queue, or throttle (429);
* **cold starts** — an init time drawn from the profile, plus the extra time of an instance's
  first inference;
* **batching** — per instance, :func:`decide_batch` whenever an instance is free, a request
  arrives or the batch timer fires; the batch's execution time comes from the profile;
* **keep-alive** — :func:`should_reclaim` on every reaper tick (the platform's reconcile loop,
  every ``reap_interval_s``), the policy's ``observe``/``decide`` per invocation, and
  pre-warming with :func:`prewarm_at_s` (the ATC'20 hybrid histogram policy);
* **queue timeouts** (admission ``queue``) — :func:`queue_timed_out`;
* **provisioned concurrency** — instances ready at t = 0 and never reclaimed;
* **scale-out rate limit** — a token bucket on instance starts (:class:`ScaleRateLimit`);
  a start the bucket refuses is re-asked of :func:`admit` with the concurrency limit set to
  the instances that exist now, so it queues or throttles as the policy says;
* **billing** — duration ÷ batch, rounded up to ``billing_rounding_ms``, plus the init on a
  cold start (see :mod:`servelab.sim.output`).

Two cheap fast paths keep per-request work small; both return what the policy returns:
:func:`admit` is pure and depends only on the snapshot, so its answers are memoised by
snapshot; and :func:`decide_batch` documents that a full batch runs at once whatever the time
(docs/policies.md), so that answer is asked once per run and reused (tests check both).

Times are seconds on the simulation clock; durations ms.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from servelab.errors import ConfigError
from servelab.platform.functions import KeepAliveConfig, keepalive_policy
from servelab.platform.policies import (
    AdmissionMode,
    AdmissionSnapshot,
    KeepAliveKind,
    admit,
    decide_batch,
    prewarm_at_s,
    queue_timed_out,
    should_reclaim,
)
from servelab.sim.core import COLD, PREWARMED, THROTTLED, TIMEOUT, WARM, Outcomes, stream
from servelab.sim.profile import Profile

ScaleRateKind = Literal["none", "aws", "aws-2020"]
SCALE_RATE_KINDS: tuple[ScaleRateKind, ...] = get_args(ScaleRateKind)


class ScaleRateLimit:
    """How fast new instances may start: a token bucket (``capacity`` starts, refilled at
    ``refill_per_s``, continuously). Kinds (:data:`SCALE_RATE_KINDS`):

    * ``aws`` — AWS Lambda's current rule: "for each function, your concurrency scaling rate is
      1,000 execution environment instances every 10 seconds", refilled continuously rather than
      every 10 s, unused capacity not accumulating beyond 1,000; requests beyond it are throttled
      (429). Source: AWS Lambda Developer Guide, "Lambda scaling behavior"
      (docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html). Capacity 1,000, 100/s.
    * ``aws-2020`` — the rule when the study ran: an initial burst of 500–3,000 instances
      depending on the region (3,000 in us-east-1), then 500 more per minute (AWS Lambda
      Operator Guide, "Scaling and concurrency in Lambda", serverlessland.com). Approximated as
      a bucket of 3,000 refilled at 500/min.
    * ``none`` — no limit (servelab's local platform has none).

    Not modelled: Lambda's companion limit of 10 requests per second per unit of concurrency.
    """

    PRESETS: ClassVar[dict[str, tuple[float, float]]] = {"aws": (1000.0, 100.0), "aws-2020": (3000.0, 500.0 / 60.0)}

    def __init__(self, kind: ScaleRateKind) -> None:
        if kind not in SCALE_RATE_KINDS:
            raise ConfigError(f"unknown scale-rate limit {kind!r}; choose one of: {', '.join(SCALE_RATE_KINDS)}")
        self.kind = kind
        self.capacity, self.refill_per_s = self.PRESETS.get(kind, (math.inf, math.inf))
        self.tokens = self.capacity
        self.last_s = 0.0

    def take(self, now_s: float) -> bool:
        """Use one start if the bucket allows it at ``now_s``."""
        if self.capacity == math.inf:
            return True
        self.tokens = min(self.capacity, self.tokens + (now_s - self.last_s) * self.refill_per_s)
        self.last_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ServerlessConfig(BaseModel):
    """One simulated serverless function. Field names and defaults follow the platform's
    ``FunctionConfig`` where they mean the same thing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["serverless"] = "serverless"
    name: str = "fn"
    price_entry: str = "aws-lambda-x86-us-east-1"
    memory_mb: int = Field(1769, ge=128, le=10240)
    max_concurrency: int = Field(1000, ge=1)
    provisioned: int = Field(0, ge=0)
    max_batch_size: int = Field(1, ge=1, le=1024)
    max_wait_ms: float = Field(0.0, ge=0)
    keep_alive: KeepAliveKind = "fixed"
    keep_alive_s: float = Field(600.0, ge=0)
    keep_alive_params: dict[str, float] = Field(default_factory=dict)
    admission: AdmissionMode = "throttle"
    max_queue: int = Field(100, ge=0)
    max_queue_wait_s: float = Field(10.0, ge=0)
    scale_rate: ScaleRateKind = "aws"
    billing_rounding_ms: int = Field(1, ge=1)
    timeout_s: float = Field(30.0, gt=0)  # the function's timeout: a longer batch fails, its instance is replaced
    reap_interval_s: float = Field(0.1, gt=0)  # the platform's reconcile period
    client_timeout_s: float = Field(30.0, gt=0)  # the load generator's per-request timeout

    @model_validator(mode="after")
    def _consistent(self) -> ServerlessConfig:
        if self.provisioned > self.max_concurrency:
            raise ValueError(f"provisioned ({self.provisioned}) cannot exceed max_concurrency ({self.max_concurrency})")
        self.keepalive_policy()  # parameters checked now, not mid-run
        return self

    def keepalive_policy(self) -> Any:
        """The policy the platform would build for this function (same constructor)."""
        return keepalive_policy(KeepAliveConfig(kind=self.keep_alive, keep_alive_s=self.keep_alive_s,
                                                params=self.keep_alive_params))


# event codes of the serverless loop
_DONE1, _DONE, _READY, _TIMER, _TICK, _EXPIRE = range(6)


def simulate_serverless(cfg: ServerlessConfig, profile: Profile, times: np.ndarray, *,
                        rng: np.random.Generator) -> Outcomes:
    """Run ``times`` (sorted arrival seconds) through one function; return every request's outcome.

    The loop is :class:`~servelab.sim.core.EventLoop`'s, inlined: the common path (an arrival
    that finds an idle instance, a one-request batch completing) runs without a function call,
    which is what buys the speed. Everything else goes through the small functions below.
    """
    arrivals: list[float] = np.asarray(times, dtype=np.float64).tolist()
    n = len(arrivals)
    out = Outcomes(n, arrivals_s=arrivals)
    rngs = rng.spawn(6)
    # heap entries are (time_s, code, arg): ties resolve by code, then arg (an int or a tuple whose
    # first item is an instance id), so a run is deterministic without a sequence number
    heap: list[tuple[float, int, Any]] = []
    push, pop = heapq.heappush, heapq.heappop

    # service times: one-request batches pre-drawn per request (vectorised); others streamed
    mem = cfg.memory_mb
    svc1: list[float] = profile.service(batch=1, memory_mb=mem).sample(rngs[0], n).tolist()
    out.hold_ms = profile.dispatch_overhead_ms.sample(rngs[1], n)
    hold_ms: list[float] = out.hold_ms.tolist()
    batch_streams: dict[int, Any] = {}

    def service(size: int) -> float:
        it = batch_streams.get(size)
        if it is None:
            it = batch_streams[size] = stream(profile.service(batch=size, memory_mb=mem), rngs[2])
        return next(it)

    init_it = stream(profile.init(memory_mb=mem), rngs[3])
    extra_it = stream(profile.cold_start.first_inference_extra_ms, rngs[4])

    # policies
    policy = cfg.keepalive_policy()
    static_ka = policy.kind == "fixed"  # FixedKeepAlive: observe() is a no-op, decide() a constant
    ka_state = policy.initial_state()
    ka_decision = policy.decide(ka_state)
    max_c, max_q, mode = cfg.max_concurrency, cfg.max_queue, cfg.admission
    queue_mode = mode == "queue"
    admit_memo: dict[tuple[int, int, int, int], str] = {}
    mbs, max_wait_s = cfg.max_batch_size, cfg.max_wait_ms / 1000.0
    full = decide_batch(queued=mbs, oldest_enqueued_s=0.0, now_s=0.0, max_batch_size=mbs, max_wait_s=max_wait_s)
    single = full.take == 1  # every batch is one request: the inlined fast path applies
    rate = ScaleRateLimit(cfg.scale_rate)
    limited = rate.kind != "none"
    timeout_ms = cfg.timeout_s * 1000.0
    reap_s = cfg.reap_interval_s

    # state
    idle: deque[int] = deque()  # MRU at the right
    pending: deque[int] = deque()  # request indices, oldest at the left
    inst_ready, inst_kind, inst_prov, inst_end = out.inst_ready_s, out.inst_kind, out.inst_provisioned, out.inst_end_s
    inst_idle_since: list[float] = []
    fresh: list[bool] = []  # per instance: has not run a batch yet (its first inference is slower)
    status, dispatch_s, done_s = out.status, out.dispatch_s, out.done_s
    instance_of, batch_of, duration_of, kind_of = out.instance, out.batch, out.duration_ms, out.kind
    starting = alive = 0  # busy instances = alive - starting - len(idle)
    timer_armed = tick_armed = False
    last_arrival: float | None = None
    prewarm_for: float | None = None
    i = 0  # next arrival

    def schedule(t: float, code: int, arg: Any) -> None:
        push(heap, (t, code, arg))

    def start_instance(now: float, kind: int, provisioned: bool = False) -> None:
        nonlocal starting, alive
        init_ms = next(init_it)
        ready = now if provisioned else now + init_ms / 1000.0
        k = out.new_instance(start_s=now, ready_s=ready, init_ms=init_ms, kind=kind, provisioned=provisioned)
        inst_idle_since.append(ready)
        fresh.append(True)
        alive += 1
        if provisioned:  # started before the run (the bench target waits for them)
            idle.append(k)
        else:
            starting += 1
            schedule(ready, _READY, k)

    def kill(k: int, now: float) -> None:
        nonlocal alive
        inst_end[k] = now
        alive -= 1

    def slow_admit(key: tuple[int, int, int, int], now: float) -> str:
        action = admit_memo.get(key)
        if action is None:
            action = admit_memo[key] = admit(AdmissionSnapshot(
                idle=key[0], starting=key[1], busy=key[2], waiting=key[3], max_concurrency=max_c,
                max_queue=max_q, mode=mode))
            if len(admit_memo) > 200_000:
                admit_memo.clear()
        if action == "start" and limited and not rate.take(now):
            # the scaling rate refuses a new instance: the limit is what exists now
            action = admit(AdmissionSnapshot(idle=key[0], starting=key[1], busy=key[2], waiting=key[3],
                                             max_concurrency=key[0] + key[1] + key[2], max_queue=max_q, mode=mode))
        return action

    def enqueue(j: int, action: str, now: float) -> None:
        pending.append(j)
        if action == "start":
            start_instance(now, COLD)
        elif action == "queue" and queue_mode:
            schedule(now + cfg.max_queue_wait_s, _EXPIRE, j)
        if idle:
            pump(now)

    def expire(j: int, now: float) -> None:
        if instance_of[j] >= 0 or status[j] != 0:  # already running, or gone
            return
        if queue_timed_out(enqueued_s=arrivals[j], now_s=now, max_wait_s=cfg.max_queue_wait_s):
            pending.remove(j)
            status[j] = THROTTLED
            done_s[j] = now
            out.error[j] = f"Rate Exceeded: waited {cfg.max_queue_wait_s:g} s in the queue for an instance"

    def pump(now: float) -> None:
        nonlocal timer_armed
        while pending and idle:
            q = len(pending)
            if q >= mbs:
                take = full.take
            else:
                d = decide_batch(queued=q, oldest_enqueued_s=arrivals[pending[0]], now_s=now,
                                 max_batch_size=mbs, max_wait_s=max_wait_s)
                take = d.take
                if take == 0:
                    if not timer_armed:
                        timer_armed = True
                        schedule(now + d.wait_s, _TIMER, None)
                    return
            run_batch(idle.pop(), [pending.popleft() for _ in range(take)], now)

    def run_batch(k: int, batch: list[int], now: float) -> None:
        size = len(batch)
        first = fresh[k]
        fresh[k] = False
        dur = svc1[batch[0]] if size == 1 else service(size)
        if first:
            dur += next(extra_it)
        timed_out = dur > timeout_ms
        if timed_out:
            dur = timeout_ms
        ready = inst_ready[k]
        pre = inst_kind[k] == PREWARMED and first
        for j in batch:
            dispatch_s[j] = now
            instance_of[j] = k
            batch_of[j] = size
            duration_of[j] = dur
            kind_of[j] = COLD if arrivals[j] < ready else (PREWARMED if pre else WARM)
        end = now + (dur + hold_ms[batch[0]]) / 1000.0
        if size == 1 and not timed_out:  # done_s is filled in afterwards: dispatch + duration + hold
            schedule(end, _DONE1, batch[0])
        else:
            schedule(end, _DONE, (k, batch, timed_out))

    def done(k: int, batch: list[int], timed_out: bool, now: float) -> None:
        for j in batch:
            done_s[j] = now
            if timed_out:
                status[j] = TIMEOUT
                out.error[j] = f"Task timed out after {cfg.timeout_s:g} seconds"
        if timed_out:  # the platform kills and replaces a timed-out instance
            kill(k, now)
            while pending and starting < len(pending) and alive < max_c:
                start_instance(now, COLD)
            return
        release(k, now)

    def release(k: int, now: float) -> None:
        nonlocal ka_decision
        if not static_ka:
            ka_decision = policy.decide(ka_state)
            if ka_decision.prewarm_after_s > 0 and not inst_prov[k] and not pending:
                kill(k, now)  # unloaded until the pre-warm
                return
        inst_idle_since[k] = now
        idle.append(k)
        if pending:
            pump(now)

    def tick(now: float) -> None:
        nonlocal ka_decision, prewarm_for, tick_armed
        tick_armed = False
        if not static_ka:
            ka_decision = policy.decide(ka_state)
        keep_s = ka_decision.keep_alive_s
        reclaimed = []
        for k in idle:  # least recently used first; stop at the first that stays
            if inst_prov[k]:
                continue
            if should_reclaim(idle_since_s=inst_idle_since[k], now_s=now, keep_alive_s=keep_s,
                              provisioned=False, busy=False):
                reclaimed.append(k)
            else:
                break
        for k in reclaimed:
            idle.remove(k)
            kill(k, now)
        if not static_ka and last_arrival is not None and prewarm_for != last_arrival:
            when = prewarm_at_s(ka_decision, last_invocation_s=last_arrival)
            if when is not None and now >= when and alive == 0:
                prewarm_for = last_arrival
                start_instance(now, PREWARMED)
        if (i < n or pending or alive - len(idle) > 0
                or (keep_s != math.inf and any(not inst_prov[k] for k in idle))):
            tick_armed = True
            schedule(now + reap_s, _TICK, None)

    for _ in range(cfg.provisioned):
        start_instance(0.0, PREWARMED, provisioned=True)

    # the loop (core.EventLoop.run, inlined)
    arrivals.append(math.inf)  # a sentinel: "no more arrivals" compares after every event
    next_s = arrivals[0]
    while True:
        if heap and heap[0][0] <= next_s:
            now, code, arg = pop(heap)
            if code == _DONE1:  # fast path: a one-request batch finished
                k = instance_of[arg]
                if static_ka:
                    inst_idle_since[k] = now
                    idle.append(k)
                    if pending:
                        pump(now)
                else:
                    release(k, now)
            elif code == _DONE:
                done(arg[0], arg[1], arg[2], now)
            elif code == _READY:
                starting -= 1
                inst_idle_since[arg] = now
                idle.append(arg)
                pump(now)
            elif code == _TICK:
                tick(now)
            elif code == _TIMER:
                timer_armed = False
                pump(now)
            else:
                expire(arg, now)
        elif i < n:
            now = next_s
            j = i
            i += 1
            next_s = arrivals[i]
            if not static_ka:
                ka_state = policy.observe(ka_state, now_s=now)
                last_arrival = now
            n_idle = len(idle)
            key = (n_idle, starting, alive - starting - n_idle, len(pending))
            action = admit_memo.get(key)
            if action is None or (action == "start" and limited):
                action = slow_admit(key, now)
            if action == "dispatch" and single and not pending:
                # fast path: straight onto the most recently used idle instance
                k = idle.pop()
                dur = svc1[j]
                if fresh[k]:
                    fresh[k] = False
                    dur += next(extra_it)
                    if inst_kind[k] == PREWARMED:
                        kind_of[j] = PREWARMED
                if dur > timeout_ms:  # rare: the general path handles the timeout
                    dur = timeout_ms
                    dispatch_s[j] = now
                    instance_of[j] = k
                    duration_of[j] = dur
                    push(heap, (now + (dur + hold_ms[j]) / 1000.0, _DONE, (k, [j], True)))
                else:  # dispatch_s defaults to the arrival and batch to 1 (see Outcomes)
                    instance_of[j] = k
                    duration_of[j] = dur
                    push(heap, (now + (dur + hold_ms[j]) / 1000.0, _DONE1, j))
            elif action == "throttle":
                status[j] = THROTTLED
                done_s[j] = now
            else:
                enqueue(j, action, now)
            if not tick_armed:
                tick_armed = True
                schedule(now + reap_s, _TICK, None)
        else:
            break
    arrivals.pop()
    return out
