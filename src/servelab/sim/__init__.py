"""Discrete-event simulation of serverless, managed and server model serving, calibrated by
profiles, sharing the platform's policy functions and record schema; and a recommender.

    from servelab.sim import ServerlessConfig, load_profile, simulate
    result = simulate(ServerlessConfig(), load_profile("study-mobilenetv2"), arrivals, seed=1)

See docs/simulator.md. Names are imported on first use, so ``servelab.sim.cli`` (and the
``servelab`` command's ``--help``) does not pay for numpy, pyarrow and the models.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ManagedConfig": "servelab.sim.managed",
    "Dist": "servelab.sim.profile",
    "Profile": "servelab.sim.profile",
    "load_profile": "servelab.sim.profile",
    "parse_profile": "servelab.sim.profile",
    "shipped_profiles": "servelab.sim.profile",
    "ServerConfig": "servelab.sim.server",
    "SCALE_RATE_KINDS": "servelab.core.policies",
    "ScaleRateLimit": "servelab.core.policies",
    "ServerlessConfig": "servelab.sim.serverless",
    "TARGETS": "servelab.sim.simulation",
    "SimResult": "servelab.sim.simulation",
    "parse_config": "servelab.sim.simulation",
    "price_records": "servelab.sim.simulation",
    "simulate": "servelab.sim.simulation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'servelab.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
