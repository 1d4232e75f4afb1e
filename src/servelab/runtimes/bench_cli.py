"""``servelab models bench``: latency and throughput of a model on a runtime.

Only typer and rich (and the runtime registry, which imports no runtime) at import time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servelab.errors import ConfigError
from servelab.runtimes import RUNTIMES


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 1,4,16; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} must be integers >= 1; got {text!r}")
    return values


def _runtimes(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown or not names:
        raise ConfigError(f"unknown runtime(s) {unknown or [text]}: choose from {', '.join(RUNTIMES)}")
    return names


def resolve_model(name_or_path: str, models_dir: Path) -> Path:
    """An existing file is used as is; anything else must be a zoo name, built into ``models_dir``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from servelab.models import zoo

    zoo.get_entry(name_or_path)  # UnknownModelError lists the zoo's names
    return zoo.build(name_or_path, models_dir, seed=0)


def resolve_saved_model(name_or_path: str, models_dir: Path) -> Path:
    """For the tensorflow runtime: an existing SavedModel directory as is, else the zoo name built
    with Keras into ``models_dir`` (an ONNX file cannot be run by TensorFlow: say so)."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if p.suffix == ".onnx":
        raise ConfigError(f"{p}: the tensorflow runtime runs a SavedModel, not an ONNX file; give a zoo name "
                          "(built with Keras) or a SavedModel directory")
    from servelab.models.keras_zoo import build_saved_model

    return build_saved_model(name_or_path, models_dir, seed=0)


def results_table(summary: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD,
                  caption="load: session creation; 1st: first inference at that batch; p50/p95: latency")
    for col in ("runtime", "thr", "batch", "load ms", "1st ms", "p50 ms", "p95 ms", "items/s"):
        table.add_column(col, justify="left" if col == "runtime" else "right", no_wrap=col == "runtime")
    for s in summary:
        table.add_row(s["runtime"], str(s["threads"]), str(s["batch_size"]),
                      f"{s['session_create_ms']:.0f}", f"{s['first_inference_ms']:.1f}",
                      f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", f"{s['throughput_items_s']:.1f}")
    return table


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        model: str = typer.Argument(..., help="An ONNX file, or a zoo name (built on first use)."),
        runtime: str = typer.Option("onnxruntime", "--runtime",
                                    help=f"Comma-separated runtimes: {', '.join(RUNTIMES)}."),
        batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,4,16."),
        threads: str = typer.Option("1", "--threads", help="Comma-separated intra-op thread counts."),
        repeats: int = typer.Option(30, "--repeats", min=1, help="Timed inferences per configuration."),
        warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed inferences before those."),
        out: Path | None = typer.Option(None, "--out", help="Write raw timings and the summary as JSON."),
        models_dir: Path | None = typer.Option(
            None, "--models-dir", help="Where zoo models are built (default: $SERVELAB_HOME/zoo)."),
    ) -> None:
        """Session creation time, latency (median, p95) and throughput of a model per runtime,
        thread count and batch size."""
        from servelab.config import default_home
        from servelab.runtimes.bench import bench_isolated, machine_info, model_size_bytes, summarize

        runtime_names = _runtimes(runtime)
        batches, thread_counts = _ints(batch, "--batch"), _ints(threads, "--threads")
        console = Console()
        zoo_dir = models_dir or default_home() / "zoo"
        path = resolve_model(model, zoo_dir) if set(runtime_names) - {"tensorflow"} else None
        # tensorflow runs a SavedModel of the same architecture, built with Keras (models/keras_zoo.py)
        tf_path = resolve_saved_model(model, zoo_dir) if "tensorflow" in runtime_names else None
        shown = path or tf_path
        assert shown is not None
        records: list[dict[str, Any]] = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task(f"benchmarking {shown.name}", total=len(runtime_names))
            for name in runtime_names:
                progress.update(task, description=f"benchmarking {shown.name} on {name}")
                target = tf_path if name == "tensorflow" else path
                # one fresh process per runtime: no thread pool left over from the previous one
                records += bench_isolated(target, name, batches, thread_counts, repeats, warmup)  # type: ignore[arg-type]
                progress.advance(task)
        summary = summarize(records)
        sizes = ", ".join(f"{p.name} {model_size_bytes(p) / 1e6:.1f} MB" for p in (path, tf_path) if p)
        console.print(results_table(summary, sizes))
        if out is not None:
            doc = {
                "machine": machine_info(),
                "settings": {"model": str(path), "saved_model": str(tf_path) if tf_path else None,
                             "runtimes": runtime_names, "batch_sizes": batches,
                             "threads": thread_counts, "repeats": repeats, "warmup": warmup},
                "summary": summary,
                "results": records,
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=1))
            console.print(f"raw timings: {out}")
