"""The one pricing function: what a run would have cost on a given cloud offering, from its records.

Every path prices through :func:`price_run` — ``servelab cost run``, the analyzer, the report,
the executor's summary, the simulator and the recommender — so the same records give the same
number everywhere. The accounting rules it applies are :mod:`servelab.billing.rules`.

Units: money in USD (``*_usd``), durations of requests in ms, windows in seconds, memory in MB.
One GB-second is ``memory_mb / 1024`` GB for one second. Every :class:`CostBreakdown` names the
catalog entry and the catalog date it used, and says in ``notes`` what it assumed.

Which requests are billed: every record whose ``status`` is not ``throttled``. Clouds charge a
request (and its duration) when the function ran, whatever its outcome — GCF says so in those
words; Lambda bills errors and timeouts too — while a request refused for concurrency (HTTP 429)
never ran. Free tiers, volume discounts, data transfer and storage are not modelled.

Serverless (``model: serverless``), for billed requests i::

    billed_ms_i  = max(ceil(duration_ms_i / rounding_ms) * rounding_ms, min_billed_ms) / batch_size_i
                   + ceil(init_ms_i / rounding_ms) * rounding_ms   (init: see below)
    requests_usd = n_billed * per_million_requests_usd / 1e6
    compute_usd  = Σ billed_ms_i/1000 * (GB_i * $/GB-s + GHz_i * $/GHz-s + vCPU_i * $/vCPU-s)

A batch is one execution: its rounded duration is shared by its requests. Init is billed once
per environment: the record of its first request carries ``init_ms`` (cold, or the first of a
policy-prewarmed environment), and it is billed when the entry's ``init_billed_from`` is on or
before ``as_of`` (default: the catalog's date — today's rule; ``as_of=STUDY_ERA`` prices the
study's era, when init was free). ``init_gb_s`` reports the init's share either way.

where a tiered entry (GCF) bills the tier at or above the memory asked for and its CPU. With
``provisioned_instances = P`` (Lambda provisioned concurrency) a request runs on provisioned
capacity when at most P executions were in flight at its start (earliest first); those pay
the lower ``duration_per_gb_second_usd``, the rest spill over at on-demand prices, and::

    provisioned_usd = P * GB * ceil(window_s / 300 s) * 300 s * provisioned $/GB-s

Instance hours (``model: instance_hour``)::

    instance_usd = instances * max(ceil(window_s / granularity_s) * granularity_s, minimum_s)
                   / 3600 * hourly_usd

``window_s`` is ``duration_s`` when given, else the run's span on the client clock (first
scheduled send to last completion). ``per_million_usd = total_usd / billed requests * 1e6``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from servelab.billing.catalog import Catalog, InstanceHourEntry, PriceEntry, ServerlessEntry, load_catalog
from servelab.billing.rules import ROUNDING_TOLERANCE as _ROUNDING_TOLERANCE
from servelab.billing.rules import init_billed
from servelab.errors import ConfigError

_NEEDED_COLUMNS = ("status", "duration_ms", "billed_ms", "memory_mb", "scheduled_s", "sent_s", "completed_s")


@dataclass(frozen=True)
class CostBreakdown:
    """One run (or what-if) priced against one catalog entry. USD throughout."""

    entry_id: str
    catalog_date: str
    requests: int  # billed requests (every status except 'throttled')
    requests_usd: float
    compute_usd: float
    provisioned_usd: float
    instance_usd: float
    total_usd: float
    per_million_usd: float  # NaN when no request was billed
    notes: tuple[str, ...] = ()
    model: str = ""
    billed_gb_s: float = 0.0  # memory GB × billed seconds, summed over billed requests (init included when billed)
    window_s: float = 0.0  # billed window of instances / provisioned capacity (0: none billed)
    init_gb_s: float = 0.0  # the environments' init, in GB-s, whether or not the rule bills it
    init_billed: bool = False  # whether init_gb_s is part of billed_gb_s and compute_usd
    as_of: str = ""  # the date whose billing rules were applied

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, non-finite floats become None."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class _Usage:
    """Per-request arrays for the billed requests, plus the run facts pricing needs."""

    duration_ms: np.ndarray
    memory_mb: np.ndarray
    start_s: np.ndarray
    window_s: float
    notes: list[str] = field(default_factory=list)
    window_measured: bool = False  # window_s is the records' span, not given by the caller
    weight: float = 1.0  # estimate(): one synthetic request standing for `weight` requests
    synthetic: bool = False  # estimate(): no arrival times, so no per-request provisioned split
    share: np.ndarray | float = 1.0  # 1/batch size: a batch is one execution, each request pays its share
    init_ms: np.ndarray | None = None  # per request: the init it carries (NaN: none)


def billed_ms(duration_ms: np.ndarray, entry: PriceEntry) -> np.ndarray:
    """Durations as ``entry`` bills them: rounded up to its ``rounding_ms``, at least ``min_billed_ms``.

    The same run billed as Lambda (1 ms) and as GCF gen1 (100 ms) differs only here. NaN stays NaN.
    """
    if not isinstance(entry, ServerlessEntry):
        raise ConfigError(f"entry {entry.id!r} is billed by {entry.model}, not per request duration")
    d = np.asarray(duration_ms, dtype=np.float64)
    if np.any(d < 0):
        raise ConfigError("duration_ms must not be negative")
    r = entry.rounding_ms
    return np.maximum(np.ceil(d / r - _ROUNDING_TOLERANCE) * r, entry.min_billed_ms)


def price_run(
    table: pa.Table,
    entry_id: str,
    *,
    catalog: Catalog | None = None,
    memory_mb: int | None = None,
    duration_s: float | None = None,
    instances: int = 1,
    provisioned_instances: int = 0,
    instance_seconds: float | None = None,
    as_of: dt.date | None = None,
) -> CostBreakdown:
    """Price the records in ``table`` (``servelab.records`` schema) as catalog entry ``entry_id``.

    ``memory_mb`` overrides the records' memory size (re-pricing a run at another size keeps its
    measured durations, which a real run at that size would not: a note says so).
    ``duration_s`` overrides the billing window (default: the run's span).
    ``instance_seconds`` (instance-hour entries): bill the instances' lifetimes summed (a managed
    endpoint that scaled) instead of ``instances`` × window.
    ``as_of``: whose billing rules apply (default: the catalog's date).
    """
    catalog = catalog if catalog is not None else load_catalog()
    entry = catalog.get(entry_id)
    _check_counts(catalog, entry, instances, provisioned_instances)
    if instance_seconds is not None:
        if not isinstance(entry, InstanceHourEntry):
            raise ConfigError(f"{entry.id} is billed per request: instance_seconds applies to instance_hour entries")
        if instance_seconds < 0:
            raise ConfigError("instance_seconds must not be negative")
        duration_s, instances = instance_seconds, 1
    usage = _usage_from_table(table, entry, memory_mb=memory_mb, duration_s=duration_s)
    if instance_seconds is not None:
        usage.notes.append(f"instances billed for their lifetimes summed: {instance_seconds:.3f} instance-seconds")
    return _price(entry, catalog, usage, n_billed=len(usage.duration_ms), instances=instances,
                  provisioned_instances=provisioned_instances, as_of=as_of)


def estimate(
    entry_id: str,
    *,
    requests: int,
    duration_ms: float,
    memory_mb: int | None = None,
    catalog: Catalog | None = None,
    duration_s: float | None = None,
    instances: int = 1,
    provisioned_instances: int = 0,
    as_of: dt.date | None = None,
) -> CostBreakdown:
    """What-if: ``requests`` requests of ``duration_ms`` each at ``memory_mb``, priced as ``entry_id``.

    Instance-hour entries need ``duration_s`` (how long the instances run). With provisioned
    concurrency, arrivals are taken as uniform over ``duration_s``: provisioned capacity serves
    a share min(1, P × window / busy time) of the requests.
    """
    catalog = catalog if catalog is not None else load_catalog()
    entry = catalog.get(entry_id)
    _check_counts(catalog, entry, instances, provisioned_instances)
    if requests < 0 or duration_ms < 0:
        raise ConfigError("requests and duration_ms must not be negative")
    if duration_s is not None and duration_s < 0:
        raise ConfigError("duration_s must not be negative")
    if isinstance(entry, InstanceHourEntry) and duration_s is None:
        raise ConfigError(f"{entry.id} is billed per instance-hour: say how long it runs (duration_s)")
    if isinstance(entry, ServerlessEntry) and memory_mb is None:
        raise ConfigError(f"{entry.id} is billed by memory size: pass memory_mb")
    usage = _Usage(
        duration_ms=np.array([float(duration_ms)]),
        memory_mb=np.array([float(memory_mb if memory_mb is not None else 0)]),
        start_s=np.array([0.0]),
        window_s=float(duration_s or 0.0),
        weight=float(requests),
        synthetic=True,
        notes=[f"what-if: {requests:,} requests of {duration_ms:g} ms"
               + (f" at {memory_mb} MB" if memory_mb is not None else "")],
    )
    return _price(entry, catalog, usage, n_billed=requests, instances=instances,
                  provisioned_instances=provisioned_instances, as_of=as_of)


# ---------------------------------------------------------------------------- internals


def _check_counts(catalog: Catalog, entry: PriceEntry, instances: int, provisioned_instances: int) -> None:
    if instances < 1:
        raise ConfigError("instances must be at least 1")
    if provisioned_instances < 0:
        raise ConfigError("provisioned_instances must not be negative")
    if isinstance(entry, ServerlessEntry):
        if instances != 1:
            raise ConfigError(f"{entry.id} is serverless: 'instances' applies to instance_hour entries "
                              "(for warm capacity use provisioned_instances)")
        if provisioned_instances and entry.provisioned is None:
            having = [e.id for e in catalog.select(model="serverless")
                      if isinstance(e, ServerlessEntry) and e.provisioned is not None]
            raise ConfigError(f"{entry.id} has no provisioned-concurrency prices; entries with them: "
                              f"{', '.join(having) or 'none'}")
    elif provisioned_instances:
        raise ConfigError(f"{entry.id} is billed per instance-hour: provisioned_instances applies to "
                          "serverless entries (use instances)")


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(), dtype=np.float64)


def _usage_from_table(table: pa.Table, entry: PriceEntry, *, memory_mb: int | None,
                      duration_s: float | None) -> _Usage:
    missing = [c for c in _NEEDED_COLUMNS if c not in table.column_names]
    if missing:
        raise ConfigError(f"records lack column(s) {', '.join(missing)}; use servelab.records "
                          "(read_records / to_table) to build them")
    if duration_s is not None and duration_s < 0:
        raise ConfigError("duration_s must not be negative")
    notes: list[str] = []
    throttled = pc.fill_null(pc.equal(table.column("status"), "throttled"), False).to_numpy(
        zero_copy_only=False)
    keep = ~throttled
    if throttled.any():
        notes.append(f"{int(throttled.sum()):,} throttled request(s) not billed")

    scheduled = _column(table, "scheduled_s")
    completed = _column(table, "completed_s")
    if duration_s is not None:
        window = float(duration_s)
    elif len(table) == 0:
        window = 0.0
    else:
        last = np.nanmax(completed) if np.isfinite(completed).any() else np.nanmax(scheduled)
        window = max(0.0, float(last - np.nanmin(scheduled)))

    dur = _column(table, "duration_ms")[keep]
    if isinstance(entry, ServerlessEntry):
        no_dur = np.isnan(dur)
        if no_dur.any():
            fallback = _column(table, "billed_ms")[keep]
            dur = np.where(no_dur, fallback, dur)
            still = np.isnan(dur)
            notes.append(f"{int(no_dur.sum()):,} billed request(s) had no duration_ms: used their "
                         f"billed_ms ({int(still.sum()):,} had neither: billed the minimum)")
            dur = np.where(still, 0.0, dur)

    if memory_mb is not None:
        mem = np.full(len(dur), float(memory_mb))
        notes.append(f"memory {memory_mb} MB set by the caller; durations are as measured at the "
                     "records' own memory size")
    else:
        mem = _column(table, "memory_mb")[keep]
        if isinstance(entry, ServerlessEntry) and np.isnan(mem).any():
            raise ConfigError(f"{int(np.isnan(mem).sum()):,} billed record(s) have no memory_mb: "
                              "pass memory_mb (--memory-mb)")

    # Execution intervals, for the provisioned-concurrency split: the function ends at about
    # the completion time and ran for duration_ms before it.
    sent = _column(table, "sent_s")[keep]
    began = np.where(np.isnan(sent), scheduled[keep], sent)
    end = np.where(np.isnan(completed[keep]), began + dur / 1000.0, completed[keep])
    start = end - np.nan_to_num(dur) / 1000.0
    init = _column(table, "init_ms")[keep] if "init_ms" in table.column_names else None
    share: np.ndarray | float = 1.0
    if "batch_size" in table.column_names:
        batch = np.nan_to_num(_column(table, "batch_size")[keep], nan=1.0)
        if (batch > 1).any():
            share = 1.0 / np.maximum(batch, 1.0)
            notes.append(f"{int((batch > 1).sum()):,} request(s) ran in batches: each batch billed as one "
                         "execution (rounded once), shared by its requests")
    return _Usage(duration_ms=dur, memory_mb=mem, start_s=start, window_s=window, notes=notes,
                  window_measured=duration_s is None, share=share, init_ms=init)


def _resolve_memory(entry: ServerlessEntry, memory_mb: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                           np.ndarray, list[str]]:
    """Billed memory (MB), GHz and vCPU per request; tiered entries bill the tier at or above."""
    if len(memory_mb) and np.nanmin(memory_mb) <= 0:
        raise ConfigError("memory_mb must be positive")
    zeros = np.zeros(len(memory_mb))
    if not entry.tiers:
        lo, hi = entry.min_memory_mb, entry.max_memory_mb
        if len(memory_mb) and ((lo is not None and np.nanmin(memory_mb) < lo)
                               or (hi is not None and np.nanmax(memory_mb) > hi)):
            raise ConfigError(f"{entry.id}: memory must be between {lo} and {hi} MB, got "
                              f"{int(np.nanmin(memory_mb))}-{int(np.nanmax(memory_mb))} MB")
        return memory_mb, zeros, zeros, []
    sizes = np.array([t.memory_mb for t in entry.tiers], dtype=np.float64)
    idx = np.searchsorted(sizes, memory_mb, side="left")
    if len(idx) and idx.max() >= len(sizes):
        listed = ", ".join(str(int(m)) for m in sizes)
        raise ConfigError(f"{entry.id}: memory {int(np.nanmax(memory_mb))} MB is above its largest size "
                          f"(sizes: {listed} MB)")
    billed_mem = sizes[idx]
    notes = []
    off = billed_mem != memory_mb
    if off.any():
        asked = ", ".join(str(int(m)) for m in np.unique(memory_mb[off])[:5])
        notes.append(f"memory {asked} MB is not one of {entry.id}'s sizes: billed the next size up")
    ghz = np.array([t.ghz or 0.0 for t in entry.tiers])[idx]
    vcpu = np.array([t.vcpu or 0.0 for t in entry.tiers])[idx]
    return billed_mem, ghz, vcpu, notes


def _on_provisioned(start_s: np.ndarray, end_s: np.ndarray, slots: int) -> np.ndarray:
    """True for requests that found one of ``slots`` provisioned executions free when they began.

    In flight at request i's start = requests started at or before it (earliest first, ties by
    position) minus requests that had already ended. Vectorised: two sorts and a searchsorted.
    """
    n = len(start_s)
    if slots <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    order = np.argsort(start_s, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    ended = np.searchsorted(np.sort(end_s), start_s, side="right")
    return (rank - ended) <= slots


def _ceil_to(x: float, step: float) -> float:
    return math.ceil(x / step - _ROUNDING_TOLERANCE) * step


@dataclass
class _Parts:
    init_gb_s: float = 0.0
    init_billed: bool = False
    requests_usd: float = 0.0
    compute_usd: float = 0.0
    provisioned_usd: float = 0.0
    instance_usd: float = 0.0
    billed_gb_s: float = 0.0
    window_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _price_serverless(entry: ServerlessEntry, usage: _Usage, n_billed: int, slots: int, as_of: dt.date) -> _Parts:
    out = _Parts()  # window_s stays 0 unless provisioned capacity is billed for a window
    billed = billed_ms(usage.duration_ms, entry)
    mem, ghz, vcpu, out.notes = _resolve_memory(entry, usage.memory_mb)
    out.notes.append(f"durations rounded up to {entry.rounding_ms:g} ms steps "
                     f"(minimum {entry.min_billed_ms:g} ms)")
    seconds = billed / 1000.0 * usage.share
    gb = mem / 1024.0
    carried = usage.init_ms is not None and bool(np.isfinite(usage.init_ms).any())
    if carried:
        assert usage.init_ms is not None
        has = np.isfinite(usage.init_ms)
        r = entry.rounding_ms
        init_s = np.where(has, np.ceil(np.nan_to_num(usage.init_ms) / r - _ROUNDING_TOLERANCE) * r, 0.0) / 1000.0
        out.init_gb_s = float(np.sum(init_s * gb)) * usage.weight
        out.init_billed = init_billed(entry.init_billed_from, as_of)
        rule = (f"billed since {entry.init_billed_from}" if out.init_billed else
                f"not billed on {as_of}" + (f" (billed from {entry.init_billed_from})" if entry.init_billed_from
                                            else f" ({entry.id} does not bill init)"))
        out.notes.append(f"{int(has.sum()):,} environment init(s), {out.init_gb_s:.3f} GB-s: {rule}")
        if out.init_billed:
            seconds = seconds + init_s
    gb_rate = np.full(len(seconds), entry.per_gb_second_usd)
    cpu_rate = ghz * entry.per_ghz_second_usd + vcpu * entry.per_vcpu_second_usd
    if slots:
        pv = entry.provisioned
        assert pv is not None  # _check_counts
        if len(np.unique(mem)) > 1:
            raise ConfigError("provisioned concurrency needs one memory size; the records mix several: "
                              "pass memory_mb")
        covered = _provisioned_share(usage, seconds, slots, out.notes)
        gb_rate = gb_rate * (1 - covered) + pv.duration_per_gb_second_usd * covered
        pc_gb = float(gb[0]) if len(gb) else 0.0
        out.window_s = _ceil_to(usage.window_s, pv.billing_granularity_s)
        out.provisioned_usd = slots * pc_gb * out.window_s * pv.per_gb_second_usd
        out.notes.append(f"provisioned: {slots} x {pc_gb * 1024:g} MB for {out.window_s:g} s (window "
                         f"{usage.window_s:.3f} s rounded up to {pv.billing_granularity_s:g} s steps)")
    out.compute_usd = float(np.sum(seconds * (gb * gb_rate + cpu_rate))) * usage.weight
    out.billed_gb_s = float(np.sum(seconds * gb)) * usage.weight
    out.requests_usd = n_billed * entry.per_million_requests_usd / 1e6
    return out


def _provisioned_share(usage: _Usage, seconds: np.ndarray, slots: int, notes: list[str]) -> np.ndarray:
    """Per request, the share of it served by provisioned capacity (0/1 for real records)."""
    if usage.synthetic:
        busy_s = float(seconds.sum()) * usage.weight
        share = 1.0 if busy_s == 0 else min(1.0, slots * usage.window_s / busy_s)
        notes.append(f"{share:.1%} of requests on provisioned capacity (uniform arrivals assumed)")
        return np.full(len(seconds), share)
    end = usage.start_s + np.nan_to_num(usage.duration_ms) / 1000.0
    covered = _on_provisioned(usage.start_s, end, slots)
    notes.append(f"{int(covered.sum()):,} of {len(covered):,} requests ran on the {slots} provisioned "
                 "instance(s) (first come by start time); the rest at on-demand prices")
    return covered.astype(np.float64)


def _price_instances(entry: InstanceHourEntry, usage: _Usage, instances: int) -> _Parts:
    billed_s = max(_ceil_to(usage.window_s, entry.billing_granularity_s), entry.minimum_billed_s)
    note = (f"{instances} x {entry.instance_type} for {billed_s:g} s (window {usage.window_s:.3f} s, "
            f"{entry.billing_granularity_s:g} s steps, minimum {entry.minimum_billed_s:g} s)")
    return _Parts(instance_usd=instances * billed_s / 3600.0 * entry.hourly_usd, window_s=billed_s,
                  notes=[note])


def _price(entry: PriceEntry, catalog: Catalog, usage: _Usage, *, n_billed: int, instances: int,
           provisioned_instances: int, as_of: dt.date | None = None) -> CostBreakdown:
    origin = catalog.origin(entry.id)
    as_of = as_of or dt.date.fromisoformat(origin.date)
    notes = [f"prices: {entry.id} from catalog {origin.date} (v{origin.catalog_version}, {origin.path})"]
    if not entry.confirmed:
        notes.append(f"UNCONFIRMED prices in {entry.id}: see its source")
    notes += usage.notes
    if usage.window_measured and (isinstance(entry, InstanceHourEntry) or provisioned_instances):
        notes.append(f"window {usage.window_s:.3f} s = first scheduled send to last completion "
                     "(client clock)")
    if isinstance(entry, ServerlessEntry):
        parts = _price_serverless(entry, usage, n_billed, provisioned_instances, as_of)
    else:
        parts = _price_instances(entry, usage, instances)
    notes += parts.notes
    notes.append("free tier, volume discounts, data transfer and storage not included")
    total = parts.requests_usd + parts.compute_usd + parts.provisioned_usd + parts.instance_usd
    if not n_billed:
        notes.append("no billed requests: per-million cost undefined")
    return CostBreakdown(
        entry_id=entry.id, catalog_date=origin.date, requests=int(n_billed),
        requests_usd=parts.requests_usd, compute_usd=parts.compute_usd,
        provisioned_usd=parts.provisioned_usd, instance_usd=parts.instance_usd, total_usd=total,
        per_million_usd=total / n_billed * 1e6 if n_billed else math.nan, notes=tuple(notes),
        model=entry.model, billed_gb_s=parts.billed_gb_s, window_s=parts.window_s,
        init_gb_s=parts.init_gb_s, init_billed=parts.init_billed, as_of=as_of.isoformat(),
    )
