"""The simulator's entry point: one configuration + a profile + arrivals → records, summary, cost.

    from servelab.sim import ServerlessConfig, load_profile, simulate
    result = simulate(ServerlessConfig(memory_mb=1769), load_profile("study-aws-gcp"), arrivals, seed=1)
    result.summary().latency_ms["p95"], result.cost().total_usd
    result.write("runs/sim-1")        # run.json + records/: servelab analyze / cost / report read it

Targets (:data:`TARGETS`): ``serverless`` (:mod:`~servelab.sim.serverless`), ``managed``
(:mod:`~servelab.sim.managed`), ``server`` (:mod:`~servelab.sim.server`). Costs are priced by
the analysis package's cost model (:func:`servelab.analysis.cost.price_run`) from the records,
as for a measured run — see :func:`price_records` for the two ways a price is set up.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, TypeAdapter, ValidationError

from servelab.errors import ConfigError
from servelab.sim.core import Outcomes
from servelab.sim.managed import ManagedConfig
from servelab.sim.output import RecordFacts, build_table, write_run
from servelab.sim.pool import PoolTrace, simulate_pool
from servelab.sim.profile import Profile
from servelab.sim.server import ServerConfig
from servelab.sim.serverless import ServerlessConfig, simulate_serverless

TargetKind = Literal["serverless", "managed", "server"]
SimConfig = Annotated[ServerlessConfig | ManagedConfig | ServerConfig, Field(discriminator="kind")]
TARGETS: dict[TargetKind, type] = {"serverless": ServerlessConfig, "managed": ManagedConfig, "server": ServerConfig}
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SimConfig)


def parse_config(data: dict[str, Any]) -> ServerlessConfig | ManagedConfig | ServerConfig:
    """A config from a mapping with ``kind``; ConfigError names the bad field."""
    if data.get("kind") not in TARGETS:
        raise ConfigError(f"a simulated target needs kind: one of {', '.join(TARGETS)}; got {data.get('kind')!r}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:]) or 'config'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid {data['kind']} configuration: {msgs}") from None


@dataclass
class SimResult:
    config: ServerlessConfig | ManagedConfig | ServerConfig
    profile: Profile
    table: pa.Table
    outcomes: Outcomes
    run_id: str
    seed: int
    duration_s: float  # the workload's scheduled duration (the billing window of always-on instances)
    sim_s: float  # wall seconds the simulation itself took (records not included)
    records_s: float  # wall seconds building the record table
    trace: PoolTrace | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.outcomes.n

    def summary(self) -> Any:
        from servelab.analysis.metrics import summarize

        return summarize(self.table, name=self.run_id, window_s=self.duration_s or None)

    def instance_seconds(self) -> float:
        """Instance lifetime summed: what an always-on or managed target is billed for."""
        end = max(self.duration_s, float(np.nanmax(pc.cast(self.table["completed_s"], pa.float64()).to_numpy(
            zero_copy_only=False))) if self.table.num_rows else 0.0)
        return self.outcomes.instance_seconds(end)

    def cost(self, entry_id: str | None = None, *, catalog: Any = None) -> Any:
        return price_records(self.table, self.config, entry_id=entry_id, catalog=catalog,
                             instance_seconds=None if self.config.kind == "serverless" else self.instance_seconds())

    def run_config(self) -> dict[str, Any]:
        return {"target": {"kind": "simulated", "name": self.config.name}, "simulated": self.config.model_dump(),
                "profile": {"model": self.profile.model, "platform": self.profile.platform,
                            "runtime": self.profile.runtime},
                "requests": self.requests, "duration_s": self.duration_s, "seed": self.seed,
                "schedule_end_s": float(self.table["scheduled_s"][-1].as_py()) if self.requests else 0.0,
                **self.meta}

    def write(self, out_dir: str | Path) -> Path:
        s = self.summary()
        return write_run(out_dir, self.table, run_id=self.run_id, config=self.run_config(),
                         summary={"requests": s.count, "by_status": s.by_status, "sim_s": self.sim_s})


def price_records(table: pa.Table, config: Any, *, entry_id: str | None = None, catalog: Any = None,
                  instance_seconds: float | None = None) -> Any:
    """Price records with :func:`servelab.analysis.cost.price_run`, for a simulated or a real run.

    * serverless: what a cloud bills is *executions*. A batch of n requests is one execution,
      rounded up once; a cold start adds its init once. So the records are priced through an
      execution view — one row per batch (grouped by instance and duration), whose
      ``duration_ms`` is the execution's duration plus the init on a cold start — and the request
      fee is then charged for every request (servelab's platform is invoked once per request).
      Provisioned concurrency is passed on;
    * managed / server: the instance-hour entry over ``instance_seconds`` (instance lifetimes
      summed; servers: instances × window).
    """
    import dataclasses

    from servelab.analysis.catalog import load_catalog
    from servelab.analysis.cost import price_run

    entry = entry_id or config.price_entry
    if config.kind != "serverless":
        return price_run(table, entry, catalog=catalog, duration_s=instance_seconds)
    catalog = catalog if catalog is not None else load_catalog()
    view, n_requests = execution_view(table)
    b = price_run(view, entry, catalog=catalog, provisioned_instances=config.provisioned)
    extra = (n_requests - view.num_rows) * catalog.get(entry).per_million_requests_usd / 1e6
    total = b.total_usd + extra
    return dataclasses.replace(
        b, requests=n_requests, requests_usd=b.requests_usd + extra, total_usd=total,
        per_million_usd=total / n_requests * 1e6 if n_requests else b.per_million_usd,
        notes=(*b.notes, f"{n_requests:,} requests ran as {view.num_rows:,} executions (batches): each execution "
                         "billed once, its init included on a cold start; the request fee charged per request"))


def execution_view(table: pa.Table) -> tuple[pa.Table, int]:
    """(one row per execution, billed requests): non-throttled records grouped into batches."""
    billed = table.filter(pc.invert(pc.fill_null(pc.equal(table["status"], "throttled"), False)))
    n = billed.num_rows
    if n == 0:
        return billed, 0
    dur = pc.cast(billed["duration_ms"], pa.float64()).to_numpy(zero_copy_only=False)
    init = pc.cast(billed["init_ms"], pa.float64()).to_numpy(zero_copy_only=False)
    cold = pc.fill_null(billed["cold"], False).to_numpy(zero_copy_only=False)
    size = pc.fill_null(billed["batch_size"], 1).to_numpy(zero_copy_only=False)
    inst = pc.fill_null(billed["instance_id"], "").to_numpy(zero_copy_only=False)
    with_init = np.where(cold & np.isfinite(init), init, 0.0)
    keep = np.ones(n, dtype=bool)
    multi = np.flatnonzero(size > 1)
    if multi.size:  # the first row of each (instance, duration) group stands for its batch
        key = np.char.add(inst[multi].astype(str), np.char.add("|", dur[multi].astype(str)))
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        keep[multi] = False
        keep[multi[first]] = True
        batch_init = np.zeros(first.size)
        np.maximum.at(batch_init, inverse, with_init[multi])
        with_init[multi[first]] = batch_init
    view = billed.filter(pa.array(keep))
    total = np.where(np.isfinite(dur), dur, np.nan)[keep] + with_init[keep]
    view = view.set_column(view.schema.get_field_index("duration_ms"), "duration_ms", pa.array(total, pa.float64()))
    if "batch_size" in view.column_names:  # each row is now a whole execution: price_run must not share it again
        i = view.schema.get_field_index("batch_size")
        view = view.set_column(i, view.schema.field(i), pa.array(np.ones(view.num_rows), view.schema.field(i).type))
    return view, n


def _times(arrivals: Any) -> tuple[np.ndarray, float]:
    times = np.asarray(getattr(arrivals, "times_s", arrivals), dtype=np.float64)
    if times.ndim != 1:
        raise ConfigError("arrivals must be a 1-D array of times (seconds)")
    if times.size and (np.any(np.diff(times) < 0) or times[0] < 0):
        raise ConfigError("arrival times must be sorted and >= 0")
    duration = float(getattr(arrivals, "duration_s", 0.0) or (times[-1] if times.size else 0.0))
    return times, duration


def simulate(config: ServerlessConfig | ManagedConfig | ServerConfig, profile: Profile, arrivals: Any, *,
             seed: int = 0, run_id: str | None = None, trace: bool = False) -> SimResult:
    """Simulate ``arrivals`` (an :class:`~servelab.workload.Arrivals` or an array of seconds)."""
    times, duration = _times(arrivals)
    rng = np.random.default_rng(seed)
    run_id = run_id or f"sim-{config.kind}-{uuid.uuid4().hex[:8]}"
    pool_trace = PoolTrace() if trace else None
    t0 = time.perf_counter()
    if isinstance(config, ServerlessConfig):
        out = simulate_serverless(config, profile, times, rng=rng)
        facts = RecordFacts(run_id=run_id, target=config.name, memory_mb=config.memory_mb,
                            billing_rounding_ms=config.billing_rounding_ms, init_parts=profile.cold_start.parts,
                            client_timeout_s=config.client_timeout_s)
    else:
        out = simulate_pool(config.pool(), profile, times, rng=rng, trace=pool_trace)
        facts = RecordFacts(run_id=run_id, target=config.name, memory_mb=config.memory_mb,
                            client_timeout_s=config.client_timeout_s, cold_starts=False)
    t1 = time.perf_counter()
    overhead = profile.client_overhead_ms.sample(rng.spawn(1)[0], times.size)
    table = build_table(times, out, overhead, facts)
    t2 = time.perf_counter()
    return SimResult(config=config, profile=profile, table=table, outcomes=out, run_id=run_id, seed=seed,
                     duration_s=duration, sim_s=t1 - t0, records_s=t2 - t1, trace=pool_trace)
