"""Keep-alive: how long an idle instance stays loaded, and whether to pre-warm one.

Two policies share one small interface (:class:`KeepAlivePolicy`):

* ``fixed`` — what the clouds do: keep an idle instance for ``keep_alive_s`` (AWS Lambda
  ~10 minutes, Azure Functions 20 minutes), then reclaim it.
* ``hybrid`` — the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
  (USENIX ATC'20): learn each function's idle times (ITs, the gaps between invocations)
  in a range-limited histogram; unload the instance right after an invocation, load a fresh
  one just before the next invocation is likely (the histogram's head, 5th percentile) and
  keep it until the next invocation is unlikely to come (the tail, 99th percentile).

Everything here is pure: a policy is a frozen dataclass of parameters; its per-function
state is a frozen dataclass that ``observe`` replaces; ``decide`` reads the state. Nothing
reads a clock (callers pass ``now_s``), nothing draws random numbers, nothing does I/O —
so the real platform and the discrete-event simulator call the very same code.

All times in this module are seconds (floats), on whatever clock the caller uses.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from servelab.errors import ConfigError

KeepAliveKind = Literal["fixed", "hybrid", "faascache", "scheduled"]
# "faascache" (policies/greedydual.py) and "scheduled" (policies/prewarm.py) register themselves in
# KEEPALIVE from the package's __init__ (they import this module, so it cannot import them).

# Elapsed-time comparisons use this tolerance so that float sums (0.1 + 0.2) or two clocks
# read a few nanoseconds apart never turn "exactly keep_alive_s" into "not yet".
# admission.py and batching.py use the same constant.
EPSILON_S = 1e-6


@dataclass(frozen=True)
class KeepAliveDecision:
    """What to do with a function's instance after its latest invocation.

    ``prewarm_after_s == 0.0``: keep the instance loaded after the invocation; reclaim it once
    it has been idle ``keep_alive_s``.
    ``prewarm_after_s > 0``: unload it as soon as it is idle (scale to zero) and load a fresh
    one at ``last_invocation_s + prewarm_after_s``; reclaim that one if it is still idle
    ``keep_alive_s`` after it became ready.
    """

    prewarm_after_s: float
    keep_alive_s: float


@runtime_checkable
class KeepAlivePolicy(Protocol):
    """A keep-alive policy: parameters only; per-function state lives outside it."""

    @property
    def kind(self) -> KeepAliveKind: ...

    def initial_state(self) -> Any: ...

    def observe(self, state: Any, *, now_s: float) -> Any:
        """An invocation arrived at ``now_s``: return the new state (the old one is untouched)."""
        ...

    def decide(self, state: Any) -> KeepAliveDecision: ...


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_duration(value: float) -> bool:
    """A usable duration: a non-negative number (infinity allowed), not NaN."""
    return isinstance(value, int | float) and not math.isnan(value) and value >= 0


# ---------------------------------------------------------------------------------------------
# fixed


@dataclass(frozen=True)
class FixedKeepAlive:
    """Keep every idle instance ``keep_alive_s`` seconds, never pre-warm (the clouds' default).

    ``keep_alive_s=0`` scales to zero as soon as an instance is idle; ``inf`` never does.
    """

    keep_alive_s: float = 600.0  # AWS Lambda keeps idle instances ~10 minutes
    kind: KeepAliveKind = field(default="fixed", init=False)

    def __post_init__(self) -> None:
        _check(_is_duration(self.keep_alive_s),
               "keep_alive_s must be a number of seconds >= 0 (inf: never reclaim), "
               f"got {self.keep_alive_s!r}")

    def initial_state(self) -> None:
        return None

    def observe(self, state: None, *, now_s: float) -> None:
        return None

    def decide(self, state: None) -> KeepAliveDecision:
        return KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=float(self.keep_alive_s))


# ---------------------------------------------------------------------------------------------
# hybrid histogram (Shahrad et al., ATC'20)


@dataclass(frozen=True)
class HistogramState:
    """One function's idle-time history, as the hybrid policy keeps it.

    ``bins`` is sparse: sorted ``(bin index, count)`` pairs for non-empty bins only, so a
    fine histogram (1 s bins over 4 hours = 14,400 bins) costs only the bins actually hit.
    """

    last_invocation_s: float | None = None
    bins: tuple[tuple[int, int], ...] = ()
    in_range: int = 0  # ITs that landed in the histogram
    out_of_range: int = 0  # ITs >= range_s
    recent_out_of_range_s: tuple[float, ...] = ()  # the latest out-of-range ITs, oldest first

    @property
    def samples(self) -> int:
        return self.in_range + self.out_of_range


HybridMode = Literal["fallback", "histogram", "forecast"]


@dataclass(frozen=True)
class HybridHistogramKeepAlive:
    """The hybrid histogram keep-alive policy (Shahrad et al., USENIX ATC'20, section 4.2).

    Defaults are the paper's values where the paper gives one; bin width and range are
    parameters so local experiments can work in seconds instead of minutes.

    * ``bin_s`` — histogram bin width. Paper: 1 minute.
    * ``range_s`` — histogram range; ITs at or beyond it are "out of range". Paper: 4 hours.
    * ``head_percentile`` / ``tail_percentile`` — the IT distribution's head and tail.
      Paper: 5th and 99th percentiles.
    * ``margin`` — safety margin: the pre-warm window is the head reduced by it, the window's
      end is the tail increased by it. Paper: 10%.
    * ``cv_threshold`` — the histogram is representative only if the coefficient of variation
      of its bin counts reaches this (a few tall bins, not an even smear). 2, as in the public
      reproductions we read (the OpenWhisk and dslab-faas implementations of the paper).
    * ``min_samples`` — fewer ITs than this and the histogram is not representative yet.
      The paper says "too few ITs" without a number; 10 is ours.
    * ``out_of_range_threshold`` — when at least this fraction of ITs fell out of range, the
      paper forecasts the next IT with ARIMA instead. The paper gives no number we could cite;
      0.5 is ours (the dslab-faas reproduction uses the same).
    * ``forecast_margin`` — margin around the forecast IT: pre-warm at forecast × (1 − m) and
      keep alive 2 × m × forecast. Paper: 15%.
    * ``forecast_window`` — our stand-in for ARIMA predicts the next IT as the median of the
      latest ``forecast_window`` out-of-range ITs (a simplification, see docs/policies.md).
    * ``fallback_keep_alive_s`` — the "standard keep-alive" used while the histogram is not
      representative (pre-warm 0, keep this long). None: ``range_s``, as the paper does.
    * ``min_prewarm_s`` — ours, 0 (off) by default: a pre-warm window shorter than this is
      treated as 0 (keep the instance loaded), because unloading and reloading within a
      couple of seconds costs a cold start for nothing when windows are seconds, not minutes.
    """

    bin_s: float = 60.0
    range_s: float = 4 * 3600.0
    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    margin: float = 0.10
    cv_threshold: float = 2.0
    min_samples: int = 10
    out_of_range_threshold: float = 0.5
    forecast_margin: float = 0.15
    forecast_window: int = 5
    fallback_keep_alive_s: float | None = None
    min_prewarm_s: float = 0.0
    kind: KeepAliveKind = field(default="hybrid", init=False)

    def __post_init__(self) -> None:
        _check(_is_duration(self.bin_s) and 0 < self.bin_s < math.inf,
               f"bin_s must be a finite number of seconds > 0, got {self.bin_s!r}")
        _check(_is_duration(self.range_s) and self.bin_s <= self.range_s < math.inf,
               f"range_s must be finite and >= bin_s ({self.bin_s}), got {self.range_s!r}")
        _check(0 <= self.head_percentile <= self.tail_percentile <= 100,
               "need 0 <= head_percentile <= tail_percentile <= 100, got "
               f"head_percentile={self.head_percentile!r}, tail_percentile={self.tail_percentile!r}")
        _check(0 <= self.margin < 1, f"margin is a fraction in [0, 1), got {self.margin!r}")
        _check(0 <= self.forecast_margin < 1,
               f"forecast_margin is a fraction in [0, 1), got {self.forecast_margin!r}")
        _check(self.cv_threshold >= 0, f"cv_threshold must be >= 0, got {self.cv_threshold!r}")
        _check(isinstance(self.min_samples, int) and self.min_samples >= 1,
               f"min_samples must be an integer >= 1, got {self.min_samples!r}")
        _check(0 < self.out_of_range_threshold <= 1,
               f"out_of_range_threshold is a fraction in (0, 1], got {self.out_of_range_threshold!r}")
        _check(isinstance(self.forecast_window, int) and self.forecast_window >= 1,
               f"forecast_window must be an integer >= 1, got {self.forecast_window!r}")
        _check(self.fallback_keep_alive_s is None or _is_duration(self.fallback_keep_alive_s),
               f"fallback_keep_alive_s must be None (use range_s) or seconds >= 0, "
               f"got {self.fallback_keep_alive_s!r}")
        _check(_is_duration(self.min_prewarm_s),
               f"min_prewarm_s must be seconds >= 0, got {self.min_prewarm_s!r}")

    @property
    def n_bins(self) -> int:
        # A range that is not a whole number of bins gets a last, partial bin.
        return max(1, math.ceil(self.range_s / self.bin_s - EPSILON_S))

    def initial_state(self) -> HistogramState:
        return HistogramState()

    def observe(self, state: HistogramState, *, now_s: float) -> HistogramState:
        """Record the IT since the previous invocation (none for the first one).

        An invocation reported out of order (``now_s`` before the latest one, as concurrent
        callers can do) counts as an IT of 0 and does not move the latest time back.
        """
        last = state.last_invocation_s
        if last is None:
            return dataclasses.replace(state, last_invocation_s=now_s)
        idle_s = max(0.0, now_s - last)
        new_last = max(last, now_s)
        if idle_s >= self.range_s:
            recent = (*state.recent_out_of_range_s, idle_s)[-self.forecast_window:]
            return dataclasses.replace(state, last_invocation_s=new_last, out_of_range=state.out_of_range + 1,
                                       recent_out_of_range_s=recent)
        index = min(int(idle_s // self.bin_s), self.n_bins - 1)
        return dataclasses.replace(state, last_invocation_s=new_last, in_range=state.in_range + 1,
                                   bins=_add_to_bin(state.bins, index))

    def mode(self, state: HistogramState) -> HybridMode:
        """Which branch of the policy applies to this state (for decisions and for reports)."""
        if state.samples < self.min_samples:
            return "fallback"
        if state.out_of_range / state.samples >= self.out_of_range_threshold:
            return "forecast"
        if state.in_range == 0 or bin_count_cv(state.bins, self.n_bins) < self.cv_threshold:
            return "fallback"
        return "histogram"

    def decide(self, state: HistogramState) -> KeepAliveDecision:
        mode = self.mode(state)
        if mode == "fallback":
            fallback_s = self.range_s if self.fallback_keep_alive_s is None else self.fallback_keep_alive_s
            return KeepAliveDecision(prewarm_after_s=0.0, keep_alive_s=float(fallback_s))
        if mode == "forecast":
            # Stand-in for the paper's ARIMA: the median of the latest out-of-range ITs.
            predicted_s = statistics.median(state.recent_out_of_range_s)
            start_s = predicted_s * (1 - self.forecast_margin)
            end_s = predicted_s * (1 + self.forecast_margin)
        else:
            head_s = _percentile_bin(state.bins, state.in_range, self.head_percentile) * self.bin_s
            tail_s = (_percentile_bin(state.bins, state.in_range, self.tail_percentile) + 1) * self.bin_s
            start_s = head_s * (1 - self.margin)
            end_s = tail_s * (1 + self.margin)
        if start_s < self.min_prewarm_s:
            start_s = 0.0
        return KeepAliveDecision(prewarm_after_s=start_s, keep_alive_s=end_s - start_s)


def _add_to_bin(bins: tuple[tuple[int, int], ...], index: int) -> tuple[tuple[int, int], ...]:
    for position, (bin_index, count) in enumerate(bins):
        if bin_index == index:
            return (*bins[:position], (index, count + 1), *bins[position + 1:])
        if bin_index > index:
            return (*bins[:position], (index, 1), *bins[position:])
    return (*bins, (index, 1))


def _percentile_bin(bins: tuple[tuple[int, int], ...], total: int, percentile: float) -> int:
    """The first bin at which the cumulative count reaches ``percentile`` % of ``total``."""
    cumulative = 0
    for index, count in bins:
        cumulative += count
        if cumulative * 100 >= percentile * total:
            return index
    return bins[-1][0]


def bin_count_cv(bins: tuple[tuple[int, int], ...], n_bins: int) -> float:
    """Coefficient of variation (population std / mean) of the counts over all ``n_bins`` bins.

    Every IT in one bin gives sqrt(n_bins - 1) (240 bins: 15.5); an even smear gives 0.
    Note a histogram of fewer than 5 bins can never reach the paper's threshold of 2.
    """
    total = sum(count for _, count in bins)
    if total == 0:
        return 0.0
    mean = total / n_bins
    variance = sum(count * count for _, count in bins) / n_bins - mean * mean
    return math.sqrt(max(0.0, variance)) / mean


# ---------------------------------------------------------------------------------------------
# registry and helpers

KEEPALIVE: dict[KeepAliveKind, type] = {
    "fixed": FixedKeepAlive,
    "hybrid": HybridHistogramKeepAlive,
}


def make_keepalive(kind: KeepAliveKind, **params: Any) -> KeepAlivePolicy:
    """Build a policy by name; ConfigError for an unknown kind or parameter, listing the allowed ones."""
    if kind not in KEEPALIVE:
        raise ConfigError(f"unknown keep-alive policy {kind!r}; choose one of: {', '.join(KEEPALIVE)}")
    cls: Any = KEEPALIVE[kind]
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for keep-alive policy {kind!r}; "
                          f"allowed: {', '.join(allowed)}")
    policy: KeepAlivePolicy = cls(**params)
    return policy


def keepalive_from(kind: KeepAliveKind, keep_alive_s: float, params: dict[str, Any] | None = None) -> KeepAlivePolicy:
    """The policy a function's settings describe; for ``hybrid``, ``keep_alive_s`` is its fallback."""
    params = dict(params or {})
    if kind == "hybrid":
        return make_keepalive("hybrid", **{"fallback_keep_alive_s": keep_alive_s, **params})
    return make_keepalive(kind, keep_alive_s=keep_alive_s, **params)


def should_reclaim(*, idle_since_s: float, now_s: float, keep_alive_s: float, provisioned: bool,
                   busy: bool) -> bool:
    """Whether an instance idle since ``idle_since_s`` should be reclaimed at ``now_s``.

    Never a busy instance (reclaiming one mid-execution is the OpenFaaS 502 bug) and never a
    provisioned one (provisioned concurrency is paid to stay warm). Elapsed time is compared
    with ``EPSILON_S`` of slack, so a check at exactly ``keep_alive_s`` reclaims.
    """
    if busy or provisioned:
        return False
    return now_s - idle_since_s >= keep_alive_s - EPSILON_S


def prewarm_at_s(decision: KeepAliveDecision, *, last_invocation_s: float) -> float | None:
    """When to load a pre-warmed instance after an invocation at ``last_invocation_s``.

    None when the decision keeps the instance loaded instead (``prewarm_after_s == 0``).
    """
    if decision.prewarm_after_s <= 0.0:
        return None
    return last_invocation_s + decision.prewarm_after_s
