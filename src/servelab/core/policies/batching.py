"""Batching: run the queued requests now as one batch, or wait a little for more.

:func:`decide_batch` is called whenever an instance could run a batch — when it becomes free,
when a request arrives, and when the wait it asked for runs out — and answers with a
:class:`BatchDecision`. The caller takes the ``take`` *oldest* queued requests.

Its guarantees (the three properties BentoML and MLServer users reported broken are the first
two here plus "each request is taken exactly once", which the caller's queue gives if it pops
exactly ``take`` requests; tests/test_policies_batching.py checks all three with a simulated
queue):

* never ``take > max_batch_size`` and never ``take > queued``;
* never makes the oldest request wait past ``max_wait_s``: once it has waited that long the
  batch runs with whatever is queued, and a ``wait_s`` answer never reaches past its deadline;
* ``max_batch_size == 1`` means no batching: take 1 at once;
* a full batch runs at once; ``queued == 0`` answers ``take=0, wait_s=inf`` (nothing to time).

Pure: no clock (``now_s`` is passed in), no I/O. Times are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from servelab.core.policies.keepalive import EPSILON_S
from servelab.errors import ConfigError


@dataclass(frozen=True)
class BatchDecision:
    """``take > 0``: run a batch of the ``take`` oldest requests now (``wait_s`` is 0).
    ``take == 0``: wait up to ``wait_s`` for more requests, then ask again."""

    take: int
    wait_s: float


def decide_batch(*, queued: int, oldest_enqueued_s: float | None, now_s: float, max_batch_size: int,
                 max_wait_s: float) -> BatchDecision:
    """Decide whether to run a batch now; see the module docstring for the guarantees."""
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
    if math.isnan(max_wait_s) or max_wait_s < 0:
        raise ConfigError(f"max_wait_s must be seconds >= 0, got {max_wait_s!r}")
    if queued < 0:
        raise ConfigError(f"queued must be >= 0, got {queued}")
    if queued == 0:
        return BatchDecision(take=0, wait_s=math.inf)
    if oldest_enqueued_s is None:
        raise ConfigError(f"oldest_enqueued_s is required when queued > 0 (queued={queued})")
    if queued >= max_batch_size:  # a full batch (and with max_batch_size == 1, every request) runs at once
        return BatchDecision(take=max_batch_size, wait_s=0.0)
    remaining_s = max_wait_s - (now_s - oldest_enqueued_s)
    if remaining_s <= EPSILON_S:
        return BatchDecision(take=queued, wait_s=0.0)
    return BatchDecision(take=0, wait_s=remaining_s)
