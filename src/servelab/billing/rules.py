"""The accounting rules: what a request's start is called, what it is billed, and when init counts.

One module, so the platform's meter, the simulator and every pricing path agree (docs/accounting.md
states each rule and its source):

* **Start kinds.** A *cold* start is the first request served by an environment started on
  demand (``on_demand``). An environment started ahead of demand (``provisioned``, or
  ``prewarmed`` by a keep-alive policy or an autoscaler) serves a *prewarmed* first request.
  Every other request is *warm* — including one that queued behind another request's cold
  start (its wait is its ``queue_ms``). In a batch, the first request (the oldest) carries the
  environment's first-request kind; the rest are warm.
* **Init is billed once per environment**, on the record of its first request (that record
  carries ``init_ms``), for environments started on demand or pre-warmed by a policy.
  Provisioned environments carry no per-request init: their capacity is billed by the hour.
  Whether init is billed at all depends on the date (:func:`init_billed`): AWS Lambda bills the
  INIT phase of on-demand functions since 2025-08-01 (AWS Compute Blog, "AWS Lambda standardizes
  billing for INIT Phase", April 2025); before that, init of ZIP functions on managed runtimes
  was free — the study's era.
* **A batch is one execution**: its duration is rounded up once and each request pays an equal
  share, so totals stay right at any rounding step.

Durations in ms; dates are :class:`datetime.date`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal, get_args

InstanceKind = Literal["on_demand", "prewarmed", "provisioned"]
StartKind = Literal["warm", "prewarmed", "cold"]
INSTANCE_KINDS: tuple[InstanceKind, ...] = get_args(InstanceKind)
START_KINDS: tuple[StartKind, ...] = get_args(StartKind)

# A duration that is a whole number of rounding units up to float noise (0.12 s * 1000 is
# 120.00000000000001 ms) must not round up a whole unit.
ROUNDING_TOLERANCE = 1e-6

# The era before AWS billed the INIT phase of on-demand ZIP functions: the study's (SIGMOD '22).
STUDY_ERA = dt.date(2021, 6, 1)


def billed_ms(duration_ms: float, rounding_ms: float, min_billed_ms: float = 0.0) -> float:
    """``duration_ms`` rounded up to ``rounding_ms`` steps, at least ``min_billed_ms``."""
    return max(float(math.ceil(duration_ms / rounding_ms - ROUNDING_TOLERANCE) * rounding_ms), min_billed_ms)


def first_request_kind(instance_kind: InstanceKind) -> StartKind:
    """What the first request served by an environment of ``instance_kind`` is called."""
    return "cold" if instance_kind == "on_demand" else "prewarmed"


def batch_kinds(instance_kind: InstanceKind, first_batch: bool, size: int) -> tuple[StartKind, ...]:
    """Start kinds of a batch's requests, oldest first (see the module docstring)."""
    warm: tuple[StartKind, ...] = tuple("warm" for _ in range(size))
    if not first_batch:
        return warm
    return (first_request_kind(instance_kind), *warm[1:])


def carries_init(instance_kind: InstanceKind) -> bool:
    """Whether the first request of such an environment carries (and may be billed) its init."""
    return instance_kind != "provisioned"


def init_billed(init_billed_from: dt.date | None, as_of: dt.date) -> bool:
    """Whether init counts as billed duration on ``as_of`` for an offering that started billing it
    on ``init_billed_from`` (None: never billed)."""
    return init_billed_from is not None and as_of >= init_billed_from


def request_billed_ms(*, duration_ms: float, batch_size: int, rounding_ms: float,
                      init_ms: float | None = None, bill_init: bool = True) -> float:
    """One request's billed ms: its share of the batch's rounded execution, plus the rounded init
    when the request carries it (``init_ms`` not None) and the rule bills it."""
    billed = billed_ms(duration_ms, rounding_ms) / max(batch_size, 1)
    if init_ms is not None and bill_init:
        billed += billed_ms(init_ms, rounding_ms)
    return billed
