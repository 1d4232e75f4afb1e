"""The issuing loop of one load-generator process, and what it returns.

:func:`drive` issues one process's share of a schedule (the rules the runner's docstring states:
sleep then spin to each due time, never await a completion, stamp the send at the socket, a
timeout per request, records handed to a writer thread); :func:`make_result` sums what every
process measured. :mod:`~servelab.loadgen.runner` (one process) and
:mod:`~servelab.loadgen.procs` (several) both build on it, so neither reaches into the other.

Times are seconds since the run start (``*_s``); latencies and lags are milliseconds (``*_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
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
from servelab.loadgen.live import LiveStats
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
class Outcome:
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
                 out: Outcome) -> None:
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


async def drive(target_factory: TargetFactory, times: np.ndarray, indices: np.ndarray,
                 payloads: Sequence[bytes], *, out_dir: Path, run_id: str, start_mono: float | None,
                 timeout_s: float, max_connections: int, spin_s: float, grace_s: float,
                 flush_interval_s: float, writer_prefix: str, stop: asyncio.Event,
                 stats: LiveStats | None, tick: Callable[[], None] | None,
                 started: Callable[[float], None] | None = None,
                 out: Outcome | None = None) -> Outcome:
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
                         out=out if out is not None else Outcome(start_mono=start_mono))
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


def make_result(run_id: str, out_dir: Path, requests: int, outs: Sequence[Outcome],
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
