"""What the core asks its driver to do, as data: the core's output.

The driver carries each action out with real processes (the platform) or on its event heap (the
simulator) and reports back with events. Actions are values: nobody changes one once the core has
returned it (they are not frozen only because frozen dataclasses cost three times as much to build,
and the simulator builds one per request). Times are seconds on the driver's clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from servelab.billing.rules import InstanceKind, StartKind
from servelab.core.events import TimerTag


@dataclass(slots=True)
class StartInstance:
    """Start an environment; report :class:`~servelab.core.events.Ready` or ``InitFailed``."""

    instance: int
    kind: InstanceKind


@dataclass(slots=True)
class Dispatch:
    """Run ``requests`` (oldest first) as one batch on ``instance``; ``kinds`` is each request's
    start kind (:func:`servelab.billing.rules.batch_kinds`). Report ``Finished`` when it ends."""

    instance: int
    requests: tuple[int, ...]
    kinds: tuple[StartKind, ...]


@dataclass(slots=True)
class Throttle:
    """Refuse a request (HTTP 429); ``reason`` is the message to send."""

    request: int
    reason: str


@dataclass(slots=True)
class FailRequests:
    """Fail waiting requests that no instance will serve (every start failed)."""

    requests: tuple[int, ...]
    reason: str


@dataclass(slots=True)
class StopInstance:
    """Reclaim an idle instance (it runs nothing)."""

    instance: int
    reason: str


@dataclass(slots=True)
class SetTimer:
    """Deliver ``TimerFired(tag, arg)`` at ``at_s``."""

    at_s: float
    tag: TimerTag
    arg: int = 0


Action = StartInstance | Dispatch | Throttle | FailRequests | StopInstance | SetTimer
