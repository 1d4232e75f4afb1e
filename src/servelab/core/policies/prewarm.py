"""Pre-warming: load an instance before the request that needs it, on a schedule or a prediction.

* **Scheduled** (:class:`ScheduledKeepAlive`, kind ``scheduled``): what users of Knative and Ray
  Serve ask for ("keep one replica up 08:00-18:00"): a fixed keep-alive plus a floor of ``count``
  warm instances inside cron-like windows — a daily window ``[window_start_s, window_end_s)``
  (seconds since midnight on the caller's clock; a window may wrap past midnight) and/or a
  periodic one (every ``every_s`` seconds, for ``warm_for_s``, starting at ``phase_s``: a timer
  trigger's function warmed just before it fires). Outside the windows the fixed keep-alive
  applies. :func:`scheduled_min_warm` is the pure rule; the core starts ``prewarmed`` instances
  to reach the floor on its tick, and never reclaims below it inside a window.
* **Predictive** (:func:`predicted_window`): the hybrid histogram policy (Shahrad et al., ATC'20)
  already pre-warms — it unloads after an invocation and loads a fresh instance at the
  histogram's head. This names that use explicitly: the absolute window in which the next
  invocation is expected, and which branch of the policy produced it.

Pure: plain numbers in, numbers out; seconds on the caller's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from servelab.core.policies.keepalive import (
    HistogramState,
    HybridHistogramKeepAlive,
    HybridMode,
    KeepAliveDecision,
    KeepAliveKind,
)
from servelab.errors import ConfigError

DAY_S = 86400.0


@dataclass(frozen=True)
class ScheduledKeepAlive:
    """A fixed keep-alive plus scheduled warm windows (see the module docstring).

    A window is off when its parameters are None. ``count`` instances are kept warm inside any
    window; provisioned instances count towards it.
    """

    keep_alive_s: float = 600.0
    window_start_s: float | None = None  # seconds since midnight, [0, 86400)
    window_end_s: float | None = None
    every_s: float | None = None
    warm_for_s: float = 60.0
    phase_s: float = 0.0
    count: int = 1
    kind: KeepAliveKind = field(default="scheduled", init=False)

    def __post_init__(self) -> None:
        if not (self.keep_alive_s >= 0):
            raise ConfigError(f"keep_alive_s must be seconds >= 0, got {self.keep_alive_s!r}")
        if (self.window_start_s is None) != (self.window_end_s is None):
            raise ConfigError("a daily window needs both window_start_s and window_end_s (seconds since midnight)")
        for name in ("window_start_s", "window_end_s"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= DAY_S:
                raise ConfigError(f"{name} must be seconds since midnight in [0, 86400], got {v!r}")
        if self.every_s is not None and not (0 < self.every_s < math.inf):
            raise ConfigError(f"every_s must be a finite number of seconds > 0, got {self.every_s!r}")
        if not (0 <= self.warm_for_s < math.inf) or not (self.phase_s >= 0):
            raise ConfigError(f"warm_for_s and phase_s must be seconds >= 0, got {self.warm_for_s!r}, "
                              f"{self.phase_s!r}")
        if int(self.count) != self.count or self.count < 1:
            raise ConfigError(f"count must be an integer >= 1, got {self.count!r}")
        object.__setattr__(self, "count", int(self.count))

    def initial_state(self) -> None:
        return None

    def observe(self, state: None, *, now_s: float) -> None:
        return None

    def decide(self, state: None) -> KeepAliveDecision:
        return KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=float(self.keep_alive_s))

    def min_warm(self, now_s: float) -> int:
        return scheduled_min_warm(self, now_s)


def in_daily_window(now_s: float, start_s: float, end_s: float) -> bool:
    """Whether ``now_s`` (seconds on a clock whose 0 is a midnight) falls in the daily window
    ``[start_s, end_s)``; ``start_s > end_s`` wraps past midnight (22:00-06:00)."""
    t = now_s % DAY_S
    if start_s <= end_s:
        return start_s <= t < end_s
    return t >= start_s or t < end_s


def in_periodic_window(now_s: float, every_s: float, warm_for_s: float, phase_s: float = 0.0) -> bool:
    """Whether ``now_s`` is within ``warm_for_s`` after one of the instants ``phase_s + k * every_s``."""
    if now_s < phase_s:
        return False
    return (now_s - phase_s) % every_s < warm_for_s


def scheduled_min_warm(policy: ScheduledKeepAlive, now_s: float) -> int:
    """How many instances the schedule wants warm at ``now_s`` (0 outside every window)."""
    if policy.window_start_s is not None and policy.window_end_s is not None and in_daily_window(
            now_s, policy.window_start_s, policy.window_end_s):
        return policy.count
    if policy.every_s is not None and in_periodic_window(now_s, policy.every_s, policy.warm_for_s, policy.phase_s):
        return policy.count
    return 0


@dataclass(frozen=True)
class PredictedWindow:
    """When the hybrid policy expects the next invocation: load a fresh instance at ``load_at_s``,
    keep it until ``until_s``. ``mode`` is the branch that predicted it (histogram or forecast)."""

    load_at_s: float
    until_s: float
    mode: HybridMode


def predicted_window(policy: HybridHistogramKeepAlive, state: HistogramState) -> PredictedWindow | None:
    """The predictive pre-warm the hybrid policy implies after the latest invocation.

    None while the policy keeps the instance loaded instead (not enough history, an even
    histogram, or a head shorter than ``min_prewarm_s``): then nothing is pre-warmed.
    """
    last = state.last_invocation_s
    if last is None:
        return None
    d = policy.decide(state)
    if d.prewarm_after_s <= 0.0:
        return None
    return PredictedWindow(load_at_s=last + d.prewarm_after_s, until_s=last + d.prewarm_after_s + d.keep_alive_s,
                           mode=policy.mode(state))
