"""``servelab demo``: the study's main question on this machine in about two minutes.

Runs the experiment shipped as ``servelab/bench/examples/demo.yaml``: MobileNetV2 (built from
code) served as a serverless function on the local platform and by an always-on CPU server,
both under the same bursty Markov-modulated Poisson load; then analyzes the records (latency,
success ratio, cold starts), prices each run from the price catalog and writes the HTML report.
It is ``servelab run`` + ``servelab report`` on the embedded default.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from servelab.tables import print_table


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")


def _check_extras() -> None:
    """Say what is missing before two minutes of runs, not after."""
    import importlib.util

    from servelab.errors import RuntimeNotAvailableError

    missing = [m for m in ("onnxruntime", "torch", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeNotAvailableError(f"the demo needs {', '.join(missing)} (it builds MobileNetV2 with torch, serves "
                                       "it with onnxruntime and draws the report with matplotlib): "
                                       "pip install 'servelab[demo]' or run `bash scripts/setup.sh demo`")


def run_demo(out_dir: str | Path | None = None, *, console: Console | None = None, platform_url: str | None = None,
             platform_port: int | None = None) -> Path:
    """Plan, run and report the demo experiment into ``out_dir``; return the report's path. The
    serverless run uses the platform at ``platform_url``, or starts one (on ``platform_port``)."""
    from servelab.analysis.report import write_report
    from servelab.bench import Executor, demo_experiment, load_experiment, make_plan

    console = console or Console()
    _check_extras()
    out = Path(out_dir) if out_dir else default_out_dir()
    exp = load_experiment(demo_experiment())
    plan = make_plan(exp)
    console.rule("[bold]servelab demo: serverless vs an always-on CPU server")
    console.print(f"experiment: {demo_experiment()}\nresults:    {out.resolve()}")
    table = Table("run", "target", "model", "workload", "est. s", title="the plan")
    for r in plan.runs:
        table.add_row(r.run_id, r.target, r.model, r.workload, f"{r.estimate_s:.0f}")
    print_table(table, console=console)
    console.print("MobileNetV2 is built from code (seeded weights, exported to ONNX), put in the model store, "
                  "and each run is deployed from a cold state; the load is open loop (latency counts from "
                  "each request's scheduled time).")

    t0 = time.monotonic()
    result = Executor(plan, out, console=console, platform_url=platform_url, platform_port=platform_port).run()
    if result.failed:
        for run_id, error in result.failed:
            console.print(f"[red]run {run_id} failed:[/] {escape(error)}")
    with console.status("analyzing records, pricing runs, drawing figures…"):
        files = write_report(out)
    if console.is_terminal:
        console.print(Markdown(files.summary_md))
    else:  # plain markdown, unwrapped, for a log or a pipe
        sys.stdout.write(files.summary_md)
    console.print(f"\n[bold]report:[/] {files.html.resolve()} (one self-contained HTML file; figures as PNG "
                  f"next to it)\ntook {time.monotonic() - t0:.0f} s. Next: edit a copy of the experiment and "
                  f"`servelab run EXP.yaml --out DIR && servelab report DIR` (docs/experiments.md).")
    return files.html
