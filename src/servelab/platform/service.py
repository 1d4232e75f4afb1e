"""One deployed function at run time: the core's driver with real processes and asyncio.

Every decision — admit, queue or throttle; start, reclaim or pre-warm an instance; batch;
autoscale; call a request cold, prewarmed or warm — is the core's
(:class:`servelab.core.FunctionCore`, the same object the simulator drives). This module carries
the core's actions out and reports back what happened:

- ``invoke`` hands the request to the core (``arrive``) and awaits its answer. A request that
  arrives while its instance starts waits for it: scale from zero buffers, never "not ready".
- ``StartInstance`` boots a process through the instance backend; ``Ready``/``InitFailed`` go back.
- ``Dispatch`` runs a batch on an instance; ``Finished`` goes back, with the failure if the
  instance crashed, ran out of memory or timed out (it is then gone, and replaced if requests
  wait). An instance found dead at dispatch never ran the batch: it is requeued, once.
- ``reconcile`` is the slow path, called periodically by the platform: the core's ``tick``
  (reclaim idle instances past keep-alive, keep provisioned ones up, pre-warm, autoscale), and a
  sweep that reports idle instances whose process died (``Died``).

Every request gets a record (the meter writes it to disk), and every instance's life gets
lifecycle records (started, ready with its init parts, reclaimed, died).

Times are ``time.monotonic()`` seconds (``*_s``); durations in records are ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servelab.billing.rules import carries_init, request_billed_ms
from servelab.core import FunctionCore
from servelab.core.actions import Action, Dispatch, FailRequests, SetTimer, StartInstance, StopInstance, Throttle
from servelab.core.events import FailureKind, TimerTag
from servelab.core.host import HostCore, HostFunction
from servelab.errors import FunctionTimeoutError, OutOfMemoryError, PlatformError
from servelab.platform.backends import Instance, InstanceBackend, InstanceSpec
from servelab.platform.functions import FunctionConfig
from servelab.platform.isolation import IsolationSpec
from servelab.platform.limits import ResourceLimits
from servelab.platform.meter import Meter
from servelab.records import InstanceEvent, InstanceRecord, RequestRecord, StartKind, Status

INIT_TIMEOUT_S = 120.0


@dataclass
class Pending:
    request_id: str
    body: bytes
    arrived_s: float
    future: asyncio.Future[Invocation]
    requeued: bool = False


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
    def __init__(self, config: FunctionConfig, *, backend: InstanceBackend, meter: Meter, home: Path,
                 store_url: str | None, code_dir: Path | None = None, isolation: IsolationSpec | None = None,
                 clock: Callable[[], float] = time.monotonic, host: HostCore | None = None,
                 peers: Callable[[str, list[Action]], None] | None = None) -> None:
        self.config = config
        self.backend = backend
        self.meter = meter
        self.home = home
        self.store_url = store_url
        self.code_dir = code_dir
        self.isolation = isolation  # applied by each instance before the function's code runs
        self.clock = clock
        self.core = FunctionCore(config.core_config(), now_s=clock())
        # a host memory budget shared with other functions (servelab.core.host): every action list
        # goes through it; actions for other functions (evictions, held starts) go to ``peers``
        self.host = host
        self._peers = peers
        if host is not None:
            host.attach(HostFunction(config.name, self.core.config, float(config.memory_mb)), self.core)
        self.instances: dict[str, Instance] = {}  # by instance id, for the API's views
        self._by_core: dict[int, Instance] = {}  # by the core's instance number
        self._requests: dict[int, Pending] = {}  # by the core's request number
        self._next_request = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._booted = False
        self.closed = False

    # ---- counts --------------------------------------------------------------------------
    def count(self, state: str) -> int:
        return sum(1 for i in self.instances.values() if i.state == state)

    @property
    def waiting(self) -> int:
        return len(self.core.waiting)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        snap: dict[str, Any] = {"function": self.config.name, "waiting": self.waiting,
                                "instances": [i.view(now) for i in self.instances.values()],
                                "by_state": {s: self.count(s) for s in ("starting", "idle", "busy")}}
        if self.core.config.scaling == "target-tracking":
            last = self.core.last_scale
            snap["scaling"] = {"provisioning": self.core.provisioning, "last_decision": last.reason if last else None}
        return snap

    def _task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _boot(self) -> None:
        if not self._booted:
            self._booted = True
            self._apply(self.core.boot(self.clock()))

    # ---- applying the core's actions -----------------------------------------------------
    def _apply(self, actions: list[Action], *, arrivals: int = 0) -> None:
        if self.host is None or self.closed:
            self._carry_out(actions)
            return
        for name, a in self.host.route(self.config.name, actions, self.clock(), arrivals=arrivals):
            if name == self.config.name:
                self._carry_out([a])
            elif self._peers is not None:
                self._peers(name, [a])

    def _carry_out(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Dispatch):
                self._dispatch(a)
            elif isinstance(a, StartInstance):
                self._start_instance(a)
            elif isinstance(a, Throttle):
                p = self._requests.pop(a.request)
                _resolve(p, self._throttled(p.request_id, p.arrived_s, a.reason))
            elif isinstance(a, SetTimer):
                self._set_timer(a.at_s, a.tag, a.arg)
            elif isinstance(a, StopInstance):
                inst = self._forget(a.instance)
                self._lifecycle(inst, "reclaimed", reason=a.reason)
                self._task(inst.stop(a.reason))
            elif isinstance(a, FailRequests):
                self._fail_requests(a)

    def _set_timer(self, at_s: float, tag: TimerTag, arg: int) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            if not self.closed:
                self._apply(self.core.timer(tag, arg, self.clock()))

        handle = loop.call_later(max(0.0, at_s - self.clock()), fire)
        self._timers.add(handle)

    def _forget(self, core_id: int) -> Instance:
        inst = self._by_core.pop(core_id)
        self.instances.pop(inst.id, None)
        return inst

    # ---- the fast path -------------------------------------------------------------------
    async def invoke(self, body: bytes, request_id: str | None = None) -> Invocation:
        request_id = request_id or str(uuid.uuid4())
        if self.closed:
            raise PlatformError("the function is being deleted", function=self.config.name)
        self._boot()
        now = self.clock()
        fut: asyncio.Future[Invocation] = asyncio.get_running_loop().create_future()
        rid = self._next_request
        self._next_request += 1
        self._requests[rid] = Pending(request_id, body, now, fut)
        self._apply(self.core.arrive(rid, now), arrivals=1)
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

    def _dispatch(self, d: Dispatch) -> None:
        inst = self._by_core[d.instance]
        batch = [self._requests[r] for r in d.requests]
        if not inst.exited:
            inst.state = "busy"
        self._task(self._run_batch(inst, d, batch))

    async def _run_batch(self, inst: Instance, d: Dispatch, batch: list[Pending]) -> None:
        cfg = self.config
        if inst.exited:  # died while idle, before this batch reached it: it never ran, so run it again
            self._instance_lost(inst, d, batch, "crash", PlatformError(
                inst.stop_reason or "Runtime exited while idle", function=cfg.name, instance_id=inst.id),
                requeue=not any(p.requeued for p in batch))
            return
        dispatched_s = self.clock()
        try:
            out = await inst.invoke([p.request_id for p in batch], [p.body for p in batch], timeout_s=cfg.timeout_s)
        except PlatformError as e:
            cause: FailureKind = ("timeout" if isinstance(e, FunctionTimeoutError) else
                                  "oom" if isinstance(e, OutOfMemoryError) else "crash")
            self._instance_lost(inst, d, batch, cause, e, requeue=False, dispatched_s=dispatched_s)
            return
        done_s = self.clock()
        for p, kind, result, payload in zip(batch, d.kinds, out.results, out.payloads, strict=True):
            ok = bool(result["ok"])
            rec = self._record(p, inst, kind, dispatched_s, done_s, status="ok" if ok else "error",
                               error=None if ok else payload[:500].decode(errors="replace"),
                               duration_ms=out.duration_ms, inference_ms=out.inference_ms, batch_size=len(batch))
            _resolve(p, Invocation(p.request_id, rec.status, payload, function_error=not ok,
                                   error_type=None if ok else "Unhandled", log=result.get("log", ""), record=rec))
        for r in d.requests:
            self._requests.pop(r, None)
        if not self.closed and d.instance in self._by_core:
            inst.state = "idle"
            inst.idle_since_s = done_s
            self._apply(self.core.finish(d.instance, d.requests, done_s))

    def _instance_lost(self, inst: Instance, d: Dispatch, batch: list[Pending], cause: FailureKind,
                       e: PlatformError, *, requeue: bool, dispatched_s: float | None = None) -> None:
        """The instance is gone with a batch on it: requeue the batch (it never ran) or fail it."""
        cfg = self.config
        self.meter.instance_failures.labels(cfg.name, cause).inc()
        if d.instance in self._by_core:
            self._forget(d.instance)
        self._lifecycle(inst, "died", reason=inst.stop_reason or str(e))
        self._task(inst.kill(str(e)))
        now = self.clock()
        if requeue:
            for p in batch:
                p.requeued = True
        else:
            status: Status = "timeout" if cause == "timeout" else "error"
            error_type = ("Sandbox.Timedout" if cause == "timeout" else
                          "Runtime.OutOfMemory" if cause == "oom" else "Runtime.ExitError")
            started = dispatched_s if dispatched_s is not None else now
            for p, kind in zip(batch, d.kinds, strict=True):
                rec = self._record(p, inst, kind, started, now, status=status, error=str(e),
                                   duration_ms=(now - started) * 1000, inference_ms=None, batch_size=len(batch))
                _resolve(p, Invocation(p.request_id, status, _error_body(str(e), error_type), function_error=True,
                                       error_type=type(e).__name__, record=rec, log=f"{e}\n"))
            for r in d.requests:
                self._requests.pop(r, None)
        if not self.closed:
            self._apply(self.core.finish(d.instance, d.requests, now, failure=cause, requeue=requeue))

    def _record(self, p: Pending, inst: Instance, kind: StartKind, dispatched_s: float, done_s: float, *,
                status: Status, error: str | None, duration_ms: float, inference_ms: float | None,
                batch_size: int) -> RequestRecord:
        """One request's record, by the accounting rules (:mod:`servelab.billing.rules`)."""
        cfg = self.config
        cold = kind == "cold"
        init = inst.init if kind != "warm" and carries_init(inst.kind) else None
        ready_s = inst.ready_s if inst.ready_s is not None else p.arrived_s
        # a cold request's wait for its own environment's init is init_ms, not queueing; a request
        # that waited behind another's cold start is warm, and all its wait is queue_ms
        queued_from = max(p.arrived_s, ready_s) if cold else p.arrived_s
        billed = request_billed_ms(duration_ms=duration_ms, batch_size=batch_size,
                                   rounding_ms=cfg.billing_rounding_ms,
                                   init_ms=init.total_ms if init is not None else None)
        rec = RequestRecord(
            run_id=self.meter.run_id, request_id=p.request_id, target=cfg.name,
            status=status, error=error, http_status=200,
            start_kind=kind, cold=cold, instance_id=inst.id,
            platform_ms=(done_s - p.arrived_s) * 1000,
            queue_ms=max(0.0, dispatched_s - queued_from) * 1000,
            init_ms=init.total_ms if init else None,
            init_process_ms=init.process_ms if init else None,
            init_import_ms=init.import_ms if init else None,
            init_fetch_ms=init.fetch_ms if init else None,
            init_load_ms=init.load_ms if init else None,
            inference_ms=inference_ms, duration_ms=duration_ms, billed_ms=billed,
            memory_mb=cfg.memory_mb, max_memory_used_mb=inst.max_rss_mb, batch_size=batch_size)
        self.meter.record(rec)
        return rec

    def _fail_requests(self, a: FailRequests) -> None:
        """Every start failed and no instance is left: fail the requests that waited for one."""
        for r in a.requests:
            p = self._requests.pop(r)
            now = self.clock()
            rec = RequestRecord(run_id=self.meter.run_id, request_id=p.request_id, target=self.config.name,
                                status="error", error=a.reason, http_status=200,
                                platform_ms=(now - p.arrived_s) * 1000, memory_mb=self.config.memory_mb)
            self.meter.record(rec)
            _resolve(p, Invocation(p.request_id, "error", _error_body(a.reason, "Runtime.InitError"),
                                   function_error=True, error_type="Runtime.InitError", record=rec,
                                   log=f"INIT error: {a.reason}\n"))

    # ---- instances -----------------------------------------------------------------------
    def _init_message(self) -> dict[str, Any]:
        cfg = self.config
        limits = ResourceLimits.for_memory(cfg.memory_mb)
        return {"type": "init", "function": cfg.name, "model_ref": cfg.model, "store_url": self.store_url,
                "home": str(self.home), "runtime": cfg.runtime, "device": cfg.device,
                "threads": cfg.threads or limits.threads,
                "handler": cfg.handler, "code_dir": str(self.code_dir) if self.code_dir else "",
                "memory_mb": cfg.memory_mb,
                "env": {**{k: os.environ[k] for k in cfg.pass_env if k in os.environ}, **cfg.env},
                "isolation": self.isolation.to_dict() if self.isolation else None}

    def _start_instance(self, a: StartInstance) -> None:
        cfg = self.config
        inst = self.backend.create(InstanceSpec(function=cfg.name, kind=a.kind, mode=cfg.start_mode,
                                                memory_mb=cfg.memory_mb, init=self._init_message()))
        self.instances[inst.id] = inst
        self._by_core[a.instance] = inst
        self._lifecycle(inst, "started")
        self._task(self._boot_instance(a.instance, inst))

    async def _boot_instance(self, core_id: int, inst: Instance) -> None:
        try:
            await inst.start(timeout_s=INIT_TIMEOUT_S)
        except Exception as e:
            self.meter.instance_failures.labels(self.config.name, "init").inc()
            await inst.kill("init failed")
            self._lifecycle(inst, "init_failed", reason=str(e))
            if core_id in self._by_core:
                self._forget(core_id)
                if not self.closed:
                    self._apply(self.core.init_failed(core_id, self.clock(), str(e)))
            return
        self.meter.init_time.labels(self.config.name, inst.mode).observe(inst.init.total_ms / 1000)
        self._lifecycle(inst, "ready")
        if self.closed or core_id not in self._by_core:
            await inst.stop("function deleted or replaced")
            return
        self._apply(self.core.ready(core_id, self.clock()))

    def _lifecycle(self, inst: Instance, event: InstanceEvent, *, reason: str | None = None) -> None:
        init = inst.init if event == "ready" else None
        self.meter.instance_event(InstanceRecord(
            run_id=self.meter.run_id, target=self.config.name, instance_id=inst.id, kind=inst.kind, event=event,
            at_s=time.time(), memory_mb=self.config.memory_mb, reason=reason,
            init_ms=init.total_ms if init else None, init_process_ms=init.process_ms if init else None,
            init_import_ms=init.import_ms if init else None, init_fetch_ms=init.fetch_ms if init else None,
            init_load_ms=init.load_ms if init else None))

    # ---- the slow path -------------------------------------------------------------------
    def reconcile(self) -> None:
        if self.closed:
            return
        self._boot()
        now = self.clock()
        for core_id, inst in list(self._by_core.items()):  # idle instances whose process died
            state = self.core.instances.get(core_id)
            if state is not None and state.phase == "idle" and inst.exited:
                self._forget(core_id)
                self.meter.instance_failures.labels(self.config.name, "died").inc()
                self._lifecycle(inst, "died", reason=inst.stop_reason or "exited while idle")
                self._task(inst.kill("exited while idle"))
                self._apply(self.core.died(core_id, now, "exited while idle"))
        self._apply(self.core.tick(now))

    async def drain(self, timeout_s: float) -> None:
        """Let waiting and running requests finish (up to ``timeout_s``), then close."""
        self.core.close()
        deadline = self.clock() + timeout_s
        while (self.core.waiting or self.core.running) and self.clock() < deadline:
            await asyncio.sleep(0.01)
        await self.close()

    async def close(self) -> None:
        """Stop everything: waiting requests get an error, instances are stopped."""
        self.closed = True
        self.core.close()
        if self.host is not None and self.host.cores.get(self.config.name) is self.core:
            self.host.detach(self.config.name)  # its memory goes back to the host's budget
            self.host = None
        for h in self._timers:
            h.cancel()
        self._timers.clear()
        err = PlatformError("the function was deleted or the platform is stopping", function=self.config.name)
        for p in self._requests.values():
            _resolve(p, Invocation(p.request_id, "error", _error_body(str(err), "ServiceException"),
                                   http_status=503, error_type="ServiceException"))
        self._requests.clear()
        insts = list(self.instances.values())
        self.instances.clear()
        self._by_core.clear()
        for inst in insts:
            self._lifecycle(inst, "reclaimed", reason="shutdown")
        await asyncio.gather(*(i.stop("shutdown") for i in insts), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _resolve(p: Pending, inv: Invocation) -> None:
    if not p.future.done():
        p.future.set_result(inv)


def _error_body(message: str, error_type: str) -> bytes:
    """Lambda's error payload shape."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()
