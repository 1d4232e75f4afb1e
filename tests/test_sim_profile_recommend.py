"""Profiles (parsing, lookups, the shipped hand-written one) and the recommender's search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from servelab.errors import ConfigError
from servelab.sim import Dist, Profile, ServerlessConfig, load_profile, parse_profile, shipped_profiles, simulate
from servelab.sim.recommend import Objective, SearchSpace, pareto_front, recommend
from servelab.workload import generate, load_spec


def test_distribution_sampling_follows_its_quantiles():
    d = Dist.parse({"quantiles": {0: 10, 0.5: 20, 1: 40}}, where="x")
    x = d.sample(np.random.default_rng(0), 100_000)
    assert x.min() >= 10 and x.max() <= 40
    assert np.median(x) == pytest.approx(20, rel=0.02)
    assert d.mean == pytest.approx(22.5)
    assert Dist.parse(7, where="x").sample(np.random.default_rng(0), 3).tolist() == [7, 7, 7]
    with pytest.raises(ConfigError, match="non-decreasing"):
        Dist.parse({"quantiles": {0: 5, 1: 3}}, where="x")


def test_profile_lookups_interpolate_batches_and_scale_memory_by_vcpus():
    p = Profile.model_validate({"model": "m", "cold_start": {"init_ms": 100},
                                "inference": [{"memory_mb": 1769, "batches": {1: 10, 8: 80}}]})
    assert p.service(batch=4, memory_mb=1769).median == pytest.approx(40)
    assert p.service(batch=16, memory_mb=1769).median == pytest.approx(160)  # extrapolated, affine
    assert p.service(batch=1, memory_mb=884).median == pytest.approx(10 * 1769 / 884)  # half a vCPU
    assert p.service(batch=1, memory_mb=3538).median == pytest.approx(10)  # one thread: flat above 1 vCPU
    assert p.init(memory_mb=884).median == pytest.approx(100 * 1769 / 884)
    with pytest.raises(ConfigError, match="no gpu"):
        p.service(batch=1, device="gpu")


def test_profile_round_trips_through_yaml(tmp_path):
    p = load_profile("study-mobilenetv2")
    p.save(tmp_path / "p.yaml")
    q = load_profile(tmp_path / "p.yaml")
    assert q.service(batch=8, memory_mb=1769).median == p.service(batch=8, memory_mb=1769).median
    assert q.cold_start.parts == p.cold_start.parts


def test_bad_profiles_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="inference"):
        parse_profile({"model": "m", "cold_start": {"init_ms": 1}, "inference": []})
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        load_profile("nope")


def test_shipped_study_profile_cites_or_flags_every_figure():
    assert "study-mobilenetv2" in shipped_profiles()
    p = load_profile("study-mobilenetv2")
    keys = " ".join(p.sources)
    for field in ("cold_start.init_ms", "cold_start.parts", "cold_start.first_inference_extra_ms",
                  "inference.cpu.1769.batch1", "inference.cpu.1769.batch8", "inference.gpu",
                  "dispatch_overhead_ms", "client_overhead_ms", "memory_scaling"):
        assert field in keys
    text = " ".join(p.sources.values())
    assert "assumed" in text and "seed 001" in text


def brute_force(profile, arrivals, objective, mems):
    best = None
    for m in mems:
        r = simulate(ServerlessConfig(memory_mb=m), profile, arrivals, seed=0)
        s = r.summary()
        if objective.met(s.latency_ms["p95"], s.latency_ms["p99"], s.success_ratio):
            c = r.cost().total_usd
            if best is None or c < best[1]:
                best = (m, c)
    return best


def test_recommender_finds_the_grids_cheapest_with_fewer_simulations():
    profile = load_profile("study-mobilenetv2")
    arrivals = generate(load_spec("poisson:rate=20;duration=120"), seed=1)
    mems = (256, 384, 512, 768, 1024, 1280, 1536, 1769, 2048, 3008)
    objective = Objective(p95_ms=60.0, min_sr=0.99)
    rec = recommend(profile, arrivals, objective, SearchSpace(memory_mb=mems), seed=0)
    assert rec.best is not None
    assert (rec.best.config.memory_mb, rec.best.cost_usd) == pytest.approx(brute_force(profile, arrivals,
                                                                                      objective, mems))
    assert rec.simulations < len(mems)
    assert rec.best.p95_ms <= 60.0
    front = [(e.cost_usd, e.p95_ms) for e in rec.pareto]
    assert front == sorted(front) and all(b[1] < a[1] for a, b in itertools.pairwise(front))


def test_recommender_sizes_a_server_pool_with_the_fewest_instances_that_meet_the_objective():
    profile = load_profile("study-mobilenetv2")
    arrivals = generate(load_spec("poisson:rate=150;duration=60"), seed=1)
    space = SearchSpace(serverless_entries=(), server_entries=("aws-ec2-c5.large-us-east-1",), max_instances=16)
    rec = recommend(profile, arrivals, Objective(p95_ms=100.0, min_sr=0.999), space, seed=0)
    n = rec.best.config.instances
    # 150 rps x ~12 ms mean ~ 1.8 busy workers: a few instances, and one fewer does not do it
    assert 2 <= n <= 6
    fewer = [e for e in rec.evaluated if e.config.kind == "server" and e.config.instances == n - 1]
    assert fewer and not fewer[0].feasible


def test_pareto_front_drops_dominated_points():
    from servelab.sim.recommend import Evaluated

    def e(cost, p95):
        return Evaluated(ServerlessConfig(), 0, p95, 0, 1, 0, cost, 0, True, True)
    pts = [e(1, 100), e(2, 50), e(3, 60), e(4, 10), e(2, 40)]
    assert [(x.cost_usd, x.p95_ms) for x in pareto_front(pts)] == [(1, 100), (2, 40), (4, 10)]


def test_verify_says_where_a_recommendation_extrapolates_beyond_its_profile() -> None:
    from servelab.sim.cli import _extrapolation

    prof = Profile.model_validate({"model": "m", "cold_start": {"init_ms": 100.0},
                                   "inference": [{"memory_mb": 1769, "batches": {1: 10.0, 4: 30.0}}]})
    assert _extrapolation(ServerlessConfig(memory_mb=1769, max_batch_size=4), prof) == []
    notes = _extrapolation(ServerlessConfig(memory_mb=512, max_batch_size=8), prof)
    assert len(notes) == 2 and "512 MB was not measured" in notes[0] and "batch size 8" in notes[1]
