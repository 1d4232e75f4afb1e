"""Capacity: the highest arrival rate a target serves within a latency bound (MLPerf LoadGen style).

A rate *passes* when its run's p99 latency (of ``ok`` requests) is at most ``p99_ms`` and its
success ratio is at least ``min_sr``. The search is a bounded series of short runs:

1. **Bracket** — start at ``lo``; while it passes, multiply the rate by ``growth`` (up to
   ``hi``); if ``lo`` itself fails, divide by ``growth`` until a rate passes. This finds a
   passing rate ``a`` and a failing rate ``b``.
2. **Bisect** — try the geometric middle of ``[a, b]`` until ``b / a - 1 <= rel_tol`` or the
   run budget ``max_runs`` is spent.

The answer is the highest passing rate found. The search is decoupled from targets: it only
calls ``run_at_rate(rate) -> records table``, so it works the same for the local platform, a
cloud function, the simulator or a pure function in a test.

A short run's p99 is noisy. The result carries a plain-words ``confidence`` note: whether the
bracket reached the tolerance, how many requests the deciding runs had (a p99 from fewer than
100 requests is nearly the maximum), and whether the runs were inconsistent (a higher rate
passed where a lower one failed, so noise is larger than the tolerance).

Units: rates in requests per second (``*_rps`` / ``rate``), latencies in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from servelab.analysis.metrics import summarize
from servelab.errors import ConfigError

MIN_REQUESTS_FOR_P99 = 100


@dataclass(frozen=True)
class CapacityRun:
    rate: float
    passed: bool
    p99_ms: float | None
    success_ratio: float | None
    count: int
    throughput_rps: float
    generator_behind: bool


@dataclass
class CapacityResult:
    rate: float | None  # highest passing rate; None when nothing passed
    bracket: tuple[float | None, float | None]  # (highest pass, lowest fail above it)
    runs: list[CapacityRun] = field(default_factory=list)
    converged: bool = False
    confidence: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(table: pa.Table, rate: float, *, p99_ms: float, min_sr: float) -> CapacityRun:
    """Pass/fail of one run at ``rate`` against the bound."""
    s = summarize(table)
    p99 = s.latency_ms["p99"] if s.latency_ms else None
    sr = s.success_ratio
    passed = s.count > 0 and p99 is not None and p99 <= p99_ms and sr is not None and sr >= min_sr
    return CapacityRun(rate=rate, passed=passed, p99_ms=p99, success_ratio=sr, count=s.count,
                       throughput_rps=s.throughput_rps, generator_behind=s.generator_behind)


def find_capacity(run_at_rate: Callable[[float], pa.Table], *, p99_ms: float, min_sr: float = 0.99,
                  lo: float = 1.0, hi: float = 100_000.0, growth: float = 2.0, rel_tol: float = 0.05,
                  max_runs: int = 12, confirm: bool = False,
                  on_run: Callable[[CapacityRun], None] | None = None) -> CapacityResult:
    """Search for the highest rate in ``[lo / growth**k, hi]`` that meets the bound.

    ``confirm`` spends one more run (beyond ``max_runs``) repeating the answer; a repeat that
    fails is reported in ``confidence`` rather than hidden.
    """
    if not (0 < lo <= hi):
        raise ConfigError(f"need 0 < lo <= hi, got lo={lo}, hi={hi}")
    if growth <= 1:
        raise ConfigError(f"growth must be above 1, got {growth}")
    if not (0 < rel_tol < 1):
        raise ConfigError(f"rel_tol must be in (0, 1), got {rel_tol}")
    if max_runs < 2:
        raise ConfigError(f"max_runs must be at least 2, got {max_runs}")
    if p99_ms <= 0 or not (0 <= min_sr <= 1):
        raise ConfigError("p99_ms must be positive and min_sr in [0, 1]")
    runs: list[CapacityRun] = []

    def trial(rate: float) -> bool:
        r = judge(run_at_rate(rate), rate, p99_ms=p99_ms, min_sr=min_sr)
        runs.append(r)
        if on_run is not None:
            on_run(r)
        return r.passed

    good: float | None = None
    bad: float | None = None
    rate = lo
    # 1. bracket
    if trial(rate):
        good = rate
        while len(runs) < max_runs and good < hi:
            rate = min(good * growth, hi)
            if trial(rate):
                good = rate
            else:
                bad = rate
                break
    else:
        bad = rate
        while len(runs) < max_runs:
            rate = bad / growth
            if trial(rate):
                good = rate
                break
            bad = rate
    # 2. bisect
    while good is not None and bad is not None and bad / good - 1 > rel_tol and len(runs) < max_runs:
        rate = math.sqrt(good * bad)
        if trial(rate):
            good = rate
        else:
            bad = rate

    if confirm and good is not None:
        trial(good)
    converged = good is not None and ((bad is None and good >= hi)
                                      or (bad is not None and bad / good - 1 <= rel_tol))
    result = CapacityResult(rate=good, bracket=(good, bad), runs=runs, converged=converged,
                            settings={"p99_ms": p99_ms, "min_sr": min_sr, "lo": lo, "hi": hi,
                                      "growth": growth, "rel_tol": rel_tol, "max_runs": max_runs})
    result.confidence = _confidence(result, hi)
    return result


def _confidence(res: CapacityResult, hi: float) -> str:
    good, bad = res.bracket
    notes: list[str] = []
    if good is None:
        notes.append(f"no rate passed (lowest tried {min(r.rate for r in res.runs):.3g} rps)")
    elif bad is None:
        notes.append(f"passes at the highest rate allowed ({hi:g} rps): capacity is at least that")
    elif res.converged:
        notes.append(f"bracketed to {100 * (bad / good - 1):.1f}% ({good:.4g}–{bad:.4g} rps)")
    else:
        notes.append(f"run budget spent before the tolerance: capacity is between {good:.4g} and "
                     f"{bad:.4g} rps")
    deciding = [r for r in res.runs if r.rate in (good, bad)]
    few = [r for r in deciding if r.count < MIN_REQUESTS_FOR_P99]
    if few:
        notes.append(f"deciding runs had as few as {min(r.count for r in few)} requests "
                     f"(<{MIN_REQUESTS_FOR_P99}: p99 is close to the max); use longer runs")
    passed = [r.rate for r in res.runs if r.passed]
    failed = [r.rate for r in res.runs if not r.passed and r.rate != good]
    if passed and failed and max(passed) > min(failed):
        notes.append(f"inconsistent: {max(passed):.4g} rps passed but {min(failed):.4g} rps failed; "
                     "noise is larger than the tolerance, use longer runs")
    repeats = [r for r in res.runs if r.rate == good]
    if len(repeats) > 1 and not all(r.passed for r in repeats):
        notes.append(f"{good:.4g} rps did not pass again on a repeat run: the answer is optimistic")
    if any(r.generator_behind for r in res.runs if r.rate in (good, bad)):
        notes.append("the generator fell behind its schedule in a deciding run (a busy machine, or "
                     "too few generator processes)")
    return "; ".join(notes)
