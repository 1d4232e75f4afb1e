"""Admission: what to do with one arriving request, given a function's instance counts.

The dispatcher calls :func:`admit` on the per-request fast path with a snapshot of the
function (idle / starting / busy instances, requests already waiting, its limits) and acts
on the answer; the simulator calls the same function on its virtual clock. Pure: no I/O,
no clock — :func:`queue_timed_out` takes ``now_s`` from the caller.

The rules, in order (each a branch of :func:`admit`):

1. ``dispatch`` — an idle instance exists: run the request on it.
2. ``queue`` — no idle instance, but more instances are starting than requests are waiting
   (``starting > waiting``): one of those starting instances will be free for this request,
   so it waits for it instead of starting yet another instance (a pre-warm in progress,
   or a start whose request was already served by an instance that freed up). This holds in
   both modes — a request waiting for a start is a buffered cold start, not a queued one.
3. ``start`` — total instances (idle + starting + busy) below ``max_concurrency``: start
   one (a cold start) and the request waits for *that* start. Scale from zero buffers,
   it never fails (KServe's "model not ready" after scale-from-zero is the bug to avoid).
4. ``queue`` — at the concurrency limit, mode ``queue``, and fewer than ``max_queue``
   requests are waiting for a busy instance (``waiting - starting``; requests waiting for a
   starting instance are rule 2/3's buffer and do not use up the queue).
5. ``throttle`` — otherwise: HTTP 429, ``TooManyRequestsException`` (Lambda's answer).

Times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from servelab.core.policies.keepalive import EPSILON_S
from servelab.errors import ConfigError, PlatformError

AdmissionMode = Literal["throttle", "queue"]
AdmissionAction = Literal["dispatch", "start", "queue", "throttle"]
ADMISSION_MODES: tuple[AdmissionMode, ...] = get_args(AdmissionMode)


@dataclass(frozen=True)
class AdmissionSnapshot:
    """A function's state as one arriving request sees it (not counting that request).

    ``waiting``: requests admitted but not running yet — waiting for a starting instance or
    for a busy one to free up. ``max_queue`` bounds the second kind only (mode ``queue``).
    """

    idle: int
    starting: int
    busy: int
    waiting: int
    max_concurrency: int
    max_queue: int
    mode: AdmissionMode

    def __post_init__(self) -> None:
        if self.mode not in ADMISSION_MODES:
            raise ConfigError(f"unknown admission mode {self.mode!r}; "
                              f"choose one of: {', '.join(ADMISSION_MODES)}")
        if self.max_concurrency < 0 or self.max_queue < 0:
            raise ConfigError(f"max_concurrency and max_queue must be >= 0, got "
                              f"max_concurrency={self.max_concurrency}, max_queue={self.max_queue}")
        if min(self.idle, self.starting, self.busy, self.waiting) < 0:
            raise PlatformError(f"inconsistent admission snapshot (a negative count): idle={self.idle}, "
                                f"starting={self.starting}, busy={self.busy}, waiting={self.waiting}")

    @property
    def instances(self) -> int:
        return self.idle + self.starting + self.busy


def admit(s: AdmissionSnapshot) -> AdmissionAction:
    """Decide one arriving request's fate; see the module docstring for the rules."""
    if s.idle > 0:
        return "dispatch"
    if s.starting > s.waiting:
        return "queue"
    if s.instances < s.max_concurrency:
        return "start"
    if s.mode == "queue" and s.waiting - s.starting < s.max_queue:
        return "queue"
    return "throttle"


def queue_timed_out(*, enqueued_s: float, now_s: float, max_wait_s: float) -> bool:
    """Whether a request enqueued at ``enqueued_s`` has waited ``max_wait_s`` by ``now_s``.

    Compared with ``EPSILON_S`` of slack, so a check at exactly ``max_wait_s`` times out;
    ``max_wait_s=inf`` never does.
    """
    return now_s - enqueued_s >= max_wait_s - EPSILON_S
