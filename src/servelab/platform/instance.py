"""One function instance: a process that holds the model, and its explicit lifecycle.

    starting ──ready──► idle ◄──► busy
        │                 │         │
        └─init error──► dead ◄──────┘  (crash, out of memory, timeout kill, reclaim)

``kind`` records how it was started: ``cold`` (a request asked for it) or ``prewarmed``
(provisioned concurrency or the keep-alive policy's pre-warm). Failures are classed by blame:
the platform's (:class:`InstanceCrashedError`, :class:`OutOfMemoryError`) or the function's
(an error payload with ``ok: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from servelab.errors import (
    FunctionTimeoutError,
    InstanceCrashedError,
    OutOfMemoryError,
    PlatformError,
)
from servelab.platform.backend import InstanceBackend, ProcessHandle, StartMode
from servelab.platform.ipc import ConnectionClosed, encode_frame, read_frame
from servelab.platform.limits import InstanceLimits

InstanceState = Literal["starting", "idle", "busy", "dead"]
InstanceKind = Literal["cold", "prewarmed"]
_ids = itertools.count(1)


class InitError(PlatformError):
    """The function's code or model failed to load (Lambda: Runtime.ImportModuleError & co)."""


@dataclass
class InitTimings:
    """Cold-start parts, in ms: process start, imports, model fetch, model load; total is the sum
    plus the glue between them (sending the init message, the ready reply)."""

    process_ms: float = 0.0
    import_ms: float = 0.0
    fetch_ms: float = 0.0
    load_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class BatchOutcome:
    results: list[dict[str, Any]]  # per request: ok, size, log
    payloads: list[bytes]
    duration_ms: float
    inference_ms: float | None
    max_rss_mb: float


@dataclass
class Instance:
    function: str
    kind: InstanceKind
    provisioned: bool
    mode: StartMode
    memory_mb: int
    limits: InstanceLimits | None
    id: str = field(default_factory=lambda: f"i{os.getpid() % 10000:04d}-{next(_ids):06d}")
    state: InstanceState = "starting"
    handle: ProcessHandle | None = None
    created_s: float = field(default_factory=time.monotonic)
    ready_s: float | None = None
    idle_since_s: float | None = None
    served: int = 0
    init: InitTimings = field(default_factory=InitTimings)
    max_rss_mb: float = 0.0
    stop_reason: str = ""

    async def start(self, backend: InstanceBackend, init_msg: dict[str, Any], *, timeout_s: float) -> None:
        """Launch the process, send it the init message, wait for ``ready``."""
        if self.limits is not None:
            self.limits.create()
        self.handle = await backend.launch(self.mode, self.limits)
        h = self.handle
        h.writer.write(encode_frame({**init_msg, "instance_id": self.id}))
        try:
            header, _ = await asyncio.wait_for(read_frame(h.reader), timeout=timeout_s)
        except TimeoutError:
            await self.kill("init timed out")
            raise InitError(f"instance init timed out after {timeout_s:.1f} s", function=self.function,
                            instance_id=self.id) from None
        except ConnectionClosed:
            err = await self._exit_error("during init")
            raise err from None
        if header.get("type") == "init_error":
            await self.kill("init error")
            raise InitError(f"{header.get('errorType')}: {header.get('error')}", function=self.function,
                            instance_id=self.id)
        now = time.monotonic()
        m = header["marks"]
        self.init = InitTimings(
            process_ms=(m["started"] - h.launched_s) * 1000,
            import_ms=(m["imports_done"] - m["started"]) * 1000,
            fetch_ms=(m["fetch_done"] - m["imports_done"]) * 1000,
            load_ms=(m["load_done"] - m["fetch_done"]) * 1000,
            total_ms=(now - h.launched_s) * 1000,
        )
        self.max_rss_mb = float(header.get("max_rss_mb", 0.0))
        self.ready_s = now
        self.idle_since_s = now
        self.state = "idle"

    async def invoke(self, request_ids: list[str], bodies: list[bytes], *, timeout_s: float) -> BatchOutcome:
        """Run one batch. Raises FunctionTimeoutError (instance killed), InstanceCrashedError or
        OutOfMemoryError (instance dead); a function error comes back as a result with ok=False."""
        assert self.handle is not None and self.state == "busy"
        h = self.handle
        h.writer.write(encode_frame({"type": "invoke", "request_ids": request_ids,
                                     "sizes": [len(b) for b in bodies], "timeout_s": timeout_s},
                                    b"".join(bodies)))
        try:
            header, body = await asyncio.wait_for(read_frame(h.reader), timeout=timeout_s)
        except TimeoutError:
            await self.kill("timeout")
            raise FunctionTimeoutError(f"Task timed out after {timeout_s:.2f} seconds",
                                       function=self.function, instance_id=self.id) from None
        except ConnectionClosed:
            raise await self._exit_error("while executing") from None
        payloads, off = [], 0
        for r in header["results"]:
            payloads.append(body[off:off + r["size"]])
            off += r["size"]
        self.served += len(bodies)
        self.max_rss_mb = max(self.max_rss_mb, float(header.get("max_rss_mb", 0.0)))
        return BatchOutcome(results=header["results"], payloads=payloads,
                            duration_ms=float(header["duration_ms"]), inference_ms=header.get("inference_ms"),
                            max_rss_mb=self.max_rss_mb)

    async def _exit_error(self, when: str) -> PlatformError:
        """The process went away: find out why (OOM kill, signal, exit code) and clean up."""
        self.state = "dead"
        code: int | None = None
        if self.handle is not None:
            with contextlib.suppress(TimeoutError, ConnectionError):
                code = await asyncio.wait_for(asyncio.shield(self.handle.exited), timeout=2.0)
        oom = self.limits is not None and self.limits.oom_killed()
        if not oom and code == -signal.SIGKILL and self.limits is not None:
            # the kernel can account an OOM kill a moment after the process is reaped
            for _ in range(50):
                await asyncio.sleep(0.01)
                if oom := self.limits.oom_killed():
                    break
        await self.kill("exited")
        if oom:
            self.stop_reason = "out of memory"
            return OutOfMemoryError(f"Runtime exited: out of memory, limit {self.memory_mb} MB ({when})",
                                    function=self.function, instance_id=self.id)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = f"Runtime exited with signal: {name}"
        elif code is not None:
            why = f"Runtime exited with error: exit status {code}"
        else:
            why = "Runtime exited without providing a reason"
        self.stop_reason = why
        return InstanceCrashedError(f"{why} ({when})", function=self.function, instance_id=self.id)

    async def stop(self, reason: str) -> None:
        """Graceful: ask it to exit, give it a moment, then kill. Idempotent."""
        if self.handle is not None and self.state != "dead":
            with contextlib.suppress(Exception):
                self.handle.writer.write(encode_frame({"type": "stop"}))
                await asyncio.wait_for(asyncio.shield(self.handle.exited), timeout=1.0)
        await self.kill(reason)

    async def kill(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self.state = "dead"
        if self.handle is not None:
            self.handle.kill()
            with contextlib.suppress(Exception):
                self.handle.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.handle.exited), timeout=2.0)
        if self.limits is not None:
            with contextlib.suppress(Exception):
                self.limits.destroy()

    def view(self, now_s: float) -> dict[str, Any]:
        """What the API and the dashboard show."""
        return {"id": self.id, "state": self.state, "kind": self.kind, "provisioned": self.provisioned,
                "pid": self.handle.pid if self.handle else None, "served": self.served,
                "age_s": round(now_s - self.created_s, 3),
                "idle_s": round(now_s - self.idle_since_s, 3) if self.state == "idle" and self.idle_since_s
                else None,
                "init_ms": round(self.init.total_ms, 2), "max_rss_mb": round(self.max_rss_mb, 1)}
