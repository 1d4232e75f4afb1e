"""``servelab cost`` sub-commands: the price catalog, what a run cost, and quick what-ifs.

This is the one place that reads ``$SERVELAB_PRICES`` (a ``os.pathsep``-separated list of YAML
price files laid over the shipped catalog, before any ``--prices`` files).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from servelab.analysis.prices_option import PRICES_HELP, load_cli_catalog
from servelab.errors import ConfigError
from servelab.tables import print_table

app = typer.Typer(
    help="Price runs with a dated, versioned price catalog (AWS Lambda, GCF, SageMaker, Vertex, EC2, GCE).",
    no_args_is_help=True,
)

_AS_OF_OPT = typer.Option(None, "--as-of", metavar="DATE|study",
                          help="Apply the billing rules of this date (YYYY-MM-DD; 'study' = the study's era, "
                               "when AWS did not bill init). Default: the catalog's date.")
_PRICES_OPT = typer.Option(None, "--prices", help=PRICES_HELP)
_ENTRY_OPT = typer.Option(..., "--entry", "-e",
                          help="Catalog entry id (repeat to compare entries side by side).")


def _catalog(prices: list[Path] | None) -> Any:
    return load_cli_catalog(prices)


def _usd(x: float | None) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    if x == 0:
        return "0"
    return f"{x:,.4f}" if abs(x) >= 0.01 else f"{x:.3e}"


def _price_summary(entry) -> str:
    if entry.model == "instance_hour":
        hw = [f"{entry.vcpus:g} vCPU" if entry.vcpus else "",
              f"{entry.memory_gib:g} GiB" if entry.memory_gib else "",
              f"{entry.gpu_count}x {entry.gpu_type}" if entry.gpu_count else ""]
        return (f"${entry.hourly_usd:g}/h {entry.instance_type} ({', '.join(h for h in hw if h)}); "
                f"{entry.billing_granularity_s:g} s steps, min {entry.minimum_billed_s:g} s")
    parts = [f"${entry.per_million_requests_usd:g}/M req", f"${entry.per_gb_second_usd:g}/GB-s"]
    if entry.per_ghz_second_usd:
        parts.append(f"${entry.per_ghz_second_usd:g}/GHz-s")
    if entry.per_vcpu_second_usd:
        parts.append(f"${entry.per_vcpu_second_usd:g}/vCPU-s")
    text = " + ".join(parts) + f"; {entry.rounding_ms:g} ms rounding"
    if entry.tiers:
        text += f"; sizes {entry.tiers[0].memory_mb}-{entry.tiers[-1].memory_mb} MB"
    elif entry.max_memory_mb:
        text += f"; {entry.min_memory_mb}-{entry.max_memory_mb} MB"
    if entry.provisioned:
        text += (f"; provisioned ${entry.provisioned.per_gb_second_usd:g}/GB-s + "
                 f"${entry.provisioned.duration_per_gb_second_usd:g}/GB-s busy")
    return text


@app.command("catalog")
def catalog_cmd(
    provider: str = typer.Option(None, "--provider", help="Only this provider (aws, gcp, …)."),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the table as CSV."),
    prices: list[Path] = _PRICES_OPT,
) -> None:
    """List the price catalog: id, pricing model, prices, catalog date, confirmed."""
    cat = _catalog(prices)
    entries = cat.select(provider=provider)
    if provider and not entries:
        known = sorted({e.provider for e in cat})
        raise ConfigError(f"no entries for provider {provider!r}; providers: {', '.join(known)}")
    if as_json:
        rows = [{**e.model_dump(mode="json"), "catalog_date": cat.origin(e.id).date,
                 "catalog_file": cat.origin(e.id).path} for e in entries]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"price catalog ({', '.join(f.date for f in cat.files)})", show_lines=False)
    table.add_column("id", no_wrap=True)
    for col in ("model", "prices (USD)", "date", "confirmed"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.id, e.model, _price_summary(e), cat.origin(e.id).date,
                      "yes" if e.confirmed else "[yellow]NO[/]")
    print_table(table, "csv" if as_csv else "table")


def _emit(breakdowns, as_json: bool, as_csv: bool) -> None:
    from servelab.billing.pricing import CostBreakdown

    if as_json:
        typer.echo(json.dumps([b.to_dict() for b in breakdowns], indent=2))
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CostBreakdown.field_names(), lineterminator="\n")
        writer.writeheader()
        for b in breakdowns:
            row = b.to_dict()
            row["notes"] = "; ".join(b.notes)
            writer.writerow(row)
        return
    dates = sorted({b.catalog_date for b in breakdowns})
    table = Table(title=f"cost in USD (catalog {', '.join(dates)})")
    table.add_column("entry", no_wrap=True)
    for col in ("billed req", "requests", "compute", "provisioned", "instances", "total", "per 1M req"):
        table.add_column(col, justify="right")
    for b in breakdowns:
        table.add_row(b.entry_id, f"{b.requests:,}", _usd(b.requests_usd), _usd(b.compute_usd),
                      _usd(b.provisioned_usd), _usd(b.instance_usd), _usd(b.total_usd),
                      _usd(b.per_million_usd))
    console = Console()
    print_table(table, console=console)
    for b in breakdowns:
        console.print(f"[bold]{b.entry_id}[/]")
        for note in b.notes:
            console.print(f"  - {note}", markup=False, highlight=False, soft_wrap=True)


def _date(value: str | None) -> dt.date | None:
    from servelab.billing.rules import STUDY_ERA

    if value is None:
        return None
    if value == "study":
        return STUDY_ERA
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--as-of must be a date YYYY-MM-DD or 'study', got {value!r}") from None


def _check_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")


@app.command("run")
def run_cmd(
    records: Path = typer.Argument(..., help="Records: a directory of Parquet parts or one .parquet file."),
    entry: list[str] = _ENTRY_OPT,
    memory_mb: int = typer.Option(None, "--memory-mb",
                                  help="Price at this memory size instead of the records'."),
    duration_s: float = typer.Option(None, "--duration-s",
                                     help="Billing window in s (default: the run's span)."),
    instances: int = typer.Option(1, "--instances", help="Instances billed (instance_hour entries)."),
    provisioned: int = typer.Option(0, "--provisioned", help="Provisioned concurrency (serverless entries)."),
    as_of: str = _AS_OF_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    prices: list[Path] = _PRICES_OPT,
) -> None:
    """What the run in RECORDS would have cost as each --entry."""
    from servelab.billing.pricing import price_run
    from servelab.records import read_records

    _check_format(as_json, as_csv)
    if not records.exists():
        raise ConfigError(f"no records at {str(records)!r} (give a records directory or .parquet file)")
    cat = _catalog(prices)
    table = read_records(records)
    out = [price_run(table, e, catalog=cat, memory_mb=memory_mb, duration_s=duration_s,
                     instances=instances, provisioned_instances=provisioned, as_of=_date(as_of)) for e in entry]
    _emit(out, as_json, as_csv)


@app.command("estimate")
def estimate_cmd(
    entry: list[str] = _ENTRY_OPT,
    requests: int = typer.Option(..., "--requests", help="Number of requests."),
    duration_ms: float = typer.Option(..., "--duration-ms", help="Duration of each request in ms."),
    memory_mb: int = typer.Option(None, "--memory-mb", help="Memory size (serverless entries)."),
    duration_s: float = typer.Option(None, "--duration-s",
                                     help="How long instances / provisioned capacity run, in s."),
    instances: int = typer.Option(1, "--instances", help="Instances billed (instance_hour entries)."),
    provisioned: int = typer.Option(0, "--provisioned", help="Provisioned concurrency (serverless entries)."),
    as_of: str = _AS_OF_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    prices: list[Path] = _PRICES_OPT,
) -> None:
    """Quick what-if: N requests of D ms at M MB, priced as each --entry."""
    from servelab.billing.pricing import estimate

    _check_format(as_json, as_csv)
    cat = _catalog(prices)
    out = [estimate(e, requests=requests, duration_ms=duration_ms, memory_mb=memory_mb, catalog=cat,
                    duration_s=duration_s, instances=instances, provisioned_instances=provisioned,
                    as_of=_date(as_of))
           for e in entry]
    _emit(out, as_json, as_csv)


def _register_breakeven() -> None:
    from servelab.analysis.breakeven_cli import breakeven_cmd

    app.command("breakeven")(breakeven_cmd)


_register_breakeven()
