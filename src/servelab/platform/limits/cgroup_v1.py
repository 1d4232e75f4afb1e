"""cgroup v1: one instance cgroup in each of the memory and cpu hierarchies (and cpuacct).

``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` so swap cannot stretch it) and
``cpu.cfs_quota_us``. The cgroups are nested in the platform's own, so its container or
session limits still cover its instances.
"""

from __future__ import annotations

import os
from pathlib import Path

from servelab.platform.limits.cgroupfs import mkdir, own_dir, write
from servelab.platform.limits.sizing import CFS_PERIOD_US, GROUP, MB, ResourceLimits

PEAK_FILE = "memory.max_usage_in_bytes"
CURRENT_FILE = "memory.usage_in_bytes"


def parents(root: Path, own: dict[str, str]) -> tuple[dict[str, Path] | None, str]:
    """Per-controller dirs where ``servelab/`` goes in a v1 tree (memory, cpu, maybe cpuacct)."""
    need = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}
    found: dict[str, Path] = {}
    for ctrl, probe in need.items():
        mount = root / ctrl
        if not (mount / probe).is_file():
            return None, f"no cgroup v1 {ctrl} hierarchy at {mount}"
        d = own_dir(mount, own.get(ctrl))
        if not os.access(d, os.W_OK):
            return None, f"cgroup v1 {ctrl} hierarchy at {d} is not writable by uid {os.getuid()}"
        found[ctrl] = d
    # CPU time is counted by cpuacct: in the cpu cgroup when co-mounted ("cpu,cpuacct"), else
    # in a cgroup of its own hierarchy; without either, cpu_usage_s() answers None.
    if not (found["cpu"] / "cpuacct.usage").is_file():
        acct = root / "cpuacct"
        if (acct / "cpuacct.usage").is_file():
            d = own_dir(acct, own.get("cpuacct"))
            if os.access(d, os.W_OK):
                found["cpuacct"] = d
    where = ", ".join(str(p) for p in found.values())
    return found, f"cgroup v1 memory+cpu writable (instances under {GROUP}/ in {where})"


def create(paths: dict[str, Path], limits: ResourceLimits) -> None:
    """Make the instance's cgroups (``paths`` by controller) and write its limits."""
    for d in paths.values():
        mkdir(d, parents=True)
    mem, cpu = paths["memory"], paths["cpu"]
    limit = str(limits.memory_mb * MB)
    write(mem / "memory.limit_in_bytes", limit)  # before memsw: memsw may never be below it
    if (mem / "memory.memsw.limit_in_bytes").exists():  # memory+swap = memory: no swapping out
        write(mem / "memory.memsw.limit_in_bytes", limit)
    write(mem / "memory.oom_control", "0")  # a new memcg inherits oom_kill_disable; we want kills
    write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
    write(cpu / "cpu.cfs_quota_us", str(limits.cfs_quota_us()))
