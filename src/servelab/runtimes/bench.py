"""Measure a model on a runtime: session creation, then per-iteration inference latency.

:func:`bench_model` returns raw timings (every iteration, warm-up included and marked), so any
statistic can be recomputed later; :func:`summarize` turns them into the usual median / p95 /
throughput table. Times are milliseconds, measured with ``time.perf_counter`` around
``Session.infer`` (which includes input validation, as the platform's worker pays it too).
Inputs are generated before timing starts.

:func:`bench_isolated` runs one runtime's measurements in a fresh interpreter (what the CLI and
``benchmarks/bench_models.py`` use); a runtime's import is timed apart (``import_ms``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.runtimes.base import RuntimeName, check_runtime, check_threads


def sample_inputs_for(path: Path, session: Any, batch: int) -> dict[str, np.ndarray]:
    """Valid inputs of ``batch`` rows: the zoo's own sample inputs when the file was built by the
    zoo (token ids below the vocabulary size, an all-ones mask), else random data fitting the specs."""
    from servelab.models import zoo

    if path.is_dir():  # a SavedModel (tensorflow): random data fitting its specs
        rng = np.random.default_rng(0)
        return {spec.name: spec.random(batch, rng=rng) for spec in session.inputs}
    name = zoo.read_zoo_metadata(path).get(f"{zoo.META_PREFIX}name")
    if name in zoo.ZOO:
        return zoo.sample_inputs(name, batch)
    rng = np.random.default_rng(0)
    return {spec.name: spec.random(batch, rng=rng) for spec in session.inputs}


def model_size_bytes(path: Path) -> int:
    """The ONNX file's size, or a SavedModel directory's total."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _check_positive(values: Iterable[int], what: str) -> list[int]:
    out = list(values)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ConfigError(f"{what} must be a non-empty list of integers >= 1, got {out!r}")
    return out


def bench_model(
    path: Path,
    runtime: RuntimeName,
    batch_sizes: Sequence[int],
    threads_list: Sequence[int],
    repeats: int,
    warmup: int,
    *,
    repeats_for: Callable[[int], int] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per (threads, batch size): raw latencies, warm-up latencies, session creation.

    A session is created once per thread count (its creation time is in every record of that
    count) and run at each batch size. ``repeats_for(batch)`` overrides ``repeats`` per batch
    size (a batch of 8 on VGG16 takes seconds). ``on_result`` sees each record as it completes.
    """
    from servelab import runtimes

    check_runtime(runtime)
    batch_sizes = _check_positive(batch_sizes, "batch sizes")
    threads_list = [check_threads(t) for t in _check_positive(threads_list, "threads")]
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    path = Path(path)
    t0 = time.perf_counter()
    runtimes.import_runtime(runtime)
    import_ms = (time.perf_counter() - t0) * 1000.0
    records: list[dict[str, Any]] = []
    for threads in threads_list:
        t0 = time.perf_counter()
        session = runtimes.load(path, runtime=runtime, threads=threads)
        create_ms = (time.perf_counter() - t0) * 1000.0
        for batch in batch_sizes:
            inputs = sample_inputs_for(path, session, batch)
            n = repeats_for(batch) if repeats_for else repeats
            warm = [_timed(session, inputs) for _ in range(warmup)]
            lat = [_timed(session, inputs) for _ in range(n)]
            record = {
                "model": path.stem,
                "model_path": str(path),
                "file_size_bytes": model_size_bytes(path),
                "runtime": runtime,
                "threads": threads,
                "batch_size": batch,
                "pid": os.getpid(),
                "import_ms": import_ms,
                "session_create_ms": create_ms,
                "warmup": warmup,
                "repeats": n,
                "warmup_ms": warm,
                "latencies_ms": lat,
            }
            records.append(record)
            if on_result:
                on_result(record)
        del session
    return records


def bench_isolated(
    path: Path,
    runtime: RuntimeName,
    batch_sizes: Sequence[int],
    threads_list: Sequence[int],
    repeats: int,
    warmup: int,
    *,
    repeats_for: Callable[[int], int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`bench_model` in a fresh interpreter, so runtimes measured one after another do not
    share a process.

    Why: a runtime's thread pool outlives its runs. On the 2-core VM, after torch ran with 2
    threads, the next onnxruntime and torch 1-thread runs in the same process were 1.5-2x
    slower than before it (its OpenMP workers kept spinning). A fresh process per runtime also
    makes ``import_ms`` and the first session's creation what a cold instance pays.
    ``repeats_for`` must be picklable (a module-level function or ``dict.__getitem__``).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    check_runtime(runtime)  # fail here, not in the child
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(bench_model, Path(path), runtime, list(batch_sizes), list(threads_list),
                           repeats, warmup, repeats_for=repeats_for).result()


def _timed(session: Any, inputs: dict[str, np.ndarray]) -> float:
    t0 = time.perf_counter()
    session.infer(inputs)
    return (time.perf_counter() - t0) * 1000.0


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per record: median and p95 latency (ms) and throughput (items/s = rows over total time)."""
    out = []
    for r in records:
        lat = np.asarray(r["latencies_ms"], dtype=float)
        out.append({
            "model": r["model"],
            "runtime": r["runtime"],
            "threads": r["threads"],
            "batch_size": r["batch_size"],
            "session_create_ms": r["session_create_ms"],
            "first_inference_ms": (r["warmup_ms"] or r["latencies_ms"])[0],  # at this batch size
            "median_ms": float(np.median(lat)),
            "p95_ms": float(np.percentile(lat, 95)),
            "mean_ms": float(lat.mean()),
            "throughput_items_s": r["batch_size"] * len(lat) / (lat.sum() / 1000.0),
            "repeats": len(lat),
        })
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The machine and library versions, written next to every benchmark result."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {d: _version(d) for d in ("servelab", "numpy", "onnx", "onnxruntime", "torch",
                                              "onnx2torch", "tensorflow-cpu", "keras")},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
