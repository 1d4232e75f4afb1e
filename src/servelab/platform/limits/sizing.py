"""Lambda's sizing rule (:mod:`servelab.core.resources`, shared with the simulator) as the limits
one instance gets: :class:`ResourceLimits` holds the memory size in MB and the vCPUs it buys."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB, cpus_for_memory
from servelab.errors import ConfigError

MB = 1024 * 1024
GROUP = "servelab"  # instance cgroups are GROUP/<instance_id>
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel refuses smaller quotas


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container or taskset may give us fewer than cpu_count
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ResourceLimits:
    """What one instance may use. ``cpus`` is derived from ``memory_mb`` unless given."""

    memory_mb: int
    cpus: float | None = None  # always a float after construction

    def __post_init__(self) -> None:
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int):
            raise ConfigError(f"memory_mb must be an integer number of MB, got {self.memory_mb!r}")
        if not MIN_MEMORY_MB <= self.memory_mb <= MAX_MEMORY_MB:
            raise ConfigError(
                f"memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} (as on AWS Lambda), "
                f"got {self.memory_mb}"
            )
        if self.cpus is None:
            object.__setattr__(self, "cpus", cpus_for_memory(self.memory_mb))
        elif not (isinstance(self.cpus, int | float) and math.isfinite(self.cpus) and self.cpus > 0):
            raise ConfigError(f"cpus must be a positive number of vCPUs, got {self.cpus!r}")
        else:
            object.__setattr__(self, "cpus", float(self.cpus))

    @classmethod
    def for_memory(cls, memory_mb: int) -> ResourceLimits:
        """Limits for a Lambda-style memory size; raises ConfigError outside 128..10240 MB."""
        return cls(memory_mb)

    @property
    def threads(self) -> int:
        """Intra-op threads an instance should use: enough to use its CPU share, no more than we have.

        More threads than the quota only adds throttling and context switches; fewer would leave
        paid-for CPU idle. The 1e-9 keeps 1769 MB (exactly 1.0 vCPU) at one thread.
        """
        assert self.cpus is not None
        return max(1, min(math.ceil(self.cpus - 1e-9), _usable_cpus()))

    def cfs_quota_us(self) -> int:
        """The CFS quota per CFS_PERIOD_US that gives ``cpus``."""
        assert self.cpus is not None
        return max(MIN_CFS_QUOTA_US, round(self.cpus * CFS_PERIOD_US))
