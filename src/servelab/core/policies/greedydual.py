"""FaasCache's Greedy-Dual keep-alive: idle instances as a cache, evicted by priority.

Fuerst and Sharma, "FaasCache: Keeping Serverless Computing Alive with Greedy-Dual Caching"
(ASPLOS '21, doi:10.1145/3445814.3446757) treat warm instances as cached objects: memory is the
cache, a cold start is a miss whose penalty is the init time, an instance's memory is the
object's size and the function's invocation count its access frequency. Nothing expires on a
timer; when a start needs memory, the idle instance with the lowest

    priority = clock + frequency x cost / size

is evicted, and the host's ``clock`` rises to the evicted priority — so an instance used
after the evictions starts from a higher base than one left untouched (recency), and a
frequently used, slow-to-start, small function stays longest (frequency x cost / size).

Everything here is pure: plain numbers in, numbers out. The host core
(:mod:`servelab.core.host`) keeps the clock and the counts and asks :func:`pick_victims`.
Units: cost in ms (the init time), size in MB; the priority is in ms per MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from servelab.core.policies.keepalive import KeepAliveDecision, KeepAliveKind
from servelab.errors import ConfigError

EvictionOrder = Literal["lru", "greedy-dual"]
EVICTION_ORDERS: tuple[EvictionOrder, ...] = ("lru", "greedy-dual")


def gd_priority(*, clock: float, frequency: int, cost_ms: float, size_mb: float) -> float:
    """Greedy-Dual priority of one cached instance (FaasCache, section 4)."""
    if size_mb <= 0:
        raise ConfigError(f"size_mb must be > 0, got {size_mb!r}")
    return clock + frequency * cost_ms / size_mb


@dataclass(frozen=True, slots=True)
class Candidate:
    """An idle instance that could be evicted. ``key`` is the caller's handle for it;
    ``priority`` the order key (lower goes first): the Greedy-Dual priority, or for LRU the
    time it became idle. ``memory_mb`` is what evicting it frees."""

    key: tuple[str, int]
    priority: float
    memory_mb: float


@dataclass(frozen=True, slots=True)
class Eviction:
    """What :func:`pick_victims` chose: the victims (lowest priority first) and the clock after."""

    victims: tuple[tuple[str, int], ...]
    clock: float


def pick_victims(candidates: list[Candidate], *, need_mb: float, free_mb: float, clock: float,
                 order: EvictionOrder) -> Eviction | None:
    """Evict the fewest lowest-priority idle instances so that ``need_mb`` fits in ``free_mb``.

    None when even evicting every candidate would not make room: then nothing is evicted (the
    caller holds the start until busy instances finish). ``order='greedy-dual'`` raises the
    clock to the last victim's priority, as FaasCache does; ``'lru'`` leaves it alone.
    Ties go to the earlier candidate in the list (the caller's order), so the result is
    deterministic.
    """
    if need_mb <= free_mb + 1e-9:
        return Eviction((), clock)
    if free_mb + sum(c.memory_mb for c in candidates) < need_mb - 1e-9:
        return None
    chosen: list[tuple[str, int]] = []
    for c in sorted(candidates, key=lambda c: c.priority):  # sorted() is stable: ties keep list order
        chosen.append(c.key)
        free_mb += c.memory_mb
        if order == "greedy-dual":
            clock = max(clock, c.priority)
        if free_mb >= need_mb - 1e-9:
            break
    return Eviction(tuple(chosen), clock)


@dataclass(frozen=True)
class GreedyDualKeepAlive:
    """The FaasCache keep-alive as a :class:`~servelab.core.policies.KeepAlivePolicy`.

    On its own (one function, no host budget) it keeps idle instances ``keep_alive_s`` —
    infinity by default, as in FaasCache, where only memory pressure ends a warm instance; a
    finite value is a safety TTL. Under a host memory budget (:class:`servelab.core.host.HostCore`)
    eviction is by Greedy-Dual priority.
    """

    keep_alive_s: float = math.inf
    kind: KeepAliveKind = field(default="faascache", init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.keep_alive_s, int | float) and not math.isnan(self.keep_alive_s)
                and self.keep_alive_s >= 0):
            raise ConfigError("keep_alive_s must be a number of seconds >= 0 (inf: only memory pressure "
                              f"evicts), got {self.keep_alive_s!r}")

    def initial_state(self) -> None:
        return None

    def observe(self, state: None, *, now_s: float) -> None:
        return None

    def decide(self, state: None) -> KeepAliveDecision:
        return KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=float(self.keep_alive_s))
