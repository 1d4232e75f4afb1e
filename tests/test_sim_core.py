"""The simulator's core, checked on tiny scenarios worked out by hand, and its contracts:
every arrival gets exactly one record, limits throttle, keep-alive reclaims on time, and the
records are the platform's schema (the analyzer and the cost model read them)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pytest

from servelab.billing.rules import billed_ms
from servelab.core.policies import decide_batch
from servelab.records import SCHEMA, STATUSES, read_instances, read_records
from servelab.sim import Profile, ServerConfig, ServerlessConfig, simulate
from servelab.sim.outcomes import COLD, WARM
from servelab.sim.output import billed_ms_array


def constant_profile(init_ms: float = 100.0, service_ms: float = 10.0, **extra) -> Profile:
    return Profile.model_validate({"model": "const", "cold_start": {"init_ms": init_ms},
                                   "inference": [{"memory_mb": 1769, "batches": {1: service_ms, 8: 4 * service_ms}}],
                                   **extra})


def statuses(result) -> list[str]:
    return result.table["status"].to_pylist()


def test_hand_checked_cold_starts_reuse_and_keep_alive_reclaim():
    # t=0: cold start A (ready 0.1). t=0.05: A is taken by r0's wait, so r1 starts B (ready 0.15)
    # but A frees first (0.11) and serves r1: r1 queued behind r0's cold start, so it is warm
    # (queue 60 ms). t=0.5: B (most recently idle) serves r2: B's first request, and B was started
    # on demand, so r2 is cold and carries B's init (billed once per environment) though it did not
    # wait for it. Keep-alive 1 s: A (idle since 0.12) goes at the first tick >= 1.12, B (idle
    # since 0.51) at the first tick >= 1.51. t=3: nothing left: cold.
    cfg = ServerlessConfig(keep_alive_s=1.0, reap_interval_s=0.1, scale_rate="none")
    r = simulate(cfg, constant_profile(), np.array([0.0, 0.05, 0.5, 3.0]))
    o = r.outcomes
    assert o.kind == [COLD, WARM, COLD, COLD]
    assert o.instance == [0, 0, 1, 2]
    assert o.inst_ready_s[:2] == pytest.approx([0.1, 0.15])
    assert 1.12 <= o.inst_end_s[0] <= 1.22 + 1e-9
    assert 1.51 <= o.inst_end_s[1] <= 1.61 + 1e-9
    assert 4.11 <= o.inst_end_s[2] <= 4.21 + 1e-9  # the reaper keeps running until it is reclaimed
    t = r.table
    assert t["latency_ms"].to_pylist() == pytest.approx([110.0, 70.0, 10.0, 110.0])
    assert t["queue_ms"].to_pylist() == pytest.approx([0.0, 60.0, 0.0, 0.0])
    assert t["cold"].to_pylist() == [True, False, True, True]
    assert t["init_ms"].to_pylist() == [100.0, None, 100.0, 100.0]
    # billed: the 10 ms run, plus the 100 ms init once per environment, on its first request
    assert t["billed_ms"].to_pylist() == [110.0, 10.0, 110.0, 110.0]
    assert r.summary().cold_starts == 3
    # the lifecycle records: three on-demand environments, started, ready, reclaimed
    ev = r.instances()
    assert ev.filter(pc.equal(ev["event"], "started"))["kind"].to_pylist() == ["on_demand"] * 3
    assert ev.filter(pc.equal(ev["event"], "reclaimed")).num_rows == 3


def test_requests_beyond_max_concurrency_are_throttled_or_queued():
    five_at_once = np.zeros(5)
    throttle = simulate(ServerlessConfig(max_concurrency=2, scale_rate="none"), constant_profile(), five_at_once)
    assert statuses(throttle) == ["ok", "ok", "throttled", "throttled", "throttled"]
    assert throttle.table["http_status"].to_pylist()[2:] == [429] * 3
    assert throttle.table["billed_ms"].to_pylist()[2:] == [0.0] * 3
    queued = simulate(ServerlessConfig(max_concurrency=2, admission="queue", max_queue=1, scale_rate="none"),
                      constant_profile(), five_at_once)
    assert statuses(queued) == ["ok", "ok", "ok", "throttled", "throttled"]
    # the queued one waited for the first instance to finish its request: 100 ms init + 2 x 10 ms
    assert queued.table["latency_ms"][2].as_py() == pytest.approx(120.0)


def test_queued_request_times_out_after_max_queue_wait():
    cfg = ServerlessConfig(max_concurrency=1, admission="queue", max_queue=10, max_queue_wait_s=0.35,
                           scale_rate="none")
    r = simulate(cfg, constant_profile(service_ms=200.0), np.array([0.0, 0.0, 0.01]))
    # r0 starts the only instance (ready 0.1, busy until 0.3); r1 and r2 queue with a 0.35 s
    # budget: r1 gets the instance at 0.3 (in time), r2 would get it at 0.5 but expires at 0.36
    assert statuses(r) == ["ok", "ok", "throttled"]
    # r1 is warm: all its wait (behind r0's init and r0's run) is queueing
    assert r.table["queue_ms"][1].as_py() == pytest.approx(300.0)
    assert "waited 0.35 s" in r.table["error"][2].as_py()
    assert r.table["completed_s"][2].as_py() == pytest.approx(0.36)


def test_scale_rate_limit_throttles_a_burst_beyond_the_bucket():
    burst = np.zeros(1500)  # 1,500 simultaneous requests: AWS allows 1,000 new instances at once
    r = simulate(ServerlessConfig(max_concurrency=5000, scale_rate="aws"), constant_profile(), burst)
    assert r.summary().by_status["throttled"] == 500
    free = simulate(ServerlessConfig(max_concurrency=5000, scale_rate="none"), constant_profile(), burst)
    assert free.summary().by_status["throttled"] == 0


def test_provisioned_instances_serve_warm_and_are_never_reclaimed():
    cfg = ServerlessConfig(provisioned=1, keep_alive_s=0.5, scale_rate="none")
    r = simulate(cfg, constant_profile(), np.array([0.0, 5.0]))
    assert r.table["start_kind"].to_pylist() == ["prewarmed", "warm"]
    assert r.outcomes.inst_end_s == [math.inf]


def test_every_arrival_gets_exactly_one_record_in_the_platform_schema(tmp_path):
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 10, 5000))  # 500 rps against ~230 rps of capacity
    cfg = ServerlessConfig(max_concurrency=8, keep_alive_s=2.0, max_batch_size=4, max_wait_ms=20,
                           admission="queue", max_queue=50, max_queue_wait_s=1.0, scale_rate="none")
    r = simulate(cfg, constant_profile(service_ms=60.0), times, seed=1)
    t = r.table
    assert t.schema == SCHEMA
    assert t.num_rows == times.size
    assert len(set(t["request_id"].to_pylist())) == times.size
    assert np.array_equal(t["scheduled_s"].to_numpy(), times)
    assert set(t["status"].to_pylist()) <= set(STATUSES)
    ok = pc.equal(t["status"], "ok").to_numpy(zero_copy_only=False)
    assert ok.sum() > 0 and (~ok).sum() > 0  # the scenario exercises both
    sizes = t["batch_size"].to_numpy(zero_copy_only=False)[ok]
    assert sizes.max() <= 4 and sizes.min() >= 1
    assert t.filter(pc.equal(t["status"], "ok"))["instance_id"].null_count == 0
    # latency >= the (constant) part of the service time the request waited for
    assert np.all(t["latency_ms"].to_numpy(zero_copy_only=False)[ok] >= 60.0 - 1e-9)
    # written like a measured run: read_records and the analyzer read it back unchanged
    r.write(tmp_path / "run")
    back = read_records(tmp_path / "run" / "records")
    assert back.equals(t)
    assert read_instances(tmp_path / "run" / "instances").equals(r.instances())


def test_analyzer_and_cost_cli_read_simulated_runs(tmp_path):
    from typer.testing import CliRunner

    from servelab.analysis.cli import app as analyze_app
    from servelab.analysis.metrics import load_run, summarize_run

    r = simulate(ServerlessConfig(scale_rate="none"), constant_profile(), np.arange(0, 20, 0.05), seed=0)
    r.write(tmp_path / "sim")
    s = summarize_run(load_run(tmp_path / "sim"))
    assert s.count == 400 and s.success_ratio == 1.0
    assert s.latency_ms["p50"] == pytest.approx(10.0)
    assert s.window_s == pytest.approx(r.duration_s)
    out = CliRunner().invoke(analyze_app, [str(tmp_path / "sim"), "--json"])
    assert out.exit_code == 0, out.output
    assert '"count": 400' in out.output
    assert r.cost().total_usd > 0


def test_fast_paths_answer_what_the_policies_answer():
    # decide_batch: a full batch runs at once whatever the clock says (the cached answer)
    rng = np.random.default_rng(0)
    for mbs in (1, 4):
        cached = decide_batch(queued=mbs, oldest_enqueued_s=0.0, now_s=0.0, max_batch_size=mbs, max_wait_s=0.05)
        for _ in range(50):
            t0, dt = rng.uniform(0, 1e5), rng.uniform(0, 1)
            assert decide_batch(queued=mbs + int(rng.integers(0, 3)), oldest_enqueued_s=t0, now_s=t0 + dt,
                                max_batch_size=mbs, max_wait_s=0.05) == cached
    # billing: the vectorised rounding is the meter's
    d = np.concatenate([rng.uniform(0, 500, 2000), [0.0, 1.0, 100.0, 0.1 * 3 * 1000]])
    for r in (1, 100):
        assert billed_ms_array(d, r).tolist() == [billed_ms(x, r) for x in d]


def test_server_pool_batches_and_never_starts_instances():
    cfg = ServerConfig(instances=1, max_batch_size=8, max_wait_ms=5.0)
    r = simulate(cfg, constant_profile(), np.zeros(8))
    assert r.table["batch_size"].to_pylist() == [8] * 8
    assert r.table["latency_ms"].to_pylist() == pytest.approx([40.0] * 8)  # one batch of 8: 40 ms
    assert r.outcomes.instances == 1 and r.summary().cold_starts == 0


def test_same_seed_same_run():
    prof = Profile.model_validate({"model": "m", "cold_start": {"init_ms": {"quantiles": {0: 50, 1: 150}}},
                                   "inference": [{"memory_mb": 1769, "batches": {1: {"quantiles": {0: 5, 1: 15}}}}]})
    times = np.sort(np.random.default_rng(1).uniform(0, 30, 3000))
    a = simulate(ServerlessConfig(keep_alive_s=1), prof, times, seed=7, run_id="x").table
    b = simulate(ServerlessConfig(keep_alive_s=1), prof, times, seed=7, run_id="x").table
    assert a.equals(b)


def test_a_batch_is_billed_as_one_execution_with_its_init_once():
    cfg = ServerlessConfig(max_concurrency=1, max_batch_size=8, max_wait_ms=50.0, admission="queue",
                           billing_rounding_ms=100, price_entry="aws-lambda-x86-us-east-1-100ms", scale_rate="none")
    r = simulate(cfg, constant_profile(), np.zeros(8))  # one cold instance, one batch of 8 (40 ms)
    # the oldest request is the environment's first (cold, carrying the init); the rest are warm
    assert r.table["start_kind"].to_pylist() == ["cold"] + ["warm"] * 7
    assert r.table["billed_ms"].to_pylist() == pytest.approx([100 / 8 + 100] + [100 / 8] * 7)
    cost = r.cost()
    assert cost.requests == 8
    assert cost.compute_usd == pytest.approx(0.2 * 1769 / 1024 * 0.0000166667)  # one 200 ms execution


def test_simulate_and_recommend_commands_run_through_the_servelab_app(tmp_path):
    """The top-level ``servelab`` app (lazy package exports included), not the functions."""
    import json

    from typer.testing import CliRunner

    from servelab.cli import app

    r = CliRunner().invoke(app, ["simulate", "-w", "poisson:rate=20;duration=30", "-s", "memory_mb=1769",
                                 "-s", "provisioned=1", "--seed", "1", "--json", "-o", str(tmp_path / "sim")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["requests"] > 400 and out["success_ratio"] == 1.0 and (tmp_path / "sim" / "records").is_dir()
    r = CliRunner().invoke(app, ["recommend", "-w", "poisson:rate=20;duration=30", "--p95-ms", "400",
                                 "--memory-mb", "1024,1769", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["best"]["config"]["memory_mb"] in (1024, 1769)


def test_instances_on_one_host_share_its_cores() -> None:
    """host_cpus: 4 inits of 100 ms on 2 cores finish together at 200 ms, then 4 batches of 10 ms
    take 20 ms; without it (the cloud) each instance has its own CPU."""
    prof = constant_profile()
    cloud = simulate(ServerlessConfig(max_concurrency=4, admission="queue", scale_rate="none"), prof, np.zeros(4))
    host = simulate(ServerlessConfig(max_concurrency=4, admission="queue", scale_rate="none", host_cpus=2),
                    prof, np.zeros(4))
    assert cloud.table["latency_ms"].to_pylist() == pytest.approx([110.0] * 4)
    assert host.table["latency_ms"].to_pylist() == pytest.approx([220.0] * 4)
    assert host.table["duration_ms"].to_pylist() == pytest.approx([20.0] * 4)  # as the platform measures it
    assert host.outcomes.inst_ready_s == pytest.approx([0.2] * 4)
    # one core, one instance: nothing to share
    alone = simulate(ServerlessConfig(max_concurrency=1, scale_rate="none", host_cpus=1), prof, np.zeros(1))
    assert alone.table["latency_ms"].to_pylist() == pytest.approx([110.0])


def test_a_batch_stretched_past_the_timeout_by_sharing_times_out() -> None:
    prof = constant_profile(service_ms=600.0)  # 0.6 s alone; 4 sharing 1 core: 2.4 s > 1 s timeout
    cfg = ServerlessConfig(max_concurrency=4, admission="queue", scale_rate="none", host_cpus=1, timeout_s=1.0)
    r = simulate(cfg, prof, np.full(4, 0.0))
    assert statuses(r) == ["timeout"] * 4
    assert r.table["duration_ms"].to_pylist() == pytest.approx([1000.0] * 4)
