"""How fast a function may start new instances: a token bucket on instance starts.

A start the bucket refuses is re-asked of :func:`~servelab.core.policies.admission.admit` with
the concurrency limit set to the instances that exist now, so it queues or throttles as the
admission policy says. Kinds (:data:`SCALE_RATE_KINDS`):

* ``aws`` — AWS Lambda's current rule: "for each function, your concurrency scaling rate is
  1,000 execution environment instances every 10 seconds", refilled continuously rather than
  every 10 s, unused capacity not accumulating beyond 1,000; requests beyond it are throttled
  (429). Source: AWS Lambda Developer Guide, "Lambda scaling behavior"
  (docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html). Capacity 1,000, 100/s.
* ``aws-2020`` — the rule when the study ran: an initial burst of 500–3,000 instances
  depending on the region (3,000 in us-east-1), then 500 more per minute (AWS Lambda
  Operator Guide, "Scaling and concurrency in Lambda", serverlessland.com). Approximated as
  a bucket of 3,000 refilled at 500/min.
* ``none`` — no limit (servelab's local platform has none).

Not modelled: Lambda's companion limit of 10 requests per second per unit of concurrency.
Times are seconds on the caller's clock.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, get_args

from servelab.errors import ConfigError

ScaleRateKind = Literal["none", "aws", "aws-2020"]
SCALE_RATE_KINDS: tuple[ScaleRateKind, ...] = get_args(ScaleRateKind)


class ScaleRateLimit:
    """A token bucket of ``capacity`` starts, refilled at ``refill_per_s``, continuously."""

    PRESETS: ClassVar[dict[str, tuple[float, float]]] = {"aws": (1000.0, 100.0), "aws-2020": (3000.0, 500.0 / 60.0)}

    def __init__(self, kind: ScaleRateKind, *, now_s: float = 0.0) -> None:
        if kind not in SCALE_RATE_KINDS:
            raise ConfigError(f"unknown scale-rate limit {kind!r}; choose one of: {', '.join(SCALE_RATE_KINDS)}")
        self.kind = kind
        self.capacity, self.refill_per_s = self.PRESETS.get(kind, (math.inf, math.inf))
        self.tokens = self.capacity
        self.last_s = now_s

    @property
    def limited(self) -> bool:
        return self.capacity != math.inf

    def take(self, now_s: float) -> bool:
        """Use one start if the bucket allows it at ``now_s``."""
        if self.capacity == math.inf:
            return True
        self.tokens = min(self.capacity, self.tokens + (now_s - self.last_s) * self.refill_per_s)
        self.last_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
