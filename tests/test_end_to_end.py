"""The lab's parts together: the load generator drives the real platform, the analyzer and the
cost model read what it recorded."""

from __future__ import annotations

from pathlib import Path

from platform_harness import RunningPlatform
from servelab.analysis.metrics import load_run, summarize_run
from servelab.billing.pricing import price_run
from servelab.loadgen import TargetSpec, from_model, run
from servelab.models.store import open_store
from servelab.workload import generate, load_spec


def test_loadgen_against_the_platform_records_cold_starts_and_prices_the_run(tmp_path: Path, tiny_models) -> None:
    with RunningPlatform(tmp_path / "home") as p:
        ref = open_store(None, home=p.home).put("tiny-cnn", tiny_models["tiny-cnn"])
        p.lambda_client().create_function(
            FunctionName="cnn", Role="r", Code={"ZipFile": b""}, MemorySize=1769,
            Environment={"Variables": {"SERVELAB_MODEL": ref, "SERVELAB_MAX_CONCURRENCY": "2",
                                       "SERVELAB_ADMISSION": "queue"}})
        arrivals = generate(load_spec("poisson:rate=40"), duration_s=3.0, seed=3)
        result = run(TargetSpec("lambda", url=p.url, name="cnn"), arrivals,
                     from_model(tiny_models["tiny-cnn"], 1, count=4), out_dir=tmp_path / "run", run_id="e2e",
                     timeout_s=30)
    assert result.requests == arrivals.times_s.size
    loaded = load_run(tmp_path / "run")
    s = summarize_run(loaded).flat()
    assert s["count"] == arrivals.times_s.size and s["success_ratio"] == 1.0
    assert s["cold_starts"] >= 1  # the first request found no instance
    starts = loaded.table.column("start_kind").to_pylist()
    assert starts.count("cold") == s["cold_starts"] and "warm" in starts
    assert all(b is not None and b >= 1 for b in loaded.table.column("billed_ms").to_pylist())
    cost = price_run(loaded.table, "aws-lambda-x86-us-east-1", memory_mb=1769)
    assert cost.requests == s["count"] and cost.total_usd > 0
