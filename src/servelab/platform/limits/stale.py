"""Which instance cgroups a platform owns, and cleaning up after one that crashed.

A platform that dies by kill -9 leaves its instances running in their cgroups. The next
platform on the same home must stop them — and *only* them: another platform (another home,
another port) may be running instances right beside them in the same ``servelab/`` group.
So every cgroup is written to a ledger in the owner's home before it is created
(``instances.ledger``, one JSON line per create or remove, tagged with the platform's id and
its process's pid and start time), and :func:`cleanup_stale` kills and removes only what the
ledger says a *dead* owner left. The home lock (``platform/homelock.py``) makes sure no live
platform shares the ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servelab.errors import LimitsError
from servelab.platform.limits.cgroupfs import kill_and_remove

if TYPE_CHECKING:
    from servelab.platform.limits.detection import LimitsInfo

LEDGER_NAME = "instances.ledger"


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if there is no such live process.

    Together with the pid it names one process for good: a pid reused by a later process has
    another start time. A zombie (killed, not yet reaped by its parent) counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and ')': split after its last ')'
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # field 3, the state
        return None
    return int(fields[19])  # field 22 of the whole line


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and process_start_ticks(pid) == start


@dataclass(frozen=True)
class InstanceLedger:
    """Appends ``create``/``remove`` lines for one platform to ``path`` (thread-safe)."""

    path: Path
    platform_id: str
    pid: int = field(default_factory=os.getpid)
    start: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.start is None:
            object.__setattr__(self, "start", process_start_ticks(self.pid))

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            # O_APPEND + one write: concurrent appenders never interleave a line. No fsync:
            # the ledger must outlive the platform process, not the machine (a reboot kills
            # the instances too).
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def created(self, dirs: list[Path]) -> None:
        self._append({"op": "create", "platform": self.platform_id, "pid": self.pid, "start": self.start,
                      "dirs": [str(d) for d in dirs]})

    def removed(self, dirs: list[Path]) -> None:
        self._append({"op": "remove", "platform": self.platform_id, "dirs": [str(d) for d in dirs]})


def _read_ledger(path: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """Cgroups created and not removed, keyed by their directories."""
    live: dict[tuple[str, ...], dict[str, Any]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return live
    for line in text.splitlines():
        try:
            e = json.loads(line)
            key = tuple(e["dirs"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash mid-write: nothing was created after it
        if e.get("op") == "create":
            live[key] = e
        else:
            live.pop(key, None)
    return live


def cleanup_stale(info: LimitsInfo, ledger: InstanceLedger | None = None) -> int:
    """Kill and remove the instance cgroups a dead platform of this home left; returns how many.

    Call it when a platform starts (holding its home's lock), before it creates instances.
    ``ledger`` defaults to ``info.ledger``; without one nothing is touched, since a cgroup no
    ledger names may belong to another live platform. Entries whose owner process still lives
    are kept (and stay in the ledger).
    """
    ledger = ledger or info.ledger
    if info.mode == "rlimit" or ledger is None:
        return 0
    live = _read_ledger(ledger.path)
    cleaned = 0
    keep: list[dict[str, Any]] = []
    for dirs, e in live.items():
        if _alive(int(e.get("pid", -1)), e.get("start")):
            keep.append(e)
            continue
        with contextlib.suppress(OSError, LimitsError):
            kill_and_remove([Path(d) for d in dirs])
            cleaned += 1
    tmp = ledger.path.with_name(ledger.path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in keep))
    os.replace(tmp, ledger.path)
    return cleaned
