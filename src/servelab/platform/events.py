"""Asynchronous (``Event``) invocations, kept in a durable queue the way Lambda keeps them.

``POST …/invocations`` with ``X-Amz-Invocation-Type: Event`` writes the event to SQLite in
the home (``HOME/events.db``, WAL) *before* it answers 202, so an accepted event survives a
crash of the platform: at the next start, events that were running go back to the queue
(at-least-once, as on Lambda) and everything queued runs.

The dispatcher runs due events through the function's service (``FunctionService.invoke``),
so each attempt is admitted, metered and recorded like any other request. As on Lambda:

- a function error (or timeout, or crash) is retried ``MaximumRetryAttempts`` times (0..2,
  default 2), waiting ``retry_delay_s`` before the first retry and twice that before the
  second (Lambda waits 1 then 2 minutes: ``retry_delay_s = 60``);
- a throttle (the function at its concurrency) is not an attempt: the event waits and tries
  again, with backoff, until it is ``MaximumEventAgeInSeconds`` old (60..21600, default 6 h);
- when an event gives up (retries exhausted, or too old), or succeeds, the invocation record
  goes to the ``OnFailure`` / ``OnSuccess`` destination if one is configured — here another
  function of this platform (``arn:aws:lambda:…:function:NAME``), which receives it as an
  Event — and the event stays in the queue's table as ``failed`` or ``succeeded`` with its
  attempt count and last error (``GET /servelab/v1/functions/NAME/events``).

The queue is bounded (``max_queued`` events waiting or running, over all functions): above
it the invoke answers 429 and nothing is written. Times in the table are Unix seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from servelab.errors import PlatformError, ThrottledError

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRY_ATTEMPTS = 2
DEFAULT_MAX_EVENT_AGE_S = 21600
MIN_MAX_EVENT_AGE_S = 60
THROTTLE_RETRY_S = (0.5, 5.0)  # first and longest wait after a throttle
KEEP_FINISHED = 10_000  # finished events kept for inspection, newest first
EventState = Literal["queued", "running", "succeeded", "failed"]


class EventQueueFullError(ThrottledError):
    """More events are waiting than the platform keeps (HTTP 429)."""


@dataclass(frozen=True)
class EventInvokeConfig:
    """Lambda's ``FunctionEventInvokeConfig`` for one function."""

    function: str
    max_retry_attempts: int = DEFAULT_MAX_RETRY_ATTEMPTS
    max_event_age_s: int = DEFAULT_MAX_EVENT_AGE_S
    on_success: str | None = None
    on_failure: str | None = None
    last_modified: float = 0.0


@dataclass(frozen=True)
class Event:
    id: int
    request_id: str
    function: str
    payload: bytes
    enqueued_at: float
    attempts: int
    throttles: int


class EventQueue:
    """The SQLite tables; every method is blocking (call it through ``asyncio.to_thread``)."""

    def __init__(self, path: Path, *, max_queued: int = 10_000) -> None:
        self.path = path
        self.max_queued = max_queued
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: a committed event survives the process being killed (it is
        # in the WAL file); only a power cut can lose the last commits.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT UNIQUE NOT NULL,
                function TEXT NOT NULL, payload BLOB NOT NULL, enqueued_at REAL NOT NULL,
                next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                throttles INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, last_error TEXT,
                finished_at REAL);
            CREATE INDEX IF NOT EXISTS events_due ON events (state, next_at);
            CREATE TABLE IF NOT EXISTS invoke_config (
                function TEXT PRIMARY KEY, max_retry_attempts INTEGER NOT NULL,
                max_event_age_s INTEGER NOT NULL, on_success TEXT, on_failure TEXT,
                last_modified REAL NOT NULL);
        """)
        self._lock = threading.Lock()
        with self._lock:
            # what was running when the last platform died runs again (at-least-once)
            self._db.execute("UPDATE events SET state = 'queued' WHERE state = 'running'")
            self.waiting = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE state IN ('queued', 'running')").fetchone()[0]

    def put(self, function: str, payload: bytes, request_id: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if self.waiting >= self.max_queued:
                raise EventQueueFullError(
                    f"the asynchronous event queue is full ({self.max_queued} events waiting); retry later",
                    function=function, request_id=request_id)
            self._db.execute("INSERT INTO events (request_id, function, payload, enqueued_at, next_at, state) "
                             "VALUES (?, ?, ?, ?, ?, 'queued')", (request_id, function, payload, now, now))
            self.waiting += 1

    def claim_due(self, now: float, limit: int, room: dict[str, int]) -> tuple[list[Event], bool]:
        """Mark up to ``limit`` due events running, oldest due first, at most ``room[function]``
        of each function (its free concurrency; 1 for one not in ``room``); returns them and
        whether more are due than were taken."""
        room = dict(room)
        with self._lock:
            rows = self._db.execute(
                "SELECT id, request_id, function, payload, enqueued_at, attempts, throttles FROM events "
                "WHERE state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                (now, max(limit, 1) * 8)).fetchall()
            taken: list[tuple[Any, ...]] = []
            for r in rows:
                if len(taken) >= limit:
                    break
                if room.setdefault(r[2], 1) > 0:
                    room[r[2]] -= 1
                    taken.append(r)
            if taken:
                self._db.executemany("UPDATE events SET state = 'running' WHERE id = ?", [(r[0],) for r in taken])
        return [Event(*r) for r in taken], len(rows) > len(taken)

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_at) FROM events WHERE state = 'queued'").fetchone()
        return None if row[0] is None else float(row[0])

    def requeue(self, ev: Event, *, next_at: float, attempts: int, throttles: int, error: str | None) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET state = 'queued', next_at = ?, attempts = ?, throttles = ?, "
                             "last_error = COALESCE(?, last_error) WHERE id = ?",
                             (next_at, attempts, throttles, error, ev.id))

    def finish(self, ev: Event, state: EventState, *, attempts: int, error: str | None,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("UPDATE events SET state = ?, attempts = ?, last_error = ?, finished_at = ? "
                             "WHERE id = ?", (state, attempts, error, now, ev.id))
            self.waiting -= 1
            # keep the table bounded: only the newest finished events stay for inspection
            self._db.execute("DELETE FROM events WHERE state IN ('succeeded', 'failed') AND id <= "
                             "(SELECT id FROM events WHERE state IN ('succeeded', 'failed') "
                             "ORDER BY id DESC LIMIT 1 OFFSET ?)", (KEEP_FINISHED,))

    def drop_function(self, function: str, why: str) -> None:
        """A deleted function's waiting events fail (Lambda discards them) and its config goes."""
        now = time.time()
        with self._lock:
            cur = self._db.execute("UPDATE events SET state = 'failed', last_error = ?, finished_at = ? "
                                   "WHERE function = ? AND state = 'queued'", (why, now, function))
            self.waiting -= cur.rowcount
            self._db.execute("DELETE FROM invoke_config WHERE function = ?", (function,))

    def list(self, function: str, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = ("SELECT request_id, state, attempts, throttles, enqueued_at, next_at, finished_at, last_error "
             "FROM events WHERE function = ?")
        args: list[Any] = [function]
        if state:
            q += " AND state = ?"
            args.append(state)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        keys = ("request_id", "state", "attempts", "throttles", "enqueued_at", "next_at", "finished_at",
                "last_error")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ---- FunctionEventInvokeConfig ---------------------------------------------------------
    def get_config(self, function: str) -> EventInvokeConfig | None:
        with self._lock:
            row = self._db.execute("SELECT function, max_retry_attempts, max_event_age_s, on_success, on_failure, "
                                   "last_modified FROM invoke_config WHERE function = ?", (function,)).fetchone()
        return EventInvokeConfig(*row) if row else None

    def put_config(self, cfg: EventInvokeConfig) -> EventInvokeConfig:
        cfg = EventInvokeConfig(cfg.function, cfg.max_retry_attempts, cfg.max_event_age_s, cfg.on_success,
                                cfg.on_failure, time.time())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO invoke_config VALUES (?, ?, ?, ?, ?, ?)",
                             (cfg.function, cfg.max_retry_attempts, cfg.max_event_age_s, cfg.on_success,
                              cfg.on_failure, cfg.last_modified))
        return cfg

    def delete_config(self, function: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM invoke_config WHERE function = ?", (function,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


Invoke = Callable[[str, bytes, str], Awaitable[Any]]  # (function, body, request_id) -> Invocation


class EventDispatcher:
    """Runs due events through ``invoke`` with Lambda's retry rules; one asyncio task."""

    def __init__(self, queue: EventQueue, invoke: Invoke, *, retry_delay_s: float = 60.0,
                 max_in_flight: int = 64, function_arn: Callable[[str], str] = lambda n: n,
                 concurrency: Callable[[], dict[str, int]] = dict) -> None:
        """``concurrency()`` gives each function's maximum concurrency: the dispatcher never has
        more of a function's events in flight than that, so a backlog waits in the queue instead
        of being throttled over and over."""
        self.queue = queue
        self.concurrency = concurrency
        self._in_flight: collections.Counter[str] = collections.Counter()
        self.invoke = invoke
        self.retry_delay_s = retry_delay_s
        self.max_in_flight = max_in_flight
        self.function_arn = function_arn
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def poke(self) -> None:
        self._wake.set()

    async def put(self, function: str, payload: bytes, request_id: str) -> None:
        await asyncio.to_thread(self.queue.put, function, payload, request_id)
        self.poke()

    async def close(self) -> None:
        """Stop dispatching; events in flight stay ``running`` in the table and rerun at the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            free = self.max_in_flight - len(self._tasks)
            due: list[Event] = []
            more = False
            if free > 0:
                room = {fn: n - self._in_flight[fn] for fn, n in self.concurrency().items()}
                due, more = await asyncio.to_thread(self.queue.claim_due, time.time(), free, room)
            for ev in due:
                self._in_flight[ev.function] += 1
                t = asyncio.get_running_loop().create_task(self._attempt(ev))
                self._tasks.add(t)
                t.add_done_callback(functools.partial(self._discard, ev.function))
            if more or free <= 0:
                wait = 1.0  # due events wait for a free slot: a finishing attempt wakes us
            else:
                nxt = await asyncio.to_thread(self.queue.next_due_at)
                wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.time()))
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    def _discard(self, function: str, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        self._in_flight[function] -= 1
        self._wake.set()  # a slot is free

    async def _attempt(self, ev: Event) -> None:
        try:
            await self._run(ev)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never lose an event to a bug here: fail it with the reason
            log.exception("event %s of %s failed in the dispatcher", ev.request_id, ev.function)
            await asyncio.to_thread(self.queue.finish, ev, "failed", attempts=ev.attempts,
                                    error=f"dispatcher error: {type(e).__name__}: {e}")

    async def _run(self, ev: Event) -> None:
        cfg = (await asyncio.to_thread(self.queue.get_config, ev.function)) or EventInvokeConfig(ev.function)
        now = time.time()
        if now - ev.enqueued_at > cfg.max_event_age_s:
            await self._give_up(ev, cfg, ev.attempts, "EventAgeExceeded", None,
                                f"older than MaximumEventAgeInSeconds={cfg.max_event_age_s}")
            return
        try:
            inv = await self.invoke(ev.function, ev.payload, ev.request_id)
        except PlatformError as e:  # the function was deleted meanwhile: nothing will ever run it
            await self._give_up(ev, cfg, ev.attempts, "RetriesExhausted", None, str(e))
            return
        if inv.status == "throttled" or (inv.http_status >= 500 and not inv.function_error):
            # not the function's fault: wait and try again, not counted as an attempt
            wait = min(THROTTLE_RETRY_S[1], THROTTLE_RETRY_S[0] * 2 ** ev.throttles)
            await asyncio.to_thread(self.queue.requeue, ev, next_at=now + wait, attempts=ev.attempts,
                                    throttles=ev.throttles + 1, error=f"throttled ({inv.http_status})")
            return
        attempts = ev.attempts + 1
        if inv.status == "ok" and not inv.function_error:
            await asyncio.to_thread(self.queue.finish, ev, "succeeded", attempts=attempts, error=None)
            if cfg.on_success:
                await self._send(cfg.on_success, self._record(ev, cfg, attempts, "Success", inv))
            return
        error = inv.payload[:500].decode(errors="replace")
        if attempts > cfg.max_retry_attempts:
            await self._give_up(ev, cfg, attempts, "RetriesExhausted", inv, error)
            return
        wait = self.retry_delay_s * 2 ** (attempts - 1)  # Lambda: 1 minute, then 2
        await asyncio.to_thread(self.queue.requeue, ev, next_at=now + wait, attempts=attempts,
                                throttles=ev.throttles, error=error)

    async def _give_up(self, ev: Event, cfg: EventInvokeConfig, attempts: int, condition: str, inv: Any,
                       error: str) -> None:
        await asyncio.to_thread(self.queue.finish, ev, "failed", attempts=attempts, error=f"{condition}: {error}")
        if cfg.on_failure:
            await self._send(cfg.on_failure, self._record(ev, cfg, attempts, condition, inv))

    def _record(self, ev: Event, cfg: EventInvokeConfig, attempts: int, condition: str, inv: Any) -> bytes:
        """Lambda's invocation record, as a destination receives it."""
        def as_json(raw: bytes) -> Any:
            try:
                return json.loads(raw)
            except ValueError:
                return raw.decode(errors="replace")

        response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if inv is not None and inv.function_error:
            response["functionError"] = "Unhandled"
        return json.dumps({
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z",
            "requestContext": {"requestId": ev.request_id, "functionArn": self.function_arn(ev.function),
                               "condition": condition, "approximateInvokeCount": attempts},
            "requestPayload": as_json(ev.payload),
            "responseContext": response,
            "responsePayload": as_json(inv.payload) if inv is not None else None,
        }).encode()

    async def _send(self, destination: str, record: bytes) -> None:
        from servelab.platform.names import function_name_from_arn

        target = function_name_from_arn(destination)
        try:
            await self.put(target, record, str(uuid.uuid4()))
        except PlatformError as e:  # a full queue: the record is lost, so say so loudly
            log.error("could not send an invocation record to %s: %s", destination, e)
