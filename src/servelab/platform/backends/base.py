"""The seam between the platform and wherever instances run: the instance backend protocol.

An :class:`InstanceBackend` turns an :class:`InstanceSpec` into an :class:`Instance` — an object
that can start (init), run a batch, and stop — and owns everything about *where* and *how* it
runs: processes, pids, signals and cgroups for the local backend (``local``), nothing at all
for the in-memory fake (``fake``, for tests of the service's logic without processes or
sleeps), and, later, another machine. Nothing above this package knows which.

The instance lifecycle is an explicit state machine::

    starting ──ready──► idle ◄──► busy
        │                 │         │
        └─init error──► dead ◄──────┘  (crash, out of memory, timeout kill, reclaim)

Failures are classed by blame: the platform's (:class:`~servelab.errors.InstanceCrashedError`,
:class:`~servelab.errors.OutOfMemoryError`, :class:`~servelab.errors.FunctionTimeoutError`,
:class:`InitError`) or the function's (a result with ``ok: false``).

Times are ``time.monotonic()`` seconds; durations ms.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from servelab.billing.rules import InstanceKind
from servelab.errors import PlatformError

InstanceState = Literal["starting", "idle", "busy", "dead"]
StartMode = Literal["spawn", "fork"]
START_MODES: tuple[StartMode, ...] = ("spawn", "fork")
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


@dataclass(frozen=True)
class InstanceSpec:
    """What to start: the function's name, how the environment was asked for, its memory size and
    start mode, and the init message its worker receives (model, runtime, handler, env…)."""

    function: str
    kind: InstanceKind
    mode: StartMode
    memory_mb: int
    init: dict[str, Any]


def new_instance_id() -> str:
    return f"i{os.getpid() % 10000:04d}-{next(_ids):06d}"


@dataclass
class Instance:
    """One environment, whatever backend runs it: its lifecycle state and what it reported.
    Backends subclass it and implement :meth:`start`, :meth:`invoke`, :meth:`stop`, :meth:`kill`
    and :attr:`exited`."""

    spec: InstanceSpec
    id: str = field(default_factory=new_instance_id)
    state: InstanceState = "starting"
    created_s: float = field(default_factory=time.monotonic)
    ready_s: float | None = None
    idle_since_s: float | None = None
    served: int = 0
    init: InitTimings = field(default_factory=InitTimings)
    max_rss_mb: float = 0.0
    stop_reason: str = ""
    pid: int | None = None  # the local process, where there is one: for views and operators

    @property
    def kind(self) -> InstanceKind:
        return self.spec.kind

    @property
    def mode(self) -> StartMode:
        return self.spec.mode

    @property
    def provisioned(self) -> bool:
        return self.spec.kind == "provisioned"

    @property
    def exited(self) -> bool:
        """The environment is known to have gone (killed, crashed, OOM-killed)."""
        return self.state == "dead"

    async def start(self, *, timeout_s: float) -> None:
        """Boot the environment and wait until it is ready; raise InitError (or another
        PlatformError) when it cannot start."""
        raise NotImplementedError

    async def invoke(self, request_ids: list[str], bodies: list[bytes], *, timeout_s: float) -> BatchOutcome:
        """Run one batch. Raises FunctionTimeoutError (instance killed), InstanceCrashedError or
        OutOfMemoryError (instance dead); a function error comes back as a result with ok=False."""
        raise NotImplementedError

    async def stop(self, reason: str) -> None:
        """Graceful: ask it to exit, then kill it. Idempotent."""
        raise NotImplementedError

    async def kill(self, reason: str) -> None:
        raise NotImplementedError

    def view(self, now_s: float) -> dict[str, Any]:
        """What the API and the dashboard show."""
        return {"id": self.id, "state": self.state, "kind": self.kind, "provisioned": self.provisioned,
                "pid": self.pid, "served": self.served,
                "age_s": round(now_s - self.created_s, 3),
                "idle_s": round(now_s - self.idle_since_s, 3) if self.state == "idle" and self.idle_since_s
                else None,
                "init_ms": round(self.init.total_ms, 2), "max_rss_mb": round(self.max_rss_mb, 1)}


class InstanceBackend(Protocol):
    """Where instances come from. ``create`` does no I/O: the instance starts in ``start``."""

    def create(self, spec: InstanceSpec) -> Instance: ...

    async def warm_up(self) -> None: ...

    async def close(self) -> None: ...
