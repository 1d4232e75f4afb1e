"""cgroup v2: where instance cgroups go in the unified tree, and how one is set up.

One cgroup per instance with ``memory.max``, ``memory.swap.max = 0``, ``memory.oom.group`` and
``cpu.max``. Controllers can be enabled below a cgroup only while it holds no processes, so
the ``servelab/`` group goes *beside* the platform's own cgroup, not inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from servelab.platform.limits.cgroupfs import mkdir, own_dir, read, words, write
from servelab.platform.limits.sizing import CFS_PERIOD_US, MB, ResourceLimits

PEAK_FILE = "memory.peak"
CURRENT_FILE = "memory.current"


def is_real_root(cgroup: Path) -> bool:
    """Only the root of the whole v2 hierarchy has no ``cgroup.type`` (a namespace root does)."""
    return not (cgroup / "cgroup.type").exists()


def mount(root: Path) -> Path | None:
    """A cgroup2 mount at ``root`` (pure v2) or ``root/unified`` (hybrid layout)."""
    for cand in (root, root / "unified"):
        if (cand / "cgroup.controllers").is_file():
            return cand
    return None


def parent(mount_dir: Path, own_path: str | None) -> tuple[Path | None, str]:
    """Where ``servelab/`` goes in a v2 tree, or None and why not.

    Controllers can be enabled below a cgroup only while it holds no processes (the root is
    exempt), and the platform lives in its own cgroup, so the group goes *beside* it, in the
    parent that already hands memory and cpu down to the platform's cgroup.
    """
    d = own_dir(mount_dir, own_path)
    if is_real_root(d) or {"memory", "cpu"} <= words(d / "cgroup.subtree_control"):
        where = d
    elif d != mount_dir:
        where = d.parent
    else:
        return None, (f"this process's cgroup {d} is the top of its cgroup namespace and holds processes, "
                      "so memory/cpu cannot be enabled below it (cgroup v2's no-internal-process rule)")
    missing = sorted({"memory", "cpu"} - words(where / "cgroup.controllers"))
    if missing:
        return None, f"{where} has no {' or '.join(missing)} controller"
    if not os.access(where, os.W_OK) or not os.access(where / "cgroup.subtree_control", os.W_OK):
        return None, f"{where} is not writable by uid {os.getuid()}"
    enabled = {"memory", "cpu"} <= words(where / "cgroup.subtree_control")
    if not enabled and not is_real_root(where) and read(where / "cgroup.procs").strip():
        return None, (f"{where} holds processes, so memory/cpu cannot be enabled for its children "
                      "(cgroup v2's no-internal-process rule); run the platform in a delegated cgroup, "
                      "e.g. `systemd-run --scope -p Delegate=yes servelab ...`")
    return where, f"memory+cpu writable at {where}"


def _enable_controllers(cgroup: Path) -> None:
    """Hand memory and cpu down to ``cgroup``'s children, unless it already does."""
    if not {"memory", "cpu"} <= words(cgroup / "cgroup.subtree_control"):
        write(cgroup / "cgroup.subtree_control", "+memory +cpu")


def create(d: Path, limits: ResourceLimits) -> None:
    """Make the instance cgroup ``d`` (under ``servelab/``) and write its limits."""
    group = d.parent
    _enable_controllers(group.parent)
    mkdir(group)
    _enable_controllers(group)
    mkdir(d)
    write(d / "memory.max", str(limits.memory_mb * MB))
    if (d / "memory.swap.max").exists():  # absent when swap accounting is off: no swap to use
        write(d / "memory.swap.max", "0")
    if (d / "memory.oom.group").exists():  # an OOM kills the whole instance, not one thread of it
        write(d / "memory.oom.group", "1")
    write(d / "cpu.max", f"{limits.cfs_quota_us()} {CFS_PERIOD_US}")
