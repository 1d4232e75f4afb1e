"""What can happen to a function, as data: the core's input.

Request and instance ids are small integers that the driver (platform or simulator) and the core
share; the driver maps them to its own objects. Times are seconds on the driver's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FailureKind = Literal["timeout", "crash", "oom"]
TimerTag = Literal["batch", "expire", "provisioned"]


@dataclass(frozen=True, slots=True)
class Arrived:
    """A request arrived."""

    request: int
    now_s: float


@dataclass(frozen=True, slots=True)
class Ready:
    """An instance finished its init and can serve."""

    instance: int
    now_s: float


@dataclass(frozen=True, slots=True)
class InitFailed:
    """An instance could not start (bad code or model, init timeout)."""

    instance: int
    now_s: float
    error: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A dispatched batch ended. ``failure`` set: the instance is gone (killed on timeout, crashed,
    out of memory). ``requeue``: the batch never started executing (the instance died before
    reading it), so its requests go back to the head of the queue instead of failing."""

    instance: int
    requests: tuple[int, ...]
    now_s: float
    failure: FailureKind | None = None
    requeue: bool = False


@dataclass(frozen=True, slots=True)
class Died:
    """An instance that was not running a batch went away (killed, OOM-killed while idle)."""

    instance: int
    now_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """The slow path's period: reclaim, restore provisioned, pre-warm, autoscale."""

    now_s: float


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the core asked for (:class:`~servelab.core.actions.SetTimer`) is due."""

    now_s: float
    tag: TimerTag
    arg: int = 0


Event = Arrived | Ready | InitFailed | Finished | Died | Tick | TimerFired
