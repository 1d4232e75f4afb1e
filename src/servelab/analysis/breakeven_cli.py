"""``servelab cost breakeven``: cost per 1M requests against the request rate, from a profile.

Kept out of ``cost_cli.py`` so that module stays about pricing runs; mounted there as a sub-command.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table


def breakeven_cmd(
    profile: str = typer.Option("study-mobilenetv2", "--profile", "-p",
                                help="Model profile: a shipped name (`servelab profile ls`) or a YAML file."),
    memory_mb: int = typer.Option(1769, "--memory-mb", help="Serverless memory size."),
    batch: int = typer.Option(1, "--batch", help="Batch size (service time per request = batch time / batch)."),
    serverless: str = typer.Option("aws-lambda-x86-us-east-1", "--serverless",
                                   help="Serverless price entry ('' to leave out)."),
    server: str = typer.Option("aws-ec2-c5.large-us-east-1", "--server", help="Server price entry ('' to leave out)."),
    managed: str = typer.Option("aws-sagemaker-ml.c5.large-us-east-1", "--managed",
                                help="Managed endpoint price entry ('' to leave out)."),
    server_instances: int = typer.Option(1, "--server-instances", help="Machines the server keeps on."),
    min_instances: int = typer.Option(1, "--min-instances", help="Managed endpoint: instances always on."),
    lo: float = typer.Option(0.01, "--lo", help="Lowest rate (req/s)."),
    hi: float = typer.Option(1000.0, "--hi", help="Highest rate (req/s)."),
    points: int = typer.Option(11, "--points", help="Rates in the table (log-spaced); the figure uses more."),
    png: Path = typer.Option(None, "--png", help="Write the figure (needs the plot extra)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every curve point)."),
    prices: list[Path] = typer.Option(None, "--prices", help="Extra price YAML laid over the catalog."),
) -> None:
    """Cost per 1M requests vs average rate for serverless, server and managed, and where they cross."""
    from servelab.analysis.breakeven import break_even, figure_png, offerings_from_profile
    from servelab.analysis.prices_option import load_cli_catalog as _catalog
    from servelab.errors import ConfigError
    from servelab.sim.profile import load_profile

    if not 0 < lo < hi:
        raise ConfigError(f"need 0 < --lo < --hi (got {lo}, {hi})")
    if points < 2:
        raise ConfigError("--points must be at least 2")
    prof = load_profile(profile)
    cat = _catalog(prices)
    offerings = offerings_from_profile(prof, memory_mb=memory_mb, serverless=serverless or None,
                                       server=server or None, managed=managed or None, batch=batch,
                                       server_instances=server_instances, min_instances=min_instances)
    table_rates = np.logspace(math.log10(lo), math.log10(hi), points)
    fine = np.unique(np.concatenate([table_rates, np.logspace(math.log10(lo), math.log10(hi), 201)]))
    result = break_even(offerings, fine, catalog=cat)
    if png is not None:
        png.write_bytes(figure_png(result, title=f"{prof.model} ({prof.runtime}): cost per 1M requests vs rate"))
    if as_json:
        typer.echo(json.dumps({"profile": prof.model, **result.to_dict()}, indent=2))
        return
    console = Console()
    t = Table(title=f"USD per 1M requests, {prof.model} ({prof.runtime}, batch {batch}), steady load")
    t.add_column("req/s", justify="right")
    for c in result.curves:
        t.add_column(f"{c.offering.name}\n{c.offering.entry_id}", justify="right")
    idx = np.searchsorted(fine, table_rates)
    for k, i in enumerate(idx):
        cells = []
        for c in result.curves:
            usd = c.per_million_usd[i]
            n = c.instances[i]
            text = "over capacity" if not math.isfinite(usd) else f"{usd:,.3f}" + (f" ({n} inst)" if n else "")
            cells.append(text)
        t.add_row(f"{table_rates[k]:.3g}", *cells)
    console.print(t)
    for pair, rates in result.crossings.items():
        said = ", ".join(f"{r:.3g} req/s" for r in rates) if rates else "none in this range"
        console.print(f"break-even {pair}: {said}")
    for c in result.curves:
        console.print(f"[dim]{c.offering.name}: service {c.offering.service_ms:.2f} ms/request; "
                      + "; ".join(c.notes) + "[/]")
    if png is not None:
        console.print(f"figure: {png}")
