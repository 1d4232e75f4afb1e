"""The study's models on both runtimes: file size, session creation, batch-1 and batch-8 latency.

For each of MobileNetV2, VGG16 and ALBERT-base (built by the zoo with seed 0), and each runtime
(onnxruntime, torch via onnx2torch) x intra-op threads (1, 2): create a session, then time
batch-1 and batch-8 inferences. Prints a table and writes every raw timing, with the machine
and library versions, to ``benchmarks/results/models.json``.

    .venv/bin/python benchmarks/bench_models.py                       # ~5-10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_models.py --models mobilenetv2-tiny,vgg-tiny --out /tmp/x.json

Repeats shrink with the cost of one inference (VGG16 at batch 8 takes seconds), so the whole run
stays under about ten minutes; the raw file says how many each configuration got.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from servelab.models import zoo
from servelab.runtimes.bench import bench_isolated, machine_info, summarize

ROOT = Path(__file__).resolve().parent
RUNTIMES = ("onnxruntime", "torch")
THREADS = (1, 2)
BATCHES = (1, 8)
WARMUP = 2
# Timed inferences per batch size, by model: about 10-20 s per configuration on this machine.
REPEATS: dict[str, dict[int, int]] = {
    "mobilenetv2": {1: 30, 8: 15},
    "albert-base": {1: 15, 8: 5},
    "vgg16": {1: 10, 8: 3},
}
DEFAULT_REPEATS = {1: 20, 8: 10}


def run(models: list[str], zoo_dir: Path, console: Console) -> list[dict]:
    records: list[dict] = []
    for name in models:
        path = zoo.build(name, zoo_dir)
        repeats = REPEATS.get(name, DEFAULT_REPEATS)
        for runtime in RUNTIMES:
            console.log(f"{name} ({path.stat().st_size / 1e6:.1f} MB) on {runtime}")
            # a fresh interpreter per (model, runtime): no thread pool left over from the last one
            records += bench_isolated(path, runtime, BATCHES, THREADS, repeats=max(repeats.values()),
                                      warmup=WARMUP, repeats_for=repeats.__getitem__)
    return records


def table(summary: list[dict]) -> Table:
    t = Table(title="Study models on onnxruntime vs torch (latency in ms)")
    for col in ("model", "MB", "runtime", "thr", "session ms", "b1 p50", "b1 p95", "b8 p50", "b8 p95",
                "b8 items/s"):
        t.add_column(col, justify="left" if col in ("model", "runtime") else "right")
    by_key = {(s["model"], s["runtime"], s["threads"], s["batch_size"]): s for s in summary}
    sizes = {s["model"]: s["file_size_bytes"] for s in summary}
    for (model, runtime, threads, batch), s in by_key.items():
        if batch != 1:
            continue
        b8 = by_key[(model, runtime, threads, 8)]
        t.add_row(model, f"{sizes[model] / 1e6:.1f}", runtime, str(threads),
                  f"{s['session_create_ms']:.0f}", f"{s['median_ms']:.1f}", f"{s['p95_ms']:.1f}",
                  f"{b8['median_ms']:.1f}", f"{b8['p95_ms']:.1f}", f"{b8['throughput_items_s']:.1f}")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mobilenetv2,vgg16,albert-base", help="comma-separated zoo names")
    parser.add_argument("--zoo-dir", type=Path, default=Path("/tmp/servelab-zoo"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "models.json")
    args = parser.parse_args()
    console = Console(width=120)  # the table must not fold when the output goes to a file
    machine = machine_info()
    started = time.perf_counter()
    records = run(args.models.split(","), args.zoo_dir, console)
    elapsed_s = time.perf_counter() - started
    summary = summarize(records)
    for s in summary:
        s["file_size_bytes"] = next(r["file_size_bytes"] for r in records if r["model"] == s["model"])
    console.print(table(summary))
    load_after = os.getloadavg()[0]
    console.print(f"{machine['cpu_model']}, {machine['cpu_count']} cores; load average "
                  f"{machine['load_avg_1m']:.1f} at start, {load_after:.1f} at end; {elapsed_s:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "benchmarks/bench_models.py",
        "machine": {**machine, "load_avg_1m_end": load_after},
        "settings": {"models": args.models.split(","), "runtimes": RUNTIMES, "threads": THREADS,
                     "batch_sizes": BATCHES, "warmup": WARMUP, "repeats": REPEATS, "seed": 0},
        "elapsed_s": elapsed_s,
        "summary": summary,
        "results": records,
    }, indent=1))
    console.print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
