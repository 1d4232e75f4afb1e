"""``servelab policies compare``: many functions on one simulated host, one row per keep-alive policy.

For each policy the same production-shaped workload (:mod:`servelab.workload.azure_synth`, seeded)
runs through :func:`servelab.sim.host_engine.run_host` under the same host memory budget, and
these come out (one row per policy in ``compare.csv``):

* ``cold_start_rate`` — cold requests / served requests (a pre-warmed instance's first request is
  not cold: it did not wait for an init);
* ``idle_gb_s`` — memory held by instances that run nothing (ready, not busy), GB x s, up to the
  end of the workload, plus the layered policy's warm runtime templates;
* ``p99_ms`` — 99th percentile of arrival-to-completion latency over served requests (init and
  time held for memory included);
* ``cost_usd`` — the memory the host holds for these functions (starting, busy and idle instances
  and templates), GB-s priced at the catalog's AWS Lambda x86 us-east-1 per-GB-s rate: the
  provider's cost of keeping functions warm, not what users are billed;
* ``p99_wait_ms`` — the same without the execution time (the durations' heavy tail — Azure's
  log-normal, clipped at 30 s — dominates ``p99_ms``);
* ``mean_cold_wait_ms`` — what a cold request waited for its instance (init, and any time the
  start was held for memory): the layered policy lowers this, not the cold-start count;
* ``pareto`` — true if no other policy has both a lower-or-equal cold-start rate and lower-or-
  equal idle memory (and is better in one).
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from servelab.errors import ConfigError
from servelab.sim.host_engine import COLD, PREWARMED, THROTTLED, WARM, HostRun, parse_policy, run_host
from servelab.workload.azure_synth import arrivals, durations_ms, synth_functions, write_azure_csv

PRICE_ENTRY = "aws-lambda-x86-us-east-1"


@dataclass
class PolicyRow:
    policy: str
    cold_start_rate: float
    idle_gb_s: float
    p99_ms: float
    cost_usd: float
    pareto: bool
    p99_wait_ms: float  # arrival to dispatch (init, hold, queue), without the execution time
    mean_cold_wait_ms: float  # arrival to dispatch of cold requests: the init (and hold) they paid
    requests: int
    cold: int
    throttled: int
    evictions: int
    held_starts: int
    mean_idle_mb: float
    peak_used_mb: float
    wall_s: float


def parse_duration(text: str) -> float:
    """``2h``, ``30m``, ``90s`` or a plain number of seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([hms]?)\s*", text)
    if not m:
        raise ConfigError(f"duration {text!r}: write it like 2h, 30m, 90s or 7200")
    return float(m.group(1)) * {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}[m.group(2)]


def gb_s_price() -> float:
    from servelab.billing.catalog import load_catalog

    entry = load_catalog().get(PRICE_ENTRY)
    return float(entry.per_gb_second_usd)  # type: ignore[union-attr]


def summarize(name: str, run: HostRun, price_gb_s: float, wall_s: float) -> PolicyRow:
    h = run.horizon_s
    served = (run.kind == WARM) | (run.kind == PREWARMED) | (run.kind == COLD)
    cold = int(np.sum(run.kind == COLD))
    lat_ms = (run.done_s[served] - run.arrival_s[served]) * 1000.0
    mem = np.asarray(run.memory_mb)
    start = np.minimum(np.asarray(run.start_s), h)
    ready = np.minimum(np.asarray(run.ready_s), h)
    end = np.asarray(run.end_s)
    end = np.where(np.isnan(end), h, np.minimum(end, h))
    busy = np.asarray(run.busy_s)
    idle_s = np.maximum(0.0, end - ready - busy)
    idle_gb_s = float(np.sum(idle_s * mem) / 1024.0) + run.template_gb_s
    held_gb_s = float(np.sum(np.maximum(0.0, end - start) * mem) / 1024.0) + run.template_gb_s
    return PolicyRow(
        policy=name, cold_start_rate=cold / max(1, int(served.sum())), idle_gb_s=idle_gb_s,
        p99_ms=float(np.percentile(lat_ms, 99)) if len(lat_ms) else math.nan,
        cost_usd=held_gb_s * price_gb_s, pareto=False,
        p99_wait_ms=float(np.percentile((run.dispatch_s[served] - run.arrival_s[served]) * 1000.0, 99))
        if served.any() else math.nan,
        mean_cold_wait_ms=float(np.mean(run.dispatch_s[run.kind == COLD] - run.arrival_s[run.kind == COLD]) * 1000)
        if cold else 0.0,
        requests=len(run.kind), cold=cold,
        throttled=int(np.sum(run.kind == THROTTLED)), evictions=run.evictions,
        held_starts=int(np.sum(np.asarray(run.held_s) > 0)), mean_idle_mb=idle_gb_s * 1024.0 / h,
        peak_used_mb=run.peak_used_mb, wall_s=wall_s)


def mark_pareto(rows: list[PolicyRow]) -> None:
    """Pareto front on (cold_start_rate, idle_gb_s), both lower is better."""
    for r in rows:
        r.pareto = not any(
            o is not r and o.cold_start_rate <= r.cold_start_rate and o.idle_gb_s <= r.idle_gb_s
            and (o.cold_start_rate < r.cold_start_rate or o.idle_gb_s < r.idle_gb_s) for o in rows)


def compare(*, n_functions: int, duration_s: float, policies: list[str], budget_mb: float | None, seed: int,
            max_rate_per_s: float = 1.0, out: Path | None = None) -> tuple[list[PolicyRow], dict[str, float]]:
    """Run every policy on one seeded workload; write compare.csv (and the workload) under ``out``."""
    parsed = [parse_policy(p) for p in policies]
    rng = np.random.default_rng(seed)
    fns = synth_functions(n_functions, rng, max_rate_per_s=max_rate_per_s)
    times = [arrivals(f, duration_s, rng) for f in fns]
    durs = [durations_ms(f, len(t), rng) for f, t in zip(fns, times, strict=True)]
    warm_set_mb = float(sum(f.memory_mb for f, t in zip(fns, times, strict=True) if len(t)))
    budget = budget_mb if budget_mb is not None else max(4096.0, round(warm_set_mb * 1.25))
    if budget < max(f.memory_mb for f in fns):
        raise ConfigError(f"--host-memory-mb {budget:g} is smaller than the largest function "
                          f"({max(f.memory_mb for f in fns)} MB)")
    price = gb_s_price()
    rows = []
    for p in parsed:
        t0 = time.perf_counter()
        run = run_host(fns, times, durs, p, budget_mb=budget, horizon_s=duration_s,
                       rng=np.random.default_rng(seed + 1))
        rows.append(summarize(p.name, run, price, time.perf_counter() - t0))
    mark_pareto(rows)
    info = {"budget_mb": budget, "warm_set_mb": warm_set_mb, "requests": float(sum(len(t) for t in times)),
            "invoked_functions": float(sum(1 for t in times if len(t)))}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_rows(rows, out / "compare.csv")
        write_azure_csv(fns, times, out / "workload_invocations.csv")
    return rows, info


def write_rows(rows: list[PolicyRow], path: Path) -> None:
    fields = list(asdict(rows[0]))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})


def plot(rows: list[PolicyRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        ax.scatter(r.idle_gb_s, r.cold_start_rate * 100, marker="o" if r.pareto else "x",
                   color="tab:red" if r.pareto else "tab:gray", zorder=3)
        ax.annotate(r.policy, (r.idle_gb_s, r.cold_start_rate * 100), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.idle_gb_s)
    if len(front) > 1:
        ax.plot([r.idle_gb_s for r in front], [r.cold_start_rate * 100 for r in front], color="tab:red", lw=1,
                label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel("idle memory (GB-s)")
    ax.set_ylabel("cold-start rate (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
