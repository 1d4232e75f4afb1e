"""Scaling: how many instances a function should have.

Two kinds, chosen per function:

- ``per-request`` — the serverless way (AWS Lambda, Cloud Functions): no autoscaler at all.
  :func:`~servelab.core.policies.admission.admit` starts an instance whenever a request
  finds none free, up to ``max_concurrency``; idle ones leave after the keep-alive.
- ``target-tracking`` — the managed-endpoint way (SageMaker real-time, Vertex AI, AI Platform):
  requests never start instances. Every metric period the autoscaler reads the mean load
  (requests in flight, running or queued, averaged over the period, as CloudWatch's per-minute
  metric is) and asks for ``ceil(load / target_utilisation)`` instances, clamped to
  ``[min_instances, max_instances]``. Scaling out waits ``scale_out_cooldown_s`` after the last
  scale-out, and a new instance serves only after ``scale_out_delay_s`` of provisioning plus its
  own start; scaling in waits ``scale_in_cooldown_s`` after any scaling, and removes idle
  instances only. This lag is why managed endpoints queue under bursts that serverless absorbs.

Pure: the caller passes ``now_s`` and the measured load. The real platform and the simulator
call the same :func:`target_tracking`; :class:`LoadAverager` is the time-weighted mean both use.
Times are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from servelab.errors import ConfigError

ScalingKind = Literal["per-request", "target-tracking", "fixed"]
SCALING_KINDS: tuple[ScalingKind, ...] = get_args(ScalingKind)
ScaleAction = Literal["out", "in", "hold"]


@dataclass(frozen=True)
class TargetTracking:
    """A target-tracking autoscaler's settings (AWS Application Auto Scaling's, simplified).

    ``target_utilisation``: the mean number of in-flight requests per instance to aim for; with
    one request at a time per instance it is the busy fraction (SageMaker users track
    ``InvocationsPerInstance``; this is the same signal normalised by service time).
    The cooldowns default to AWS's 300 s; ``scale_out_delay_s`` stands for the minutes a cloud
    takes to provision a new machine before the model even starts loading.
    """

    min_instances: int
    max_instances: int
    target_utilisation: float = 0.7
    metric_period_s: float = 60.0
    scale_out_cooldown_s: float = 300.0
    scale_in_cooldown_s: float = 300.0
    scale_out_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_instances <= self.max_instances:
            raise ConfigError(f"target-tracking needs 1 <= min_instances <= max_instances, got "
                              f"min_instances={self.min_instances}, max_instances={self.max_instances} "
                              "(a managed endpoint keeps at least one instance)")
        if not 0 < self.target_utilisation <= 1:
            raise ConfigError(f"target_utilisation must be in (0, 1], got {self.target_utilisation}")
        if self.metric_period_s <= 0:
            raise ConfigError(f"metric_period_s must be > 0, got {self.metric_period_s}")
        for name in ("scale_out_cooldown_s", "scale_in_cooldown_s", "scale_out_delay_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ScaleDecision:
    desired: int  # instances wanted after this decision (== current when holding)
    action: ScaleAction
    reason: str


def desired_instances(cfg: TargetTracking, mean_load: float) -> int:
    """The instance count that brings ``mean_load`` per instance to the target, clamped."""
    if mean_load < 0:
        raise ConfigError(f"mean_load must be >= 0, got {mean_load}")
    # a hair of tolerance so a load of exactly n * target does not ask for n + 1
    want = math.ceil(mean_load / cfg.target_utilisation - 1e-9)
    return min(cfg.max_instances, max(cfg.min_instances, want))


def target_tracking(cfg: TargetTracking, *, now_s: float, current: int, mean_load: float,
                    last_scale_out_s: float | None, last_scale_in_s: float | None) -> ScaleDecision:
    """Decide at the end of a metric period. ``current`` counts instances that exist or are
    being provisioned, so a scale-out in progress is not asked for twice."""
    want = desired_instances(cfg, mean_load)
    per = mean_load / current if current else math.inf
    facts = f"load {mean_load:.2f} on {current} instance(s) ({per:.2f} each, target {cfg.target_utilisation:g})"
    if want > current:
        if last_scale_out_s is not None and now_s - last_scale_out_s < cfg.scale_out_cooldown_s:
            return ScaleDecision(current, "hold", f"{facts}: wants {want}, in scale-out cooldown")
        return ScaleDecision(want, "out", f"{facts}: scale out to {want}")
    if want < current:
        last = max((t for t in (last_scale_out_s, last_scale_in_s) if t is not None), default=None)
        if last is not None and now_s - last < cfg.scale_in_cooldown_s:
            return ScaleDecision(current, "hold", f"{facts}: wants {want}, in scale-in cooldown")
        return ScaleDecision(want, "in", f"{facts}: scale in to {want}")
    return ScaleDecision(current, "hold", f"{facts}: on target")


class LoadAverager:
    """Time-weighted mean of a step function (requests in flight) over a metric period.

    Call :meth:`update` whenever the load changes (or at least every tick) and :meth:`take` at
    the period's end; the clock is the caller's.
    """

    def __init__(self, now_s: float, load: float = 0.0) -> None:
        self._start_s = now_s
        self._last_s = now_s
        self._load = load
        self._area = 0.0

    def update(self, now_s: float, load: float) -> None:
        if now_s > self._last_s:
            self._area += self._load * (now_s - self._last_s)
            self._last_s = now_s
        self._load = load

    def elapsed_s(self, now_s: float) -> float:
        return now_s - self._start_s

    def take(self, now_s: float) -> float:
        """The mean since the last take (or construction); starts a new period."""
        self.update(now_s, self._load)
        span = now_s - self._start_s
        mean = self._area / span if span > 0 else self._load
        self._start_s = self._last_s = now_s
        self._area = 0.0
        return mean
