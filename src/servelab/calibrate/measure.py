"""``servelab profile MODEL``: measure a model's service times on the local platform → a profile.

For each memory size it deploys the model as a function and drives it with the load generator
(the same client the validation and experiments use):

1. **cold starts** — ``cold`` requests spaced wider than a zero keep-alive, so each one starts
   a fresh instance: the init time and its parts (from the platform's ``X-Servelab-Facts``),
   and the first inference's extra time against a warm one;
2. **warm requests** — ``warm`` requests at a low constant rate on a kept-alive instance: the
   execution time at batch 1 (``duration_ms``), the platform's own time per request beyond it
   (``platform_ms − queue_ms − duration_ms``: the dispatch overhead that holds the instance),
   and the time outside the platform (``latency_ms − platform_ms``: HTTP and the client);
3. **batches** — for each batch size b > 1, bursts of b simultaneous requests to a function
   batching up to b (a generous wait), so each burst runs as one batch: ``duration_ms`` per batch.

Distributions are stored as quantiles (0, 5, 10, 25, 50, 75, 90, 95, 99, 100 %). Run it on a
quiet machine: another job's CPU use shows up as service time.
"""

from __future__ import annotations

import platform as _platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from servelab.calibrate.realrun import Deployer, drive, local_platform
from servelab.errors import PlatformError
from servelab.sim.profile import INIT_PARTS, ColdStart, Dist, InferenceEntry, Profile
from servelab.sim.serverless import ServerlessConfig

COLD_GAP_S = 0.8  # > the platform's 0.1 s reaper tick + stopping an instance: the next request is cold


def _col(table: pa.Table, name: str, where: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return x if where is None else x[where]


def _ok(table: pa.Table) -> np.ndarray:
    return np.asarray(pc.equal(table["status"], "ok").to_numpy(zero_copy_only=False), dtype=bool)


def measure_profile(model_path: Path, *, model_name: str | None = None, memory_sizes: tuple[int, ...] = (1769,),
                    batch_sizes: tuple[int, ...] = (1, 2, 4, 8), cold: int = 8, warm: int = 60,
                    warm_rps: float = 10.0, start_mode: str = "fork", runtime: str = "onnxruntime",
                    work_dir: Path, url: str | None = None, port: int | None = None, log: Any = print) -> Profile:
    """Measure ``model_path`` on a local platform (``url``, or a fresh one under ``work_dir`` on ``port``)."""
    from servelab.loadgen.payloads import from_model

    model_path = Path(model_path)
    payloads = from_model(model_path, batch=1, count=4)
    entries: list[InferenceEntry] = []
    init_all: list[float] = []
    parts_all: dict[str, list[float]] = {p: [] for p in INIT_PARTS}
    extra_all: list[float] = []
    hold_all: list[float] = []
    client_all: list[float] = []
    t0 = time.perf_counter()
    with local_platform(work_dir, url, port) as base:
        dep = Deployer(base, model_path, start_mode=start_mode, runtime=runtime)
        for mem in memory_sizes:
            # 1. cold starts
            fn = dep.deploy(f"prof-cold-{mem}", ServerlessConfig(memory_mb=mem, keep_alive_s=0.0, max_concurrency=1))
            times = np.arange(cold) * COLD_GAP_S
            t = drive(base, fn, times, payloads, work_dir / f"cold-{mem}", run_id=f"profile-cold-{mem}")
            dep.delete(fn)
            ok = _ok(t)
            is_cold = ok & pc.fill_null(t["cold"], False).to_numpy(zero_copy_only=False)
            if not is_cold.any():
                raise PlatformError(f"no cold start measured at {mem} MB (statuses: "
                                    f"{pc.value_counts(t['status']).to_pylist()}); see {work_dir}/platform.log")
            init_all += _col(t, "init_ms", is_cold).tolist()
            for p in INIT_PARTS:
                parts_all[p] += _col(t, f"init_{p}_ms", is_cold).tolist()
            cold_dur = _col(t, "duration_ms", is_cold)
            # 2. warm
            fn = dep.deploy(f"prof-warm-{mem}", ServerlessConfig(memory_mb=mem, keep_alive_s=600.0, max_concurrency=1))
            times = np.arange(warm + 3) / warm_rps
            t = drive(base, fn, times, payloads, work_dir / f"warm-{mem}", run_id=f"profile-warm-{mem}")
            w = _ok(t) & ~pc.fill_null(t["cold"], True).to_numpy(zero_copy_only=False)
            dur = _col(t, "duration_ms", w)
            if dur.size < 3:
                raise PlatformError(f"too few warm requests succeeded at {mem} MB; see {work_dir}/platform.log")
            extra_all.append(max(0.0, float(np.median(cold_dur) - np.median(dur))))
            plat = _col(t, "platform_ms", w)
            hold_all += np.maximum(0.0, plat - _col(t, "queue_ms", w) - dur).tolist()
            client_all += np.maximum(0.0, _col(t, "latency_ms", w) - plat).tolist()
            batches = {1: Dist.from_samples(dur)}
            # 3. batches
            for b in (b for b in batch_sizes if b > 1):
                fn = dep.deploy(f"prof-b{b}-{mem}", ServerlessConfig(memory_mb=mem, keep_alive_s=600.0,
                                                                     max_concurrency=1, max_batch_size=b,
                                                                     max_wait_ms=2000.0))
                reps = max(6, warm // b) + 1
                gap = max(0.3, 4 * float(np.median(dur)) * b / 1000.0)
                times = np.repeat(np.arange(reps) * gap, b)
                t = drive(base, fn, times, payloads, work_dir / f"b{b}-{mem}", run_id=f"profile-b{b}-{mem}")
                dep.delete(fn)
                sel = _ok(t) & (_col(t, "batch_size") == b) & ~pc.fill_null(t["cold"], True).to_numpy(
                    zero_copy_only=False)
                per_batch = np.unique(_col(t, "duration_ms", sel))  # one value per batch
                if per_batch.size:
                    batches[b] = Dist.from_samples(per_batch)
                log(f"  {mem} MB batch {b}: {per_batch.size} batches, median {np.median(per_batch):.1f} ms"
                    if per_batch.size else f"  {mem} MB batch {b}: no full batch formed (skipped)")
            dep.delete(f"prof-warm-{mem}")
            entries.append(InferenceEntry(device="cpu", memory_mb=mem, batches=batches))
            log(f"  {mem} MB: init p50 {np.median(init_all):.1f} ms, warm p50 {np.median(dur):.2f} ms")
    init = np.asarray(init_all)
    median_init = float(np.median(init))
    parts = {p: round(float(np.nanmedian(v)) / median_init, 4) for p, v in parts_all.items()
             if len(v) and np.isfinite(v).any() and median_init > 0}
    total = sum(parts.values())
    if total > 1:
        parts = {p: v / total for p, v in parts.items()}
    measured = {"machine": f"{_platform.machine()} {_platform.node()}", "python": _platform.python_version(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"), "start_mode": start_mode,
                "memory_sizes": list(memory_sizes), "batch_sizes": list(batch_sizes), "cold": cold, "warm": warm,
                "warm_rps": warm_rps, "seconds": round(time.perf_counter() - t0, 1)}
    return Profile(model=model_name or model_path.stem, runtime=runtime, platform="local",
                   description=f"measured by servelab profile on the local platform ({start_mode} start)",
                   cold_start=ColdStart(init_ms=Dist.from_samples(init), parts=parts,
                                        first_inference_extra_ms=Dist.constant(float(np.median(extra_all)))),
                   inference=tuple(entries), dispatch_overhead_ms=Dist.from_samples(hold_all),
                   client_overhead_ms=Dist.from_samples(client_all), threads_scale=False, measured=measured,
                   sources={"all": "measured by servelab profile (see measured)"})


def resolve_model(model: str, models_dir: Path) -> tuple[str, Path]:
    """A zoo name (built into ``models_dir``) or an ONNX file path → (name, path)."""
    p = Path(model).expanduser()
    if p.is_file():
        return p.stem, p
    from servelab.models import zoo

    return model, zoo.build(model, models_dir)
