"""One instance's limits: a cgroup (v1: one in each of memory and cpu) named
``servelab/<instance_id>``, or rlimits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from servelab.config import validate_name
from servelab.errors import LimitsError
from servelab.platform.limits import cgroup_v1, cgroup_v2
from servelab.platform.limits.cgroupfs import int_file, keyed, kill_and_remove, pids, write
from servelab.platform.limits.detection import LimitsInfo, own_cgroup_map, parents
from servelab.platform.limits.rlimit import SPAWN_BASELINE_MB, set_address_space_cap, vm_size_mb
from servelab.platform.limits.sizing import GROUP, MB, ResourceLimits


class InstanceLimits:
    """One instance's limits: a cgroup (v1: one in each of memory and cpu) named
    servelab/<instance_id>, or rlimits.

    Constructing it does no I/O, so the fork server can rebuild one from a few fields in the
    child. The cgroup directories are found from the mode's root and the cgroup the calling
    process is in; the platform, its fork server and its children are all in the same one.
    """

    def __init__(self, instance_id: str, limits: ResourceLimits, info: LimitsInfo) -> None:
        self.instance_id = validate_name(instance_id, what="instance id")
        self.limits = limits
        self.info = info
        self._dirs: dict[str, Path] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields, for handing the limits to a fork server (the ledger stays home)."""
        return {"instance_id": self.instance_id, "memory_mb": self.limits.memory_mb,
                "cpus": self.limits.cpus, "mode": self.info.mode, "root": self.info.root,
                "reason": self.info.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstanceLimits:
        return cls(d["instance_id"], ResourceLimits(d["memory_mb"], d["cpus"]),
                   LimitsInfo(d["mode"], d.get("root"), d.get("reason", "")))

    @property
    def paths(self) -> dict[str, Path]:
        """The instance's cgroup directories by controller (``unified`` for v2; empty for rlimit)."""
        if self._dirs is None:
            if self.info.mode == "rlimit":
                self._dirs = {}
            else:
                if self.info.root is None:
                    raise LimitsError(f"limits mode {self.info.mode} needs a cgroup root; use detect()")
                found, why = parents(self.info.mode, Path(self.info.root), own_cgroup_map())
                if found is None:
                    raise LimitsError(f"cannot place instance {self.instance_id}'s cgroup: {why}")
                self._dirs = {c: p / GROUP / self.instance_id for c, p in found.items()}
        return self._dirs

    # -- parent side -------------------------------------------------------------------

    def create(self) -> None:
        """Make the cgroup(s) and write the limits, swap included so the limit really bites.

        Reuses an existing empty cgroup of the same name; refuses one with processes in it,
        since that belongs to a live instance (or a crashed platform's: see cleanup_stale).
        The cgroups go into the owner's ledger *before* they exist, so a crash between the
        two leaves a ledger line for nothing (harmless), never a cgroup nobody knows of.
        """
        if self.info.mode == "rlimit":
            return
        for d in self.paths.values():
            if d.is_dir() and pids(d):
                raise LimitsError(f"cgroup {d} already has processes {pids(d)}: instance id "
                                  f"{self.instance_id!r} is in use, or left by a crashed platform "
                                  "(call cleanup_stale() at start-up)")
        if self.info.ledger is not None:
            self.info.ledger.created(list(self.paths.values()))
        try:
            if self.info.mode == "cgroup2":
                cgroup_v2.create(self.paths["unified"], self.limits)
            else:
                cgroup_v1.create(self.paths, self.limits)
        except LimitsError:
            self.destroy()
            raise

    def _quota_us(self) -> int:
        return self.limits.cfs_quota_us()

    # -- child side --------------------------------------------------------------------

    def enter(self) -> None:
        """Move this process into the instance's cgroup(s), or cap its address space.

        Call it first thing after fork, before the function's code allocates anything: memory
        already charged elsewhere stays there. In rlimit mode the cap is what this process has
        mapped now (a forked child inherits the fork server's imports) plus the memory size
        plus room for its threads.
        """
        if self.info.mode == "rlimit":
            set_address_space_cap(self.limits, vm_size_mb())
            return
        pid = str(os.getpid())
        for d in self.paths.values():
            write(d / "cgroup.procs", pid)

    def preexec_fn(self) -> Callable[[], None]:
        """For ``subprocess.Popen(preexec_fn=...)``: enters the limits between fork and exec.

        Paths are resolved here, in the parent, so the child only writes a pid (or sets an
        rlimit). Its address-space cap cannot be measured before exec, so it assumes
        SPAWN_BASELINE_MB for the interpreter and runtime it is about to load.
        """
        if self.info.mode == "rlimit":
            return lambda: set_address_space_cap(self.limits, SPAWN_BASELINE_MB)
        dirs = list(self.paths.values())

        def _enter() -> None:
            pid = str(os.getpid()).encode()
            for d in dirs:
                try:
                    fd = os.open(d / "cgroup.procs", os.O_WRONLY)
                    try:
                        os.write(fd, pid)
                    finally:
                        os.close(fd)
                except OSError as exc:  # Popen only says "Exception occurred in preexec_fn"
                    os.write(2, f"servelab: cannot enter cgroup {d}: {exc}\n".encode())
                    raise

        return _enter

    # -- measurements (parent side) --------------------------------------------------------

    def _mem_dir(self) -> Path | None:
        p = self.paths
        return p.get("unified") or p.get("memory")

    def _files(self) -> ModuleType:
        return cgroup_v2 if self.info.mode == "cgroup2" else cgroup_v1

    def memory_peak_mb(self) -> float | None:
        """Highest memory charged to the instance (page cache included), or None if unknown."""
        d = self._mem_dir()
        if d is None:
            return None
        v = int_file(d / self._files().PEAK_FILE)
        return None if v is None else v / MB

    def memory_current_mb(self) -> float | None:
        d = self._mem_dir()
        if d is None:
            return None
        v = int_file(d / self._files().CURRENT_FILE)
        return None if v is None else v / MB

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this instance.

        v1 kernels before 4.13 have no ``oom_kill`` counter; there a hit limit (``failcnt``) is
        the best evidence, though reclaim alone can raise it. rlimit mode never kills: False.
        """
        d = self._mem_dir()
        if d is None:
            return False
        if self.info.mode == "cgroup2":
            return (keyed(d / "memory.events", "oom_kill") or 0) > 0
        kills = keyed(d / "memory.oom_control", "oom_kill")
        if kills is not None:
            return kills > 0
        return (int_file(d / "memory.failcnt") or 0) > 0

    def cpu_usage_s(self) -> float | None:
        """CPU seconds used by the instance's processes, living and exited, or None if not counted."""
        p = self.paths
        if self.info.mode == "cgroup2":
            usec = keyed(p["unified"] / "cpu.stat", "usage_usec")
            return None if usec is None else usec / 1e6
        if self.info.mode == "cgroup1":
            acct = p.get("cpuacct", p["cpu"])
            ns = int_file(acct / "cpuacct.usage")
            return None if ns is None else ns / 1e9
        return None

    def destroy(self) -> None:
        """Kill whatever is left in the cgroup(s) and remove them. Idempotent."""
        if self.info.mode == "rlimit":
            return
        dirs = list(self.paths.values())
        kill_and_remove(dirs)
        if self.info.ledger is not None:
            self.info.ledger.removed(dirs)

    def __repr__(self) -> str:
        return (f"InstanceLimits({self.instance_id!r}, memory_mb={self.limits.memory_mb}, "
                f"cpus={self.limits.cpus:.3f}, mode={self.info.mode!r})")
