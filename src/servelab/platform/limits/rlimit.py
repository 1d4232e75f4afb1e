"""The fallback where no cgroup is writable: ``RLIMIT_AS`` caps the address space.

A runaway allocation becomes a catchable ``MemoryError`` (onnxruntime raises instead of
crashing); nothing is enforced on resident memory or CPU time.

RLIMIT_AS caps *virtual* memory, which is far more than what a process touches: a fresh
interpreter that imports numpy + onnxruntime + the worker maps ~330 MB before doing anything
(measured on this repo's venv), and each extra thread maps an 8 MB stack plus, often, a 64 MB
glibc malloc arena. The cap therefore adds those to the memory size, so that a function can
start and use its memory size, and is stopped with MemoryError not far past it.
"""

from __future__ import annotations

import resource
from pathlib import Path

from servelab.platform.limits.cgroupfs import read
from servelab.platform.limits.sizing import MB, ResourceLimits

SPAWN_BASELINE_MB = 384
THREAD_ADDRESS_SPACE_MB = 72


def set_address_space_cap(limits: ResourceLimits, baseline_mb: float) -> None:
    """Cap this process at ``baseline_mb`` + the memory size + room for its threads."""
    cap_mb = baseline_mb + limits.memory_mb + limits.threads * THREAD_ADDRESS_SPACE_MB
    cap = int(cap_mb * MB)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    # soft = hard: the function's code cannot lift its own cap
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def vm_size_mb() -> float:
    """What this process has mapped now (``VmSize``), MB."""
    for line in read(Path("/proc/self/status")).splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) / 1024
    return 0.0
