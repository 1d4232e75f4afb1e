"""Break-even: cost per 1M requests against the average request rate, for serverless, an always-on
server and a managed (autoscaled) endpoint, from a request's service time and the price catalog.

The study's cost finding turns on the rate: serverless bills per request, so its cost per
request is flat; a server bills per hour, busy or idle, so its cost per request falls as 1/rate
until it is full; a managed endpoint bills per instance-hour too but adds instances as the load
grows. Where the lines cross is the break-even rate. Steady state, computed, not simulated:

- **serverless** — ``estimate(entry, requests, duration_ms=service_ms, memory_mb)`` (the
  catalog's per-request and GB-second prices, its rounding); warm requests only: cold starts
  (their init time) are not included, so at rates low enough for instances to go idle between
  requests the real figure is higher.
- **server** — ``instances`` machines (default 1) billed for the hour whatever the load; it can
  serve ``instances × workers / service_s`` requests per second. Past that the queue grows
  without bound: the curve stops (NaN) — a server that cannot keep up has no price per request.
- **managed** — ``max(min_instances, ceil(rate × service_s / (workers × target_utilisation)))``
  instances, SageMaker's target tracking at its steady state (scale-out delays ignored), up to
  ``max_instances`` (NaN beyond).

``workers`` per instance defaults to the entry's vCPUs (one single-threaded worker per vCPU).
Every price comes from :func:`servelab.billing.pricing.estimate`, so the figure and ``servelab
cost`` agree. Units: rates req/s, times ms, money USD per million requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from servelab.billing.catalog import Catalog, InstanceHourEntry, ServerlessEntry, load_catalog
from servelab.billing.pricing import estimate
from servelab.errors import ConfigError

OfferingKind = Literal["serverless", "server", "managed"]
HOUR_S = 3600.0
DEFAULT_RATES: np.ndarray = np.logspace(-2, 3, 51)  # 0.01 .. 1000 req/s


@dataclass(frozen=True)
class Offering:
    """One line of the break-even figure: how requests are served and which price entry bills them."""

    name: str
    kind: OfferingKind
    entry_id: str
    service_ms: float  # mean execution time of one request (what is billed, for serverless)
    memory_mb: int | None = None  # serverless memory size
    workers: int | None = None  # concurrent requests per instance (default: the entry's vCPUs)
    instances: int = 1  # server: machines always on
    min_instances: int = 1  # managed
    max_instances: int = 1000  # managed
    target_utilisation: float = 0.7  # managed: busy share per instance it scales to

    def __post_init__(self) -> None:
        if not self.service_ms > 0:
            raise ConfigError(f"{self.name}: service_ms must be > 0 (got {self.service_ms})")
        if self.kind == "serverless" and not self.memory_mb:
            raise ConfigError(f"{self.name}: a serverless offering needs memory_mb")
        if not 0 < self.target_utilisation <= 1:
            raise ConfigError(f"{self.name}: target_utilisation must be in (0, 1]")


@dataclass
class Curve:
    """An offering's cost per 1M requests at each rate, and the instances it needed (0: serverless)."""

    offering: Offering
    rates_rps: np.ndarray
    per_million_usd: np.ndarray  # NaN where the offering cannot serve the rate
    instances: np.ndarray
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"offering": asdict(self.offering), "rates_rps": self.rates_rps.tolist(),
                "per_million_usd": [None if not math.isfinite(x) else x for x in self.per_million_usd],
                "instances": self.instances.tolist(), "notes": self.notes}


def _workers(off: Offering, entry: Any) -> int:
    if off.workers is not None:
        return off.workers
    vcpus = getattr(entry, "vcpus", None)
    return max(1, int(vcpus)) if vcpus else 1


def curve(off: Offering, rates_rps: Sequence[float] | np.ndarray = DEFAULT_RATES, *,
          catalog: Catalog | None = None) -> Curve:
    """Cost per 1M requests of ``off`` at each rate (one hour of steady load per point)."""
    catalog = catalog if catalog is not None else load_catalog()
    entry = catalog.get(off.entry_id)
    rates = np.asarray(rates_rps, dtype=np.float64)
    if rates.size == 0 or np.any(~np.isfinite(rates)) or np.any(rates <= 0):
        raise ConfigError("rates must be positive numbers of requests per second")
    cost = np.full(rates.size, np.nan)
    instances = np.zeros(rates.size, dtype=np.int64)
    notes: list[str] = []
    service_s = off.service_ms / 1e3
    if off.kind == "serverless":
        if not isinstance(entry, ServerlessEntry):
            raise ConfigError(f"{off.name}: {entry.id} is not a serverless price entry")
        # flat per request: price a million once
        per_m = estimate(entry.id, requests=1_000_000, duration_ms=off.service_ms, memory_mb=off.memory_mb,
                         catalog=catalog).per_million_usd
        cost[:] = per_m
        notes.append("warm requests only: cold-start init is not included")
        return Curve(off, rates, cost, instances, notes)
    if not isinstance(entry, InstanceHourEntry):
        raise ConfigError(f"{off.name}: {entry.id} is not an instance-hour price entry")
    workers = _workers(off, entry)
    per_instance_rps = workers / service_s
    for i, rate in enumerate(rates):
        if off.kind == "server":
            n = off.instances
            if rate >= n * per_instance_rps:
                continue  # past capacity: the queue grows without bound
        else:
            n = max(off.min_instances, math.ceil(rate / (per_instance_rps * off.target_utilisation)))
            if n > off.max_instances:
                continue
        requests = max(1, round(rate * HOUR_S))
        b = estimate(entry.id, requests=requests, duration_ms=off.service_ms, duration_s=HOUR_S, instances=n,
                     catalog=catalog)
        cost[i] = b.total_usd / (rate * HOUR_S) * 1e6
        instances[i] = n
    notes.append(f"{workers} worker(s) per instance, capacity {per_instance_rps:.4g} req/s per instance")
    if off.kind == "server":
        full = off.instances * per_instance_rps
        notes.append(f"{off.instances} instance(s) always on; no price past {full:.4g} req/s")
    else:
        notes.append(f"scales at {off.target_utilisation:.0%} utilisation, {off.min_instances}..{off.max_instances} "
                     "instances; scale-out delays ignored (steady state)")
    return Curve(off, rates, cost, instances, notes)


def crossings(a: Curve, b: Curve) -> list[float]:
    """Rates where ``a`` and ``b`` cost the same (interpolated on log axes between grid points)."""
    out = []
    ra, ya, yb = a.rates_rps, a.per_million_usd, b.per_million_usd
    d = np.log(ya) - np.log(yb)
    for i in range(ra.size - 1):
        if not (np.isfinite(d[i]) and np.isfinite(d[i + 1])):
            continue
        if d[i] == 0:
            out.append(float(ra[i]))
        elif d[i] * d[i + 1] < 0:
            w = d[i] / (d[i] - d[i + 1])
            out.append(float(np.exp(np.log(ra[i]) + w * (np.log(ra[i + 1]) - np.log(ra[i])))))
    return out


@dataclass
class BreakEven:
    curves: list[Curve]
    crossings: dict[str, list[float]]  # "serverless vs server" -> rates

    def to_dict(self) -> dict[str, Any]:
        return {"curves": [c.to_dict() for c in self.curves], "crossings": self.crossings}


def break_even(offerings: Sequence[Offering], rates_rps: Sequence[float] | np.ndarray = DEFAULT_RATES, *,
               catalog: Catalog | None = None) -> BreakEven:
    """Every offering's curve and, for each pair, the rates where they cost the same."""
    catalog = catalog if catalog is not None else load_catalog()
    curves = [curve(o, rates_rps, catalog=catalog) for o in offerings]
    pairs = {f"{a.offering.name} vs {b.offering.name}": crossings(a, b)
             for i, a in enumerate(curves) for b in curves[i + 1:]}
    return BreakEven(curves, pairs)


def offerings_from_profile(profile: Any, *, memory_mb: int = 1769, serverless: str | None = None,
                           server: str | None = None, managed: str | None = None, batch: int = 1,
                           server_instances: int = 1, min_instances: int = 1,
                           max_instances: int = 1000) -> list[Offering]:
    """The three offerings for one model profile (:class:`servelab.sim.profile.Profile`): its mean
    execution time at ``memory_mb`` for serverless, at 1 vCPU (1769 MB) per worker for the
    instance-hour offerings (one single-threaded worker per vCPU, assumed)."""
    serverless_ms = profile.service(batch=batch, memory_mb=memory_mb).mean / batch
    worker_ms = profile.service(batch=batch, memory_mb=1769).mean / batch
    out = []
    if serverless:
        out.append(Offering("serverless", "serverless", serverless, serverless_ms, memory_mb=memory_mb))
    if server:
        out.append(Offering("server", "server", server, worker_ms, instances=server_instances))
    if managed:
        out.append(Offering("managed", "managed", managed, worker_ms, min_instances=min_instances,
                            max_instances=max_instances))
    if not out:
        raise ConfigError("name at least one price entry (serverless, server or managed)")
    return out


def figure_png(result: BreakEven, *, title: str = "", marks: Sequence[tuple[str, float, float]] = ()) -> bytes:
    """The curves on log-log axes (matplotlib, the ``plot`` extra), crossings marked; ``marks``
    are measured points (label, rate, cost per 1M) drawn over the curves."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.8), dpi=100, layout="constrained")
    styles = {"serverless": "-", "server": "--", "managed": "-."}
    for c in result.curves:
        ax.plot(c.rates_rps, c.per_million_usd, styles.get(c.offering.kind, "-"), lw=2,
                label=f"{c.offering.name} ({c.offering.entry_id})")
    for pair, rates in result.crossings.items():
        for k, r in enumerate(rates):
            ax.axvline(r, color="#888888", lw=0.8, ls=":")
            if k == 0:  # a sawtooth (managed instance steps) can cross many times: label the first
                more = f" (+{len(rates) - 1} more)" if len(rates) > 1 else ""
                ax.annotate(f"{pair}: {r:.3g} req/s{more}", (r, ax.get_ylim()[1]), rotation=90, va="top",
                            ha="right", fontsize=7, color="#555555")
    for label, rate, usd in marks:
        if math.isfinite(rate) and math.isfinite(usd) and rate > 0 and usd > 0:
            ax.plot([rate], [usd], "o", ms=6, color="black")
            ax.annotate(label, (rate, usd), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("average request rate (req/s)")
    ax.set_ylabel("USD per 1M requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def offerings_from_experiment(exp: Any) -> tuple[list[Offering], list[tuple[str, float, float]], list[str]]:
    """Offerings for a report (:class:`servelab.analysis.report.Experiment`): per target kind
    (serverless, server, managed) its cheapest priced configuration, with the function time it
    measured (mean over its ok requests) as the service time and its target's settings
    (workers, machines, min/max instances). Also the measured points to mark (label, offered
    rate, cost per 1M) and notes. Empty when fewer than two kinds were priced."""
    chosen: dict[str, Any] = {}
    for g in exp.groups:
        cfg = g.runs[0].config
        kind = cfg.get("kind")
        if kind not in ("serverless", "server", "managed") or not cfg.get("price_entry"):
            continue
        if not math.isfinite(g.per_million_usd):
            continue
        if kind not in chosen or g.per_million_usd < chosen[kind].per_million_usd:
            chosen[kind] = g
    if len(chosen) < 2:
        return [], [], []
    offerings, marks, notes = [], [], []
    for kind, g in chosen.items():
        cfg = g.runs[0].config
        settings = cfg.get("target_settings") if isinstance(cfg.get("target_settings"), dict) else {}
        raw = [(r.summary.decomposition_ms.get("function") or {}).get("mean") for r in g.runs]
        times = [float(t) for t in raw if t is not None and math.isfinite(t) and t > 0]
        if not times:
            notes.append(f"{g.label}: no measured function time; left out of the break-even figure")
            continue
        service_ms = float(np.mean(times))
        if kind == "serverless":
            off = Offering(g.label, "serverless", cfg["price_entry"], service_ms,
                           memory_mb=int(cfg.get("memory_mb") or 1769))
        elif kind == "server":
            off = Offering(g.label, "server", cfg["price_entry"], service_ms,
                           workers=settings.get("workers"), instances=int(settings.get("machines") or 1))
        else:
            off = Offering(g.label, "managed", cfg["price_entry"], service_ms,
                           min_instances=max(1, int(settings.get("min_instances") or 1)),
                           max_instances=int(settings.get("max_instances") or 1000),
                           target_utilisation=float(settings.get("target_utilisation") or 0.7))
        offerings.append(off)
        rate = float(np.mean([r.summary.offered_rps for r in g.runs]))
        marks.append((f"{g.label} (measured)", rate, g.per_million_usd))
        notes.append(f"{g.label}: {service_ms:.2f} ms per request measured")
    if len(offerings) < 2:
        return [], [], notes
    return offerings, marks, notes
