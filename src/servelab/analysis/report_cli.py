"""``servelab report DIR``: the HTML report, PNG figures and markdown summary of an experiment.

Mounted on the top-level app by :func:`register` (``servelab report``, not ``servelab report
report``). Only typer and rich at import time; numpy, pyarrow and matplotlib load when it runs.
Like ``servelab cost``, prices come from the shipped catalog with ``$SERVELAB_PRICES`` files and
then ``--prices`` files laid over it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from servelab.analysis.prices_option import PRICES_ENV


def report(
    directory: Path = typer.Argument(..., help="Experiment directory (the --out DIR of `servelab run`): "
                                     "plan.json, runs/<run_id>/{records/,run.json,config.json,DONE}."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write the report (default: DIR/report)."),
    price_entry: str = typer.Option(None, "--price-entry", "-e",
                                    help="Catalog entry for runs whose config names no price_entry "
                                    "(`servelab cost catalog` lists them)."),
    prices: list[Path] = typer.Option(None, "--prices", help="Extra price YAML file laid over the shipped "
                                      f"catalog (repeatable; after ${PRICES_ENV})."),
    partial: bool = typer.Option(False, "--partial", help="Also report runs that did not finish "
                                 "(no DONE), with what they measured."),
    min_sr: float = typer.Option(0.99, "--min-sr", help="Success ratio a configuration needs to be on "
                                 "the cost / p95 Pareto front."),
    slo_ms: float = typer.Option(None, "--slo-ms", help="p95 objective (ms) the headline checks (default: "
                                 "the experiment's slo_p95_ms, else none)."),
    max_bins: int = typer.Option(600, "--max-bins", help="Most time bins per run in the over-time figures "
                                 "(longer runs get 2, 5, 10 … s bins)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the report's path, not the summary."),
    open_browser: bool = typer.Option(False, "--open", help="Open the HTML report in a browser."),
) -> None:
    """Write DIR/report/report.html (one self-contained file: opens offline), a PNG per figure and
    summary.md, and print the summary. Figures: latency CDFs per configuration; latency, instances
    and arrival rate over time per run; cost per 1M requests vs p95 with the Pareto front;
    cold-start time by part. Statistics use every record; figures are drawn from summaries."""
    from servelab.analysis.prices_option import extra_price_files, load_cli_catalog
    from servelab.analysis.report import write_report

    catalog = load_cli_catalog(prices) if extra_price_files(prices) else None
    console = Console(stderr=True)
    with console.status("reading runs and drawing figures…"):
        files = write_report(directory, out_dir=out, catalog=catalog, price_entry=price_entry,
                             include_partial=partial, min_sr=min_sr, max_bins=max_bins,
                             slo_p95_ms=slo_ms)
    if quiet:
        typer.echo(str(files.html))
    elif sys.stdout.isatty():
        from rich.markdown import Markdown

        Console().print(Markdown(files.summary_md))
    else:
        typer.echo(files.summary_md, nl=False)
    if open_browser:
        import webbrowser

        webbrowser.open(files.html.resolve().as_uri())


def register(app: typer.Typer) -> None:
    """Add ``report`` to the top-level ``servelab`` app."""
    app.command("report")(report)
