"""Generate arrival times from a spec, vectorised with numpy.

Every random kind is one method: draw a unit-rate Poisson process on the "expected count" axis
(cumulative sum of standard exponentials), then map each point back to time through the inverse
of the cumulative rate Λ(t) = ∫₀ᵗ λ(s) ds. By the time-change theorem this gives exactly a Poisson
process with rate λ(t). For piecewise-constant rates (Poisson, step, on-off, MMPP given its
state path) it is the same distribution as "Poisson(rate x length) arrivals per piece, placed
as uniform order statistics", but needs no sort: O(n) passes over the output only.

Units: seconds for times, requests per second for rates. Output times are float64, sorted, in
``[0, duration_s)``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from servelab.errors import WorkloadError
from servelab.workload import mmpp, trace
from servelab.workload.spec import (
    ArrivalKind,
    ConstantSpec,
    MMPPSpec,
    OnOffSpec,
    PoissonSpec,
    RampSpec,
    StepSpec,
    TraceSpec,
    WorkloadSpec,
)

MAX_ARRIVALS = 200_000_000  # 1.6 GB of float64 times: beyond this a run is a typo, not a workload


@dataclass(frozen=True, eq=False)  # arrays do not compare with ==; identity is what is meaningful
class Arrivals:
    """Arrival times of one generated workload.

    ``states`` (per arrival) and ``state_path`` (``(switch_times_s, states)``: the hidden chain
    enters ``states[k]`` at ``switch_times_s[k]``) are set for MMPP only. ``seed`` is the seed
    that reproduces these arrays (drawn at random when ``generate`` got none).
    """

    times_s: np.ndarray
    states: np.ndarray | None
    duration_s: float
    state_path: tuple[np.ndarray, np.ndarray] | None
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.times_s.size)

    def rate_series(self, bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Arrivals per second in consecutive bins of ``bin_s`` seconds: (bin starts, rates).
        The last bin may be shorter than ``bin_s``; its rate is divided by its real width."""
        if not bin_s > 0:
            raise WorkloadError(f"bin_s must be > 0; got {bin_s}")
        starts = np.arange(0.0, self.duration_s, bin_s)
        edges = np.append(starts, self.duration_s)
        counts = np.diff(np.searchsorted(self.times_s, edges, side="left"))
        return starts, counts / np.diff(edges)

    def time_in_state_s(self, n_states: int) -> np.ndarray:
        """Seconds the hidden chain spent in each state (MMPP only)."""
        if self.state_path is None:
            raise WorkloadError("time_in_state_s needs an MMPP workload (no hidden states here)")
        switch_s, states = self.state_path
        lengths = np.diff(np.append(switch_s, self.duration_s))
        return np.bincount(states, weights=lengths, minlength=n_states)


def generate(spec: WorkloadSpec, *, duration_s: float | None = None, seed: int | None = None) -> Arrivals:
    """Draw one realisation of ``spec`` over ``duration_s`` (default: the spec's own).

    The same spec, duration and seed always give the same arrays. Without a seed one is drawn
    and recorded in ``Arrivals.seed`` so the run can be reproduced.
    """
    horizon_s = spec.duration_s if duration_s is None else float(duration_s)
    if not (np.isfinite(horizon_s) and horizon_s > 0):
        raise WorkloadError(f"duration_s must be a finite number > 0; got {duration_s}")
    seed = secrets.randbits(63) if seed is None else int(seed)
    expected = _expected_count(spec, horizon_s)
    if expected > MAX_ARRIVALS:
        raise WorkloadError(
            f"{spec.kind} over {horizon_s:g} s would give about {expected:.3g} arrivals (limit "
            f"{MAX_ARRIVALS:.0e}); shorten the duration or lower the rate"
        )
    if isinstance(spec, MMPPSpec) and spec.requests is not None:
        return _first_requests(spec, spec.requests, seed)
    rng = np.random.default_rng(seed)
    times_s, states, path = _GENERATORS[spec.kind](spec, horizon_s, rng)
    return Arrivals(times_s=times_s, states=states, duration_s=horizon_s, state_path=path, seed=seed)


def _first_requests(spec: MMPPSpec, n: int, seed: int) -> Arrivals:
    """Exactly the first ``n`` arrivals, however long they take (a spec sized by ``requests``).

    The process is drawn over a horizon expected to hold them (plus margin) and redrawn, from the
    same seed, over a doubled horizon in the rare case it held fewer; so the result depends only
    on the spec and the seed. The duration ends just after the n-th arrival.
    """
    horizon_s = max(spec.duration_s * 1.25, 1.0)
    while True:
        rng = np.random.default_rng(seed)
        times_s, states, path = _mmpp(spec, horizon_s, rng)
        if times_s.size >= n and path is not None:
            break
        horizon_s *= 2.0
    switch_s, path_states = path
    times_s = times_s[:n]
    end_s = float(np.nextafter(times_s[-1], np.inf))
    keep = switch_s < end_s
    return Arrivals(times_s=times_s, states=None if states is None else states[:n], duration_s=end_s,
                    state_path=(switch_s[keep], path_states[keep]), seed=seed)


def _expected_count(spec: WorkloadSpec, horizon_s: float) -> float:
    if isinstance(spec, RampSpec):
        return spec.expected_count(horizon_s)
    if isinstance(spec, TraceSpec):
        return float(spec.counts.sum() * spec.count_scale)
    if isinstance(spec, StepSpec):
        return spec.peak_rate_rps * horizon_s  # an upper bound is enough for the guard
    return spec.mean_rate_rps * horizon_s


_Output = tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]


def _unit_poisson(total: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted points of a rate-1 Poisson process on ``[0, total)``."""
    if total <= 0:
        return np.empty(0)
    # Draw 6 sigma more than expected; the loop runs again only with probability ~1e-9.
    n = int(total + 6.0 * np.sqrt(total) + 16)
    points = np.cumsum(rng.standard_exponential(n))
    while points[-1] < total:
        more = np.cumsum(rng.standard_exponential(n))
        more += points[-1]
        points = np.concatenate([points, more])
    return points[: np.searchsorted(points, total, side="left")]


def _piecewise_constant(
    starts_s: np.ndarray, rates_rps: np.ndarray, horizon_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals at ``rates_rps[k]`` on ``[starts_s[k], starts_s[k+1])`` (the last piece
    ends at ``horizon_s``). Returns the times and the number of arrivals in each piece."""
    ends_s = np.append(starts_s[1:], horizon_s)
    cum = np.concatenate([[0.0], np.cumsum(rates_rps * (ends_s - starts_s))])
    u = _unit_poisson(cum[-1], rng)
    counts = np.diff(np.searchsorted(u, cum, side="left"))
    # A piece with arrivals has a positive rate: u lies in [cum[k], cum[k+1]) with cum[k+1] > cum[k].
    with np.errstate(divide="ignore"):
        inv_rate = np.where(rates_rps > 0, 1.0 / rates_rps, 0.0)
    # t = start + (u - cum) / rate, folded into u / rate + offset to save a pass; the absolute
    # error is ~1e-16 x cum / rate: under 1 us unless a piece's rate is below cum / 1e10 rps.
    offset_s = starts_s - cum[:-1] * inv_rate
    times = u * np.repeat(inv_rate, counts)
    times += np.repeat(offset_s, counts)
    return _clean(times, horizon_s, first_of_piece=np.cumsum(counts) - counts), counts


def _clean(times: np.ndarray, horizon_s: float, *, first_of_piece: np.ndarray | None = None) -> np.ndarray:
    """Undo last-ulp rounding so the output is exactly sorted and inside ``[0, horizon_s)``.

    ``first_of_piece``: indices where a new affine piece ``u / rate + offset`` starts. Each
    piece is sorted already (rounding is monotone), so only the pairs across those boundaries
    need a look; a full pass runs only if one of them is out of order (or no boundaries are known).
    """
    if times.size == 0:
        return times
    times[0] = max(times[0], 0.0)
    if first_of_piece is None:
        np.maximum.accumulate(times, out=times)
    else:
        b = first_of_piece[(first_of_piece > 0) & (first_of_piece < times.size)]
        if np.any(times[b] < times[b - 1]):
            np.maximum.accumulate(times, out=times)
    times[np.searchsorted(times, horizon_s, side="left") :] = np.nextafter(horizon_s, 0.0)
    return times


def _poisson(spec: PoissonSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    times = _unit_poisson(spec.rate_rps * horizon_s, rng)
    times /= spec.rate_rps
    return _clean(times, horizon_s, first_of_piece=np.zeros(1, np.int64)), None, None


def _constant(spec: ConstantSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    n = int(np.ceil(horizon_s * spec.rate_rps))
    times = np.arange(n, dtype=np.float64) / spec.rate_rps
    return times[times < horizon_s], None, None


def _mmpp(spec: MMPPSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    if spec.transition is not None:
        switch_s, states = mmpp.simulate_discrete_path(spec.transition_matrix, spec.slot_s, horizon_s, rng,
                                                       initial_state=spec.initial_state)
    else:
        switch_s, states = mmpp.simulate_path(spec.generator, horizon_s, rng, initial_state=spec.initial_state)
    rates = np.asarray(spec.rates_rps, dtype=np.float64)
    times, counts = _piecewise_constant(switch_s, rates[states], horizon_s, rng)
    dtype = np.int8 if spec.n_states <= 127 else np.int32
    return times, np.repeat(states.astype(dtype), counts), (switch_s, states)


def _step(spec: StepSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    starts, rates = spec.segments(horizon_s)
    return _piecewise_constant(starts, rates, horizon_s, rng)[0], None, None


def _onoff(spec: OnOffSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    starts, rates = spec.segments(horizon_s)
    return _piecewise_constant(starts, rates, horizon_s, rng)[0], None, None


def _ramp(spec: RampSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    """Invert Λ(t) = a·t + k·t²/2 (k = slope) in closed form, then Λ linear after the ramp."""
    a, b = spec.start_rps, spec.end_rps
    ramp_s = spec.ramp_s or horizon_s
    k = (b - a) / ramp_s
    u = _unit_poisson(spec.expected_count(horizon_s), rng)
    at_ramp_end = spec.expected_count(min(ramp_s, horizon_s))
    on_ramp = u[u < at_ramp_end]  # u is sorted, so this is a prefix
    # t = (-a + sqrt(a² + 2ku)) / k, written to stay exact when k → 0 and stable when a = 0.
    disc = np.sqrt(np.maximum(a * a + 2.0 * k * on_ramp, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ramp = np.where(a + disc > 0, 2.0 * on_ramp / (a + disc), 0.0)
    t_after = ramp_s + (u[on_ramp.size :] - at_ramp_end) / b if b > 0 else np.empty(0)
    return _clean(np.concatenate([t_ramp, t_after]), horizon_s), None, None


def _trace(spec: TraceSpec, horizon_s: float, rng: np.random.Generator) -> _Output:
    counts = spec.counts_for(horizon_s)
    if spec.count_scale != 1.0:
        counts = trace.scale_counts(counts, spec.count_scale, rng)
    times = trace.spread(counts, spec.minute_s, rng, mode=spec.spread)
    return times[: np.searchsorted(times, horizon_s, side="left")], None, None


_GENERATORS: dict[ArrivalKind, Callable[..., _Output]] = {
    "poisson": _poisson,
    "constant": _constant,
    "mmpp": _mmpp,
    "step": _step,
    "ramp": _ramp,
    "onoff": _onoff,
    "trace": _trace,
}
