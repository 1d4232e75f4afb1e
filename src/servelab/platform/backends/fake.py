"""An in-memory instance backend: no processes, no sleeps, every step under the test's control.

For testing the platform's service (the core's asyncio driver) without real processes: inits and
batches finish at once (``auto``) or when the test says (:meth:`FakeBackend.release`), and an
instance can be made to crash while idle or busy. Timings reported are the configured ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from servelab.errors import InstanceCrashedError
from servelab.platform.backends.base import BatchOutcome, InitError, InitTimings, Instance, InstanceSpec


@dataclass
class FakeInstance(Instance):
    backend: FakeBackend | None = None
    batches: list[list[str]] = field(default_factory=list)
    _gate: asyncio.Future[None] | None = field(default=None, repr=False)
    _running: asyncio.Future[None] | None = field(default=None, repr=False)
    _crashed: bool = False

    @property
    def exited(self) -> bool:
        return self._crashed or self.state == "dead"

    async def start(self, *, timeout_s: float) -> None:
        b = self.backend
        assert b is not None
        if not b.auto_ready:
            self._gate = asyncio.get_running_loop().create_future()
            await self._gate
        if b.fail_init:
            self.state = "dead"
            raise InitError("fake init failure", function=self.spec.function, instance_id=self.id)
        if self.state == "dead":
            raise InitError("crashed during init", function=self.spec.function, instance_id=self.id)
        self.init = InitTimings(total_ms=b.init_ms, load_ms=b.init_ms)
        self.ready_s = self.idle_since_s = asyncio.get_running_loop().time()
        self.state = "idle"

    async def invoke(self, request_ids: list[str], bodies: list[bytes], *, timeout_s: float) -> BatchOutcome:
        b = self.backend
        assert b is not None
        if self.exited:
            raise InstanceCrashedError("Runtime exited with signal: SIGKILL (while executing)",
                                       function=self.spec.function, instance_id=self.id)
        self.batches.append(list(request_ids))
        if not b.auto_finish:
            self._running = asyncio.get_running_loop().create_future()
            try:
                await self._running
            finally:
                self._running = None
        self.served += len(bodies)
        return BatchOutcome(results=[{"ok": True, "size": len(x)} for x in bodies], payloads=list(bodies),
                            duration_ms=b.duration_ms, inference_ms=b.duration_ms, max_rss_mb=1.0)

    async def stop(self, reason: str) -> None:
        await self.kill(reason)

    async def kill(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self.state = "dead"

    def crash(self) -> None:
        """Die now, like a kill -9: a running batch fails, an idle instance is found dead."""
        self.stop_reason = "Runtime exited with signal: SIGKILL"
        self._crashed = True
        self.state = "dead"
        if self._running is not None and not self._running.done():
            self._running.set_exception(InstanceCrashedError(
                "Runtime exited with signal: SIGKILL (while executing)", function=self.spec.function,
                instance_id=self.id))

    def release(self) -> None:
        for fut in (self._gate, self._running):
            if fut is not None and not fut.done():
                fut.set_result(None)


class FakeBackend:
    def __init__(self, *, auto_ready: bool = True, auto_finish: bool = True, init_ms: float = 100.0,
                 duration_ms: float = 10.0, fail_init: bool = False) -> None:
        self.auto_ready = auto_ready
        self.auto_finish = auto_finish
        self.init_ms = init_ms
        self.duration_ms = duration_ms
        self.fail_init = fail_init
        self.instances: list[FakeInstance] = []

    def create(self, spec: InstanceSpec) -> FakeInstance:
        inst = FakeInstance(spec=spec, backend=self)
        self.instances.append(inst)
        return inst

    def release(self) -> None:
        """Let every waiting init and batch finish."""
        for inst in self.instances:
            inst.release()

    async def warm_up(self) -> None:
        return None

    async def close(self) -> None:
        return None
