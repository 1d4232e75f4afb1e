"""The executor: runs a plan, one run at a time, and survives being killed.

Output directory::

    DIR/plan.json                    the experiment and every planned run (ids, configs, estimates)
    DIR/summary.json                 JSON lines, one per finished or skipped run, in plan order
    DIR/comparison.json              configurations with bootstrap intervals, ranks and headline
    DIR/platform/  DIR/platform.log  the local platform's home and output (when a target uses it)
    DIR/models/                      zoo models built for the experiment
    DIR/runs/<run_id>/config.json    resolved config + target info + machine + versions
    DIR/runs/<run_id>/run.json       the load generator's run log
    DIR/runs/<run_id>/records/       every request record, written as measured (Parquet parts)
    DIR/runs/<run_id>/summary.json   the run's metrics (summarize_run) and cost (price_run)
    DIR/runs/<run_id>/DONE           written last: the run is complete
    DIR/runs/<run_id>/SKIPPED        the run cannot run here (the reason inside)
    DIR/runs/<run_id>.partial-N/     an interrupted attempt, moved aside, kept for inspection

Resume: a run with ``DONE`` is never redone; a run directory without it is an interrupted
attempt and is moved aside (not deleted: its records were measured) before the run is redone.
Because ``run_id`` hashes the run's configuration, resuming with an edited experiment file
redoes exactly the runs whose configuration changed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from servelab.bench.planner import Plan, PlannedRun, make_plan
from servelab.bench.spec import Experiment, model_path
from servelab.bench.targets import BenchTarget, Endpoint, TargetContext, detect_gpu, make_target
from servelab.errors import ConfigError, ServelabError

DONE = "DONE"
SKIPPED = "SKIPPED"
FAILED = "FAILED"


@dataclass
class ExecutionResult:
    out_dir: Path
    completed: list[str] = field(default_factory=list)  # run in this invocation
    already_done: list[str] = field(default_factory=list)  # DONE before this invocation (resume)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, error)
    moved_aside: list[str] = field(default_factory=list)  # partial directories kept
    elapsed_s: float = 0.0
    comparison: dict[str, Any] | None = None  # DIR/comparison.json (None: no finished run to compare)


# ------------------------------------------------------------------------------ small file helpers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _finite(obj: Any) -> Any:
    """JSON has no NaN: non-finite floats become null, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, doc: Any) -> None:
    """Atomically: a reader (or a resume after kill -9) sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(doc), indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _write_marker(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_dir(out_dir: Path, run_id: str) -> Path:
    return out_dir / "runs" / run_id


def is_done(out_dir: Path, run_id: str) -> bool:
    return (run_dir(out_dir, run_id) / DONE).is_file()


def move_aside(rd: Path) -> Path:
    """Rename an unfinished run directory to ``<run_id>.partial-N`` (N = 1, 2, …)."""
    n = 1
    while (dest := rd.with_name(f"{rd.name}.partial-{n}")).exists():
        n += 1
    os.replace(rd, dest)
    return dest


# --------------------------------------------------------------------------- machine and versions


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on (written into every run's config.json)."""
    info: dict[str, Any] = {"system": platform.system(), "release": platform.release(),
                            "machine": platform.machine(), "os": _os_name(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    with contextlib.suppress(AttributeError):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_mb"] = int(line.split()[1]) // 1024
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = list(os.getloadavg())
    info["gpu"] = detect_gpu() or "available"
    return info


def _os_name() -> str:
    """``PRETTY_NAME`` from /etc/os-release (e.g. "Debian GNU/Linux 12 (bookworm)"), else platform()."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def versions() -> dict[str, str]:
    """Package versions that shape the numbers. Read from package metadata, so torch is named
    when installed without being imported (importing it costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    from servelab.provenance import versions as base_versions

    out = dict(base_versions())
    for pkg in ("onnxruntime", "onnxruntime-gpu", "onnx", "torch", "pydantic"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


# ------------------------------------------------------------------------------------- executor


def resolve_model(name: str, exp: Experiment, models_dir: Path) -> Path:
    """An ONNX path as given, or the zoo model built (once, cached) into ``models_dir``."""
    path = model_path(name, exp.base_dir)
    if path is not None:
        return path
    from servelab.models import zoo

    return zoo.build(name, models_dir)


def _summary_line(run: PlannedRun, status: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "index": run.index, "status": status, "target": run.target,
            "kind": run.kind, "model": run.model, "runtime": run.runtime, "memory_mb": run.memory_mb,
            "batch_size": run.batch_size, "provisioned": run.provisioned, "workload": run.workload,
            "workload_spec": run.workload_spec, "repetition": run.repetition, "seed": run.seed,
            "duration_s": run.duration_s, "price_entry": run.price_entry, **extra}


def write_summary(out_dir: Path, plan: Plan) -> int:
    """Rebuild ``DIR/summary.json`` (JSON lines) from the per-run summaries, in plan order."""
    lines = []
    for run in plan.runs:
        p = run_dir(out_dir, run.run_id) / "summary.json"
        marker_ok = is_done(out_dir, run.run_id) or (run_dir(out_dir, run.run_id) / SKIPPED).is_file()
        if marker_ok and p.is_file():
            lines.append(json.dumps(json.loads(p.read_text()), default=str))
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, out_dir / "summary.json")
    return len(lines)


def read_summary(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``DIR/summary.json`` (for the report)."""
    p = Path(out_dir) / "summary.json"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []


def write_comparison(out_dir: Path, slo_p95_ms: float | None = None) -> dict[str, Any] | None:
    """``DIR/comparison.json``: every configuration finished so far, with intervals and ranks
    (servelab.analysis.comparison). None, and no file, when no run finished."""
    from servelab.analysis.comparison import comparison

    try:
        doc = comparison(out_dir, slo_p95_ms=slo_p95_ms)
    except ServelabError:  # nothing finished yet, or nothing readable: the runs themselves stand
        return None
    write_json(out_dir / "comparison.json", doc)
    return doc


class Executor:
    """Runs one plan into one output directory. ``run()`` is the whole job; the pieces are
    methods so tests and the CLI can see what happens (nothing here branches on the target)."""

    def __init__(self, plan: Plan, out_dir: str | os.PathLike, *, console: Console | None = None,
                 quiet: bool = False, only: Sequence[str] | None = None,
                 on_run_done: Callable[[PlannedRun], None] | None = None, platform_url: str | None = None,
                 platform_port: int | None = None) -> None:
        self.plan = plan
        self.platform_url = platform_url  # a running platform for the serverless targets
        self.platform_port = platform_port  # else the port of the one this run starts
        self.only = tuple(only or ())
        self.exp = plan.experiment
        self.out = Path(out_dir)
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.on_run_done = on_run_done
        self.result = ExecutionResult(out_dir=self.out)
        self._models: dict[str, Path] = {}

    def run(self) -> ExecutionResult:
        t0 = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "runs").mkdir(exist_ok=True)
        write_json(self.out / "plan.json", {**self.plan.to_dict(), "written_at": _now_iso()})
        write_summary(self.out, self.plan)
        selected = [r for r in self.plan.runs
                    if not self.only or any(r.run_id.startswith(o) for o in self.only)]
        if not selected:
            raise ConfigError(f"--only {list(self.only)} matches no run id; `servelab plan` lists them")
        todo = [r for r in selected if not is_done(self.out, r.run_id)]
        self.result.already_done = [r.run_id for r in selected if is_done(self.out, r.run_id)]
        if self.result.already_done and not self.quiet:
            n = len(self.result.already_done)
            self.console.print(f"resuming: {n} run(s) already DONE are not redone")
        ctx = TargetContext.for_dir(self.out, platform_url=self.platform_url, platform_port=self.platform_port)
        targets: dict[str, BenchTarget] = {t.label: make_target(t, ctx) for t in self.exp.targets}
        try:
            needed = {r.target for r in todo if r.skip_reason is None}
            for label in needed:
                targets[label].start()
            with self._progress() as progress:
                overall = progress.add_task("[bold]experiment", total=len(todo))
                for run in todo:
                    self._one(run, targets[run.target], progress)
                    progress.advance(overall)
        finally:
            for t in targets.values():
                with contextlib.suppress(ServelabError, OSError):
                    t.teardown()
            ctx.close()
            write_summary(self.out, self.plan)
            self.result.elapsed_s = time.monotonic() - t0
        self.result.comparison = write_comparison(self.out, self.exp.slo_p95_ms)
        return self.result

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=self.console, disable=self.quiet, transient=False)

    def _say(self, progress: Progress, text: str) -> None:
        if not self.quiet:
            progress.console.print(text)

    def _one(self, run: PlannedRun, target: BenchTarget, progress: Progress) -> None:
        rd = run_dir(self.out, run.run_id)
        if (rd / SKIPPED).is_file() and not (rd / "records").exists():
            shutil.rmtree(rd)  # an earlier skip measured nothing: re-decide, keep nothing
        if rd.exists():
            kept = move_aside(rd)
            self.result.moved_aside.append(kept.name)
            self._say(progress, f"[yellow]unfinished attempt moved aside:[/] runs/{kept.name}")
        rd.mkdir(parents=True)
        # the run resolved, and the whole experiment it came from: a run directory stands on its own
        base = {"run": run.to_dict(),
                "experiment": {**self.exp.model_dump(mode="json"), "base_dir": self.exp.base_dir},
                "machine": describe_machine(), "versions": versions(), "started_at": _now_iso()}
        if run.skip_reason is not None:
            write_json(rd / "config.json", {**base, "skipped": run.skip_reason})
            write_json(rd / "summary.json", _summary_line(run, "skipped", reason=run.skip_reason))
            _write_marker(rd / SKIPPED, run.skip_reason + "\n")
            self.result.skipped.append((run.run_id, run.skip_reason))
            self._say(progress, f"[yellow]skipped[/] {run.run_id}: {run.skip_reason}")
            write_summary(self.out, self.plan)
            return
        try:
            self._measure(run, target, rd, base, progress)
        except KeyboardInterrupt:
            raise
        except ServelabError as e:
            msg = f"{type(e).__name__}: {e}"
            _write_marker(rd / FAILED, msg + "\n")
            self.result.failed.append((run.run_id, msg))
            self._say(progress, f"[red]failed[/] {run.run_id}: {msg}")
        finally:
            with contextlib.suppress(ServelabError, OSError):
                target.cooldown()

    def _measure(self, run: PlannedRun, target: BenchTarget, rd: Path, base: dict[str, Any],
                 progress: Progress) -> None:
        from servelab.loadgen import from_model
        from servelab.loadgen import run as loadgen_run
        from servelab.workload import generate, load_spec

        if run.model not in self._models:
            self._models[run.model] = resolve_model(run.model, self.exp, self.out / "models")
        path = self._models[run.model]
        arrivals = generate(load_spec(run.workload_spec), duration_s=run.duration_s, seed=run.seed)
        payloads = from_model(path, 1, count=run.payloads, seed=run.seed)
        write_json(rd / "config.json", {**base, "model_path": str(path)})  # even if the deploy fails
        endpoint: Endpoint = target.prepare(run, path)
        write_json(rd / "config.json", {**base, "model_path": str(path), "target": endpoint.info})
        if not self.console.is_terminal:
            # no live progress bar off a terminal (CI logs, `| tee`): one line as each run starts
            self._say(progress, f"run {run.index + 1}/{len(self.plan.runs)} {run.run_id}: started, "
                                f"{run.duration_s:g} s of load (est. {run.estimate_s:.0f} s)")
        task = progress.add_task(f"{run.run_id}", total=run.duration_s)
        stop = threading.Event()

        def tick() -> None:
            t0 = time.monotonic()
            while not stop.wait(0.25):
                progress.update(task, completed=min(time.monotonic() - t0, run.duration_s))

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            result = loadgen_run(endpoint.target, arrivals, payloads, out_dir=rd, run_id=run.run_id,
                                 timeout_s=run.timeout_s, progress=False,
                                 # the schedule's own length: a workload sized by requests decides it
                                 config={"duration_s": arrivals.duration_s, "workload": run.workload_spec,
                                         "seed": run.seed, "model": run.model, "experiment": self.exp.name,
                                         "target_kind": run.kind, "target_label": run.target})
        finally:
            stop.set()
            ticker.join()
            progress.update(task, completed=run.duration_s)
            progress.remove_task(task)
        if result.status != "completed":
            raise KeyboardInterrupt  # interrupted: leave the partial directory for the next resume
        line = self._summarize(run, target, rd)
        write_json(rd / "summary.json", line)
        _write_marker(rd / DONE, _now_iso() + "\n")  # last: everything above is complete
        self.result.completed.append(run.run_id)
        write_summary(self.out, self.plan)
        self._say(progress, _one_line(line))
        if self.on_run_done is not None:
            self.on_run_done(run)

    def _summarize(self, run: PlannedRun, target: BenchTarget, rd: Path) -> dict[str, Any]:
        from servelab.analysis.metrics import load_run, summarize_run

        try:
            loaded = load_run(rd)
        except ConfigError:  # no records: the schedule had no arrivals
            return _summary_line(run, "done", summary={"count": 0}, cost=None)
        summary = summarize_run(loaded)
        flat = summary.flat()
        cost: dict[str, Any] | None = None
        cost_error = None
        args = target.price_args(run, flat)
        if args is not None:
            from servelab.billing.pricing import price_run

            notes = args.pop("notes", [])
            entry = args.pop("entry_id")
            try:
                c = price_run(loaded.table, entry, **args).to_dict()
                c["notes"] = [*c["notes"], *notes]
                cost = c
            except ServelabError as e:
                cost_error = str(e)
        return _summary_line(run, "done", summary=flat, latency_ms=summary.latency_ms,
                             decomposition_ms=summary.decomposition_ms, init_ms=summary.init_ms,
                             start_kinds=summary.start_kinds, cost=cost, cost_error=cost_error)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _one_line(line: dict[str, Any]) -> str:
    s = line.get("summary") or {}
    c = line.get("cost") or {}
    return (f"[green]done[/] {line['run_id']}: {s.get('count', 0)} requests, "
            f"SR {_fmt(s.get('success_ratio'), '.4f')}, "
            f"p50 {_fmt(s.get('latency_p50_ms'), '.1f')} ms, p99 {_fmt(s.get('latency_p99_ms'), '.1f')} ms, "
            f"cold {s.get('cold_starts', 0)}, "
            f"${_fmt(c.get('per_million_usd'), ',.2f')}/1M req ({c.get('entry_id', 'unpriced')})")


def run_experiment(exp: Experiment, out_dir: str | os.PathLike, *, console: Console | None = None,
                   quiet: bool = False, only: Sequence[str] | None = None) -> ExecutionResult:
    """Plan ``exp`` and run it into ``out_dir``, resuming whatever an earlier attempt finished.

    ``only`` restricts the runs to these run ids (or id prefixes); ``plan.json`` keeps every run.
    """
    return Executor(make_plan(exp), out_dir, console=console, quiet=quiet, only=only).run()
