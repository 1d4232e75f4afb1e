"""``servelab simulate``, ``servelab profile`` and ``servelab recommend``.

Mounted by the top-level CLI with ``register(app)``. Module-level imports stay cheap (typer,
rich): the simulator, numpy and pyarrow are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _ints(text: str) -> tuple[int, ...]:
    from servelab.errors import ConfigError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _arrivals(workload: str, duration_s: float | None, seed: int, scale: float) -> Any:
    from servelab.workload import generate, load_spec

    spec = load_spec(workload)
    if scale != 1.0:
        spec = spec.scaled(scale)
    return generate(spec, duration_s=duration_s, seed=seed)


def simulate_cmd(
    workload: str = typer.Option(..., "--workload", "-w", help="Preset, inline spec (mmpp:rates=5,50;sojourn=10,2) "
                                 "or a YAML/JSON spec file (a trace spec replays a trace)."),
    profile: str = typer.Option("study-mobilenetv2", "--profile", "-p", help="Shipped profile name or YAML file."),
    target: str = typer.Option("serverless", "--target", "-t", help="serverless | managed | server"),
    set_: list[str] = typer.Option([], "--set", "-s", help="Config field=value (repeatable), e.g. memory_mb=1024, "
                                   "max_batch_size=8, provisioned=2, instances=4, scale_out_delay_s=120."),
    duration_s: float = typer.Option(None, "--duration-s", help="Override the workload's duration."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply every arrival rate by this."),
    seed: int = typer.Option(0, "--seed"),
    entry: str = typer.Option(None, "--entry", "-e", help="Price entry (default: the config's price_entry)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write run.json + records/ here (servelab analyze reads it)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Simulate a workload on a serverless function, a managed endpoint or a server pool."""
    import yaml

    from servelab.errors import ConfigError
    from servelab.sim import load_profile, parse_config, simulate

    fields: dict[str, object] = {"kind": target}
    for item in set_:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        fields[key.strip()] = yaml.safe_load(value)
    cfg = parse_config(fields)
    prof = load_profile(profile)
    arrivals = _arrivals(workload, duration_s, seed, scale)
    result = simulate(cfg, prof, arrivals, seed=seed)
    result.meta["workload"] = workload
    s = result.summary()
    cost = result.cost(entry)
    rate = result.requests / result.sim_s if result.sim_s > 0 else float("inf")
    if out is not None:
        result.write(out)
    lat = s.latency_ms or {}
    doc = {"target": cfg.kind, "requests": s.count, "success_ratio": s.success_ratio, "by_status": s.by_status,
           "latency_ms": lat, "cold_starts": s.cold_starts, "instances": s.instances,
           "cost": cost.to_dict(), "sim_s": result.sim_s, "records_s": result.records_s, "requests_per_s": rate,
           "out": str(out) if out else None}
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    t = Table(title=f"simulated {cfg.kind} · {prof.model} ({prof.platform}) · {workload}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("requests", f"{s.count:,}")
    t.add_row("success ratio", f"{s.success_ratio:.4f}" if s.success_ratio is not None else "-")
    for k in ("throttled", "timeout"):
        t.add_row(k, f"{s.by_status.get(k, 0):,}")
    for k in ("p50", "p95", "p99", "max"):
        t.add_row(f"latency {k} ms", f"{lat[k]:,.1f}" if k in lat else "-")
    t.add_row("cold starts", f"{s.cold_starts:,}")
    t.add_row("instances", f"{s.instances:,}")
    t.add_row(f"cost USD ({cost.entry_id})", f"{cost.total_usd:.6g}")
    t.add_row("per million USD", f"{cost.per_million_usd:.4g}")
    t.add_row("simulated in", f"{result.sim_s:.3f} s ({rate:,.0f} req/s) + records {result.records_s:.3f} s")
    console.print(t)
    if out is not None:
        console.print(f"records: {out}/records  (servelab analyze {out})")


def profile_cmd(
    model: str = typer.Argument(..., help="A zoo model name (built from code) or an ONNX file."),
    out: Path = typer.Option(None, "--out", "-o", help="Profile YAML to write (default: profiles/MODEL.yaml)."),
    memory: str = typer.Option("1769", "--memory-mb", help="Memory sizes, comma-separated."),
    batches: str = typer.Option("1,2,4,8", "--batch-sizes", help="Batch sizes, comma-separated."),
    cold: int = typer.Option(8, "--cold", help="Cold starts to measure per memory size."),
    warm: int = typer.Option(60, "--warm", help="Warm requests per memory size."),
    start_mode: str = typer.Option("fork", "--start-mode", help="fork | spawn"),
    runtime: str = typer.Option("onnxruntime", "--runtime"),
    url: str = typer.Option(None, "--platform", "--url", help="Use this running platform (e.g. "
                            "http://127.0.0.1:8080) instead of starting one on loopback."),
    port: int = typer.Option(None, "--port", help="Port of the platform this command starts (default: a free one)."),
    work_dir: Path = typer.Option(None, "--work-dir",
                                  help="Where the platform and the runs live, kept (default: a temporary "
                                       "directory, removed at the end)."),
) -> None:
    """Measure a model's cold start and service times on the local platform; save a profile."""
    from servelab.calibrate.measure import measure_profile, resolve_model
    from servelab.calibrate.realrun import work_directory

    with work_directory(work_dir, "servelab-profile-") as work:
        name, path = resolve_model(model, work / "models")
        console.print(f"profiling {name} ({path}) on the local platform; work dir {work}")
        prof = measure_profile(path, model_name=name, memory_sizes=_ints(memory), batch_sizes=_ints(batches),
                               cold=cold, warm=warm, start_mode=start_mode, runtime=runtime, work_dir=work,
                               url=url, port=port, log=console.print)
        dest = prof.save(out or Path("profiles") / f"{name}.yaml")
    console.print(f"[green]saved[/] {dest}")


def recommend_cmd(
    workload: str = typer.Option(..., "--workload", "-w", help="Preset, inline spec or spec file (trace specs too)."),
    profile: str = typer.Option("study-mobilenetv2", "--profile", "-p"),
    p95_ms: float = typer.Option(None, "--p95-ms", help="Objective: p95 latency bound (ms)."),
    p99_ms: float = typer.Option(None, "--p99-ms", help="Objective: p99 latency bound (ms)."),
    min_sr: float = typer.Option(0.999, "--min-sr", help="Objective: minimum success ratio."),
    targets: str = typer.Option("serverless", "--targets", help="Comma-separated: serverless, managed, server."),
    memory: str = typer.Option("512,1024,1536,1769,2048,3008,4096,6144,8192,10240", "--memory-mb"),
    batches: str = typer.Option("1", "--batch-sizes"),
    provisioned: str = typer.Option("0", "--provisioned"),
    lambda_entries: str = typer.Option("aws-lambda-x86-us-east-1", "--serverless-entries"),
    server_entries: str = typer.Option("aws-ec2-c5.large-us-east-1", "--server-entries"),
    managed_entries: str = typer.Option("aws-sagemaker-ml.c5.large-us-east-1", "--managed-entries"),
    max_instances: int = typer.Option(32, "--max-instances"),
    server_device: str = typer.Option("cpu", "--server-device", help="cpu | gpu (the profile needs gpu times)"),
    scale_rate: str = typer.Option("aws", "--scale-rate", help="none | aws | aws-2020"),
    duration_s: float = typer.Option(None, "--duration-s"),
    scale: float = typer.Option(1.0, "--scale"),
    seed: int = typer.Option(0, "--seed"),
    screen: float = typer.Option(1.0, "--screen-fraction", help="Screen each probe on this share of the workload "
                                 "first (< 1 for long traces)."),
    runners: int = typer.Option(3, "--runners-up"),
    as_json: bool = typer.Option(False, "--json"),
    verify: bool = typer.Option(False, "--verify", help="Run the recommended serverless configuration on the "
                                "real local platform and show predicted vs measured."),
    model: str = typer.Option(None, "--model",
                              help="For --verify: zoo name or ONNX file (default: the profile's model)."),
    work_dir: Path = typer.Option(None, "--work-dir", help="For --verify: where the platform and runs live, kept "
                                  "(default: a temporary directory, removed at the end)."),
    platform: str = typer.Option(None, "--platform", help="For --verify: use this running platform instead of "
                                 "starting one."),
    port: int = typer.Option(None, "--port", help="For --verify: port of the platform it starts."),
) -> None:
    """Find the cheapest configuration that meets a latency objective, by simulation."""
    from servelab.errors import ConfigError
    from servelab.sim import load_profile
    from servelab.sim.recommend import Objective, SearchSpace, recommend

    kinds = set(_strs(targets))
    unknown = kinds - {"serverless", "managed", "server"}
    if unknown:
        raise ConfigError(f"unknown target(s) {sorted(unknown)}; choose from serverless, managed, server")
    space = SearchSpace(
        serverless_entries=_strs(lambda_entries) if "serverless" in kinds else (), memory_mb=_ints(memory),
        batch_sizes=_ints(batches), provisioned=_ints(provisioned), scale_rate=scale_rate,
        server_entries=_strs(server_entries) if "server" in kinds else (), server_device=server_device,
        managed_entries=_strs(managed_entries) if "managed" in kinds else (), max_instances=max_instances)
    objective = Objective(p95_ms=p95_ms, p99_ms=p99_ms, min_sr=min_sr)
    prof = load_profile(profile)
    arrivals = _arrivals(workload, duration_s, seed, scale)
    rec = recommend(prof, arrivals, objective, space, seed=seed, runners_up=runners, screen_fraction=screen)
    if as_json and not verify:
        typer.echo(json.dumps(rec.to_dict(), indent=2, default=str))
        return
    console.print(f"objective: {objective.describe()} · workload {workload} ({len(arrivals):,} requests) · "
                  f"{rec.simulations} simulations of a {rec.grid_size}-point space in {rec.elapsed_s:.2f} s")
    t = Table(title="cheapest configurations that meet the objective (predicted)")
    for col in ("", "configuration", "p50 ms", "p95 ms", "p99 ms", "SR", "cold", "cost USD", "per 1M USD"):
        t.add_column(col, justify="left" if col in ("", "configuration") else "right")
    rows = ([("best", rec.best)] if rec.best else []) + [(f"#{i + 2}", e) for i, e in enumerate(rec.runners_up)]
    for tag, e in rows:
        t.add_row(tag, e.label(), f"{e.p50_ms:.1f}", f"{e.p95_ms:.1f}", f"{e.p99_ms:.1f}", f"{e.sr:.4f}",
                  f"{e.cold_starts:,}", f"{e.cost_usd:.4g}", f"{e.per_million_usd:.4g}")
    console.print(t if rows else "[red]no configuration in the space meets the objective[/]")
    p = Table(title="Pareto front: cost vs p95 (every configuration simulated on the full workload)")
    for col in ("configuration", "p95 ms", "SR", "cost USD", "meets"):
        p.add_column(col, justify="left" if col == "configuration" else "right")
    for e in rec.pareto:
        p.add_row(e.label(), f"{e.p95_ms:.1f}", f"{e.sr:.4f}", f"{e.cost_usd:.4g}", "yes" if e.feasible else "no")
    console.print(p)
    if verify:
        if rec.best is None or rec.best.config.kind != "serverless":
            raise ConfigError("--verify runs serverless recommendations on the local platform; the best "
                              "configuration here is not serverless (or there is none)")
        _verify(rec.best.config, prof, arrivals, model or prof.model, work_dir, seed, as_json, platform, port,
                objective)


VERIFY_TOLERANCE = 0.15  # predicted vs measured p95 and cost: within 15 % is a sound prediction


def _extrapolation(config: Any, prof: Any) -> list[str]:
    """Where the recommended configuration lies outside what the profile measured."""
    notes = []
    sizes = prof.memory_sizes()
    if sizes and config.memory_mb not in sizes:
        notes.append(f"memory {config.memory_mb} MB was not measured (profile: {', '.join(map(str, sizes))} MB): "
                     "its service times are scaled by the CPU-share rule")
    batches = sorted({b for e in prof.entries("cpu") for b in e.batches})
    if batches and config.max_batch_size > batches[-1]:
        notes.append(f"batch size {config.max_batch_size} is above the largest measured ({batches[-1]})")
    return notes


def _verify(config: Any, prof: Any, arrivals: Any, model: str, work_dir: Path | None, seed: int,
            as_json: bool, platform_url: str | None, port: int | None, objective: Any = None) -> None:
    import os

    from servelab.calibrate.measure import resolve_model
    from servelab.calibrate.realrun import Deployer, local_platform, work_directory
    from servelab.calibrate.validate import METRICS, compare_on_platform
    from servelab.loadgen.payloads import from_model

    with work_directory(work_dir, "servelab-verify-") as work:
        _, path = resolve_model(model, work / "models")
        console.print(f"verifying on the local platform ({len(arrivals):,} requests, "
                      f"{arrivals.duration_s:g} s; work dir {work}) …")
        with local_platform(work, platform_url, port) as url:
            dep = Deployer(url, path)
            # the local platform's instances share this machine's cores: so does the prediction
            host_cpus = float(len(os.sched_getaffinity(0)))
            cmp = compare_on_platform("verify", url, dep, config.model_copy(update={"max_concurrency": min(
                config.max_concurrency, 8)}), prof, arrivals.times_s, arrivals.duration_s,
                from_model(path, count=4), work, seed=seed, host_cpus=host_cpus)
    extrapolated = _extrapolation(config, prof)
    m = cmp.measured
    met = objective.met(m.p95_ms, m.p99_ms, m.success_ratio) if objective is not None else None
    sound = all(abs(cmp.error(k)) <= VERIFY_TOLERANCE for k in ("p95_ms", "cost_usd"))
    if as_json:
        typer.echo(json.dumps({**cmp.to_dict(), "objective": objective.describe() if objective else None,
                               "objective_met": met, "prediction_within_15pct": sound,
                               "extrapolated": extrapolated}, indent=2, default=str))
        return
    t = Table(title="predicted vs measured (local platform)")
    for col in ("metric", "predicted", "measured", "error"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for metric in METRICS:
        t.add_row(metric, f"{getattr(cmp.predicted, metric):.4g}", f"{getattr(cmp.measured, metric):.4g}",
                  f"{cmp.error(metric):+.1%}")
    console.print(t)
    for note in extrapolated:
        console.print(f"[yellow]extrapolated: {note}[/]")
    if met is not None:
        console.print(f"verdict: the objective ({objective.describe()}) was "
                      + ("[green]met[/]" if met else "[red]missed[/]")
                      + f" on the verification run (measured p95 {m.p95_ms:.1f} ms, p99 {m.p99_ms:.1f} ms, "
                        f"SR {m.success_ratio:.4f})")
    console.print("prediction: p95 and cost " + ("within" if sound else "[yellow]not within[/]")
                  + f" ±{VERIFY_TOLERANCE:.0%} of the measurement "
                  f"(p95 {cmp.error('p95_ms'):+.1%}, cost {cmp.error('cost_usd'):+.1%})")


policies_app = typer.Typer(help="Keep-alive policies on many functions sharing one simulated host.",
                           no_args_is_help=True)


@policies_app.command("compare")
def policies_compare_cmd(
    functions: int = typer.Option(100, "--functions", min=1, help="How many functions share the host."),
    duration: str = typer.Option("2h", "--duration", help="Simulated time: 2h, 30m, 900s."),
    policies: str = typer.Option("fixed:600,fixed:60,hybrid,faascache,layered", "--policies",
                                 help="Comma-separated: fixed:SECONDS, hybrid, faascache[:ttl_s], layered[:keep_s]."),
    out: Path = typer.Option(..., "--out", help="Directory for compare.csv, compare.png and the workload."),
    host_memory_mb: float | None = typer.Option(None, "--host-memory-mb",
                                                help="The host's memory budget (default: 1.25 x the invoked "
                                                     "functions' one-instance warm set, at least 4096)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the generated workload."),
    max_rate: float = typer.Option(1.0, "--max-rate", help="Cap on a function's mean rate (req/s)."),
) -> None:
    """Run the same Azure-2019-shaped workload under each policy; write a table and a Pareto figure."""
    import os

    from servelab.sim.compare import compare, parse_duration, plot

    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise typer.BadParameter("give at least one policy", param_hint="--policies")
    dur_s = parse_duration(duration)
    rows, info = compare(n_functions=functions, duration_s=dur_s, policies=names, budget_mb=host_memory_mb,
                         seed=seed, max_rate_per_s=max_rate, out=out)
    load = os.getloadavg()[0]
    plot(rows, out / "compare.png", f"{functions} functions, {duration}, host {info['budget_mb']:.0f} MB, "
                                    f"seed {seed} (load {load:.1f})")
    table = Table(title=f"{info['requests']:.0f} requests, {info['invoked_functions']:.0f} functions invoked, "
                        f"host budget {info['budget_mb']:.0f} MB (warm set {info['warm_set_mb']:.0f} MB)")
    for col in ("policy", "cold %", "idle GB-s", "p99 ms", "cost $", "cold wait ms", "evictions", "pareto"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.policy, f"{r.cold_start_rate * 100:.2f}", f"{r.idle_gb_s:,.0f}", f"{r.p99_ms:,.0f}",
                      f"{r.cost_usd:.4f}", f"{r.mean_cold_wait_ms:,.0f}", str(r.evictions), "yes" if r.pareto else "")
    console.print(table)
    console.print(f"wrote {out / 'compare.csv'}, {out / 'compare.png'}; machine load (1 min) {load:.2f}")


def register(app: typer.Typer) -> None:
    """Mount ``simulate``, ``profile``, ``recommend`` and ``policies`` on the top-level app."""
    app.command("simulate")(simulate_cmd)
    app.command("profile")(profile_cmd)
    app.command("recommend")(recommend_cmd)
    app.add_typer(policies_app, name="policies")
