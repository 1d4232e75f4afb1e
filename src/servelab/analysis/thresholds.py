"""Pass/fail thresholds on a run, k6-style: ``--threshold 'p95<200ms' --threshold 'errors<1%'``.

A threshold is ``METRIC OP VALUE`` (spaces allowed), judged on one run's summary
(:meth:`servelab.analysis.metrics.RunSummary.flat`, or a ``summary`` line of ``DIR/summary.json``):

=============================  ================================================  =================
metric                         what                                              value
=============================  ================================================  =================
``p50 p90 p95 p99 mean max``   latency of ok requests, from the scheduled time   ``200ms``, ``0.2s``
                                                                                 (a bare number: ms)
``errors``                     share of requests that were not ok (any status)   ``1%``
``throttled`` ``timeouts``     share of requests throttled / timed out           ``0.5%``
``sr``                         success ratio: ok / all requests                  ``99%``
=============================  ================================================  =================

``OP`` is one of ``< <= > >=``. Rates take a ``%`` so ``errors<1`` cannot be misread. A latency
threshold on a run with no ok request fails (there is no latency to meet it with).

Besides the thresholds asked for, one is always applied unless turned off: **a run whose every
request failed fails** (a load test that measured nothing but errors is not a pass).

Exit status: :data:`EXIT_BREACHED` (99, as k6) when any threshold fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from servelab.errors import ConfigError

EXIT_BREACHED = 99

LatencyMetric = Literal["p50", "p90", "p95", "p99", "mean", "max"]
RateMetric = Literal["errors", "throttled", "timeouts", "sr"]
LATENCY_KEYS: dict[str, str] = {m: f"latency_{m}_ms" for m in ("p50", "p90", "p95", "p99", "mean", "max")}
RATE_METRICS: tuple[str, ...] = ("errors", "throttled", "timeouts", "sr")
OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge,
                                                  "<": operator.lt, ">": operator.gt}
_FORM = re.compile(r"^\s*([a-z0-9]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|%)?\s*$",
                   re.IGNORECASE)


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold. ``value`` is in ms for latencies and a fraction (0..1) for rates."""

    metric: str
    op: str
    value: float
    text: str

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY_KEYS

    def shown(self, x: float) -> str:
        return f"{x:.1f} ms" if self.is_latency else f"{x:.2%}"


@dataclass(frozen=True)
class Verdict:
    """A threshold judged on one run: what was observed and whether it passed."""

    threshold: str
    observed: str
    passed: bool
    run: str = ""

    def line(self) -> str:
        where = f"{self.run}: " if self.run else ""
        return f"{'pass' if self.passed else 'FAIL'}  {where}{self.threshold}  (observed {self.observed})"


ALL_FAILED = "at least one request ok"


def parse_threshold(text: str) -> Threshold:
    """``'p95<200ms'`` → Threshold; a :class:`ConfigError` that shows the form otherwise."""
    m = _FORM.match(text or "")
    allowed = ", ".join([*LATENCY_KEYS, *RATE_METRICS])
    if not m:
        raise ConfigError(f"threshold {text!r}: expected METRIC OP VALUE, e.g. 'p95<200ms', 'errors<1%', "
                          f"'sr>=99.9%' (metrics: {allowed}; OP: <, <=, >, >=)")
    metric, op, number, unit = m.group(1).lower(), m.group(2), float(m.group(3)), (m.group(4) or "").lower()
    if metric in LATENCY_KEYS:
        if unit == "%":
            raise ConfigError(f"threshold {text!r}: {metric} is a latency; give it in ms or s (e.g. '{metric}<200ms')")
        value = number * 1000.0 if unit == "s" else number
    elif metric in RATE_METRICS:
        if unit != "%":
            raise ConfigError(f"threshold {text!r}: {metric} is a share of requests; give it in percent "
                              f"(e.g. '{metric}{op}1%')")
        if number > 100:
            raise ConfigError(f"threshold {text!r}: a share of requests is at most 100%")
        value = number / 100.0
    else:
        raise ConfigError(f"threshold {text!r}: unknown metric {metric!r}; use one of {allowed}")
    return Threshold(metric=metric, op=op, value=value, text=text.strip().replace(" ", ""))


def parse_thresholds(texts: Iterable[str] | None) -> list[Threshold]:
    """Every ``--threshold``, parsed before anything runs (a typo must not cost a whole run)."""
    return [parse_threshold(t) for t in texts or ()]


def _observed(summary: Mapping[str, Any], t: Threshold) -> float:
    count = int(summary.get("count") or 0)
    if t.is_latency:
        v = summary.get(LATENCY_KEYS[t.metric])
        return float(v) if v is not None else math.nan
    if count == 0:
        return math.nan
    ok = int(summary.get("n_ok") or 0)
    share = {"errors": (count - ok) / count, "sr": ok / count,
             "throttled": int(summary.get("n_throttled") or 0) / count,
             "timeouts": int(summary.get("n_timeout") or 0) / count}
    return share[t.metric]


def evaluate(summary: Mapping[str, Any], thresholds: Sequence[Threshold], *, fail_if_all_failed: bool = True,
             run: str = "") -> list[Verdict]:
    """Judge one run's flat summary: a verdict per threshold, and the all-failed rule first."""
    out: list[Verdict] = []
    count = int(summary.get("count") or 0)
    ok = int(summary.get("n_ok") or 0)
    if fail_if_all_failed and count > 0:
        out.append(Verdict(ALL_FAILED + " (default)", f"{ok:,} of {count:,} ok", ok > 0, run))
    for t in thresholds:
        x = _observed(summary, t)
        if math.isnan(x):
            what = "no successful request" if t.is_latency else "no request"
            out.append(Verdict(t.text, what, False, run))
        else:
            out.append(Verdict(t.text, t.shown(x), OPS[t.op](x, t.value), run))
    return out


def breached(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if not v.passed]


def exit_code(verdicts: Sequence[Verdict], say: Callable[[str], None], *, show_passes: bool = True) -> int:
    """Print the verdicts with ``say`` (passes only when ``show_passes``; breaches last, so they end
    the output) and return the exit status: 0 when all passed, :data:`EXIT_BREACHED` otherwise."""
    bad = breached(verdicts)
    for v in [v for v in verdicts if v.passed and show_passes] + bad:
        say(v.line())
    if bad:
        say(f"{len(bad)} threshold(s) breached: exit {EXIT_BREACHED}")
        return EXIT_BREACHED
    return 0
