"""Instance backends: where instances run. See :mod:`servelab.platform.backends.base`.

``local`` (processes on this machine, the default) and ``fake`` (in memory, for tests).
"""

from servelab.platform.backends.base import (
    START_MODES,
    BatchOutcome,
    InitError,
    InitTimings,
    Instance,
    InstanceBackend,
    InstanceSpec,
    InstanceState,
    StartMode,
)

__all__ = [
    "START_MODES",
    "BatchOutcome",
    "InitError",
    "InitTimings",
    "Instance",
    "InstanceBackend",
    "InstanceSpec",
    "InstanceState",
    "StartMode",
]
