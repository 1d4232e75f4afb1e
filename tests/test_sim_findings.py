"""The study's qualitative findings, reproduced at cloud scale by the simulator with the shipped
hand-written profile (seed 001, "Comparison" and "Design Space of Serverless Model Serving")."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from servelab.sim import ManagedConfig, ServerConfig, ServerlessConfig, load_profile, simulate
from servelab.workload import generate, load_spec

PROFILE = load_profile("study-mobilenetv2")


def p(result, q: str) -> float:
    return result.summary().latency_ms[q]


def test_under_bursty_mmpp_serverless_p95_beats_a_managed_endpoint_that_must_scale_out():
    # quiet 5 rps with 40-second bursts of 300 rps: serverless starts instances per request,
    # the endpoint (sized for the quiet rate) waits a metric period plus provisioning
    arr = generate(load_spec("mmpp:rates=5,300;sojourn=120,40;duration=900"), seed=2)
    serverless = simulate(ServerlessConfig(max_concurrency=1000), PROFILE, arr, seed=1)
    managed = simulate(ManagedConfig(min_instances=1, max_instances=40, metric_period_s=60,
                                     scale_out_delay_s=120), PROFILE, arr, seed=1, trace=True)
    assert p(serverless, "p95") < 100 < p(managed, "p95")
    assert serverless.summary().success_ratio > managed.summary().success_ratio
    assert any(d.action == "out" for _, d in managed.trace.decisions)  # it did scale, too late


def test_a_fixed_gpu_server_degrades_without_bound_past_its_capacity():
    # one GPU server batching up to 64: capacity ~64 / 7.6 ms = 8,400 rps; below it, flat latency
    def run(rate: float):
        arr = generate(load_spec(f"poisson:rate={rate};duration=20"), seed=1)
        cfg = ServerConfig(device="gpu", instances=1, max_batch_size=64, max_wait_ms=2.0,
                           price_entry="aws-ec2-g4dn.xlarge-us-east-1", client_timeout_s=1e9, max_queue_wait_s=1e9)
        return simulate(cfg, PROFILE, arr, seed=1)

    under, over, far_over = run(4000), run(10_000), run(14_000)
    assert p(under, "p99") < 30
    assert p(over, "p50") > 50 * p(under, "p50")
    assert p(far_over, "p50") > p(over, "p50")
    # and it keeps growing with time: the backlog of the last seconds is the longest
    t = over.table
    lat = t["latency_ms"].to_numpy(zero_copy_only=False)
    sched = t["scheduled_s"].to_numpy()
    assert np.median(lat[sched > 15]) > 1.8 * np.median(lat[(sched > 5) & (sched < 10)])


def test_larger_batches_lower_cost_and_raise_latency():
    # the study's Lambda billed 100 ms steps: a batch of 8 shares one rounded-up execution
    arr = generate(load_spec("poisson:rate=200;duration=120"), seed=4)
    runs = {b: simulate(ServerlessConfig(max_batch_size=b, max_wait_ms=50.0 if b > 1 else 0.0,
                                         billing_rounding_ms=100, price_entry="aws-lambda-x86-us-east-1-100ms"),
                        PROFILE, arr, seed=1) for b in (1, 8)}
    assert pc.max(runs[8].table["batch_size"]).as_py() == 8
    assert runs[8].cost().total_usd < 0.5 * runs[1].cost().total_usd
    assert p(runs[8], "p50") > 2 * p(runs[1], "p50")


def test_provisioned_concurrency_removes_cold_starts_at_a_price():
    # sparse traffic with 60 s gaps against a 30 s keep-alive: every request is cold on demand
    arr = generate(load_spec("onoff:on_rate=2;on=10;off=60;duration=600"), seed=5)
    on_demand = simulate(ServerlessConfig(keep_alive_s=30), PROFILE, arr, seed=1)
    provisioned = simulate(ServerlessConfig(keep_alive_s=30, provisioned=2), PROFILE, arr, seed=1)
    assert on_demand.summary().cold_starts >= 8
    assert provisioned.summary().cold_starts == 0
    assert p(provisioned, "p99") < p(on_demand, "p99")
    assert provisioned.cost().total_usd > 2 * on_demand.cost().total_usd


def test_hybrid_keep_alive_prewarms_a_periodic_function_that_fixed_keep_alive_lets_go_cold():
    times = np.arange(0.0, 30 * 40, 30.0)  # an invocation every 30 s
    fixed = simulate(ServerlessConfig(keep_alive_s=10), PROFILE, times, seed=1)
    hybrid = simulate(ServerlessConfig(keep_alive="hybrid", keep_alive_s=10,
                                       keep_alive_params={"bin_s": 1.0, "range_s": 120.0}), PROFILE, times, seed=1)
    assert fixed.summary().cold_starts == len(times)
    kinds = hybrid.table["start_kind"].to_pylist()
    assert kinds.count("cold") <= 12  # until the histogram has 10 idle times
    assert kinds[-10:] == ["prewarmed"] * 10
