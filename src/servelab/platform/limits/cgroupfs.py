"""Reading and writing cgroup files, and killing what a cgroup holds. Shared by v1 and v2."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from servelab.errors import LimitsError

KILL_WAIT_S = 5.0


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def words(path: Path) -> set[str]:
    return set(read(path).split())


def write(path: Path, value: str) -> None:
    """One write(2), as cgroup files want; errors say which file and what was written."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise LimitsError(f"could not write {value!r} to {path}: {exc.strerror or exc}") from exc


def keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.events``, ``cpu.stat``...)."""
    for line in read(path).splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            with contextlib.suppress(ValueError):
                return int(v)
    return None


def int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pids(cgroup: Path) -> list[int]:
    return [int(p) for p in read(cgroup / "cgroup.procs").split()]


def mkdir(d: Path, *, parents: bool = False) -> None:
    try:
        d.mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise LimitsError(f"could not create cgroup {d}: {exc.strerror or exc}") from exc


def kill_and_remove(dirs: list[Path]) -> None:
    """SIGKILL every process in ``dirs`` and rmdir them, until gone; FileNotFound is success."""
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        left = [d for d in dirs if d.is_dir()]
        if not left:
            return
        for d in left:
            if (d / "cgroup.kill").exists():  # v2, kernel >= 5.14: atomic, no fork race
                with contextlib.suppress(LimitsError):
                    write(d / "cgroup.kill", "1")
            for pid in pids(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise LimitsError(
                        f"could not remove cgroup {d}: {exc.strerror} (processes left: {pids(d)}); "
                        "a process stuck in the kernel (state D) cannot be killed until its I/O ends"
                    ) from exc
        if any(d.is_dir() for d in dirs):
            time.sleep(0.005)  # the kernel needs a moment to take SIGKILLed tasks out


def own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path; the v2 entry is under ``""``."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own[""] = path
        for c in controllers.split(","):
            if c:
                own[c] = path
    return own


def own_dir(mount: Path, own_path: str | None) -> Path:
    """The directory of this process's cgroup under ``mount``, or ``mount`` itself.

    Falls back to the mount when the path does not exist under it: a cgroup namespace or a
    bind-mounted sub-tree (containers) shows the process's own cgroup as the mount root.
    """
    if own_path and own_path != "/":
        d = mount / own_path.lstrip("/")
        if d.is_dir():
            return d
    return mount
