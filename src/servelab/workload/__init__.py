"""Arrival processes: numpy arrays of arrival times (Poisson, MMPP, step, ramp, on-off, trace replay).

    spec = load_spec("mmpp:rates=5,50;sojourn=10,2")   # or a preset name, or a YAML/JSON file
    arrivals = generate(spec, duration_s=600, seed=1)  # Arrivals: times_s, states, state_path

Times are seconds from the start of the run, rates are requests per second.
"""

from servelab.workload.arrivals import Arrivals, generate
from servelab.workload.spec import (
    ARRIVALS,
    PRESETS,
    ArrivalKind,
    ConstantSpec,
    MMPPSpec,
    OnOffSpec,
    PoissonSpec,
    RampSpec,
    StepSpec,
    TraceSpec,
    WorkloadSpec,
    load_spec,
    parse_spec,
)

__all__ = [
    "ARRIVALS",
    "PRESETS",
    "ArrivalKind",
    "Arrivals",
    "ConstantSpec",
    "MMPPSpec",
    "OnOffSpec",
    "PoissonSpec",
    "RampSpec",
    "StepSpec",
    "TraceSpec",
    "WorkloadSpec",
    "generate",
    "load_spec",
    "parse_spec",
]
