"""Several generator processes for one run, when one event loop cannot keep the schedule.

The arrivals are split round-robin (process ``i`` sends requests ``i, i+N, …``), so each
process sees the same shape of load at 1/N of the rate. Processes are spawned (not forked: the
parent may hold threads), report ready, and are then given one shared start time on the
system-wide monotonic clock, so their ``scheduled_s`` values live on one time axis.

Ctrl-C reaches every process of the terminal's group; the children ignore it and the parent
sets a shared stop event instead, so each child stops issuing, waits for its in-flight
requests briefly and flushes its records before it reports back.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import ServelabError
from servelab.loadgen.driver import (
    Outcome,
    RunLog,
    RunResult,
    TargetFactory,
    drive,
    issuing_process,
    make_result,
)
from servelab.loadgen.live import LiveStats, ProgressDisplay

READY_TIMEOUT_S = 120.0
START_LEAD_S = 0.05  # between "go" and the first scheduled time, so every child is waiting


def _child(i: int, target_factory: TargetFactory, times: np.ndarray, indices: np.ndarray,
           payloads: Sequence[bytes], out_dir: Path, run_id: str, opts: dict[str, Any],
           ready_q: Any, go: Any, start_value: Any, stop_evt: Any, stats_q: Any, result_q: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into stop_evt
    ready_q.put(i)
    go.wait()

    async def main() -> Outcome:
        stop = asyncio.Event()
        stats = LiveStats() if stats_q is not None else None

        def tick() -> None:
            if stop_evt.is_set():
                stop.set()
            if stats is not None:
                d = stats.take()
                if d.sent or d.done:
                    stats_q.put(d)

        out = await drive(target_factory, times, indices, payloads, out_dir=out_dir, run_id=run_id,
                           start_mono=start_value.value, writer_prefix=f"p{i}-", stop=stop,
                           stats=stats, tick=tick, **opts)
        tick()  # the last counts, so the parent's progress bar ends at the true total
        return out

    try:
        with issuing_process():
            outcome = asyncio.run(main())
        result_q.put((i, outcome, None))
    except BaseException as e:  # report, never hang the parent
        result_q.put((i, None, f"{type(e).__name__}: {e}"))


def run_processes(target_factory: TargetFactory, times: np.ndarray, payloads: Sequence[bytes], *,
                  out_dir: Path, run_id: str, procs: int, timeout_s: float, max_connections: int,
                  spin_s: float, grace_s: float, progress: bool, duration_s: float,
                  config: Mapping[str, Any]) -> RunResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir, run_id, config)
    ctx = mp.get_context("spawn")
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    stats_q = ctx.Queue() if progress else None
    go, stop_evt = ctx.Event(), ctx.Event()
    start_value = ctx.Value("d", 0.0)
    opts = {"timeout_s": timeout_s, "max_connections": max(1, max_connections // procs),
            "spin_s": spin_s, "grace_s": grace_s, "flush_interval_s": 1.0}
    children = [
        ctx.Process(target=_child, name=f"loadgen-p{i}", daemon=True,
                    args=(i, target_factory, times[i::procs], np.arange(i, times.size, procs), payloads,
                          out_dir, run_id, opts, ready_q, go, start_value, stop_evt, stats_q, result_q))
        for i in range(procs)
    ]
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop_evt.set())
    t0 = time.monotonic()
    outs: dict[int, Outcome] = {}
    errors: list[str] = []
    display: ProgressDisplay | None = None
    try:
        for c in children:
            c.start()
        _wait_ready(ready_q, children)
        start_value.value = time.monotonic() + START_LEAD_S
        go.set()
        if stats_q is not None:
            stats = LiveStats()
            display = ProgressDisplay(stats, duration_s=duration_s, requests=times.size,
                                      start_mono=start_value.value, feed=lambda: _feed(stats_q, stats))
            display.__enter__()
        while len(outs) + len(errors) < procs:
            try:
                i, outcome, err = result_q.get(timeout=0.5)
            except queue.Empty:
                if any(c.exitcode not in (None, 0) for c in children):
                    errors.append("a generator process died: " + ", ".join(
                        f"{c.name} exit {c.exitcode}" for c in children if c.exitcode not in (None, 0)))
                    break
                continue
            if err is None:
                outs[i] = outcome
            else:
                errors.append(f"generator process {i}: {err}")
    finally:
        stop_evt.set()
        go.set()
        if display is not None:
            display.__exit__(None, None, None)
        for c in children:
            c.join(timeout=5)
            if c.is_alive():
                c.kill()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    result = make_result(run_id, out_dir, times.size, list(outs.values()), time.monotonic() - t0,
                     failed=bool(errors))
    log.finish(result)
    if errors:
        raise ServelabError("; ".join(errors))
    return result


def _wait_ready(ready_q: Any, children: Sequence[Any]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = 0
    while ready < len(children):
        try:
            ready_q.get(timeout=0.5)
            ready += 1
        except queue.Empty:
            dead = [c.name for c in children if c.exitcode is not None]
            if dead or time.monotonic() > deadline:
                raise ServelabError(f"generator processes did not start: {dead or 'timed out'}") from None


def _feed(stats_q: Any, stats: LiveStats) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            stats.merge(stats_q.get_nowait())
