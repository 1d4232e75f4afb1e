"""One deployed function at run time: admission, the wait list, instances, batching.

This is the per-request fast path (the *dispatcher*). Decisions come from the pure policies in
``policies/`` (admission, batching, keep-alive); this module only applies them:

- ``invoke`` asks :func:`admit`; "throttle" answers 429 at once, anything else joins the wait
  list, and "start" also starts a cold instance for it. A request that arrives while its
  instance starts waits for it: scale from zero buffers, it never fails with "not ready".
- ``_pump`` hands waiting requests to idle instances (most recently used first, so the others
  can idle out), in batches when the batching policy says so.
- ``reconcile`` is the slow path, called periodically by the platform: reclaim idle instances
  past their keep-alive, keep provisioned instances up, pre-warm when the policy says so.
  An instance is never reclaimed while it executes.
- With ``scaling.kind == "target-tracking"`` (a managed endpoint) requests never start
  instances: ``reconcile`` feeds the mean load to :func:`target_tracking` once per metric
  period and adds instances (after the provisioning delay) or removes idle ones.

Times are ``time.monotonic()`` seconds (``*_s``); durations in records are ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servelab.errors import FunctionTimeoutError, OutOfMemoryError, PlatformError
from servelab.platform.backend import InstanceBackend
from servelab.platform.functions import FunctionConfig, keepalive_policy
from servelab.platform.instance import Instance, InstanceKind
from servelab.platform.limits import InstanceLimits, LimitsInfo, ResourceLimits
from servelab.platform.meter import Meter, billed_ms
from servelab.platform.policies import (
    AdmissionSnapshot,
    LoadAverager,
    ScaleDecision,
    admit,
    decide_batch,
    prewarm_at_s,
    should_reclaim,
    target_tracking,
)
from servelab.records import RequestRecord, Status

INIT_TIMEOUT_S = 120.0


@dataclass
class Pending:
    request_id: str
    body: bytes
    arrived_s: float
    future: asyncio.Future[Invocation]
    expiry: asyncio.TimerHandle | None = None


@dataclass
class Invocation:
    """The answer to one request, with its record (which is already on disk)."""

    request_id: str
    status: Status
    payload: bytes
    function_error: bool = False  # the function (user code / bad input) failed, not the platform
    error_type: str | None = None
    log: str = ""
    record: RequestRecord | None = None
    http_status: int = 200
    extra_headers: dict[str, str] = field(default_factory=dict)


class FunctionService:
    def __init__(self, config: FunctionConfig, *, backend: InstanceBackend, limits_info: LimitsInfo | None,
                 meter: Meter, home: Path, store_url: str | None, code_dir: Path | None = None,
                 clock=time.monotonic) -> None:
        self.config = config
        self.backend = backend
        self.limits_info = limits_info
        self.meter = meter
        self.home = home
        self.store_url = store_url
        self.code_dir = code_dir
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        self.idle: list[Instance] = []  # a stack: the most recently used is at the end
        self.pending: deque[Pending] = deque()
        self.keepalive = keepalive_policy(config.keep_alive)
        self.ka_state = self.keepalive.initial_state()
        self.last_arrival_s: float | None = None
        self.prewarmed_for_s: float | None = None  # the arrival a pre-warm was done for
        self._batch_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.closed = False
        # target-tracking scaling (managed endpoints); unused in per-request mode
        self.tracking = config.scaling.kind == "target-tracking"
        self.running = 0  # requests executing now (a batch counts each of its requests)
        self.load = LoadAverager(clock())
        self.provisioning = 0  # instances asked for by a scale-out, still in their provisioning delay
        self.last_scale_out_s: float | None = None
        self.last_scale_in_s: float | None = None
        self.last_scale: ScaleDecision | None = None

    # ---- counts --------------------------------------------------------------------------
    def count(self, state: str) -> int:
        return sum(1 for i in self.instances.values() if i.state == state)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        snap = {"function": self.config.name, "waiting": len(self.pending),
                "instances": [i.view(now) for i in self.instances.values()],
                "by_state": {s: self.count(s) for s in ("starting", "idle", "busy")}}
        if self.tracking:
            snap["scaling"] = {"provisioning": self.provisioning,
                               "last_decision": self.last_scale.reason if self.last_scale else None}
        return snap

    def _task(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ---- the fast path -------------------------------------------------------------------
    async def invoke(self, body: bytes, request_id: str | None = None) -> Invocation:
        request_id = request_id or str(uuid.uuid4())
        now = self.clock()
        if self.closed:
            raise PlatformError("the function is being deleted", function=self.config.name)
        self.ka_state = self.keepalive.observe(self.ka_state, now_s=now)
        self.last_arrival_s = now
        cfg = self.config
        # Under target-tracking only the autoscaler adds instances: the limit is what exists now.
        limit = len(self.instances) if self.tracking else cfg.max_concurrency
        action = admit(AdmissionSnapshot(idle=len(self.idle), starting=self.count("starting"),
                                         busy=self.count("busy"), waiting=len(self.pending),
                                         max_concurrency=limit, max_queue=cfg.max_queue,
                                         mode=cfg.admission))
        if action == "throttle":
            return self._throttled(request_id, now, "Rate Exceeded.")
        fut: asyncio.Future[Invocation] = asyncio.get_running_loop().create_future()
        p = Pending(request_id, body, now, fut)
        self.pending.append(p)
        self._observe_load(now)
        if action == "start":
            self._start_instance("cold")
        elif action == "queue" and cfg.admission == "queue":
            p.expiry = asyncio.get_running_loop().call_later(cfg.max_queue_wait_s, self._expire, p)
        self._pump()
        return await fut

    def _throttled(self, request_id: str, arrived_s: float, why: str) -> Invocation:
        now = self.clock()
        rec = RequestRecord(run_id=self.meter.run_id, request_id=request_id, target=self.config.name,
                            status="throttled", error=why, http_status=429,
                            platform_ms=(now - arrived_s) * 1000, queue_ms=(now - arrived_s) * 1000,
                            memory_mb=self.config.memory_mb, billed_ms=0.0)
        self.meter.record(rec)
        body = json.dumps({"Type": "User", "message": why,
                           "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}).encode()
        return Invocation(request_id, "throttled", body, record=rec, http_status=429,
                          error_type="TooManyRequestsException",
                          extra_headers={"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "1"})

    def _expire(self, p: Pending) -> None:
        if p in self.pending and not p.future.done():
            self.pending.remove(p)
            self._observe_load(self.clock())
            p.future.set_result(self._throttled(
                p.request_id, p.arrived_s,
                f"Rate Exceeded: waited {self.config.max_queue_wait_s:g} s in the queue for an instance"))

    def _pump(self) -> None:
        """Hand waiting requests to idle instances."""
        cfg = self.config
        while self.pending and self.idle:
            now = self.clock()
            d = decide_batch(queued=len(self.pending), oldest_enqueued_s=self.pending[0].arrived_s, now_s=now,
                             max_batch_size=cfg.batching.max_batch_size,
                             max_wait_s=cfg.batching.max_wait_ms / 1000.0)
            if d.take == 0:
                if self._batch_timer is None:
                    self._batch_timer = asyncio.get_running_loop().call_later(d.wait_s, self._batch_due)
                return
            inst = self.idle.pop()
            batch = [self.pending.popleft() for _ in range(d.take)]
            for p in batch:
                if p.expiry is not None:
                    p.expiry.cancel()
            inst.state = "busy"
            self.running += len(batch)
            self._task(self._run(inst, batch))

    def _batch_due(self) -> None:
        self._batch_timer = None
        self._pump()

    async def _run(self, inst: Instance, batch: list[Pending]) -> None:
        try:
            await self._run_batch(inst, batch)
        finally:
            self.running -= len(batch)
            self._observe_load(self.clock())

    async def _run_batch(self, inst: Instance, batch: list[Pending]) -> None:
        dispatched_s = self.clock()
        cfg = self.config
        try:
            out = await inst.invoke([p.request_id for p in batch], [p.body for p in batch],
                                    timeout_s=cfg.timeout_s)
        except PlatformError as e:
            status: Status = "timeout" if isinstance(e, FunctionTimeoutError) else "error"
            cause = ("timeout" if status == "timeout" else
                     "oom" if isinstance(e, OutOfMemoryError) else "crash")
            self.meter.instance_failures.labels(cfg.name, cause).inc()
            self._forget(inst)
            done_s = self.clock()
            for p in batch:
                rec = self._record(p, inst, dispatched_s, done_s, status=status, error=str(e),
                                   duration_ms=(done_s - dispatched_s) * 1000, inference_ms=None,
                                   batch_size=len(batch))
                payload = _error_body(str(e), "Sandbox.Timedout" if status == "timeout" else
                                      "Runtime.OutOfMemory" if cause == "oom" else "Runtime.ExitError")
                _resolve(p, Invocation(p.request_id, status, payload, function_error=True,
                                       error_type=type(e).__name__, record=rec,
                                       log=f"{e}\n"))
            self._ensure_capacity()
            return
        done_s = self.clock()
        for p, r, payload in zip(batch, out.results, out.payloads, strict=True):
            ok = bool(r["ok"])
            rec = self._record(p, inst, dispatched_s, done_s, status="ok" if ok else "error",
                               error=None if ok else payload[:500].decode(errors="replace"),
                               duration_ms=out.duration_ms, inference_ms=out.inference_ms,
                               batch_size=len(batch))
            _resolve(p, Invocation(p.request_id, rec.status, payload, function_error=not ok,
                                   error_type=None if ok else "Unhandled", log=r.get("log", ""), record=rec))
        self._release(inst)

    def _release(self, inst: Instance) -> None:
        """After a batch: back to idle, or unloaded at once when the policy pre-warms later."""
        now = self.clock()
        decision = self.keepalive.decide(self.ka_state)
        if (decision.prewarm_after_s > 0 and not self.tracking and not inst.provisioned
                and not self.pending):
            self._forget(inst)
            self._task(inst.stop("unloaded until pre-warm"))
            return
        inst.state = "idle"
        inst.idle_since_s = now
        self.idle.append(inst)
        self._pump()

    def _record(self, p: Pending, inst: Instance, dispatched_s: float, done_s: float, *, status: Status,
                error: str | None, duration_ms: float, inference_ms: float | None,
                batch_size: int) -> RequestRecord:
        cfg = self.config
        # Cold: the request waited for its instance's init (whatever started it). Under
        # target-tracking no request waits for a start it caused: its whole wait is queueing.
        cold = not self.tracking and (inst.ready_s is None or p.arrived_s < inst.ready_s)
        ready_s = p.arrived_s if self.tracking else (inst.ready_s or p.arrived_s)
        first_batch = inst.served <= batch_size
        kind = "cold" if cold else ("prewarmed" if inst.kind == "prewarmed" and first_batch else "warm")
        # The batch is one billed execution, rounded once, and each request pays its share
        # (rounding each share up would bill a batch of 8 as 8 rounding units).
        billed = billed_ms(duration_ms, cfg.billing_rounding_ms) / batch_size
        if cold:  # the init, like the execution, is billed once per batch
            billed += billed_ms(inst.init.total_ms, cfg.billing_rounding_ms) / batch_size
        rec = RequestRecord(
            run_id=self.meter.run_id, request_id=p.request_id, target=cfg.name,
            status=status, error=error, http_status=200,
            start_kind=kind, cold=cold, instance_id=inst.id,
            # queue_ms leaves out the wait for the instance's init, which init_ms reports
            platform_ms=(done_s - p.arrived_s) * 1000,
            queue_ms=(dispatched_s - max(p.arrived_s, ready_s)) * 1000,
            init_ms=inst.init.total_ms if cold else None,
            init_process_ms=inst.init.process_ms if cold else None,
            init_import_ms=inst.init.import_ms if cold else None,
            init_fetch_ms=inst.init.fetch_ms if cold else None,
            init_load_ms=inst.init.load_ms if cold else None,
            inference_ms=inference_ms, duration_ms=duration_ms, billed_ms=billed,
            memory_mb=cfg.memory_mb, max_memory_used_mb=inst.max_rss_mb, batch_size=batch_size)
        self.meter.record(rec)
        return rec

    # ---- instances -----------------------------------------------------------------------
    def _init_message(self) -> dict[str, Any]:
        cfg = self.config
        limits = ResourceLimits.for_memory(cfg.memory_mb)
        return {"type": "init", "function": cfg.name, "model_ref": cfg.model, "store_url": self.store_url,
                "home": str(self.home), "runtime": cfg.runtime, "device": cfg.device,
                "threads": cfg.threads or limits.threads,
                "handler": cfg.handler, "code_dir": str(self.code_dir) if self.code_dir else "",
                "memory_mb": cfg.memory_mb, "env": cfg.env}

    def _start_instance(self, kind: InstanceKind, *, provisioned: bool = False) -> Instance:
        cfg = self.config
        inst = Instance(function=cfg.name, kind=kind, provisioned=provisioned, mode=cfg.start_mode,
                        memory_mb=cfg.memory_mb, limits=None)
        if self.limits_info is not None:
            inst.limits = InstanceLimits(f"{cfg.name}-{inst.id}", ResourceLimits.for_memory(cfg.memory_mb),
                                         self.limits_info)
        self.instances[inst.id] = inst
        self._task(self._boot(inst))
        return inst

    async def _boot(self, inst: Instance) -> None:
        try:
            await inst.start(self.backend, self._init_message(), timeout_s=INIT_TIMEOUT_S)
        except Exception as e:
            self._forget(inst)
            self.meter.instance_failures.labels(self.config.name, "init").inc()
            await inst.kill("init failed")
            self._fail_waiting_without_instances(e)
            return
        self.meter.init_time.labels(self.config.name, inst.mode).observe(inst.init.total_ms / 1000)
        if self.closed and not self.pending:
            await inst.stop("function deleted or replaced")
            return
        self.idle.append(inst)
        self._pump()

    def _fail_waiting_without_instances(self, e: Exception) -> None:
        """An init failure fails the requests that no other instance will serve."""
        live = self.count("starting") + self.count("idle") + self.count("busy")
        if live:
            return
        while self.pending:
            p = self.pending.popleft()
            now = self.clock()
            rec = RequestRecord(run_id=self.meter.run_id, request_id=p.request_id, target=self.config.name,
                                status="error", error=f"init failed: {e}", http_status=200,
                                platform_ms=(now - p.arrived_s) * 1000, memory_mb=self.config.memory_mb,
                                start_kind="cold", cold=True)
            self.meter.record(rec)
            payload = _error_body(str(e), "Runtime.InitError")
            _resolve(p, Invocation(p.request_id, "error", payload, function_error=True,
                                   error_type="Runtime.InitError", record=rec, log=f"INIT error: {e}\n"))

    def _forget(self, inst: Instance) -> None:
        self.instances.pop(inst.id, None)
        if inst in self.idle:
            self.idle.remove(inst)

    def _ensure_capacity(self) -> None:
        """Replace lost instances for requests still waiting (never more than the limit)."""
        while (not self.tracking and self.pending and self.count("starting") < len(self.pending)
               and len(self.instances) < self.config.max_concurrency):
            self._start_instance("cold")

    # ---- the slow path -------------------------------------------------------------------
    def reconcile(self) -> None:
        now = self.clock()
        if self.tracking:
            self._restore_provisioned()
            self._autoscale(now)
            return
        decision = self.keepalive.decide(self.ka_state)
        for inst in list(self.idle):
            if should_reclaim(idle_since_s=inst.idle_since_s or now, now_s=now,
                              keep_alive_s=decision.keep_alive_s, provisioned=inst.provisioned, busy=False):
                self._forget(inst)
                self._task(inst.stop("keep-alive expired"))
        self._restore_provisioned()
        if self.last_arrival_s is not None and self.prewarmed_for_s != self.last_arrival_s:
            at = prewarm_at_s(decision, last_invocation_s=self.last_arrival_s)
            if at is not None and now >= at and not self.instances:
                self.prewarmed_for_s = self.last_arrival_s
                self._start_instance("prewarmed")

    def _restore_provisioned(self) -> None:
        have = sum(1 for i in self.instances.values() if i.provisioned)
        for _ in range(self.config.provisioned - have):
            self._start_instance("prewarmed", provisioned=True)

    def _observe_load(self, now: float) -> None:
        if self.tracking:
            self.load.update(now, self.running + len(self.pending))

    def _autoscale(self, now: float) -> None:
        """Once per metric period: ask :func:`target_tracking` and apply its answer."""
        policy = self.config.autoscaler()
        if self.load.elapsed_s(now) < policy.metric_period_s:
            return
        current = len(self.instances) + self.provisioning
        d = target_tracking(policy, now_s=now, current=current, mean_load=self.load.take(now),
                            last_scale_out_s=self.last_scale_out_s, last_scale_in_s=self.last_scale_in_s)
        self.last_scale = d
        if d.action == "out":
            self.last_scale_out_s = now
            n = d.desired - current
            self.provisioning += n
            asyncio.get_running_loop().call_later(policy.scale_out_delay_s, self._provisioned, n)
        elif d.action == "in":
            self.last_scale_in_s = now
            excess = current - d.desired
            for inst in list(self.idle):  # least recently used first; busy ones finish their work
                if excess <= 0:
                    break
                if not inst.provisioned:
                    self._forget(inst)
                    self._task(inst.stop("scaled in"))
                    excess -= 1

    def _provisioned(self, n: int) -> None:
        """A scale-out's provisioning delay is over: start its instances."""
        self.provisioning -= n
        if not self.closed:
            for _ in range(n):
                self._start_instance("prewarmed")

    async def drain(self, timeout_s: float) -> None:
        """Let waiting and running requests finish (up to ``timeout_s``), then close."""
        self.closed = True
        deadline = self.clock() + timeout_s
        while (self.pending or self.count("busy")) and self.clock() < deadline:
            await asyncio.sleep(0.01)
        await self.close()

    async def close(self) -> None:
        """Stop everything: waiting requests get an error, instances are stopped."""
        self.closed = True
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        err = PlatformError("the function was deleted or the platform is stopping", function=self.config.name)
        self._fail_pending(err)
        insts = list(self.instances.values())
        self.instances.clear()
        self.idle.clear()
        await asyncio.gather(*(i.stop("shutdown") for i in insts), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _fail_pending(self, e: Exception) -> None:
        while self.pending:
            p = self.pending.popleft()
            payload = _error_body(str(e), "ServiceException")
            _resolve(p, Invocation(p.request_id, "error", payload, http_status=503,
                                   error_type="ServiceException"))


def _resolve(p: Pending, inv: Invocation) -> None:
    if not p.future.done():
        p.future.set_result(inv)


def _error_body(message: str, error_type: str) -> bytes:
    """Lambda's error payload shape."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()
