"""The serverless core: one function's scheduling state, and the step that moves it.

    core = FunctionCore(CoreConfig(max_instances=4))
    actions = core.boot(now_s=0.0) + core.arrive(request=0, now_s=0.0)   # [StartInstance(0, 'on_demand')]
    actions = core.ready(instance=0, now_s=0.12)                          # [Dispatch(0, (0,), ('cold',))]

The live platform (``servelab.platform.service``: asyncio, real processes) and the simulator
(``servelab.sim.engine``: event heap, virtual clock) both drive this one core, so the simulator
predicts the platform by construction. Decisions are the pure policies of
:mod:`servelab.core.policies`; accounting rules are :mod:`servelab.billing.rules`. Nothing here
does I/O or reads a clock. See docs/architecture.md.
"""

from servelab.core.actions import Action, Dispatch, FailRequests, SetTimer, StartInstance, StopInstance, Throttle
from servelab.core.config import CORE_SCALINGS, CoreConfig, CoreScaling
from servelab.core.events import Arrived, Died, Event, Finished, InitFailed, Ready, Tick, TimerFired
from servelab.core.function import Counters, FunctionCore, InstanceState

__all__ = [
    "CORE_SCALINGS",
    "Action",
    "Arrived",
    "CoreConfig",
    "CoreScaling",
    "Counters",
    "Died",
    "Dispatch",
    "Event",
    "FailRequests",
    "Finished",
    "FunctionCore",
    "InitFailed",
    "InstanceState",
    "Ready",
    "SetTimer",
    "StartInstance",
    "StopInstance",
    "Throttle",
    "Tick",
    "TimerFired",
]
