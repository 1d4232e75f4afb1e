"""``servelab analyze RUN_DIR...``: metrics of one or more runs, side by side.

Only typer and rich at import time; numpy/pyarrow load when a command runs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pyarrow as pa

    from servelab.analysis.metrics import RunSummary

app = typer.Typer(
    help="Analyze load-generator runs: latency, success ratio, cold starts, errors, send lag.",
    no_args_is_help=True, invoke_without_command=True, subcommand_metavar="",
    context_settings={"allow_interspersed_args": True},
)


def _num(digits: int) -> Callable[[Any], str]:
    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:,.{digits}f}"
    return fmt


def _int(x: Any) -> str:
    return "-" if x is None else f"{int(x):,}"


def _flag(x: Any) -> str:
    return "[bold red]YES[/]" if x else "no"


# (label, key in RunSummary.flat(), formatter); a None key is a section heading.
ROWS: list[tuple[str, str | None, Callable[[Any], str]]] = [
    ("requests", None, str),
    ("count", "count", _int), ("window s", "window_s", _num(1)),
    ("offered rps", "offered_rps", _num(1)), ("throughput rps", "throughput_rps", _num(1)),
    ("success ratio", "success_ratio", _num(4)),
    ("ok", "n_ok", _int), ("error", "n_error", _int), ("throttled", "n_throttled", _int),
    ("timeout", "n_timeout", _int),
    ("latency ms (ok)", None, str),
    ("mean", "latency_mean_ms", _num(2)), ("p50", "latency_p50_ms", _num(2)),
    ("p90", "latency_p90_ms", _num(2)), ("p95", "latency_p95_ms", _num(2)),
    ("p99", "latency_p99_ms", _num(2)), ("max", "latency_max_ms", _num(2)),
    ("cold starts", None, str),
    ("cold starts", "cold_starts", _int), ("cold ratio", "cold_ratio", _num(4)),
    ("init p50 ms", "init_p50_ms", _num(1)), ("init mean ms", "init_mean_ms", _num(1)),
    ("  process mean ms", "init_process_mean_ms", _num(1)),
    ("  import mean ms", "init_import_mean_ms", _num(1)),
    ("  fetch mean ms", "init_fetch_mean_ms", _num(1)),
    ("  load mean ms", "init_load_mean_ms", _num(1)),
    ("instances", "instances", _int),
    ("where time goes (p50 ms)", None, str),
    ("client", "client_p50_ms", _num(2)), ("platform", "platform_p50_ms", _num(2)),
    ("function", "function_p50_ms", _num(2)),
    ("generator", None, str),
    ("send lag p50 ms", "send_lag_p50_ms", _num(3)), ("send lag p99 ms", "send_lag_p99_ms", _num(3)),
    ("send lag max ms", "send_lag_max_ms", _num(3)), ("fell behind", "generator_behind", _flag),
]


def summary_table(summaries: Sequence[RunSummary]) -> Table:
    """Metrics as rows, one column per run; rows no run has a value for are left out."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    for s in summaries:
        table.add_column(s.name or "run", justify="right")
    flats = [s.flat() for s in summaries]
    heading: str | None = None
    for label, key, fmt in ROWS:
        if key is None:
            heading = label
            continue
        if all(f.get(key) is None for f in flats):
            continue
        if heading is not None:
            table.add_row(f"[bold cyan]{heading}[/]", *[""] * len(flats))
            heading = None
        table.add_row(label, *[fmt(f.get(key)) for f in flats])
    return table


def errors_table(summaries: Sequence[RunSummary]) -> Table | None:
    rows = [(s.name, e) for s in summaries for e in s.top_errors]
    if not rows:
        return None
    table = Table(title="top errors", show_header=True, header_style="bold", box=None)
    for col in ("run", "status", "count", "error"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for name, e in rows:
        table.add_row(name, e["status"], f"{e['count']:,}", e["error"] or "")
    return table


def timeseries_table(name: str, ts: pa.Table) -> Table:
    table = Table(title=f"{name}: per {_bin_label(ts)}", show_header=True, header_style="bold",
                  box=None)
    for col in ts.column_names:
        table.add_column(SHORT.get(col, col), justify="right")
    fmts = {"t_s": _num(0), "arrival_rps": _num(1), "latency_p50_ms": _num(2),
            "latency_p99_ms": _num(2)}
    for row in ts.to_pylist():
        table.add_row(*[fmts.get(c, _int)(None if v != v else v) for c, v in row.items()])
    return table


SHORT = {"arrival_rps": "rps", "completions": "done", "latency_p50_ms": "p50 ms",
         "latency_p99_ms": "p99 ms", "cold_starts": "cold"}


def _bin_label(ts: pa.Table) -> str:
    t = ts.column("t_s").to_pylist()
    return f"{t[1] - t[0]:g} s" if len(t) > 1 else "second"


def print_summaries(summaries: Sequence[RunSummary], console: Console) -> None:
    console.print(summary_table(summaries))
    errors = errors_table(summaries)
    if errors is not None:
        console.print(errors)
    for s in summaries:
        if s.generator_behind and s.send_lag_ms is not None:
            console.print(f"[yellow]{s.name}: the generator fell behind its schedule (p99 send lag "
                          f"{s.send_lag_ms['p99']:.1f} ms > {s.lag_threshold_ms:g} ms), so the target "
                          "got a different load than asked. If this machine was busy, that is the "
                          "cause; otherwise re-run with more --procs.[/]")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@app.callback(invoke_without_command=True)
def analyze(
    runs: list[Path] = typer.Argument(..., help="Run directories (run.json + records/), records "
                                      "directories or Parquet files."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    csv_out: Path = typer.Option(None, "--csv", help="Also write one row per run to this CSV file."),
    timeseries: bool = typer.Option(False, "--timeseries", help="Also show each run per second."),
    timeseries_csv: Path = typer.Option(None, "--timeseries-csv",
                                        help="Write the per-second series (all runs) to this CSV."),
    bin_s: float = typer.Option(1.0, "--bin-s", help="Time-series bin width in seconds."),
    lag_threshold_ms: float = typer.Option(5.0, help="Flag the generator as behind above this p99 "
                                           "send lag."),
    top_errors: int = typer.Option(5, help="How many distinct errors to list per run."),
) -> None:
    """Summarize runs: success ratio, throughput, latency percentiles, cold starts and their
    init parts, errors by kind, where time goes (client / platform / function) and whether the
    generator kept its schedule. Several runs are shown side by side."""
    from servelab.analysis.metrics import load_run, summarize_run
    from servelab.analysis.timeseries import per_second

    loaded = [load_run(p) for p in runs]
    summaries = [summarize_run(r, lag_threshold_ms=lag_threshold_ms, top_k=top_errors) for r in loaded]
    series = {r.name: per_second(r.table, bin_s=bin_s) for r in loaded} \
        if (timeseries or timeseries_csv) else {}
    if csv_out:
        write_csv(csv_out, [s.flat() for s in summaries])
    if timeseries_csv:
        write_csv(timeseries_csv, [{"run": name, **row} for name, ts in series.items()
                                   for row in ts.to_pylist()])
    if json_out:
        doc: dict[str, Any] = {"runs": [s.to_dict() for s in summaries]}
        if timeseries:
            doc["timeseries"] = {name: ts.to_pylist() for name, ts in series.items()}
        typer.echo(json.dumps(_no_nan(doc), indent=2, default=str))
        return
    console = Console()
    print_summaries(summaries, console)
    if timeseries:
        for name, ts in series.items():
            console.print(timeseries_table(name, ts))


def _no_nan(obj: Any) -> Any:
    """JSON has no NaN: empty bins and unknown values become null."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_no_nan(v) for v in obj]
    return obj
