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
import json
import os
import queue
import signal
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np

from servelab.errors import ConfigError, ServelabError
from servelab.loadgen import sendstamp
from servelab.loadgen.live import LiveStats, ProgressDisplay
from servelab.loadgen.targets import InvokeResult, Target
from servelab.provenance import versions
from servelab.records import STATUSES, RecordWriter

RunStatus = Literal["running", "completed", "interrupted", "failed"]
TargetFactory = Callable[[aiohttp.ClientSession], Target]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_SPIN_S = 0.0005
DEFAULT_GRACE_S = 2.0
TICK_S = 0.25


@dataclass
class RunResult:
    """How the run went, as the generator saw it (the records hold the details)."""

    run_id: str
    status: RunStatus
    out_dir: str
    requests: int  # scheduled
    sent: int
    recorded: int
    abandoned: int  # sent but still in flight when an interrupted run gave up on them
    max_in_flight: int  # most requests outstanding at once (per process)
    # True when every pooled connection was busy at some point: later requests then waited in
    # the client for a connection; the send is stamped at the socket write, so that wait counts
    # in their send lag as well as their latency.
    pool_saturated: bool
    by_status: dict[str, int]
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None
    send_lag_max_ms: float | None
    elapsed_s: float
    # time.monotonic() at the run's t = 0 (system-wide on Linux): aligns records with other clocks
    start_monotonic_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Outcome:
    """One process's share of a run; merged across processes into a :class:`RunResult`."""

    start_mono: float | None = None
    interrupted: bool = False
    sent: int = 0
    recorded: int = 0
    abandoned: int = 0
    max_in_flight: int = 0
    pool_saturated: bool = False
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    lags_ms: array = field(default_factory=lambda: array("d"))


class _Sink:
    """Collects records in the loop; a thread writes each second's batch as one Parquet part."""

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer
        self._buf: list[dict] = []
        self.error: Exception | None = None
        self._q: queue.SimpleQueue[list[dict] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="loadgen-writer", daemon=True)
        self._thread.start()

    def add(self, record: dict) -> None:
        self._buf.append(record)

    def hand_over(self) -> None:
        buf, self._buf = self._buf, []
        if buf:
            self._q.put(buf)

    def _write(self) -> None:
        while (batch := self._q.get()) is not None:
            if self.error is not None:
                continue  # keep draining so close() never blocks; the error is raised there
            try:
                self.writer.extend(batch)
                self.writer.flush()
            except Exception as e:  # disk full, directory removed …: say so at the end
                self.error = e

    def close(self) -> None:
        self.hand_over()
        self._q.put(None)
        self._thread.join()
        if self.error is None:
            try:
                self.writer.close()
            except Exception as e:
                self.error = e
        if self.error is not None:
            raise ServelabError(f"writing records to {self.writer.directory} failed: "
                                f"{type(self.error).__name__}: {self.error}") from self.error


@contextlib.contextmanager
def issuing_process() -> Iterator[None]:
    """Settings for a process whose main job is to keep a schedule, restored afterwards.

    The writer thread turns dict records into Arrow columns in Python; with the default 5 ms
    GIL switch interval the issuing loop could wait that long for the GIL each time it wakes.
    At 1 ms the writer yields sooner (it only takes a little longer).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, 0.001))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _times_of(arrivals: Any) -> np.ndarray:
    """Arrival times in seconds from an ``Arrivals`` (``.times_s``) or a plain array."""
    times = np.asarray(getattr(arrivals, "times_s", arrivals), dtype=np.float64)
    if times.ndim != 1:
        raise ConfigError(f"arrival times must be a 1-d array of seconds, got shape {times.shape}")
    if times.size and (times[0] < 0 or np.any(np.diff(times) < 0)):
        raise ConfigError("arrival times must be sorted and non-negative (seconds from the start)")
    return times


def _check(payloads: Sequence[bytes], timeout_s: float, procs: int = 1) -> None:
    if not payloads:
        raise ConfigError("give at least one payload")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if procs < 1:
        raise ConfigError(f"procs must be at least 1, got {procs}")


class _Driver:
    """Issues one process's share of the schedule and records every answer."""

    def __init__(self, target: Target, times: np.ndarray, indices: np.ndarray,
                 payloads: Sequence[bytes], *, run_id: str, start_mono: float, timeout_s: float,
                 sink: _Sink, stop: asyncio.Event, stats: LiveStats | None, spin_s: float,
                 out: _Outcome) -> None:
        self.target, self.times, self.indices, self.payloads = target, times, indices, payloads
        self.run_id, self.start_mono, self.timeout_s = run_id, start_mono, timeout_s
        self.sink, self.stop, self.stats, self.spin_s = sink, stop, stats, spin_s
        self.inflight: set[asyncio.Task] = set()
        self.out = out

    async def issue(self) -> None:
        loop = asyncio.get_running_loop()
        spin = self.spin_s
        for k in range(self.times.size):
            due = self.start_mono + self.times[k]
            while (delay := due - time.monotonic()) > spin:
                if self.stop.is_set():
                    return
                await asyncio.sleep(min(delay - spin, TICK_S))  # chunked so a stop is seen soon
            while time.monotonic() < due:
                await asyncio.sleep(0)  # spin, but let completions run
            if self.stop.is_set():
                return
            task = loop.create_task(self._one(int(self.indices[k]), float(self.times[k])))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
            if len(self.inflight) > self.out.max_in_flight:
                self.out.max_in_flight = len(self.inflight)

    async def _one(self, index: int, scheduled_s: float) -> None:
        request_id = str(index)
        started = time.monotonic()
        box = sendstamp.begin()  # filled when the request's bytes are written (loadgen/sendstamp.py)
        self.out.sent += 1
        if self.stats is not None:
            self.stats.on_sent()
        try:
            async with asyncio.timeout(self.timeout_s):
                res = await self.target.invoke(request_id, self.payloads[index % len(self.payloads)])
        except TimeoutError:
            res = InvokeResult("timeout", error=f"no answer within {self.timeout_s:g} s")
        except Exception as e:  # a target bug must cost one request, not the run or its records
            res = InvokeResult("error", error=f"{type(e).__name__}: {e}")
        completed_s = time.monotonic() - self.start_mono
        sent_s = sendstamp.sent_at(box, started) - self.start_mono
        lag_ms = (sent_s - scheduled_s) * 1e3
        self.out.lags_ms.append(lag_ms)
        latency_ms = (completed_s - scheduled_s) * 1e3
        record = dict(res.facts)
        record.update(run_id=self.run_id, request_id=request_id, target=self.target.name,
                      scheduled_s=scheduled_s, sent_s=sent_s, completed_s=completed_s,
                      latency_ms=latency_ms, send_lag_ms=lag_ms, status=res.status,
                      error=res.error, http_status=res.http_status)
        self.sink.add(record)
        self.out.recorded += 1
        self.out.by_status[res.status] += 1
        if self.stats is not None:
            self.stats.on_done(res.status == "ok", latency_ms)

    async def drain(self, grace_s: float | None) -> None:
        """Wait for in-flight requests (each bounded by its timeout), or ``grace_s`` when stopping."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=grace_s)
        self.abandon()

    async def housekeeping(self, flush_interval_s: float, tick: Callable[[], None] | None) -> None:
        """Every tick: the caller's hook (multi-process stats, stop); every interval: records out."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            if tick is not None:
                tick()
            if time.monotonic() - last >= flush_interval_s - 1e-3:
                self.sink.hand_over()
                last = time.monotonic()

    def abandon(self) -> None:
        left = [t for t in self.inflight if not t.done()]
        for t in left:
            t.cancel()
        self.out.abandoned += len(left)


async def _drive(target_factory: TargetFactory, times: np.ndarray, indices: np.ndarray,
                 payloads: Sequence[bytes], *, out_dir: Path, run_id: str, start_mono: float | None,
                 timeout_s: float, max_connections: int, spin_s: float, grace_s: float,
                 flush_interval_s: float, writer_prefix: str, stop: asyncio.Event,
                 stats: LiveStats | None, tick: Callable[[], None] | None,
                 started: Callable[[float], None] | None = None,
                 out: _Outcome | None = None) -> _Outcome:
    """Run one process's share and return its outcome (``out``, filled in as the run goes, so
    a caller still has the counts when a cancellation is re-raised after the cleanup)."""
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                     trace_configs=[sendstamp.trace_config()]) as session:
        target = target_factory(session)
        sink = _Sink(RecordWriter(out_dir / "records", prefix=writer_prefix, flush_interval_s=1e9))
        start_mono = time.monotonic() if start_mono is None else start_mono
        if out is not None:
            out.start_mono = start_mono
        if started is not None:
            started(start_mono)
        driver = _Driver(target, times, indices, payloads, run_id=run_id, start_mono=start_mono,
                         timeout_s=timeout_s, sink=sink, stop=stop, stats=stats, spin_s=spin_s,
                         out=out if out is not None else _Outcome(start_mono=start_mono))
        keeper = asyncio.get_running_loop().create_task(driver.housekeeping(flush_interval_s, tick))
        cancelled = False
        try:
            try:
                await driver.issue()
            except asyncio.CancelledError:
                cancelled = True
            driver.out.interrupted = cancelled or stop.is_set()
            try:
                await driver.drain(grace_s if driver.out.interrupted else None)
            except asyncio.CancelledError:  # cancelled again while draining: give up at once
                cancelled = driver.out.interrupted = True
                driver.abandon()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await asyncio.to_thread(sink.close)
    if cancelled:
        raise asyncio.CancelledError
    driver.out.pool_saturated = driver.out.max_in_flight >= max_connections
    return driver.out


def _result(run_id: str, out_dir: Path, requests: int, outs: Sequence[_Outcome],
            elapsed_s: float, failed: bool = False) -> RunResult:
    lags = np.concatenate([np.frombuffer(o.lags_ms, dtype=np.float64) for o in outs]) if outs else np.empty(0)
    by_status: dict[str, int] = {s: sum(o.by_status[s] for o in outs) for s in STATUSES}
    interrupted = any(o.interrupted for o in outs)
    status: RunStatus = "failed" if failed else "interrupted" if interrupted else "completed"
    has = len(lags) > 0
    return RunResult(
        run_id=run_id, status=status, out_dir=str(out_dir), requests=requests,
        sent=sum(o.sent for o in outs), recorded=sum(o.recorded for o in outs),
        abandoned=sum(o.abandoned for o in outs),
        max_in_flight=max((o.max_in_flight for o in outs), default=0),
        pool_saturated=any(o.pool_saturated for o in outs), by_status=by_status,
        send_lag_p50_ms=float(np.percentile(lags, 50)) if has else None,
        send_lag_p99_ms=float(np.percentile(lags, 99)) if has else None,
        send_lag_max_ms=float(np.max(lags)) if has else None,
        elapsed_s=elapsed_s,
        start_monotonic_s=min((o.start_mono for o in outs if o.start_mono is not None), default=None),
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunLog:
    """``out_dir/run.json``: the full configuration at start, the end status when done."""

    def __init__(self, out_dir: Path, run_id: str, config: Mapping[str, Any]) -> None:
        self.path = out_dir / "run.json"
        self.doc: dict[str, Any] = {"run_id": run_id, "status": "running", "started_at": _now_iso(),
                                    "config": dict(config), "versions": versions()}
        self._write()

    def finish(self, result: RunResult) -> None:
        self.doc.update(status=result.status, ended_at=_now_iso(), result=result.to_dict())
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


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
    outcome = _Outcome()
    try:
        await _drive(target_factory, times, np.arange(times.size), payloads, out_dir=out,
                     run_id=run_id, start_mono=None, timeout_s=timeout_s,
                     max_connections=max_connections, spin_s=spin_s, grace_s=grace_s,
                     flush_interval_s=flush_interval_s, writer_prefix="",
                     stop=stop or asyncio.Event(), stats=stats, tick=None, started=started,
                     out=outcome)
    except asyncio.CancelledError:
        outcome.interrupted = True
        log.finish(_result(run_id, out, times.size, [outcome], time.monotonic() - t0))
        raise
    except BaseException:
        log.finish(_result(run_id, out, times.size, [outcome], time.monotonic() - t0, failed=True))
        raise
    result = _result(run_id, out, times.size, [outcome], time.monotonic() - t0)
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
