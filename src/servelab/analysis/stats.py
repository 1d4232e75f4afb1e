"""Confidence intervals for a configuration's runs, and rankings that only rank what they can tell apart.

One configuration is usually measured as a few repetitions (``repetitions: N`` in the experiment),
each a run of many requests. Both levels vary: requests within a run, and whole runs (a cold start
more or less, a neighbour on the machine). The intervals here come from a **two-level (cluster)
bootstrap**: each resample draws N runs with replacement, then each drawn run's requests with
replacement, and recomputes the statistic on the pooled resample. With one repetition it is a
plain request-level bootstrap and only says how precisely that one run was measured — it cannot
see run-to-run variation; :attr:`GroupIntervals.runs` says which case applies.

The request level is drawn without the raw latencies: a run is kept as its ok-latency quantiles
(:data:`servelab.analysis.report.CDF_PROBS`, fine in the tail), so a resample of its ``n`` ok
requests is a multinomial draw of ``n`` over the cells between those quantiles. The cost of a
resample is then independent of how many requests a run had (a million-request run costs what
a hundred-request run costs). Within a cell the latency is interpolated linearly.

- **Latency percentiles** (p50/p95/p99): of ok requests, pooled over the drawn runs.
- **Success ratio**: ok / all, pooled; a drawn run's ok count is Binomial(its count, its SR).
- **Cost per 1M requests**: the drawn runs' total USD / their total requests. A run's bill is not
  resampled request by request (an instance-hour bill does not depend on single requests), so
  with one repetition the cost interval is the point itself.

Intervals are percentile intervals (default 95 %) from :data:`DEFAULT_RESAMPLES` resamples with a
fixed seed, so a report is reproducible. Two configurations are **ranked apart only when their
intervals do not overlap** (a conservative test); otherwise they tie. With 3 repetitions a
bootstrap over runs is coarse — it cannot be wider than the spread of those 3 runs — so more
repetitions give more honest intervals, not just narrower ones.

Units: latencies ms (``*_ms``), money USD per million requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
PERCENTILES: tuple[int, ...] = (50, 95, 99)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (NaN throughout when nothing was measured)."""

    point: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    @property
    def known(self) -> bool:
        return math.isfinite(self.point)

    def separated_from(self, other: Interval) -> bool:
        """True when the two intervals do not overlap (an unknown interval separates from nothing)."""
        if not (self.known and other.known):
            return False
        return self.high < other.low or other.high < self.low

    def to_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high, "level": self.level}

    @staticmethod
    def unknown(level: float = DEFAULT_LEVEL) -> Interval:
        return Interval(math.nan, math.nan, math.nan, level)


@dataclass(frozen=True)
class RunSample:
    """What one run contributes: its ok-latency quantiles at ``probs``, its counts, its bill."""

    latency_quantiles_ms: np.ndarray  # ok requests at ``probs``; empty when no request was ok
    probs: np.ndarray
    ok: int
    count: int
    total_usd: float = math.nan  # NaN: not priced


@dataclass(frozen=True)
class GroupIntervals:
    """A configuration's intervals: latency percentiles, success ratio, cost per 1M requests."""

    latency_ms: dict[int, Interval]
    success_ratio: Interval
    per_million_usd: Interval
    runs: int  # repetitions behind the intervals (1: request-level only)
    resamples: int
    level: float = DEFAULT_LEVEL
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {"latency_ms": {f"p{p}": i.to_dict() for p, i in self.latency_ms.items()},
                "success_ratio": self.success_ratio.to_dict(),
                "per_million_usd": self.per_million_usd.to_dict(),
                "runs": self.runs, "resamples": self.resamples, "level": self.level, "notes": list(self.notes)}


def _pooled_cdf(samples: Sequence[RunSample], xs: np.ndarray) -> np.ndarray:
    """Fraction of the pooled ok requests at or below each of ``xs``, runs weighted by ok count."""
    weights = np.array([s.ok for s in samples], dtype=np.float64)
    cdfs = np.stack([np.interp(xs, s.latency_quantiles_ms, s.probs, left=0.0, right=1.0) for s in samples])
    pooled: np.ndarray = weights @ cdfs / weights.sum()
    return pooled


def _grid(samples: Sequence[RunSample]) -> np.ndarray:
    """Cell edges: the pooled distribution's quantiles at the runs' probabilities (one grid for all)."""
    xs = np.unique(np.concatenate([s.latency_quantiles_ms for s in samples]))
    if xs.size <= samples[0].probs.size:
        return xs
    pooled = _pooled_cdf(samples, xs)
    return np.unique(np.interp(samples[0].probs, pooled, xs))


def _quantiles_from_counts(counts: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Per row of cell ``counts`` (cell 0: at ``edges[0]``; cell k: (edges[k-1], edges[k]]), the
    latency at each fraction in ``qs`` by linear interpolation within its cell. Rows with no
    request give NaN."""
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1].astype(np.float64)
    lower = np.concatenate([[edges[0]], edges[:-1]])
    out = np.full((counts.shape[0], len(qs)), np.nan)
    rows = np.arange(counts.shape[0])
    for j, q in enumerate(qs):
        target = q * total
        k = np.minimum((cum < target[:, None]).sum(axis=1), counts.shape[1] - 1)
        before = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0)
        in_cell = counts[rows, k]
        frac = np.where(in_cell > 0, (target - before) / np.maximum(in_cell, 1), 0.0)
        value = lower[k] + np.clip(frac, 0.0, 1.0) * (edges[k] - lower[k])
        out[:, j] = np.where(total > 0, value, np.nan)
    return out


def _interval(point: float, values: np.ndarray, level: float) -> Interval:
    v = values[np.isfinite(values)]
    if not math.isfinite(point) or v.size == 0:
        return Interval.unknown(level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(v, [alpha, 1.0 - alpha])
    # the point estimate lies inside its interval even when a few resamples land on one side
    return Interval(point, float(min(low, point)), float(max(high, point)), level)


def group_intervals(samples: Sequence[RunSample], *, percentiles: Sequence[int] = PERCENTILES,
                    level: float = DEFAULT_LEVEL, resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> GroupIntervals:
    """Two-level bootstrap intervals for one configuration's runs (see the module docstring)."""
    if not samples:
        raise ValueError("group_intervals needs at least one run")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    n_runs = len(samples)
    count = np.array([s.count for s in samples], dtype=np.int64)
    ok = np.array([s.ok for s in samples], dtype=np.int64)
    usd = np.array([s.total_usd for s in samples], dtype=np.float64)
    notes: list[str] = []
    if n_runs == 1:
        notes.append("one repetition: the intervals are request-level only and cannot show run-to-run "
                     "variation (set repetitions: 3 or more)")

    # level 1: which runs each resample draws
    drawn = rng.integers(0, n_runs, size=(resamples, n_runs))
    # level 2: each drawn run's requests — first how many were ok ...
    sr_run = np.divide(ok, count, out=np.zeros(n_runs), where=count > 0)
    ok_drawn = rng.binomial(count[drawn], sr_run[drawn])
    count_drawn = count[drawn].sum(axis=1)
    total = count.sum()
    sr_point = ok.sum() / total if total else math.nan
    sr = _interval(sr_point, np.divide(ok_drawn.sum(axis=1), count_drawn,
                                       out=np.full(resamples, np.nan), where=count_drawn > 0), level)

    # ... then their latencies, as multinomial counts over one grid of cells
    with_latency = [i for i, s in enumerate(samples) if s.ok > 0 and s.latency_quantiles_ms.size]
    latency = {p: Interval.unknown(level) for p in percentiles}
    if with_latency:
        edges = _grid([samples[i] for i in with_latency])
        cell_p: dict[int, np.ndarray] = {}
        for i in with_latency:
            s = samples[i]
            cdf = np.interp(edges, s.latency_quantiles_ms, s.probs, left=0.0, right=1.0)
            p = np.diff(np.concatenate([[0.0], cdf]))
            p[-1] += max(0.0, 1.0 - cdf[-1])
            p = np.clip(p, 0.0, None)
            cell_p[i] = p / p.sum()
        pooled = np.zeros((resamples, edges.size), dtype=np.int64)
        for i in with_latency:
            rows, cols = np.nonzero(drawn == i)
            if rows.size:
                draws = rng.multinomial(ok_drawn[rows, cols], cell_p[i])
                np.add.at(pooled, rows, draws)
        qs = [p / 100.0 for p in percentiles]
        boot = _quantiles_from_counts(pooled, edges, qs)
        xs = np.unique(np.concatenate([samples[i].latency_quantiles_ms for i in with_latency]))
        cdf = _pooled_cdf([samples[i] for i in with_latency], xs)
        points = [float(np.interp(q, cdf, xs)) for q in qs]
        latency = {p: _interval(points[j], boot[:, j], level) for j, p in enumerate(percentiles)}

    if np.isfinite(usd).all() and total:
        cost_point = float(usd.sum() / total * 1e6)
        cost = _interval(cost_point, usd[drawn].sum(axis=1) / np.maximum(count_drawn, 1) * 1e6, level)
    else:
        cost = Interval.unknown(level)
    return GroupIntervals(latency_ms=latency, success_ratio=sr, per_million_usd=cost, runs=n_runs,
                          resamples=resamples, level=level, notes=tuple(notes))


# ------------------------------------------------------------------------------------ ranking


@dataclass(frozen=True)
class Ranked:
    """One item's place: ``rank`` 1 is best; ``ties`` are the items it cannot be told apart from."""

    name: str
    interval: Interval
    rank: int | None  # None: nothing measured
    ties: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        if self.rank is None:
            return "-"
        return f"{self.rank}" if not self.ties else f"tie ({self.rank})"


def rank(items: Sequence[tuple[str, Interval]], *, lower_is_better: bool = True) -> list[Ranked]:
    """Rank by point estimate, but only where intervals separate.

    An item's rank is 1 + the number of items whose interval lies entirely on the better side of
    its own; items whose intervals overlap are ties (and may share a rank). Returned best first.
    """
    sign = 1.0 if lower_is_better else -1.0
    known = [(n, i) for n, i in items if i.known]
    out = []
    for name, iv in known:
        better = sum(1 for _, o in known if o is not iv and o.separated_from(iv) and sign * o.point < sign * iv.point)
        ties = tuple(n for n, o in known if o is not iv and not o.separated_from(iv))
        out.append(Ranked(name, iv, 1 + better, ties))
    out.sort(key=lambda r: (r.rank, sign * r.interval.point))
    out += [Ranked(n, i, None) for n, i in items if not i.known]
    return out
