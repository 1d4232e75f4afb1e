"""The one per-request record every measuring part of servelab writes, and its on-disk form.

Units: times relative to a run's start are seconds (``*_s``); durations are milliseconds
(``*_ms``); memory is MB (``*_mb``). A field that a source cannot know is ``None``.

Latency is measured from the *scheduled* time, so a slow client cannot hide queueing
(no coordinated omission); ``send_lag_ms`` says how late the generator was.

On disk a record set is a directory of Parquet part files (``part-000001.parquet`` …): the
writer's flusher thread writes a new part every ``flush_interval_s`` (whether or not more
records come) and renames it into place atomically, so a killed run loses at most the last
interval and never leaves a broken file.
:func:`read_records` reads a directory or a single ``.parquet`` file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

Status = Literal["ok", "error", "throttled", "timeout"]
StartKind = Literal["warm", "prewarmed", "cold"]
STATUSES: tuple[Status, ...] = ("ok", "error", "throttled", "timeout")


@dataclass(slots=True)
class RequestRecord:
    """What one request did. Client-side, platform-side and billing facts side by side."""

    # identity
    run_id: str
    request_id: str
    target: str = ""  # function or target name
    # client clock, seconds since the run started
    scheduled_s: float = 0.0
    sent_s: float | None = None
    completed_s: float | None = None
    # client view
    latency_ms: float | None = None  # completed - scheduled
    send_lag_ms: float | None = None  # sent - scheduled
    status: Status = "ok"
    error: str | None = None
    http_status: int | None = None
    # platform view
    start_kind: StartKind | None = None  # warm / prewarmed / cold
    cold: bool | None = None
    instance_id: str | None = None
    platform_ms: float | None = None  # request in to response out, inside the platform
    queue_ms: float | None = None  # waiting for a free instance or a batch; not the init (init_ms)
    init_ms: float | None = None  # cold start total, the sum of the parts below and glue
    init_process_ms: float | None = None
    init_import_ms: float | None = None
    init_fetch_ms: float | None = None
    init_load_ms: float | None = None
    inference_ms: float | None = None
    duration_ms: float | None = None  # function duration as a cloud reports it
    # billing
    billed_ms: float | None = None
    memory_mb: int | None = None
    max_memory_used_mb: float | None = None
    batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


InstanceEvent = Literal["started", "ready", "init_failed", "reclaimed", "died"]
INSTANCE_EVENTS: tuple[InstanceEvent, ...] = ("started", "ready", "init_failed", "reclaimed", "died")


@dataclass(slots=True)
class InstanceRecord:
    """One event in an instance's life, beside the request records (``instances/`` next to
    ``records/``), so instance-seconds, idle memory GB-s and the cold-start rate can be computed
    from any run, real or simulated.

    ``at_s`` is on the source's clock: seconds since the run started for a simulated run, Unix
    time for the platform; only differences between a run's own events are meaningful.
    ``kind``: ``on_demand`` (a request asked for it), ``prewarmed`` (a keep-alive policy or an
    autoscaler started it ahead of demand) or ``provisioned`` (always on).
    """

    run_id: str
    target: str
    instance_id: str
    kind: str
    event: InstanceEvent
    at_s: float
    memory_mb: int | None = None
    reason: str | None = None  # reclaimed / died / init_failed: why
    init_ms: float | None = None  # ready: the init's total and parts
    init_process_ms: float | None = None
    init_import_ms: float | None = None
    init_fetch_ms: float | None = None
    init_load_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrow_type(py: str) -> pa.DataType:
    if py.startswith(("str", "Status", "StartKind", "InstanceEvent")):
        return pa.string()
    if py.startswith("float"):
        return pa.float64()
    if py.startswith("int"):
        return pa.int64()
    if py.startswith("bool"):
        return pa.bool_()
    raise TypeError(py)


SCHEMA = pa.schema([pa.field(f.name, _arrow_type(str(f.type))) for f in fields(RequestRecord)])
FIELD_NAMES: tuple[str, ...] = tuple(SCHEMA.names)
INSTANCE_SCHEMA = pa.schema([pa.field(f.name, _arrow_type(str(f.type))) for f in fields(InstanceRecord)])


AnyRecord = RequestRecord | InstanceRecord | dict[str, Any]


def to_table(records: Iterable[AnyRecord], schema: pa.Schema = SCHEMA) -> pa.Table:
    rows = [r if isinstance(r, dict) else r.to_dict() for r in records]
    cols = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.table(cols, schema=schema)


class RecordWriter:
    """Appends records to a directory of Parquet parts; thread-safe; flushes on a timer.

    A flusher thread writes whatever was appended at least every ``flush_interval_s`` (a
    timer, not the next append: a record reaches disk within about one interval of being
    measured even if nothing follows it), and at once when ``flush_rows`` are waiting.
    ``append`` never touches the disk, so an event loop that calls it never waits on a write.
    A part is written to ``.tmp`` then renamed, so readers only ever see whole parts, and a
    killed process loses at most the last interval. Use as a context manager, or call
    :meth:`close` (which writes the rest).
    """

    def __init__(self, directory: str | os.PathLike[str], *, flush_interval_s: float = 1.0,
                 flush_rows: int = 50_000, prefix: str = "", schema: pa.Schema = SCHEMA) -> None:
        """``prefix`` lets several processes write into one directory without name clashes
        (``part-p0-000001.parquet``, ``part-p1-000001.parquet`` …)."""
        self.directory = Path(directory)
        self.prefix = prefix
        self.schema = schema
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self._buf: list[AnyRecord] = []
        self._chunks: list[tuple[int, list[AnyRecord]]] = []  # cut, numbered, not yet written
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one part write at a time; appends never wait on it
        self._closing = False
        self._flusher: threading.Thread | None = None
        existing = sorted(self.directory.glob(f"part-{prefix}[0-9]*.parquet"))
        self._next_part = int(existing[-1].stem.rsplit("-", 1)[1]) + 1 if existing else 1
        self.count = 0

    def append(self, record: AnyRecord) -> None:
        with self._lock:
            self._buf.append(record)
            self.count += 1
            if len(self._buf) >= self.flush_rows:
                self._cut()
                self._wake.notify()
            if self._flusher is None and not self._closing:
                self._flusher = threading.Thread(target=self._flush_loop, name="records-flusher", daemon=True)
                self._flusher.start()

    def extend(self, records: Iterable[AnyRecord]) -> None:
        for r in records:
            self.append(r)

    def _cut(self) -> None:
        """Move the buffer into a numbered chunk (caller holds the lock): part order = append order."""
        if self._buf:
            self._chunks.append((self._next_part, self._buf))
            self._next_part += 1
            self._buf = []

    def _take(self) -> list[tuple[int, list[AnyRecord]]]:
        chunks, self._chunks = self._chunks, []
        return chunks

    def _write(self, chunks: list[tuple[int, list[AnyRecord]]]) -> None:
        with self._write_lock:
            for number, rows in chunks:
                part = self.directory / f"part-{self.prefix}{number:06d}.parquet"
                tmp = part.with_suffix(".tmp")
                pq.write_table(to_table(rows, self.schema), tmp)
                os.replace(tmp, part)

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                deadline = time.monotonic() + self.flush_interval_s
                while not self._chunks and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(min(left, threading.TIMEOUT_MAX))
                self._cut()
                chunks, closing = self._take(), self._closing
            try:
                self._write(chunks)
            except Exception:  # a full disk must not kill the flusher: say so and keep going
                logging.getLogger(__name__).exception("could not write %d record parts to %s",
                                                      len(chunks), self.directory)
            if closing:
                return

    def flush(self) -> None:
        """Write everything appended so far, now, in the calling thread."""
        with self._lock:
            self._cut()
            chunks = self._take()
        self._write(chunks)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._wake.notify()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        self.flush()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike[str], schema: pa.Schema = SCHEMA) -> pa.Table:
    """All records under ``path`` (a part directory, or one Parquet file), in schema order.
    Columns a file lacks (written before a field was added) read as nulls."""
    p = Path(path)
    if p.is_dir():
        parts = sorted(p.glob("part-*.parquet"))
        if not parts:
            return schema.empty_table()
        return pa.concat_tables([_conform(pq.read_table(f), schema) for f in parts])
    return _conform(pq.read_table(p), schema)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.table(cols, schema=schema)


def read_instances(path: str | os.PathLike[str]) -> pa.Table:
    """Instance lifecycle records under ``path`` (an ``instances/`` part directory)."""
    return read_records(path, INSTANCE_SCHEMA)
