"""The platform's decisions as pure functions: keep-alive, admission, batching, scaling.

Each takes plain numbers (and ``now_s`` from the caller's clock) and returns a decision, so
the core (driven by the real platform and by the discrete-event simulator) shares them. See docs/policies.md.
"""

from servelab.core.policies.admission import (
    ADMISSION_MODES,
    AdmissionAction,
    AdmissionMode,
    AdmissionSnapshot,
    admit,
    queue_timed_out,
)
from servelab.core.policies.autoscale import (
    SCALING_KINDS,
    LoadAverager,
    ScaleDecision,
    ScalingKind,
    TargetTracking,
    desired_instances,
    target_tracking,
)
from servelab.core.policies.batching import BatchDecision, decide_batch
from servelab.core.policies.greedydual import (
    EVICTION_ORDERS,
    Candidate,
    Eviction,
    EvictionOrder,
    GreedyDualKeepAlive,
    gd_priority,
    pick_victims,
)
from servelab.core.policies.keepalive import (
    EPSILON_S,
    KEEPALIVE,
    FixedKeepAlive,
    HistogramState,
    HybridHistogramKeepAlive,
    HybridMode,
    KeepAliveDecision,
    KeepAliveKind,
    KeepAlivePolicy,
    keepalive_from,
    make_keepalive,
    prewarm_at_s,
    should_reclaim,
)
from servelab.core.policies.prewarm import (
    PredictedWindow,
    ScheduledKeepAlive,
    predicted_window,
    scheduled_min_warm,
)
from servelab.core.policies.scalerate import SCALE_RATE_KINDS, ScaleRateKind, ScaleRateLimit

KEEPALIVE["faascache"] = GreedyDualKeepAlive
KEEPALIVE["scheduled"] = ScheduledKeepAlive

__all__ = [
    "ADMISSION_MODES",
    "EPSILON_S",
    "EVICTION_ORDERS",
    "KEEPALIVE",
    "SCALE_RATE_KINDS",
    "SCALING_KINDS",
    "AdmissionAction",
    "AdmissionMode",
    "AdmissionSnapshot",
    "BatchDecision",
    "Candidate",
    "Eviction",
    "EvictionOrder",
    "FixedKeepAlive",
    "GreedyDualKeepAlive",
    "HistogramState",
    "HybridHistogramKeepAlive",
    "HybridMode",
    "KeepAliveDecision",
    "KeepAliveKind",
    "KeepAlivePolicy",
    "LoadAverager",
    "PredictedWindow",
    "ScaleDecision",
    "ScaleRateKind",
    "ScaleRateLimit",
    "ScalingKind",
    "ScheduledKeepAlive",
    "TargetTracking",
    "admit",
    "decide_batch",
    "desired_instances",
    "gd_priority",
    "keepalive_from",
    "make_keepalive",
    "pick_victims",
    "predicted_window",
    "prewarm_at_s",
    "queue_timed_out",
    "scheduled_min_warm",
    "should_reclaim",
    "target_tracking",
]
