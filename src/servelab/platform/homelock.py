"""One platform per home: an exclusive lock on ``HOME/platform.lock``, held for the platform's life.

Two platforms on one home would share its registry, records, event queue and instance ledger,
and the second one's start-up clean-up would kill the first one's instances. The lock is an
``flock`` on an open file, so the kernel drops it when the holder dies (kill -9 included): a
stale lock can never keep the next platform out. The file says who holds it (pid, port,
platform id), for the message the next one prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from servelab.errors import HomeInUseError, StartupError

LOCK_NAME = "platform.lock"


class HomeLock:
    def __init__(self, home: Path, platform_id: str) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_NAME
        self.platform_id = platform_id
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, port: int | None = None) -> None:
        """Take the lock without waiting; :class:`HomeInUseError` says who holds it."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StartupError(f"cannot open {self.path}: {e.strerror}; check that the home "
                               f"{self.home} is a writable directory (or pass another --home)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise HomeInUseError(
                f"home {self.home} is in use by platform pid {holder.get('pid', '?')} on port "
                f"{holder.get('port') or '?'}; stop that platform or pass another --home") from None
        self._fd = fd
        self.set_port(port)

    def set_port(self, port: int | None) -> None:
        """Say which port this platform serves on (known only after binding, for port 0)."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "port": port, "platform_id": self.platform_id}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
