"""The runtime benchmark: raw timings with a sane structure, a summary, and the CLI that saves them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.cli import app
from servelab.errors import ConfigError, UnknownModelError
from servelab.runtimes.bench import bench_isolated, bench_model, machine_info, summarize


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_bench_model_returns_one_raw_record_per_threads_and_batch(tiny_models: dict[str, Path],
                                                                   runtime: str) -> None:
    seen: list[tuple[int, int]] = []
    records = bench_model(tiny_models["tiny-mlp"], runtime, [1, 4], [1, 2], repeats=5, warmup=2,
                          on_result=lambda r: seen.append((r["threads"], r["batch_size"])))
    assert [(r["threads"], r["batch_size"]) for r in records] == [(1, 1), (1, 4), (2, 1), (2, 4)] == seen
    for r in records:
        assert r["runtime"] == runtime and r["model"] == "tiny-mlp"
        assert r["file_size_bytes"] == tiny_models["tiny-mlp"].stat().st_size
        assert len(r["latencies_ms"]) == 5 and len(r["warmup_ms"]) == 2
        assert all(0 < t < 10_000 for t in r["latencies_ms"] + r["warmup_ms"])
        assert r["session_create_ms"] > 0 and r["import_ms"] >= 0
    # one session per thread count: its creation time is shared by that count's batch sizes
    assert records[0]["session_create_ms"] == records[1]["session_create_ms"]


def test_bench_isolated_measures_in_a_fresh_process(tiny_models: dict[str, Path]) -> None:
    records = bench_isolated(tiny_models["tiny-mlp"], "onnxruntime", [2], [1], repeats=3, warmup=1,
                             repeats_for={2: 4}.__getitem__)
    assert len(records) == 1 and len(records[0]["latencies_ms"]) == 4
    assert records[0]["pid"] != os.getpid()
    assert records[0]["import_ms"] > 0  # onnxruntime was imported afresh in that process


def test_repeats_can_depend_on_the_batch_size(tiny_models: dict[str, Path]) -> None:
    records = bench_model(tiny_models["noop"], "onnxruntime", [1, 8], [1], repeats=6, warmup=0,
                          repeats_for=lambda batch: 2 if batch >= 8 else 6)
    assert [len(r["latencies_ms"]) for r in records] == [6, 2]
    assert all(r["warmup_ms"] == [] for r in records)


def test_summary_orders_median_p95_and_counts_throughput_in_items() -> None:
    raw = {"model": "m", "runtime": "onnxruntime", "threads": 1, "batch_size": 4, "session_create_ms": 12.0,
           "warmup_ms": [9.0], "latencies_ms": [1.0, 2.0, 3.0, 4.0, 10.0]}
    (s,) = summarize([raw])
    assert s["median_ms"] == 3.0
    assert 4.0 < s["p95_ms"] <= 10.0
    assert s["first_inference_ms"] == 9.0
    assert s["throughput_items_s"] == pytest.approx(4 * 5 / 0.020)  # 20 items in 20 ms


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_sizes": []}, "batch sizes"),
    ({"batch_sizes": [0]}, "batch sizes"),
    ({"threads_list": [0]}, "threads"),
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"runtime": "tvm"}, "choose one of onnxruntime, torch"),
])
def test_bench_settings_are_checked_before_anything_runs(tiny_models: dict[str, Path], kwargs, match) -> None:
    args = {"path": tiny_models["noop"], "runtime": "onnxruntime", "batch_sizes": [1], "threads_list": [1],
            "repeats": 1, "warmup": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        bench_model(**args)


def test_machine_info_names_the_cpu_and_the_library_versions() -> None:
    info = machine_info()
    assert info["cpu_count"] >= 1 and info["cpu_model"]
    assert info["versions"]["onnxruntime"] and info["versions"]["numpy"]


def test_cli_bench_prints_a_table_and_writes_raw_timings(tiny_models: dict[str, Path],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "results" / "bench.json"
    result = CliRunner().invoke(app, [
        "models", "bench", str(tiny_models["tiny-cnn"]), "--runtime", "onnxruntime,torch",
        "--batch", "1,2", "--threads", "1", "--repeats", "4", "--warmup", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "tiny-cnn.onnx" in result.output and "p50 ms" in result.output
    doc = json.loads(out.read_text())
    assert doc["settings"]["runtimes"] == ["onnxruntime", "torch"]
    assert [(r["runtime"], r["batch_size"]) for r in doc["results"]] == [
        ("onnxruntime", 1), ("onnxruntime", 2), ("torch", 1), ("torch", 2)]
    assert all(len(r["latencies_ms"]) == 4 for r in doc["results"])
    assert len(doc["summary"]) == 4 and doc["machine"]["versions"]["onnxruntime"]


def test_cli_bench_builds_a_zoo_name_into_the_models_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "bench", "tiny-mlp", "--repeats", "2",
                                      "--models-dir", str(tmp_path / "zoo")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "zoo" / "tiny-mlp.onnx").is_file()


@pytest.mark.parametrize(("args", "error", "match"), [
    (["--runtime", "onnxruntime,tvm"], ConfigError, "unknown runtime.*'tvm'.*onnxruntime, torch"),
    (["--batch", "1,x"], ConfigError, "--batch must be comma-separated integers"),
    (["--threads", "0"], ConfigError, "--threads must be integers >= 1"),
])
def test_cli_bench_rejects_bad_options_with_servelab_errors(tiny_models: dict[str, Path], args, error,
                                                            match) -> None:
    result = CliRunner().invoke(app, ["models", "bench", str(tiny_models["noop"]), *args])
    assert isinstance(result.exception, error)
    assert re.search(match, str(result.exception))


def test_cli_bench_unknown_name_lists_the_zoo(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "bench", "resnet50", "--models-dir", str(tmp_path)])
    assert isinstance(result.exception, UnknownModelError)
    assert "mobilenetv2" in str(result.exception)
