"""Live counters of a run and the progress bar that shows them.

The issuing loop only bumps counters (:class:`LiveStats`); a separate display thread takes a
delta four times a second and renders rate, errors and a p50/p99 over the last two seconds, so
rendering never runs inside the loop that keeps the schedule. With several generator
processes, each child sends its deltas over a queue and the parent merges them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

WINDOW_S = 2.0
REFRESH_S = 0.25


@dataclass(slots=True)
class StatsDelta:
    """What happened since the last :meth:`LiveStats.take`: counts and the new latencies."""

    sent: int = 0
    done: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class LiveStats:
    """Counters written by one event loop and read by one display thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delta = StatsDelta()

    def on_sent(self) -> None:
        with self._lock:
            self._delta.sent += 1

    def on_done(self, ok: bool, latency_ms: float) -> None:
        with self._lock:
            self._delta.done += 1
            if ok:
                self._delta.latencies_ms.append(latency_ms)
            else:
                self._delta.failed += 1

    def merge(self, d: StatsDelta) -> None:
        with self._lock:
            self._delta.sent += d.sent
            self._delta.done += d.done
            self._delta.failed += d.failed
            self._delta.latencies_ms.extend(d.latencies_ms)

    def take(self) -> StatsDelta:
        with self._lock:
            d, self._delta = self._delta, StatsDelta()
        return d


class ProgressDisplay:
    """A rich progress bar over the run's duration, refreshed at ~4 Hz from its own thread."""

    def __init__(self, stats: LiveStats, *, duration_s: float, requests: int, start_mono: float,
                 feed: Callable[[], None] | None = None) -> None:
        self.stats = stats
        self.duration_s = max(duration_s, 1e-9)
        self.requests = requests
        self.start_mono = start_mono
        self.feed = feed  # pulls children's deltas into ``stats`` (multi-process runs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loadgen-progress", daemon=True)
        self._window: deque[tuple[float, StatsDelta]] = deque()
        self.sent = self.done = self.failed = 0

    def __enter__(self) -> ProgressDisplay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _info(self, now: float) -> str:
        while self._window and now - self._window[0][0] > WINDOW_S:
            self._window.popleft()
        span = min(WINDOW_S, max(now - self.start_mono, REFRESH_S))
        done = sum(d.done for _, d in self._window)
        lat = np.fromiter((x for _, d in self._window for x in d.latencies_ms), dtype=float)
        pcts = (f"p50 {np.percentile(lat, 50):.1f} p99 {np.percentile(lat, 99):.1f} ms"
                if lat.size else "p50 - p99 -")
        return (f"{self.sent}/{self.requests} sent {done / span:,.0f}/s "
                f"in flight {self.sent - self.done} errors {self.failed} {pcts}")

    def _loop(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]load"), BarColumn(bar_width=16), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"), console=Console(stderr=True),
                            auto_refresh=False, transient=False)
        with progress:
            task = progress.add_task("load", total=self.duration_s, info="starting")
            while True:
                stopping = self._stop.wait(REFRESH_S)
                if self.feed is not None:
                    self.feed()
                d = self.stats.take()
                now = time.monotonic()
                self.sent += d.sent
                self.done += d.done
                self.failed += d.failed
                self._window.append((now, d))
                elapsed = min(max(now - self.start_mono, 0.0), self.duration_s)
                progress.update(task, completed=elapsed, info=self._info(now))
                progress.refresh()
                if stopping:
                    return
