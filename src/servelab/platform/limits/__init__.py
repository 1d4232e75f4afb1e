"""Memory and CPU limits for function instances, sized the way AWS Lambda sizes them.

A function's memory size (128..10240 MB) fixes its CPU share: 1 vCPU at 1,769 MB, in
proportion below that, and linearly up to 6 vCPUs at 10,240 MB (:func:`cpus_for_memory`).
Each instance gets its own cgroup so that the kernel enforces both:

* ``cgroup2`` (:mod:`.cgroup_v2`) — one cgroup with ``memory.max``, ``memory.swap.max = 0``,
  ``memory.oom.group`` and ``cpu.max``;
* ``cgroup1`` (:mod:`.cgroup_v1`) — one cgroup in each of the ``memory`` and ``cpu``
  hierarchies (and in ``cpuacct`` when it is mounted on its own, only to count CPU time), with
  ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes`` so swap cannot stretch it)
  and ``cpu.cfs_quota_us``;
* ``rlimit`` (:mod:`.rlimit`) — the fallback where no cgroup is writable: ``RLIMIT_AS`` turns a
  runaway allocation into a catchable ``MemoryError`` (onnxruntime raises instead of
  crashing), and :attr:`ResourceLimits.threads` bounds the CPU an instance asks for. Nothing
  is enforced on resident memory or CPU time in this mode.

Instance cgroups are named ``servelab/<instance_id>`` and are created *inside the cgroup the
platform runs in* (cgroup v1), or beside it (cgroup v2, whose no-internal-process rule forbids
enabling controllers below a cgroup that holds processes), so the platform's own container or
session limits still cover its instances. Units: sizes in MB (MiB, as Lambda means it),
CPU in vCPUs and seconds.

The parent creates the cgroup (:meth:`InstanceLimits.create`); the child moves itself in
before running any function code (:meth:`InstanceLimits.enter`, or
:meth:`InstanceLimits.preexec_fn` for ``subprocess.Popen``), so nothing it allocates escapes.
When the platform's :class:`LimitsInfo` carries an :class:`InstanceLedger`, every cgroup it
creates is written to the ledger in its home, and :func:`cleanup_stale` at the next start
removes only those (:mod:`.stale`), never another live platform's.

Modules, one job each: :mod:`.sizing` (memory → CPU), :mod:`.detection` (which mode, where),
:mod:`.cgroupfs` (cgroup file I/O), :mod:`.cgroup_v2`, :mod:`.cgroup_v1`, :mod:`.rlimit`,
:mod:`.instance` (one instance's limits) and :mod:`.stale` (the ledger and clean-up).
"""

from __future__ import annotations

from servelab.core.resources import MAX_MEMORY_MB, MAX_VCPUS, MIN_MEMORY_MB, ONE_VCPU_MEMORY_MB, cpus_for_memory
from servelab.platform.limits.detection import LIMITS_MODES, LimitsInfo, LimitsMode, detect
from servelab.platform.limits.instance import InstanceLimits
from servelab.platform.limits.rlimit import SPAWN_BASELINE_MB, THREAD_ADDRESS_SPACE_MB
from servelab.platform.limits.sizing import CFS_PERIOD_US, GROUP, MB, MIN_CFS_QUOTA_US, ResourceLimits
from servelab.platform.limits.stale import InstanceLedger, cleanup_stale

__all__ = [
    "CFS_PERIOD_US", "GROUP", "LIMITS_MODES", "MAX_MEMORY_MB", "MAX_VCPUS", "MB", "MIN_CFS_QUOTA_US",
    "MIN_MEMORY_MB", "ONE_VCPU_MEMORY_MB", "SPAWN_BASELINE_MB", "THREAD_ADDRESS_SPACE_MB",
    "InstanceLedger", "InstanceLimits", "LimitsInfo", "LimitsMode", "ResourceLimits", "cleanup_stale",
    "cpus_for_memory", "detect",
]
