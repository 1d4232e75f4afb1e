"""The open-loop runner: every request leaves at its scheduled time, whatever earlier ones did.

How it keeps the schedule honest (MLPerf LoadGen's rules):

- The schedule (arrival times) is fixed before the run; the issuing loop only issues. It sleeps
  until the next scheduled time, starts a task for the request and moves on — it never awaits
  a completion, so a slow server cannot delay later sends.
- Latency is measured from the *scheduled* time, not the send time (no coordinated omission),
  and ``send_lag_ms`` (actual send − scheduled) is recorded for every request, so a generator
  that could not keep up says so instead of hiding it. The send is stamped when the request's
  bytes are written to the socket (:mod:`~servelab.loadgen.sendstamp`), not when its task
  starts, so connection checkout and aiohttp's deferred body write count as lag.
- ``asyncio.sleep`` wakes up to 1 ms late (epoll rounds its timeout up to a millisecond). The
  loop therefore sleeps until ``spin_s`` before the due time and then yields to the event loop
  in a tight loop (``sleep(0)``: completions still run) until the due time. With the default
  0.5 ms a send is at most ~0.5 ms late on an idle machine for ~0.13 ms of spinning per request;
  1 ms makes sends ~exact for ~0.5 ms per request; 0 spins never (up to 1 ms late).
- Each request has a timeout, counted from its send; past it the request is cancelled and
  recorded as ``timeout``.
- Records go to ``out_dir/records`` through :class:`~servelab.records.RecordWriter`. The loop
  only appends to a list; once per ``flush_interval_s`` the list is handed to a writer thread,
  so Parquet encoding never runs inside the issuing loop and a killed run loses at most the
  last interval.
- When one process cannot keep up, ``procs=N`` splits the arrivals round-robin over N
  processes that share one start time (``time.monotonic`` is system-wide on Linux); each writes
  its own parts (``part-p0-…``).

Times are seconds since the run start (``*_s``); latencies and lags are milliseconds (``*_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servelab.loadgen.driver import (
    DEFAULT_GRACE_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SPIN_S,
    DEFAULT_TIMEOUT_S,
    Outcome,
    RunLog,
    RunResult,
    TargetFactory,
    _check,
    _times_of,
    drive,
    issuing_process,
    make_result,
)
from servelab.loadgen.live import LiveStats, ProgressDisplay


def _config(target_factory: Any, times: np.ndarray, payloads: Sequence[bytes], *, timeout_s: float,
            procs: int, max_connections: int, spin_s: float, extra: Mapping[str, Any] | None) -> dict:
    describe = getattr(target_factory, "to_dict", None)
    return {
        "target": describe() if callable(describe) else repr(target_factory),
        "requests": int(times.size),
        "schedule_end_s": float(times[-1]) if times.size else 0.0,
        "payloads": {"count": len(payloads), "bytes_mean": float(np.mean([len(p) for p in payloads]))},
        "timeout_s": timeout_s, "procs": procs, "max_connections": max_connections,
        "spin_ms": spin_s * 1e3,
        **(dict(extra) if extra else {}),
    }


async def run_load(target_factory: TargetFactory, arrivals: Any, payloads: Sequence[bytes], *,
                   out_dir: str | os.PathLike, run_id: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                   max_connections: int = DEFAULT_MAX_CONNECTIONS, spin_s: float = DEFAULT_SPIN_S,
                   grace_s: float = DEFAULT_GRACE_S, flush_interval_s: float = 1.0,
                   stop: asyncio.Event | None = None, stats: LiveStats | None = None,
                   config: Mapping[str, Any] | None = None,
                   started: Callable[[float], None] | None = None) -> RunResult:
    """Run the schedule ``arrivals`` (seconds from start) against one target, in this process.

    ``target_factory(session)`` builds the target on the run's shared ``ClientSession`` (a
    :class:`~servelab.loadgen.targets.TargetSpec` is one). Setting ``stop`` ends the run
    early: issuing stops, in-flight requests get ``grace_s`` to finish, records are flushed and
    ``run.json`` says ``interrupted``. Cancelling the task does the same and then re-raises.
    ``config`` (workload spec, seed, …) is written into ``run.json`` with the run's own settings.
    """
    times = _times_of(arrivals)
    _check(payloads, timeout_s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, run_id, _config(target_factory, times, payloads, timeout_s=timeout_s, procs=1,
                                      max_connections=max_connections, spin_s=spin_s, extra=config))
    t0 = time.monotonic()
    outcome = Outcome()
    try:
        await drive(target_factory, times, np.arange(times.size), payloads, out_dir=out,
                     run_id=run_id, start_mono=None, timeout_s=timeout_s,
                     max_connections=max_connections, spin_s=spin_s, grace_s=grace_s,
                     flush_interval_s=flush_interval_s, writer_prefix="",
                     stop=stop or asyncio.Event(), stats=stats, tick=None, started=started,
                     out=outcome)
    except asyncio.CancelledError:
        outcome.interrupted = True
        log.finish(make_result(run_id, out, times.size, [outcome], time.monotonic() - t0))
        raise
    except BaseException:
        log.finish(make_result(run_id, out, times.size, [outcome], time.monotonic() - t0, failed=True))
        raise
    result = make_result(run_id, out, times.size, [outcome], time.monotonic() - t0)
    log.finish(result)
    return result


def run(target_factory: TargetFactory, arrivals: Any, payloads: Sequence[bytes], *,
        out_dir: str | os.PathLike, run_id: str, procs: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS, spin_s: float = DEFAULT_SPIN_S,
        grace_s: float = DEFAULT_GRACE_S, progress: bool = False,
        config: Mapping[str, Any] | None = None) -> RunResult:
    """Blocking entry point: one process (``procs=1``) or several; Ctrl-C stops the run cleanly.

    The first Ctrl-C stops issuing and waits up to ``grace_s`` for in-flight requests; the
    result (and ``run.json``) then says ``interrupted``. With ``procs > 1``, ``target_factory``
    must be picklable (a :class:`~servelab.loadgen.targets.TargetSpec` is).
    """
    times = _times_of(arrivals)
    _check(payloads, timeout_s, procs)
    duration_s = float(getattr(arrivals, "duration_s", 0.0) or (times[-1] if times.size else 0.0))
    if procs > 1:
        from servelab.loadgen.procs import run_processes

        return run_processes(target_factory, times, payloads, out_dir=Path(out_dir), run_id=run_id,
                             procs=procs, timeout_s=timeout_s, max_connections=max_connections,
                             spin_s=spin_s, grace_s=grace_s, progress=progress, duration_s=duration_s,
                             config=_config(target_factory, times, payloads, timeout_s=timeout_s,
                                            procs=procs, max_connections=max_connections,
                                            spin_s=spin_s, extra=config))

    async def main() -> RunResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError, ValueError):  # only the main thread gets signals
            loop.add_signal_handler(signal.SIGINT, stop.set)
        stats = LiveStats() if progress else None
        display: ProgressDisplay | None = None

        def started(start_mono: float) -> None:
            nonlocal display
            if stats is not None:
                display = ProgressDisplay(stats, duration_s=duration_s, requests=times.size,
                                          start_mono=start_mono).__enter__()
        try:
            return await run_load(target_factory, times, payloads, out_dir=out_dir, run_id=run_id,
                                  timeout_s=timeout_s, max_connections=max_connections, spin_s=spin_s,
                                  grace_s=grace_s, stop=stop, stats=stats, config=config,
                                  started=started)
        finally:
            if display is not None:
                display.__exit__(None, None, None)
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)

    with issuing_process():
        return asyncio.run(main())
