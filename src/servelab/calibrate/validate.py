"""Predicted vs measured: run one workload on the real local platform and in the simulator with
the same configuration and the same arrival times, and compare what the analyzer and the cost
model say about both. Used by ``benchmarks/bench_sim_validation.py`` and ``servelab recommend
--verify``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servelab.calibrate.realrun import Deployer, drive
from servelab.sim.profile import Profile
from servelab.sim.serverless import ServerlessConfig
from servelab.sim.simulation import price_records, simulate

METRICS = ("p50_ms", "p95_ms", "p99_ms", "success_ratio", "cold_starts", "cost_usd")


@dataclass
class Side:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    success_ratio: float
    cold_starts: int
    cost_usd: float
    requests: int

    @classmethod
    def of(cls, table: Any, config: ServerlessConfig, window_s: float) -> Side:
        from servelab.analysis.metrics import summarize

        s = summarize(table, window_s=window_s)
        lat = s.latency_ms or {}
        cost = price_records(table, config)
        return cls(lat.get("p50", math.nan), lat.get("p95", math.nan), lat.get("p99", math.nan),
                   s.success_ratio or 0.0, s.cold_starts, cost.total_usd, s.count)


@dataclass
class Comparison:
    name: str
    measured: Side
    predicted: Side
    predicted_cloud: Side | None = None  # the same run with one CPU per instance (host sharing off)

    def error(self, metric: str) -> float:
        """Relative error of the prediction (predicted / measured − 1); NaN when measured is 0."""
        m, p = getattr(self.measured, metric), getattr(self.predicted, metric)
        return p / m - 1.0 if m else (0.0 if p == m else math.nan)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "measured": vars(self.measured), "predicted": vars(self.predicted),
               "error": {m: self.error(m) for m in METRICS}}
        if self.predicted_cloud is not None:
            cloud = Comparison(self.name, self.measured, self.predicted_cloud)
            out["predicted_cloud"] = vars(self.predicted_cloud)
            out["error_cloud"] = {m: cloud.error(m) for m in METRICS}
        return out


def compare_on_platform(name: str, url: str, deployer: Deployer, config: ServerlessConfig, profile: Profile,
                        times: np.ndarray, duration_s: float, payloads: list[bytes], out_dir: Path, *,
                        seed: int = 0, host_cpus: float | None = None) -> Comparison:
    """One workload, real and simulated. The simulated function has no scale-rate limit (the
    local platform has none) and the platform's own settings. With ``host_cpus``, the prediction
    shares that many cores among instances, as the local platform does (and the prediction
    without sharing is kept beside it, as ``predicted_cloud``)."""
    fn = deployer.deploy(f"val-{name}", config)
    try:
        real = drive(url, fn, times, payloads, out_dir / "real", run_id=f"real-{name}", duration_s=duration_s,
                     timeout_s=config.client_timeout_s)
    finally:
        deployer.delete(fn)
    from servelab.workload import Arrivals

    cloud_cfg = config.model_copy(update={"scale_rate": "none", "host_cpus": None})
    sim_cfg = cloud_cfg.model_copy(update={"host_cpus": host_cpus})
    arr = Arrivals(times_s=np.asarray(times, dtype=np.float64), states=None, duration_s=duration_s, state_path=None)
    result = simulate(sim_cfg, profile, arr, seed=seed, run_id=f"sim-{name}")
    result.write(out_dir / "sim")
    cloud = None
    if host_cpus is not None:
        cloud = Side.of(simulate(cloud_cfg, profile, arr, seed=seed, run_id=f"sim-cloud-{name}").table, cloud_cfg,
                        duration_s)
    return Comparison(name, Side.of(real, config, duration_s), Side.of(result.table, sim_cfg, duration_s), cloud)
