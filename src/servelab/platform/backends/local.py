"""The local backend: each instance is a process on this machine.

:class:`LocalProcessBackend` starts each instance as a local process, either ``spawn`` (a
fresh interpreter, like a cloud container) or ``fork`` (from a fork server with the runtime
already imported), inside its own cgroup (or rlimits) when limits are on. Pids, signals and
cgroups live here and in :mod:`~servelab.platform.backends.process`, nowhere above.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from servelab.platform.backends.base import START_MODES, InstanceSpec, StartMode
from servelab.platform.backends.process import ProcessInstance
from servelab.platform.isolation import instance_env
from servelab.platform.limits import InstanceLimits, LimitsInfo, ResourceLimits


@dataclass
class ProcessHandle:
    """A running instance process: its socket streams, pid, and a future of its exit code."""

    pid: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    exited: asyncio.Future[int]
    launched_s: float  # monotonic, just before the process was asked for
    extra: dict[str, Any] = field(default_factory=dict)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class _ForkServer:
    """The platform's side of ``forkserver.py``."""

    def __init__(self, preload: list[str]) -> None:
        self.preload = preload
        self.proc: asyncio.subprocess.Process | None = None
        self.ctrl: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._tokens = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "servelab.platform.forkserver", "--fd", str(theirs.fileno()),
            "--preload", ",".join(self.preload), pass_fds=(theirs.fileno(),), env=instance_env())
        theirs.close()
        ours.setblocking(False)
        self.ctrl = ours
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read_loop())
        await asyncio.wait_for(self._ready, timeout=60)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.ctrl is not None
        while True:
            try:
                data = await loop.sock_recv(self.ctrl, 65536)
            except OSError:
                data = b""
            if not data:
                waiting: list[asyncio.Future[Any]] = [*self._pending.values(), *self._exits.values()]
                for f in waiting:
                    if not f.done():
                        f.set_exception(ConnectionError("the fork server exited"))
                return
            msg = json.loads(data)
            kind = msg.get("type")
            if kind == "ready" and self._ready and not self._ready.done():
                self._ready.set_result(msg)
            elif kind == "forked":
                forked = self._pending.pop(msg["token"], None)
                if forked and not forked.done():
                    forked.set_result(msg)
            elif kind == "exit":
                exited = self._exits.setdefault(msg["pid"], loop.create_future())
                if not exited.done():
                    exited.set_result(int(msg["code"]))

    async def fork(self, child_sock: socket.socket, limits: dict[str, Any] | None) -> tuple[int, asyncio.Future[int]]:
        loop = asyncio.get_running_loop()
        assert self.ctrl is not None
        async with self._lock:
            token = next(self._tokens)
            fut = loop.create_future()
            self._pending[token] = fut
            msg = json.dumps({"cmd": "fork", "token": token, "limits": limits}).encode()
            socket.send_fds(self.ctrl, [msg], [child_sock.fileno()])
        reply = await asyncio.wait_for(fut, timeout=30)
        pid = int(reply["pid"])
        exited = self._exits.setdefault(pid, loop.create_future())
        return pid, exited

    def forget(self, pid: int) -> None:
        self._exits.pop(pid, None)

    async def close(self) -> None:
        if self.ctrl is not None:
            self.ctrl.close()
        if self._reader:
            self._reader.cancel()
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


class LocalProcessBackend:
    """Instances as local processes, with limits applied before any of their code runs."""

    def __init__(self, *, preload: list[str] | None = None, limits_info: LimitsInfo | None = None) -> None:
        self.preload = preload or ["onnxruntime"]
        self.limits_info = limits_info
        self._forkserver: _ForkServer | None = None
        self._fs_lock = asyncio.Lock()

    def create(self, spec: InstanceSpec) -> ProcessInstance:
        inst = ProcessInstance(spec=spec, launcher=self)
        if self.limits_info is not None:
            inst.limits = InstanceLimits(f"{spec.function}-{inst.id}", ResourceLimits.for_memory(spec.memory_mb),
                                         self.limits_info)
        return inst

    async def _get_forkserver(self) -> _ForkServer:
        async with self._fs_lock:
            fs = self._forkserver
            if fs is None or fs.proc is None or fs.proc.returncode is not None:
                fs = _ForkServer(self.preload)
                await fs.start()
                self._forkserver = fs
            return fs

    async def warm_up(self) -> None:
        """Start the fork server now rather than on the first fork-mode cold start."""
        await self._get_forkserver()

    async def launch(self, mode: StartMode, limits: InstanceLimits | None) -> ProcessHandle:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        launched_s = time.monotonic()
        try:
            if mode == "spawn":
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "servelab.platform.worker", "--fd", str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    preexec_fn=limits.preexec_fn() if limits else None,
                    stdin=asyncio.subprocess.DEVNULL, env=instance_env())
                pid = proc.pid
                exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
            elif mode == "fork":
                fs = await self._get_forkserver()
                launched_s = time.monotonic()  # the fork server's own start is not this cold start
                pid, exited = await fs.fork(theirs, limits.to_dict() if limits else None)
            else:
                raise ValueError(f"start mode must be one of {START_MODES}, got {mode!r}")
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return ProcessHandle(pid=pid, reader=reader, writer=writer, exited=exited, launched_s=launched_s)

    async def close(self) -> None:
        if self._forkserver is not None:
            await self._forkserver.close()
            self._forkserver = None
