"""An instance that is a local process: its socket, its pid, its signals and its cgroup.

Created by :class:`~servelab.platform.backends.local.LocalProcessBackend`; the lifecycle and the
failure classes are :mod:`servelab.platform.backends.base`'s. Limits are applied before any of
the function's code runs (the fork server or ``preexec_fn`` joins the cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from servelab.errors import (
    FunctionTimeoutError,
    InstanceCrashedError,
    OutOfMemoryError,
    PlatformError,
)
from servelab.platform.backends.base import BatchOutcome, InitError, InitTimings, Instance
from servelab.platform.ipc import ConnectionClosed, encode_frame, read_frame
from servelab.platform.limits import InstanceLimits

if TYPE_CHECKING:
    from servelab.platform.backends.local import LocalProcessBackend, ProcessHandle


@dataclass
class ProcessInstance(Instance):
    launcher: LocalProcessBackend | None = None
    limits: InstanceLimits | None = None
    handle: ProcessHandle | None = field(default=None, repr=False)

    @property
    def exited(self) -> bool:
        """The process has gone (killed, crashed, OOM-killed), even if nobody has reaped it yet:
        a kill -9 leaves a zombie at once, before the reaper reports the exit, and a batch written
        to it then would be lost. Checked before each batch (one read of /proc, ~10 us)."""
        if self.state == "dead" or (self.handle is not None and self.handle.exited.done()):
            return True
        return self.pid is not None and not _running(self.pid)

    async def start(self, *, timeout_s: float) -> None:
        """Launch the process, send it the init message, wait for ``ready``."""
        assert self.launcher is not None
        if self.limits is not None:
            self.limits.create()
        self.handle = await self.launcher.launch(self.mode, self.limits)
        h = self.handle
        self.pid = h.pid
        h.writer.write(encode_frame({**self.spec.init, "instance_id": self.id}))
        try:
            header, _ = await asyncio.wait_for(read_frame(h.reader), timeout=timeout_s)
        except TimeoutError:
            await self.kill("init timed out")
            raise InitError(f"instance init timed out after {timeout_s:.1f} s", function=self.spec.function,
                            instance_id=self.id) from None
        except ConnectionClosed:
            err = await self._exit_error("during init")
            raise err from None
        if header.get("type") == "init_error":
            await self.kill("init error")
            raise InitError(f"{header.get('errorType')}: {header.get('error')}", function=self.spec.function,
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
                                       function=self.spec.function, instance_id=self.id) from None
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
            return OutOfMemoryError(f"Runtime exited: out of memory, limit {self.spec.memory_mb} MB ({when})",
                                    function=self.spec.function, instance_id=self.id)
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
        return InstanceCrashedError(f"{why} ({when})", function=self.spec.function, instance_id=self.id)

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


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X", b"x")
