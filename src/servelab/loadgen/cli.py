"""``servelab loadgen``: drive a target with an open-loop workload, or search its capacity.

Module-level imports stay cheap (typer, rich); numpy, aiohttp, onnx load when a command runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from servelab.errors import ConfigError

app = typer.Typer(help="Open-loop load generator: fire requests at scheduled times, record each one.",
                  no_args_is_help=True)

DEFAULT_PLATFORM = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class _TargetOpts:
    function: str | None
    platform: str
    v2_model: str | None
    url: str | None
    null: bool
    aws_region: str | None

    def spec(self) -> Any:
        from servelab.loadgen.targets import TargetSpec

        chosen = [n for n, v in (("--function", self.function), ("--v2-model", self.v2_model),
                                 ("--null", self.null)) if v]
        if len(chosen) > 1:
            raise ConfigError(f"choose one target, got {' and '.join(chosen)}")
        if self.function:
            return TargetSpec("lambda", url=self.url or self.platform, name=self.function,
                              aws_region=self.aws_region)
        if self.v2_model:
            return TargetSpec("v2", url=self.url or self.platform, name=self.v2_model)
        if self.null:
            return TargetSpec("null")
        if self.url:
            return TargetSpec("http", url=self.url)
        raise ConfigError("say what to load: --function NAME (Lambda API on --platform), "
                          "--v2-model NAME --url BASE (Open Inference Protocol), --url URL (any "
                          "HTTP endpoint) or --null (measure the generator itself)")


def _payloads(model_input: Path | None, batch: int, payload: list[Path] | None,
              json_payload: str | None, seed: int) -> list[bytes]:
    from servelab.loadgen import payloads as pl

    given = [n for n, v in (("--model-input", model_input), ("--payload", payload),
                            ("--json-payload", json_payload)) if v]
    if len(given) > 1:
        raise ConfigError(f"give one payload source, got {' and '.join(given)}")
    if model_input:
        return pl.from_model(model_input, batch, count=8, seed=seed)
    if payload:
        return pl.from_files(payload)
    if json_payload:
        try:
            return pl.from_json(json.loads(json_payload))
        except ValueError as e:
            raise ConfigError(f"--json-payload is not valid JSON: {e}") from None
    return list(pl.DEFAULT_PAYLOAD)


def _arrivals(workload: str, duration_s: float, seed: int) -> tuple[Any, str]:
    """The schedule, and the spec in its inline form (for run.json: presets can change)."""
    from servelab.workload import generate, load_spec

    spec = load_spec(workload)
    return generate(spec, duration_s=duration_s, seed=seed), _inline(spec, duration_s)


def _inline(spec: Any, duration_s: float) -> str:
    """The spec as run (its duration set to the run's), in inline form for run.json."""
    return spec.model_copy(update={"duration_s": duration_s}).to_inline()


def _run_id(out: Path) -> str:
    return f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"


# Options shared by `run` and `capacity` (typer has no option groups: repeated on purpose).
FUNCTION = typer.Option(None, "--function", "-f", help="Lambda function name (AWS Invoke API).")
PLATFORM = typer.Option(DEFAULT_PLATFORM, "--platform", help="Base URL of the local platform.")
V2_MODEL = typer.Option(None, "--v2-model", help="Model name for the Open Inference Protocol.")
URL = typer.Option(None, "--url", help="Any URL to POST to, or the base URL for --v2-model.")
NULL = typer.Option(False, "--null", help="No I/O at all: measures the generator's own overhead.")
AWS_REGION = typer.Option(None, "--aws-region",
                          help="Sign Lambda requests for AWS (SigV4, botocore credentials).")
MODEL_INPUT = typer.Option(None, "--model-input", help="ONNX model: send random inputs that fit it.")
BATCH = typer.Option(1, "--batch", help="Batch size of --model-input payloads.")
PAYLOAD = typer.Option(None, "--payload", help="Raw body file(s) or a directory of them.")
JSON_PAYLOAD = typer.Option(None, "--json-payload", help="A fixed JSON body.")
PROCS = typer.Option(1, "--procs", help="Generator processes (when one cannot keep up).")
TIMEOUT = typer.Option(30.0, "--timeout", help="Per-request timeout in seconds.")
MAX_CONN = typer.Option(512, "--max-connections", help="Connection pool size (keep-alive).")
SPIN_MS = typer.Option(0.5, "--spin-ms", help="Spin this long before each send for precision "
                       "(0: no spinning, sends up to 1 ms late; 1: ~exact, more CPU).")
SEED = typer.Option(0, "--seed", help="Seed of the arrival schedule and payloads.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@app.command("run")
def run_cmd(
    workload: str = typer.Option(..., "--workload", "-w", help="Workload: preset, YAML file, or "
                                 "inline like 'poisson:rate=50'."),
    duration: float = typer.Option(..., "--duration", "-d", help="Seconds of schedule to run."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (run.json + records/)."),
    function: str = FUNCTION, platform: str = PLATFORM, v2_model: str = V2_MODEL, url: str = URL,
    null: bool = NULL, aws_region: str = AWS_REGION, model_input: Path = MODEL_INPUT,
    batch: int = BATCH, payload: list[Path] = PAYLOAD, json_payload: str = JSON_PAYLOAD,
    procs: int = PROCS, timeout: float = TIMEOUT, max_connections: int = MAX_CONN,
    spin_ms: float = SPIN_MS, seed: int = SEED, quiet: bool = QUIET,
    run_id: str = typer.Option(None, "--run-id", help="Run id in every record (default: from --out)."),
    threshold: list[str] = typer.Option(None, "--threshold", help="Pass rule, repeatable: 'p95<200ms', "
                                        "'errors<1%', 'sr>=99%' (docs/loadgen.md); a breach exits 99."),
    fail_if_all_failed: bool = typer.Option(True, "--fail-if-all-failed/--allow-all-failed",
                                            help="Exit 99 when every request failed (the default)."),
) -> None:
    """Send a workload's requests at their scheduled times (open loop) and record every answer."""
    from servelab.analysis import thresholds as th
    from servelab.analysis.cli import print_summaries
    from servelab.analysis.metrics import load_run, summarize_run
    from servelab.loadgen.runner import run

    rules = th.parse_thresholds(threshold)
    target = _TargetOpts(function, platform, v2_model, url, null, aws_region).spec()
    bodies = _payloads(model_input, batch, payload, json_payload, seed)
    arrivals, inline = _arrivals(workload, duration, seed)
    err = Console(stderr=True)
    result = run(target, arrivals, bodies, out_dir=out, run_id=run_id or _run_id(out), procs=procs,
                 timeout_s=timeout, max_connections=max_connections, spin_s=spin_ms / 1e3,
                 progress=not quiet and err.is_terminal,
                 config={"workload": workload, "workload_spec": inline, "seed": seed,
                         "duration_s": duration,
                         "model_input": str(model_input) if model_input else None, "batch": batch})
    summary = summarize_run(load_run(out)) if result.recorded else None
    if summary is not None:
        print_summaries([summary], Console())
    if result.pool_saturated:
        err.print(f"[yellow]all {max_connections} pooled connections were busy at once: later requests "
                  "waited in the client (counted in their latency). Raise --max-connections if the "
                  "target allows it.[/]")
    err.print(f"{result.status}: {result.recorded:,} of {result.requests:,} requests recorded in {out}")
    if result.status == "interrupted":
        raise typer.Exit(130)
    verdicts = th.evaluate(summary.flat() if summary else {"count": 0}, rules,
                           fail_if_all_failed=fail_if_all_failed)
    code = th.exit_code(verdicts, err.print, show_passes=bool(rules))
    if code:
        raise typer.Exit(code)


def _rate_arrivals(workload: str | None, rate: float, duration_s: float, seed: int) -> tuple[Any, str]:
    """A schedule at mean ``rate`` — Poisson, or ``workload`` scaled to that mean — and its spec."""
    from servelab.workload import generate, load_spec

    spec = load_spec(workload or f"poisson:rate={rate:g}")
    if workload is not None:
        if spec.mean_rate_rps <= 0:
            raise ConfigError(f"workload {workload!r} has no arrivals to scale")
        spec = spec.scaled(rate / spec.mean_rate_rps)
    return generate(spec, duration_s=duration_s, seed=seed), _inline(spec, duration_s)


@app.command("capacity")
def capacity_cmd(
    p99_ms: float = typer.Option(..., "--p99-ms", help="Latency bound: p99 of ok requests (ms)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for every trial run + capacity.json."),
    min_sr: float = typer.Option(0.99, "--min-sr", help="Lowest success ratio that passes."),
    workload: str = typer.Option(None, "--workload", "-w", help="Workload to scale (default Poisson)."),
    lo: float = typer.Option(1.0, "--lo", help="First rate tried (rps)."),
    hi: float = typer.Option(10_000.0, "--hi", help="Highest rate tried (rps)."),
    run_s: float = typer.Option(10.0, "--run-s", help="Seconds per trial run."),
    max_runs: int = typer.Option(12, "--max-runs", help="Trial budget."),
    tol: float = typer.Option(0.05, "--tol", help="Stop when the bracket is this narrow (relative)."),
    confirm: bool = typer.Option(False, "--confirm", help="Repeat the answer once more to check it."),
    function: str = FUNCTION, platform: str = PLATFORM, v2_model: str = V2_MODEL, url: str = URL,
    null: bool = NULL, aws_region: str = AWS_REGION, model_input: Path = MODEL_INPUT,
    batch: int = BATCH, payload: list[Path] = PAYLOAD, json_payload: str = JSON_PAYLOAD,
    procs: int = PROCS, timeout: float = TIMEOUT, max_connections: int = MAX_CONN,
    spin_ms: float = SPIN_MS, seed: int = SEED,
) -> None:
    """Find the highest arrival rate whose p99 stays under --p99-ms with success ratio >= --min-sr."""
    from servelab.analysis.capacity import CapacityRun, find_capacity
    from servelab.loadgen.runner import run
    from servelab.records import read_records

    target = _TargetOpts(function, platform, v2_model, url, null, aws_region).spec()
    bodies = _payloads(model_input, batch, payload, json_payload, seed)
    console = Console()
    trial = 0

    def run_at_rate(rate: float) -> Any:
        nonlocal trial
        trial += 1
        run_dir = out / f"trial-{trial:02d}-{rate:.4g}rps"
        arrivals, inline = _rate_arrivals(workload, rate, run_s, seed + trial)
        run(target, arrivals, bodies, out_dir=run_dir, run_id=run_dir.name, procs=procs,
            timeout_s=timeout, max_connections=max_connections, spin_s=spin_ms / 1e3,
            config={"workload": workload or "poisson", "workload_spec": inline, "rate_rps": rate,
                    "seed": seed + trial, "duration_s": run_s})
        return read_records(run_dir / "records")

    def on_run(r: CapacityRun) -> None:
        p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.1f}"
        sr = "-" if r.success_ratio is None else f"{r.success_ratio:.4f}"
        console.print(f"  {r.rate:10.4g} rps  p99 {p99:>8} ms  SR {sr}  "
                      f"{'[green]pass[/]' if r.passed else '[red]fail[/]'}")

    out.mkdir(parents=True, exist_ok=True)
    res = find_capacity(run_at_rate, p99_ms=p99_ms, min_sr=min_sr, lo=lo, hi=hi, rel_tol=tol,
                        max_runs=max_runs, confirm=confirm, on_run=on_run)
    doc = res.to_dict() | {"target": target.to_dict(), "workload": workload or "poisson",
                           "run_s": run_s, "seed": seed}
    (out / "capacity.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = Table(box=None, show_header=False)
    table.add_row("capacity", "-" if res.rate is None else f"[bold]{res.rate:.4g} rps[/]")
    table.add_row("bound", f"p99 <= {p99_ms:g} ms, SR >= {min_sr:g}")
    table.add_row("runs", str(len(res.runs)))
    table.add_row("confidence", res.confidence)
    console.print(table)
