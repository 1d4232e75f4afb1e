"""The platform's decisions as pure functions: keep-alive, admission, batching, scaling.

Each takes plain numbers (and ``now_s`` from the caller's clock) and returns a decision, so
the real platform and the discrete-event simulator share them. See docs/policies.md.
"""

from servelab.platform.policies.admission import (
    ADMISSION_MODES,
    AdmissionAction,
    AdmissionMode,
    AdmissionSnapshot,
    admit,
    queue_timed_out,
)
from servelab.platform.policies.autoscale import (
    SCALING_KINDS,
    LoadAverager,
    ScaleDecision,
    ScalingKind,
    TargetTracking,
    desired_instances,
    target_tracking,
)
from servelab.platform.policies.batching import BatchDecision, decide_batch
from servelab.platform.policies.keepalive import (
    EPSILON_S,
    KEEPALIVE,
    FixedKeepAlive,
    HistogramState,
    HybridHistogramKeepAlive,
    HybridMode,
    KeepAliveDecision,
    KeepAliveKind,
    KeepAlivePolicy,
    make_keepalive,
    prewarm_at_s,
    should_reclaim,
)

__all__ = [
    "ADMISSION_MODES",
    "EPSILON_S",
    "KEEPALIVE",
    "SCALING_KINDS",
    "AdmissionAction",
    "AdmissionMode",
    "AdmissionSnapshot",
    "BatchDecision",
    "FixedKeepAlive",
    "HistogramState",
    "HybridHistogramKeepAlive",
    "HybridMode",
    "KeepAliveDecision",
    "KeepAliveKind",
    "KeepAlivePolicy",
    "LoadAverager",
    "ScaleDecision",
    "ScalingKind",
    "TargetTracking",
    "admit",
    "decide_batch",
    "desired_instances",
    "make_keepalive",
    "prewarm_at_s",
    "queue_timed_out",
    "should_reclaim",
    "target_tracking",
]
