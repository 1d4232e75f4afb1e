"""``servelab plan EXP.yaml`` and ``servelab run EXP.yaml --out DIR``.

Module-level imports stay cheap (typer, rich): the spec, planner and executor are imported
inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from servelab.tables import output_format, print_table

console = Console()

# shared by run, demo, profile and recommend --verify
PLATFORM_OPT = typer.Option(None, "--platform", help="Use this running platform (e.g. http://127.0.0.1:8080, "
                            "from `servelab platform up`) instead of starting one.")
PORT_OPT = typer.Option(None, "--port", help="Port of the platform this command starts on loopback "
                        "(default: a free one).")

app = typer.Typer(help="Experiments: plan and run a grid of configurations against targets.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _v(x: object) -> str:
    return "-" if x is None else str(x)


PLAN_COLUMNS = ("#", "run id", "target", "model", "runtime", "memory MB", "batch", "prov", "workload", "rep",
                "seed", "duration s", "est. s", "status")
_PLAN_RIGHT = {"#", "memory MB", "batch", "prov", "rep", "seed", "duration s", "est. s"}
_PLAN_KEYS = {"#", "run id", "target", "est. s", "status"}  # always shown


def plan_table(plan, done: set[str] | None = None, *, compact: bool = True) -> Table:
    """The plan as a rich table: one row per run, skipped runs with their reason. ``compact``
    moves the settings every run shares out of the table into its title, so it fits 80 columns."""
    reasons: list[str] = []
    rows = []
    for r in plan.runs:
        if r.skip_reason and r.skip_reason not in reasons:
            reasons.append(r.skip_reason)
        status = (f"[yellow]skipped ({reasons.index(r.skip_reason) + 1})[/]" if r.skip_reason
                  else "[green]DONE[/]" if done and r.run_id in done else "")
        rows.append((str(r.index), r.run_id, r.target, r.model, _v(r.runtime), _v(r.memory_mb), _v(r.batch_size),
                     _v(r.provisioned), r.workload, str(r.repetition), str(r.seed), f"{r.duration_s:g}",
                     f"{r.estimate_s:.0f}", status))
    keep = list(range(len(PLAN_COLUMNS)))
    title = f"experiment {plan.experiment.name}: {len(plan.runs)} runs"
    if compact and len(rows) > 1:
        same = [i for i, col in enumerate(PLAN_COLUMNS) if col not in _PLAN_KEYS and len({row[i] for row in rows}) == 1]
        keep = [i for i in keep if i not in same]
        if same:
            title += "; every run: " + ", ".join(f"{PLAN_COLUMNS[i]} {rows[0][i]}" for i in same)
    t = Table(title=title, show_lines=False)
    for i in keep:
        t.add_column(PLAN_COLUMNS[i], justify="right" if PLAN_COLUMNS[i] in _PLAN_RIGHT else "left")
    for row in rows:
        t.add_row(*(row[i] for i in keep))
    if reasons:
        t.caption = "\n".join(f"skipped ({i}): {why}" for i, why in enumerate(reasons, 1))
        t.caption_justify = "left"
    return t


def plan_footer(plan, done: set[str] | None = None) -> str:
    todo = [r for r in plan.to_run if not done or r.run_id not in done]
    est = sum(r.estimate_s for r in todo) + (plan.platform_start_s if todo else 0.0)
    parts = [f"{len(plan.runs)} runs", f"{len(plan.to_run)} to run", f"{len(plan.skipped)} skipped"]
    if plan.excluded:
        parts.append(f"{plan.excluded} excluded")
    if done:
        parts.append(f"{len(done & {r.run_id for r in plan.runs})} already DONE")
    start = f", platform start {plan.platform_start_s:.0f} s" if plan.platform_start_s and todo else ""
    return (", ".join(parts) + f"; estimated time {_duration(est)} "
            f"(schedule + drain + deploy/start + cool-down{start})")


def _done_in(out: Path | None) -> set[str]:
    if out is None or not (out / "runs").is_dir():
        return set()
    return {p.name for p in (out / "runs").iterdir() if (p / "DONE").is_file()}


@app.command("plan")
def plan_cmd(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory: mark runs DONE there."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the plan's table as CSV."),
) -> None:
    """Expand an experiment into its runs and estimate how long they take, before anything runs."""
    from servelab.bench.planner import make_plan
    from servelab.bench.spec import load_experiment

    plan = make_plan(load_experiment(experiment))
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2, default=str))
        return
    done = _done_in(out)
    if as_csv:
        print_table(plan_table(plan, done, compact=False), "csv")
        return
    print_table(plan_table(plan, done), console=console, keys=2)
    console.print(plan_footer(plan, done))


# the dimensions an experiment may sweep: (summary.json key, column header); the results table shows
# the ones whose value differs between runs, so a memory sweep shows its memory sizes
SWEPT_DIMENSIONS: tuple[tuple[str, str], ...] = (
    ("model", "model"), ("runtime", "runtime"), ("memory_mb", "memory MB"), ("batch_size", "batch"),
    ("provisioned", "prov"), ("workload", "workload"), ("repetition", "rep"))


def results_table(lines: list[dict]) -> Table:
    swept = [(key, header) for key, header in SWEPT_DIMENSIONS
             if len({json.dumps(line.get(key), default=str) for line in lines}) > 1]
    t = Table(title="results (DIR/summary.json)")
    for col in ("run id", "target", *(header for _, header in swept), "status", "requests", "SR", "p50 ms",
                "p95 ms", "p99 ms", "cold", "USD / 1M req", "price entry"):
        t.add_column(col, justify="left" if col in ("run id", "target", "model", "runtime", "workload", "status",
                                                    "price entry") else "right")

    def f(x: object, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for line in lines:
        s = line.get("summary") or {}
        c = line.get("cost") or {}
        t.add_row(line["run_id"], line["target"], *(_v(line.get(key)) for key, _ in swept), line["status"],
                  f(s.get("count"), ","), f(s.get("success_ratio"), ".4f"), f(s.get("latency_p50_ms"), ",.1f"),
                  f(s.get("latency_p95_ms"), ",.1f"), f(s.get("latency_p99_ms"), ",.1f"),
                  f(s.get("cold_starts"), "d"), f(c.get("per_million_usd"), ",.2f"),
                  c.get("entry_id") or ("see plan" if line.get("reason") else "-"))
    return t


@app.command("run")
def run_cmd(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; an existing one is resumed."),
    only: list[str] = typer.Option(None, "--only", help="Run only these run ids (or prefixes); repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-run lines."),
    threshold: list[str] = typer.Option(None, "--threshold", help="Pass rule for every run, repeatable: "
                                        "'p95<200ms', 'errors<1%' (docs/loadgen.md); a breach exits 99."),
    fail_if_all_failed: bool = typer.Option(True, "--fail-if-all-failed/--allow-all-failed",
                                            help="Exit 99 when every request of a run failed (the default)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results (DIR/summary.json lines) as JSON; "
                                 "progress goes to stderr."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the results table as CSV; progress goes to stderr."),
    platform: str = PLATFORM_OPT,
    port: int = PORT_OPT,
) -> None:
    """Run an experiment: every planned run, resumable (finished runs are never redone)."""
    from servelab.analysis import thresholds as th
    from servelab.bench.executor import Executor, read_summary
    from servelab.bench.planner import make_plan
    from servelab.bench.spec import load_experiment

    rules = th.parse_thresholds(threshold)
    fmt = output_format(as_json, as_csv)
    plan = make_plan(load_experiment(experiment))
    # with --json/--csv, stdout is the data only; what a human reads goes to stderr
    say = console if fmt == "table" else Console(stderr=True)
    if not quiet:
        say.print(plan_footer(plan, _done_in(out)))
    result = Executor(plan, out, console=say, quiet=quiet, only=only, platform_url=platform,
                      platform_port=port).run()
    if fmt == "json":
        typer.echo(json.dumps(read_summary(out), indent=2, default=str))
    else:
        print_table(results_table(read_summary(out)), fmt, console=console)
    if result.comparison:
        from servelab.analysis.comparison import comparison_table

        say.print(comparison_table(result.comparison))
    say.print(f"{len(result.completed)} run(s) done now, {len(result.already_done)} done before, "
                  f"{len(result.skipped)} skipped, {len(result.failed)} failed in "
                  f"{_duration(result.elapsed_s)}; output in {out}")
    if result.failed:
        for rid, msg in result.failed:
            say.print(f"[red]failed[/] {rid}: {msg}")
        raise typer.Exit(1)
    verdicts = [v for line in read_summary(out) if line.get("status") == "done"
                for v in th.evaluate(line.get("summary") or {}, rules, fail_if_all_failed=fail_if_all_failed,
                                     run=line["run_id"])]
    code = th.exit_code(verdicts, say.print, show_passes=bool(rules))
    if code:
        raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    """Mount ``plan`` and ``run`` as top-level ``servelab`` commands."""
    root.command("plan")(plan_cmd)
    root.command("run")(run_cmd)
