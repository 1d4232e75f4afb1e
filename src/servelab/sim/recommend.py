"""The recommender: the cheapest configuration that meets a latency objective, by simulation.

Input: a profile, arrivals, an :class:`Objective` (p95 and/or p99 bound, minimum success ratio)
and a :class:`SearchSpace` (targets and their axes). Output (:class:`Recommendation`): the
cheapest feasible configuration, the runners-up, the Pareto front of cost vs p95 over every
configuration simulated, each with its predicted figures.

How it searches (not a full grid), per target:

* **serverless** — for every (batch size, provisioned concurrency) pair, the memory axis is
  searched, not swept: latency is monotone non-increasing in memory (more memory, more CPU), so
  a binary search finds the smallest memory size that meets the objective; from there the
  search walks up the memory sizes while the cost keeps falling (a larger memory size is
  sometimes cheaper — the study's finding — because the run gets shorter), and stops at the
  first rise (assumed: cost is unimodal in memory above the smallest feasible size);
* **managed** and **server** — for every (price entry, batch size) pair, latency is monotone
  non-increasing in the instance count and cost is increasing in it, so the smallest feasible
  count (binary search) is that pair's cheapest.

With ``screen_fraction < 1`` every probe is first simulated on the first part of the workload
and only the configurations whose short-run p95 is within ``screen_margin`` of the bound go on
to the full run (successive halving with one rung): a large space of a long trace costs a few
full simulations, not one per point. Infeasible configurations are kept in the evaluated list
(they draw the Pareto front too).

A configuration is *feasible* when its success ratio is at least ``min_sr`` and its p95 (and
p99, when given) of ok requests is within the bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.sim.managed import ManagedConfig
from servelab.sim.profile import Profile
from servelab.sim.server import ServerConfig
from servelab.sim.serverless import ServerlessConfig
from servelab.sim.simulation import simulate

DEFAULT_MEMORY_MB = (512, 1024, 1536, 1769, 2048, 3008, 4096, 6144, 8192, 10240)


@dataclass(frozen=True)
class Objective:
    p95_ms: float | None = None
    p99_ms: float | None = None
    min_sr: float = 0.999

    def __post_init__(self) -> None:
        if self.p95_ms is None and self.p99_ms is None:
            raise ConfigError("an objective needs a latency bound: p95_ms and/or p99_ms")
        if not 0 <= self.min_sr <= 1:
            raise ConfigError(f"min_sr is a ratio in [0, 1], got {self.min_sr}")

    def met(self, p95: float, p99: float, sr: float) -> bool:
        return (sr >= self.min_sr and (self.p95_ms is None or p95 <= self.p95_ms)
                and (self.p99_ms is None or p99 <= self.p99_ms))

    def describe(self) -> str:
        parts = [f"p95 <= {self.p95_ms:g} ms" if self.p95_ms is not None else "",
                 f"p99 <= {self.p99_ms:g} ms" if self.p99_ms is not None else "", f"SR >= {self.min_sr:g}"]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class SearchSpace:
    """Candidate targets and axes. Empty tuples leave a target out."""

    serverless_entries: tuple[str, ...] = ("aws-lambda-x86-us-east-1",)
    memory_mb: tuple[int, ...] = DEFAULT_MEMORY_MB
    batch_sizes: tuple[int, ...] = (1,)
    max_wait_ms: float = 10.0
    provisioned: tuple[int, ...] = (0,)
    max_concurrency: int = 1000
    keep_alive_s: float = 600.0
    scale_rate: str = "aws"
    server_entries: tuple[str, ...] = ()
    server_device: str = "cpu"
    managed_entries: tuple[str, ...] = ()
    max_instances: int = 64
    managed_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluated:
    config: ServerlessConfig | ManagedConfig | ServerConfig
    p50_ms: float
    p95_ms: float
    p99_ms: float
    sr: float
    cold_starts: int
    cost_usd: float
    per_million_usd: float
    feasible: bool
    full: bool  # simulated on the whole workload (not only the screening prefix)

    def label(self) -> str:
        c = self.config
        if isinstance(c, ServerlessConfig):
            return (f"serverless {c.price_entry} {c.memory_mb} MB batch {c.max_batch_size}"
                    + (f" prov {c.provisioned}" if c.provisioned else ""))
        if isinstance(c, ManagedConfig):
            return f"managed {c.price_entry} {c.min_instances}-{c.max_instances} inst batch {c.max_batch_size}"
        return f"server {c.price_entry} x{c.instances} batch {c.max_batch_size}"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label(), "config": self.config.model_dump(), "p50_ms": self.p50_ms,
                "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "success_ratio": self.sr,
                "cold_starts": self.cold_starts, "cost_usd": self.cost_usd, "per_million_usd": self.per_million_usd,
                "feasible": self.feasible}


@dataclass
class Recommendation:
    objective: Objective
    best: Evaluated | None
    runners_up: list[Evaluated]
    pareto: list[Evaluated]
    evaluated: list[Evaluated]
    simulations: int
    grid_size: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective.describe(), "best": self.best.to_dict() if self.best else None,
                "runners_up": [e.to_dict() for e in self.runners_up], "pareto": [e.to_dict() for e in self.pareto],
                "simulations": self.simulations, "grid_size": self.grid_size, "elapsed_s": self.elapsed_s}


class _Evaluator:
    def __init__(self, profile: Profile, times: np.ndarray, duration_s: float, objective: Objective, *, seed: int,
                 screen_fraction: float, screen_margin: float, catalog: Any) -> None:
        self.profile, self.times, self.duration_s, self.objective = profile, times, duration_s, objective
        self.seed, self.catalog = seed, catalog
        self.screen_fraction, self.screen_margin = screen_fraction, screen_margin
        self.cache: dict[str, Evaluated] = {}
        self.simulations = 0

    def _run(self, config: Any, times: np.ndarray, duration_s: float, full: bool) -> Evaluated:
        from servelab.workload import Arrivals

        arr = Arrivals(times_s=times, states=None, duration_s=duration_s, state_path=None)
        r = simulate(config, self.profile, arr, seed=self.seed)
        self.simulations += 1
        s = r.summary()
        lat = s.latency_ms or {}
        p95, p99 = lat.get("p95", math.inf), lat.get("p99", math.inf)
        sr = s.success_ratio if s.success_ratio is not None else 0.0
        cost = r.cost(catalog=self.catalog)
        return Evaluated(config, lat.get("p50", math.inf), p95, p99, sr, s.cold_starts, cost.total_usd,
                         cost.per_million_usd, self.objective.met(p95, p99, sr), full)

    def __call__(self, config: Any) -> Evaluated:
        key = config.model_dump_json()
        if key in self.cache:
            return self.cache[key]
        if self.screen_fraction < 1.0:
            cut = self.duration_s * self.screen_fraction
            short = self.times[self.times < cut]
            if short.size:
                e = self._run(config, short, cut, full=False)
                bound = min(b for b in (self.objective.p95_ms, self.objective.p99_ms) if b is not None)
                probe = e.p95_ms if self.objective.p95_ms is not None else e.p99_ms
                if probe > bound * self.screen_margin or e.sr < self.objective.min_sr - 0.05:
                    self.cache[key] = e  # screened out: clearly infeasible on the prefix already
                    return e
        e = self._run(config, self.times, self.duration_s, full=True)
        self.cache[key] = e
        return e


def _smallest_feasible(values: Sequence[Any], make: Callable[[Any], Any], ev: _Evaluator) -> int | None:
    """Index of the smallest value whose config is feasible (feasibility monotone in the value)."""
    lo, hi, found = 0, len(values) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ev(make(values[mid])).feasible:
            found, hi = mid, mid - 1
        else:
            lo = mid + 1
    return found


def recommend(profile: Profile, arrivals: Any, objective: Objective, space: SearchSpace, *, seed: int = 0,
              runners_up: int = 3, screen_fraction: float = 1.0, screen_margin: float = 1.5,
              catalog: Any = None) -> Recommendation:
    from servelab.billing.catalog import load_catalog

    t0 = time.perf_counter()
    times = np.asarray(getattr(arrivals, "times_s", arrivals), dtype=np.float64)
    duration = float(getattr(arrivals, "duration_s", 0.0) or (times[-1] if times.size else 0.0))
    catalog = catalog if catalog is not None else load_catalog()
    ev = _Evaluator(profile, times, duration, objective, seed=seed, screen_fraction=screen_fraction,
                    screen_margin=screen_margin, catalog=catalog)
    grid = 0
    mems = sorted(set(space.memory_mb))
    for entry in space.serverless_entries:
        for batch in space.batch_sizes:
            for prov in space.provisioned:
                grid += len(mems)

                def make(m: int, entry: str = entry, batch: int = batch, prov: int = prov) -> ServerlessConfig:
                    return ServerlessConfig(price_entry=entry, memory_mb=m, max_batch_size=batch,
                                            max_wait_ms=space.max_wait_ms if batch > 1 else 0.0, provisioned=prov,
                                            max_concurrency=space.max_concurrency, keep_alive_s=space.keep_alive_s,
                                            scale_rate=space.scale_rate)
                idx = _smallest_feasible(mems, make, ev)
                if idx is None:
                    continue
                best_cost = ev(make(mems[idx])).cost_usd
                for m in mems[idx + 1:]:  # walk up while it gets cheaper
                    e = ev(make(m))
                    if not e.feasible or e.cost_usd >= best_cost:
                        break
                    best_cost = e.cost_usd
    counts = list(range(1, space.max_instances + 1))
    for kind, entries in (("server", space.server_entries), ("managed", space.managed_entries)):
        for entry in entries:
            for batch in space.batch_sizes:
                grid += len(counts)

                def make_pool(k: int, entry: str = entry, batch: int = batch, kind: str = kind) -> Any:
                    common = {"price_entry": entry, "max_batch_size": batch,
                              "max_wait_ms": space.max_wait_ms if batch > 1 else 0.0}
                    if kind == "server":
                        return ServerConfig(instances=k, device=space.server_device, **common)
                    return ManagedConfig(min_instances=k, max_instances=max(k, space.max_instances), **common,
                                         **space.managed_params)
                _smallest_feasible(counts, make_pool, ev)
    evaluated = list(ev.cache.values())
    feasible = sorted((e for e in evaluated if e.feasible and e.full), key=lambda e: (e.cost_usd, e.p95_ms))
    full = [e for e in evaluated if e.full and math.isfinite(e.p95_ms)]
    return Recommendation(objective=objective, best=feasible[0] if feasible else None,
                          runners_up=feasible[1:1 + runners_up], pareto=pareto_front(full), evaluated=evaluated,
                          simulations=ev.simulations, grid_size=grid, elapsed_s=time.perf_counter() - t0)


def pareto_front(items: Sequence[Evaluated]) -> list[Evaluated]:
    """Configurations no other beats on both cost and p95 (ties kept once), cheapest first."""
    front: list[Evaluated] = []
    best_p95 = math.inf
    for e in sorted(items, key=lambda e: (e.cost_usd, e.p95_ms)):
        if e.p95_ms < best_p95:
            front.append(e)
            best_p95 = e.p95_ms
    return front
