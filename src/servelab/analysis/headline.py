"""The report's first sentence: the answer, with its uncertainty, for one load.

"For this workload, X meets p95 <= S ms at $Y per 1M requests, Z times cheaper than W."

Rules, all on the bootstrap intervals of :mod:`servelab.analysis.stats`:

- A configuration *meets* the objective when its success ratio reaches the report's minimum and
  the **upper** end of its p95 interval is at or below ``S`` (it meets it with confidence, not
  by luck of one run).
- X is the cheapest configuration that meets it (by cost per 1M requests; ties are said).
- W, the comparison, is the cheapest configuration of a *different target* (the study's question
  is serverless vs server vs managed), else the next cheapest configuration. When the cost
  intervals of X and W overlap the sentence says "a cost tie" instead of a ratio; when W is
  cheaper but misses the objective the sentence says so.
- Without an objective (``slo_p95_ms`` None), S is the upper end of X's own p95 interval, X is
  the cheapest configuration that reached the minimum success ratio, and the sentence says that
  no objective was given.
- Without prices, the sentence names the lowest p95 instead, with its ties.
- Intervals pool each configuration's repetitions, and repetitions differ in their arrivals
  (seed + r), so a workload whose realisations differ a lot gives wide intervals and ties. The
  targets of one repetition saw the *same* arrivals, though: a second sentence gives that paired
  view, "by repetition (the same arrivals), X's p95 was lower than W's in k of n". It counts,
  it does not test: with 3 repetitions even 3 of 3 happens by chance one time in four.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from servelab.analysis.stats import Interval

if TYPE_CHECKING:
    from servelab.analysis.report import ConfigGroup


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else (f"{x:.1f}" if x < 1000 else f"{x:,.0f}")


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 0.995 else f"${x:.3g}"


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _ci(iv: Interval, fmt: Any) -> str:
    return f"{fmt(iv.point)} [{fmt(iv.low)}–{fmt(iv.high)}]"


def _target(g: ConfigGroup) -> str:
    return str(g.runs[0].config.get("target") or g.label)


def _p95(g: ConfigGroup) -> Interval:
    return g.intervals.latency_ms.get(95, Interval.unknown()) if g.intervals else Interval.unknown()


def _cost(g: ConfigGroup) -> Interval:
    return g.intervals.per_million_usd if g.intervals else Interval.unknown()


def _paired(a: ConfigGroup, b: ConfigGroup) -> str:
    """"By repetition (the same arrivals), A's p95 was lower than B's in k of n." ("" if no pairs)."""
    def key(r: object) -> object:
        cfg = r.config  # type: ignore[attr-defined]
        return cfg.get("repetition", cfg.get("seed"))

    b_runs = {key(r): r for r in b.runs if key(r) is not None}
    pairs = [(r.p95_ms, b_runs[key(r)].p95_ms) for r in a.runs if key(r) in b_runs]
    pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return ""
    lower = sum(1 for x, y in pairs if x < y)
    return (f" By repetition (the same arrivals), {a.label}'s p95 was lower than {b.label}'s in {lower} of "
            f"{len(pairs)}.")


def headline(groups: Sequence[ConfigGroup], *, scenario: str = "", slo_p95_ms: float | None = None) -> str:
    """The sentence for the configurations that faced one load (one scenario of the report)."""
    where = f"For workload {scenario}" if scenario else "For this workload"
    measured = [g for g in groups if _p95(g).known]
    if not measured:
        return f"{where}, no configuration completed a request: there is no latency to compare."
    eligible = [g for g in measured if g.eligible]
    if not eligible:
        best = max(measured, key=lambda g: g.success_ratio)
        return (f"{where}, no configuration reached the minimum success ratio; the best was {best.label} "
                f"at {_ci(best.intervals.success_ratio, _pct) if best.intervals else '-'} ok.")
    priced = [g for g in eligible if _cost(g).known]
    if not priced:
        best = min(eligible, key=lambda g: _p95(g).point)
        ties = [g.label for g in eligible if g is not best and not _p95(g).separated_from(_p95(best))]
        tie = f" (a tie with {', '.join(ties)}: the intervals overlap)" if ties else ""
        return f"{where}, {best.label} has the lowest p95, {_ci(_p95(best), _ms)} ms{tie}; no run was priced."

    if slo_p95_ms is not None:
        meets = [g for g in priced if _p95(g).high <= slo_p95_ms]
        if not meets:
            best = min(eligible, key=lambda g: _p95(g).point)
            cost = f" at {_usd(_cost(best).point)} per 1M requests" if _cost(best).known else ""
            rivals = [g for g in eligible if g is not best and _target(g) != _target(best)]
            paired = _paired(best, min(rivals, key=lambda g: _p95(g).point)) if rivals else ""
            return (f"{where}, no configuration meets p95 <= {_ms(slo_p95_ms)} ms with 95% confidence; the lowest "
                    f"p95 is {best.label}'s, {_ci(_p95(best), _ms)} ms{cost}.{paired}")
        objective = f"p95 <= {_ms(slo_p95_ms)} ms"
        note = ""
    else:
        meets = priced
        note = " (no objective set, so the bound is its own p95's upper end; set slo_p95_ms or --slo-ms)"
    x = min(meets, key=lambda g: _cost(g).point)
    if slo_p95_ms is None:
        objective = f"p95 <= {_ms(_p95(x).high)} ms"
    others = [g for g in priced if g is not x]
    different = [g for g in others if _target(g) != _target(x)]
    w = min(different or others, key=lambda g: _cost(g).point) if others else None
    # other configurations that meet it as cheaply (W, if one of them, is named below instead)
    x_ties = [g.label for g in meets if g is not x and g is not w and not _cost(g).separated_from(_cost(x))]
    tie_x = f" (a cost tie with {', '.join(x_ties)})" if x_ties else ""
    lead = f"{where}, {x.label} meets {objective} at {_usd(_cost(x).point)} per 1M requests{tie_x}"
    if w is None:
        return lead + note + "; it is the only priced configuration."
    wp95 = f"p95 {_ci(_p95(w), _ms)} ms"
    misses = ""
    if slo_p95_ms is not None and w not in meets:
        misses = "misses it" if _p95(w).low > slo_p95_ms else "does not meet it with confidence"
    if _cost(w).separated_from(_cost(x)):
        ratio = _cost(w).point / _cost(x).point if _cost(x).point > 0 else math.inf
        if ratio >= 1:
            return (f"{lead}, {ratio:.3g} times cheaper than {w.label} ({_usd(_cost(w).point)} per 1M, "
                    f"{wp95}{', which ' + misses if misses else ''}){note}.{_paired(x, w)}")
        # only with an objective: X is the cheapest that meets it, so a cheaper W does not
        return (f"{lead}{note}; {w.label} is {1 / ratio:.3g} times cheaper ({_usd(_cost(w).point)} per 1M) "
                f"but {misses or 'does not meet it'} ({wp95}).{_paired(x, w)}")
    return (f"{lead}, a cost tie with {w.label} ({_usd(_cost(w).point)} per 1M, {wp95}; the cost intervals "
            f"overlap){note}.{_paired(x, w)}")

