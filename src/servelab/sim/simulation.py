"""The simulator's entry point: one configuration + a profile + arrivals → records, summary, cost.

    from servelab.sim import ServerlessConfig, load_profile, simulate
    result = simulate(ServerlessConfig(memory_mb=1769), load_profile("study-aws-gcp"), arrivals, seed=1)
    result.summary().latency_ms["p95"], result.cost().total_usd
    result.write("runs/sim-1")        # run.json + records/: servelab analyze / cost / report read it

Targets (:data:`TARGETS`): ``serverless`` (:mod:`~servelab.sim.serverless`), ``managed``
(:mod:`~servelab.sim.managed`), ``server`` (:mod:`~servelab.sim.server`). Costs are priced by
the analysis package's cost model (:func:`servelab.billing.pricing.price_run`) from the records,
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
from servelab.sim import engine
from servelab.sim.engine import SimTrace
from servelab.sim.managed import ManagedConfig
from servelab.sim.outcomes import Outcomes
from servelab.sim.output import RecordFacts, build_instances, build_table, write_run
from servelab.sim.profile import Profile
from servelab.sim.server import ServerConfig
from servelab.sim.serverless import ServerlessConfig

TargetKind = Literal["serverless", "managed", "server"]
SimConfig = Annotated[ServerlessConfig | ManagedConfig | ServerConfig, Field(discriminator="kind")]
TARGETS: dict[TargetKind, type] = {"serverless": ServerlessConfig, "managed": ManagedConfig, "server": ServerConfig}
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SimConfig)


def parse_config(data: dict[str, Any]) -> ServerlessConfig | ManagedConfig | ServerConfig:
    """A config from a mapping with ``kind``; ConfigError names the bad field."""
    if data.get("kind") not in TARGETS:
        raise ConfigError(f"a simulated target needs kind: one of {', '.join(TARGETS)}; got {data.get('kind')!r}")
    try:
        config: ServerlessConfig | ManagedConfig | ServerConfig = _ADAPTER.validate_python(data)
        return config
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
    trace: SimTrace | None = None
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

    def cost(self, entry_id: str | None = None, *, catalog: Any = None, as_of: Any = None) -> Any:
        return price_records(self.table, self.config, entry_id=entry_id, catalog=catalog, as_of=as_of,
                             instance_seconds=None if self.config.kind == "serverless" else self.instance_seconds())

    def instances(self) -> pa.Table:
        """The instance lifecycle records (:data:`servelab.records.INSTANCE_SCHEMA`)."""
        return build_instances(self.outcomes, self._facts())

    def _facts(self) -> RecordFacts:
        return RecordFacts(run_id=self.run_id, target=self.config.name, memory_mb=self.config.memory_mb,
                           billing_rounding_ms=getattr(self.config, "billing_rounding_ms", 1),
                           init_parts=self.profile.cold_start.parts, client_timeout_s=self.config.client_timeout_s)

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
                         summary={"requests": s.count, "by_status": s.by_status, "sim_s": self.sim_s},
                         instances=self.instances())


def price_records(table: pa.Table, config: Any, *, entry_id: str | None = None, catalog: Any = None,
                  instance_seconds: float | None = None, as_of: Any = None) -> Any:
    """Price a simulated (or real) run of ``config`` with the one pricing function,
    :func:`servelab.billing.pricing.price_run`: serverless with its provisioned concurrency;
    managed endpoints and servers by instance lifetimes summed (``instance_seconds``)."""
    from servelab.billing.pricing import price_run

    entry = entry_id or config.price_entry
    if config.kind != "serverless":
        return price_run(table, entry, catalog=catalog, instance_seconds=instance_seconds, as_of=as_of)
    return price_run(table, entry, catalog=catalog, provisioned_instances=config.provisioned, as_of=as_of)


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
    sim_trace = SimTrace() if trace else None
    t0 = time.perf_counter()
    out = engine.run(config.engine_spec(), profile, times, rng=rng, trace=sim_trace)
    facts = RecordFacts(run_id=run_id, target=config.name, memory_mb=config.memory_mb,
                        billing_rounding_ms=getattr(config, "billing_rounding_ms", 1),
                        init_parts=profile.cold_start.parts, client_timeout_s=config.client_timeout_s)
    t1 = time.perf_counter()
    overhead = profile.client_overhead_ms.sample(rng.spawn(1)[0], times.size)
    table = build_table(times, out, overhead, facts)
    t2 = time.perf_counter()
    return SimResult(config=config, profile=profile, table=table, outcomes=out, run_id=run_id, seed=seed,
                     duration_s=duration, sim_s=t1 - t0, records_s=t2 - t1, trace=sim_trace)
