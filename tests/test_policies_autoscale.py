"""The target-tracking autoscaler (managed endpoints): its arithmetic, cooldowns and averaging."""

from __future__ import annotations

import math

import pytest

from servelab.core.policies import LoadAverager, TargetTracking, desired_instances, target_tracking
from servelab.errors import ConfigError

CFG = TargetTracking(min_instances=1, max_instances=8, target_utilisation=0.5, metric_period_s=60,
                     scale_out_cooldown_s=300, scale_in_cooldown_s=600)


def test_desired_instances_brings_the_load_per_instance_to_the_target_within_bounds() -> None:
    assert desired_instances(CFG, 0.0) == 1  # never below the minimum
    assert desired_instances(CFG, 1.0) == 2  # exactly on target: not one more
    assert desired_instances(CFG, 1.01) == 3
    assert desired_instances(CFG, 100.0) == 8  # never above the maximum


def test_scale_out_waits_for_its_cooldown_and_scale_in_for_any_recent_scaling() -> None:
    first = target_tracking(CFG, now_s=60, current=1, mean_load=2.0, last_scale_out_s=None, last_scale_in_s=None)
    assert (first.action, first.desired) == ("out", 4)
    again = target_tracking(CFG, now_s=120, current=4, mean_load=4.0, last_scale_out_s=60, last_scale_in_s=None)
    assert (again.action, again.desired) == ("hold", 4) and "cooldown" in again.reason
    later = target_tracking(CFG, now_s=360, current=4, mean_load=4.0, last_scale_out_s=60, last_scale_in_s=None)
    assert (later.action, later.desired) == ("out", 8)
    # load gone: scale-in must wait scale_in_cooldown_s after the last scale-out too
    quiet = target_tracking(CFG, now_s=900, current=8, mean_load=0.2, last_scale_out_s=360, last_scale_in_s=None)
    assert quiet.action == "hold"
    gone = target_tracking(CFG, now_s=961, current=8, mean_load=0.2, last_scale_out_s=360, last_scale_in_s=None)
    assert (gone.action, gone.desired) == ("in", 1)


def test_on_target_holds() -> None:
    d = target_tracking(CFG, now_s=0, current=2, mean_load=0.9, last_scale_out_s=None, last_scale_in_s=None)
    assert (d.action, d.desired) == ("hold", 2)


@pytest.mark.parametrize("kwargs", [{"min_instances": 0, "max_instances": 2}, {"min_instances": 3, "max_instances": 2},
                                    {"min_instances": 1, "max_instances": 2, "target_utilisation": 0},
                                    {"min_instances": 1, "max_instances": 2, "scale_out_delay_s": -1}])
def test_bad_settings_are_refused_with_the_reason(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        TargetTracking(**kwargs)


def test_load_averager_weights_each_level_by_how_long_it_lasted() -> None:
    avg = LoadAverager(now_s=0.0)
    avg.update(1.0, 4)  # 0 for 1 s, then 4 for 3 s
    assert avg.take(4.0) == pytest.approx(3.0)
    # a new period starts at the take, at the current level
    assert avg.take(6.0) == pytest.approx(4.0)
    avg.update(6.0, 0)
    assert avg.elapsed_s(7.0) == pytest.approx(1.0)
    assert math.isclose(avg.take(8.0), 0.0)
