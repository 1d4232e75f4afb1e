"""The Markov chain behind a Markov-modulated Poisson process (MMPP): generator matrices,
their stationary distribution, and simulated state paths.

An MMPP is a Poisson process whose rate is set by a hidden continuous-time Markov chain: while
the chain is in state ``i`` requests arrive at ``rates_rps[i]``. This module knows nothing about
arrivals; it only builds, checks and runs the chain. Units: time in seconds, transition rates
in 1/s (the generator matrix ``Q``: ``Q[i, j]`` is the rate of jumping from ``i`` to ``j``, and
``Q[i, i] = -sum of the other entries in row i``, so every row sums to zero).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from servelab.errors import WorkloadError

MAX_SWITCHES = 50_000_000  # a state path this long is a units mistake (ms sojourns over days), not a workload
ROW_SUM_TOL = 1e-9  # relative to the row's exit rate: rounding in a hand-written Q is fine, typos are not


def validate_generator(q: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return ``q`` as a float array, or raise WorkloadError saying which entry is wrong.

    A valid generator is square, finite, has non-negative off-diagonal entries, and every row
    sums to zero (within ROW_SUM_TOL of the row's exit rate). Its chain must also have a single
    stationary distribution, or "start in the stationary distribution" would mean nothing.
    """
    try:
        m = np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"generator matrix Q must be a square matrix of numbers: {e}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise WorkloadError(f"generator matrix Q must be square (n x n, n >= 1); got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        i, j = np.argwhere(~np.isfinite(m))[0]
        raise WorkloadError(f"generator matrix Q[{i}][{j}] is {m[i, j]}; entries must be finite")
    off = m - np.diag(np.diag(m))
    if np.any(off < 0):
        i, j = np.argwhere(off < 0)[0]
        raise WorkloadError(
            f"generator matrix Q[{i}][{j}] = {m[i, j]} is negative; off-diagonal entries are "
            "transition rates (1/s) and must be >= 0"
        )
    for i, row in enumerate(m):
        exit_rate = off[i].sum()
        if abs(row.sum()) > ROW_SUM_TOL * max(exit_rate, 1.0):
            raise WorkloadError(
                f"generator matrix Q row {i} sums to {row.sum():.6g}, not 0; set Q[{i}][{i}] = "
                f"{-exit_rate:.6g} (minus the sum of the row's other entries)"
            )
    # Repair rounding so the diagonal is exactly minus the exit rate.
    m = off - np.diag(off.sum(axis=1))
    if m.shape[0] > 1 and np.linalg.matrix_rank(m) != m.shape[0] - 1:
        raise WorkloadError(
            "generator matrix Q has more than one stationary distribution: two or more groups of states "
            "are never left once entered; add transitions that connect them"
        )
    return m


def validate_jump(jump: Sequence[Sequence[float]] | np.ndarray, n: int) -> np.ndarray:
    """Check a jump-probability matrix: ``jump[i][j]`` is the chance that the chain goes to ``j``
    when it leaves ``i``. Square n x n, non-negative, zero diagonal, rows summing to 1."""
    try:
        p = np.asarray(jump, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"jump matrix must be a square matrix of probabilities: {e}") from None
    if p.shape != (n, n):
        raise WorkloadError(f"jump matrix must be {n} x {n} (one row per state); got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        i, j = np.argwhere(~(np.isfinite(p) & (p >= 0)))[0]
        raise WorkloadError(f"jump[{i}][{j}] = {p[i, j]}; probabilities must be finite and >= 0")
    for i in range(n):
        if p[i, i] != 0:
            raise WorkloadError(
                f"jump[{i}][{i}] = {p[i, i]}; a jump leaves the state, so the diagonal must be 0"
            )
        if abs(p[i].sum() - 1.0) > 1e-9:
            raise WorkloadError(f"jump row {i} sums to {p[i].sum():.6g}; each row must sum to 1")
    return p


def generator_from_sojourn(
    sojourn_s: Sequence[float], jump: Sequence[Sequence[float]] | np.ndarray | None = None
) -> np.ndarray:
    """Build Q from mean sojourn times (seconds spent in a state per visit) and jump probabilities.

    ``Q[i, j] = jump[i][j] / sojourn_s[i]``. Without ``jump``, the chain leaves a state for any
    other state with equal probability: the natural default, and exact alternation for two states.
    """
    s = np.asarray(sojourn_s, dtype=np.float64)
    n = s.size
    if s.ndim != 1 or n == 0:
        raise WorkloadError("sojourn_s must be a list of mean times in seconds, one per state")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        i = int(np.argwhere(~(np.isfinite(s) & (s > 0)))[0, 0])
        raise WorkloadError(f"sojourn_s[{i}] = {s[i]}; mean sojourn times must be finite and > 0 seconds")
    if n == 1:
        raise WorkloadError(
            "a one-state MMPP never leaves its state, so sojourn_s means nothing; use kind 'poisson' "
            "(or give q_per_s: [[0]])"
        )
    p = np.full((n, n), 1.0 / (n - 1)) if jump is None else validate_jump(jump, n)
    np.fill_diagonal(p, 0.0)
    q = p / s[:, None]
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def stationary_distribution(q: np.ndarray) -> np.ndarray:
    """The distribution ``pi`` with ``pi @ Q = 0`` and ``sum(pi) = 1``: the long-run fraction of
    time the chain spends in each state. ``q`` must already be validated."""
    n = q.shape[0]
    a = np.vstack([q.T, np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)  # lstsq leaves -1e-17 where the true value is 0
    return pi / pi.sum()


def simulate_path(
    q: np.ndarray,
    duration_s: float,
    rng: np.random.Generator,
    *,
    initial_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the chain from t = 0 to ``duration_s``.

    Returns ``(switch_times_s, states)``: the chain enters ``states[k]`` at ``switch_times_s[k]``
    (``switch_times_s[0] == 0``) and stays until the next switch time (or the end). Without an
    ``initial_state`` the first state is drawn from the stationary distribution, so the process is
    stationary from the first second. ``q`` must already be validated.
    """
    n = q.shape[0]
    pi = stationary_distribution(q)
    state = int(rng.choice(n, p=pi)) if initial_state is None else int(initial_state)
    exit_rate = -np.diag(q)
    if n == 1 or exit_rate.max() == 0:
        return np.zeros(1), np.array([state], dtype=np.int64)
    if duration_s * exit_rate.max() > MAX_SWITCHES:
        raise WorkloadError(
            f"the hidden chain would switch state about {duration_s * exit_rate.max():.3g} times in "
            f"{duration_s:g} s (limit {MAX_SWITCHES:.0e}); check that sojourn times are in seconds"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        jump = np.where(exit_rate[:, None] > 0, q / exit_rate[:, None], 0.0)
    np.fill_diagonal(jump, 0.0)
    seq = _state_sequence(jump, state, duration_s * exit_rate.max(), rng)
    times_s, states = _timed(seq, exit_rate, duration_s, rng)
    while times_s[-1] < duration_s and exit_rate[states[-1]] > 0:  # rare: the estimate fell short
        more = _state_sequence(jump, int(states[-1]), duration_s * exit_rate.max(), rng)
        t_more, s_more = _timed(more, exit_rate, duration_s - times_s[-1], rng)
        times_s = np.concatenate([times_s[:-1], times_s[-1] + t_more])
        states = np.concatenate([states[:-1], s_more])
    keep = times_s < duration_s
    return times_s[keep], states[keep]


def _state_sequence(
    jump: np.ndarray, start: int, expected_jumps: float, rng: np.random.Generator
) -> np.ndarray:
    """The embedded jump chain's visits, starting with ``start``; long enough to cover the horizon
    with overwhelming probability (``_timed`` and the caller extend it when it is not)."""
    m = int(expected_jumps + 6.0 * np.sqrt(expected_jumps) + 16)
    successors = [np.flatnonzero(row) for row in jump]
    if all(len(s) <= 1 for s in successors):
        # Deterministic jumps (every 2-state chain): the sequence is a cycle, no random draws needed.
        seq = [start]
        while len(seq) < m and len(successors[seq[-1]]) == 1:
            nxt = int(successors[seq[-1]][0])
            if nxt == start:
                return np.resize(np.array(seq, dtype=np.int64), m)
            seq.append(nxt)
        return np.array(seq, dtype=np.int64)
    # Random jumps are inherently sequential; one bisect per jump (~0.5 us) is cheap next to the
    # arrivals, because jumps are far rarer than arrivals.
    cum = [np.cumsum(row)[:-1].tolist() for row in jump]
    u = rng.random(m).tolist()
    seq = [0] * (m + 1)
    s = start
    seq[0] = s
    for k in range(m):
        s = bisect.bisect_right(cum[s], u[k])
        seq[k + 1] = s
    return np.array(seq, dtype=np.int64)


def _timed(
    seq: np.ndarray, exit_rate: np.ndarray, horizon_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Give each visit in ``seq`` an exponential sojourn; return entry times, cut after the
    horizon (the last entry is either past the horizon or an absorbing state's)."""
    with np.errstate(divide="ignore"):
        sojourn = rng.standard_exponential(seq.size) / exit_rate[seq]  # inf in an absorbing state
    absorbing = np.flatnonzero(np.isinf(sojourn))
    if absorbing.size:
        seq, sojourn = seq[: absorbing[0] + 1], sojourn[: absorbing[0] + 1]
    entry = np.concatenate([[0.0], np.cumsum(sojourn[:-1])])
    past = np.searchsorted(entry, horizon_s, side="left")
    cut = min(past + 1, entry.size)  # keep one entry past the horizon to tell the caller it is covered
    return entry[:cut], seq[:cut]


# ------------------------------------------------------------------ the discrete (slotted) form
#
# The study parametrised its MMPP with a transition *probability* matrix: time advances in slots
# of ``step_s`` seconds, and at the end of each slot the chain moves from state ``i`` to ``j`` with
# probability ``P[i, j]`` (``P[i, i]``: it stays). In state ``i`` requests arrive as Poisson at
# ``rates_rps[i]``. A state is then held for a geometric number of slots, mean
# ``step_s / (1 - P[i, i])``, where the continuous form holds it for an exponential time.


def validate_transition(p: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return ``p`` as a float array, or raise WorkloadError saying which entry is wrong.

    A valid transition matrix is square, finite and non-negative with rows summing to 1 (within
    1e-9; rounding is repaired), and its chain has a single stationary distribution.
    """
    try:
        m = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"transition matrix must be a square matrix of probabilities: {e}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise WorkloadError(f"transition matrix must be square (n x n, n >= 1); got shape {m.shape}")
    bad = ~(np.isfinite(m) & (m >= 0))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise WorkloadError(f"transition[{i}][{j}] = {m[i, j]}; probabilities must be finite and >= 0")
    for i, row in enumerate(m):
        if abs(row.sum() - 1.0) > 1e-9:
            raise WorkloadError(f"transition row {i} sums to {row.sum():.6g}; each row is where state {i} goes "
                                "next (staying included) and must sum to 1")
    m = m / m.sum(axis=1, keepdims=True)
    n = m.shape[0]
    if n > 1 and np.linalg.matrix_rank(m - np.eye(n)) != n - 1:
        raise WorkloadError("transition matrix has more than one stationary distribution: two or more groups "
                            "of states are never left once entered; add transitions that connect them")
    out: np.ndarray = m
    return out


def stationary_distribution_discrete(p: np.ndarray) -> np.ndarray:
    """``pi`` with ``pi @ P = pi`` and ``sum(pi) = 1``: the long-run share of slots in each state."""
    return stationary_distribution(p - np.eye(p.shape[0]))


def simulate_discrete_path(
    p: np.ndarray,
    step_s: float,
    duration_s: float,
    rng: np.random.Generator,
    *,
    initial_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the slotted chain from t = 0 to ``duration_s``; same output as :func:`simulate_path`
    (``(switch_times_s, states)``, only the slots where the state changes). The first state is
    drawn from the stationary distribution unless ``initial_state`` is given."""
    n = p.shape[0]
    slots = int(np.ceil(duration_s / step_s))
    if slots > MAX_SWITCHES:
        raise WorkloadError(f"{duration_s:g} s in slots of {step_s:g} s is {slots:.3g} slots (limit "
                            f"{MAX_SWITCHES:.0e}); check that step_s is in seconds")
    pi = stationary_distribution_discrete(p)
    state = int(rng.choice(n, p=pi)) if initial_state is None else int(initial_state)
    cum = [np.cumsum(row)[:-1].tolist() for row in p]
    u = rng.random(max(slots - 1, 0)).tolist()
    seq = [state] * slots
    for k, x in enumerate(u, start=1):  # sequential by nature; ~0.5 us a slot
        state = bisect.bisect_right(cum[state], x)
        seq[k] = state
    states = np.asarray(seq, dtype=np.int64)
    change = np.concatenate([[True], states[1:] != states[:-1]])
    return np.flatnonzero(change) * float(step_s), states[change]
