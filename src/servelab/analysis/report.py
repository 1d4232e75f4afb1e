"""``servelab report DIR``: an experiment directory → one HTML file, PNG figures, a markdown summary.

The experiment layout (written by the executor, ``servelab run EXP.yaml --out DIR``)::

    DIR/plan.json                  the planned runs and their configs                     optional
    DIR/runs/<run_id>/run.json     the load generator's run file                          optional
    DIR/runs/<run_id>/records/     Parquet parts of servelab.records.RequestRecord        required
    DIR/runs/<run_id>/config.json  the run's resolved config + machine + versions         optional
    DIR/runs/<run_id>/DONE         present when the run finished
    DIR/runs/<run_id>/SKIPPED      the run could not run here (reason inside)
    DIR/runs/<run_id>/FAILED       the run failed (error inside)
    DIR/runs/<id>.partial-N/       an interrupted attempt the executor moved aside: never reported
    DIR/summary.json               JSON lines, one per finished run, with its ``cost``    optional

A plan's runs may be ``{"run_id", "config": {...}}`` or flat (the config's keys beside
``run_id``, as the executor writes them); a config.json may hold the config at its top level,
under ``config`` or under ``run``. A directory of loose run directories, or a single run
directory, is reported too.

Every statistic is computed here from the records, on all of them, so the report never depends
on what an earlier tool chose to keep; ``summary.json`` contributes only a run's price (when the
executor priced it). A run without a price there is priced with
:func:`servelab.billing.pricing.price_run` against its config's ``price_entry``.

What is kept per run is small whatever the run's size (a million records are summarised and
dropped): the :class:`~servelab.analysis.metrics.RunSummary`, the per-bin time series, the
latency quantiles at :data:`CDF_PROBS` (enough to draw its CDF and its tail), and sums of the
cold-start parts. A *configuration* is a run's config less its repetition and seed; repetitions
are pooled into one CDF, one cold-start bar and one point on the cost/latency plane (the median
of their p95s and of their costs).

Units: latencies ms (``*_ms``), times s (``*_s``), money USD (``*_usd``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from servelab.analysis.metrics import INIT_PARTS, RunSummary, column, load_run, mask, summarize_run
from servelab.analysis.run_keys import AXES, NOT_CONFIGURATION, SCENARIO_KEYS
from servelab.analysis.stats import GroupIntervals, RunSample, group_intervals
from servelab.errors import ConfigError, ServelabError

PLAN_FILE = "plan.json"
SUMMARY_FILE = "summary.json"
RUNS_DIR = "runs"
CONFIG_FILE = "config.json"
DONE_FILE = "DONE"
SKIPPED_FILE = "SKIPPED"
FAILED_FILE = "FAILED"
REPORT_DIR = "report"
DEFAULT_MIN_SR = 0.99
DEFAULT_MAX_BINS = 600

# Probabilities at which each run keeps its latency quantiles: a fine even grid for the body of
# the CDF plus a log-spaced grid up to p99.999 for the tail.
CDF_PROBS: np.ndarray = np.unique(np.concatenate([np.linspace(0.0, 1.0, 1001),
                                                  1.0 - np.logspace(-5, -1, 161)]))

PARTIAL_ATTEMPT = re.compile(r"\.partial-\d+$")  # runs/<run_id>.partial-N: moved aside by the executor
_LABEL_FORMATS: dict[str, str] = {"memory_mb": "{} MB", "batch_size": "batch {}", "provisioned": "prov {}"}
_CONFIG_SECTIONS = ("machine", "versions")

CostSource = Literal["summary.json", "records"]


@dataclass(frozen=True)
class RunCost:
    """A run's price: the catalog entry and date it used, and what that assumed (``notes``)."""

    entry_id: str
    catalog_date: str
    total_usd: float
    per_million_usd: float  # NaN when nothing was billed
    source: CostSource
    notes: tuple[str, ...] = ()


@dataclass
class RunReport:
    """What the report keeps of one run (its records are summarised and dropped)."""

    run_id: str
    path: Path
    config: dict[str, Any]
    finished: bool
    summary: RunSummary
    series: pa.Table  # servelab.analysis.timeseries.per_second
    bin_s: float
    latency_quantiles_ms: np.ndarray  # ok requests at CDF_PROBS; empty when none was ok
    cold_parts: dict[str, tuple[float, int]]  # init part -> (sum ms, count) over cold requests
    config_key: str
    cost: RunCost | None = None
    machine: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def p95_ms(self) -> float:
        return _get(self.summary.latency_ms, "p95")

    @property
    def per_million_usd(self) -> float:
        return self.cost.per_million_usd if self.cost else math.nan


@dataclass
class ConfigGroup:
    """The runs of one configuration (its repetitions), pooled."""

    key: str
    label: str
    runs: list[RunReport]
    eligible: bool = True  # success ratio at least the report's min_sr
    on_front: bool = False  # on the cost / p95 Pareto front of its scenario
    scenario: str = ""  # the load it faced (workload · model where they vary); "" when all share one
    intervals: GroupIntervals | None = None  # bootstrap CIs over its repetitions (servelab.analysis.stats)

    @property
    def requests(self) -> int:
        return sum(r.summary.count for r in self.runs)

    @property
    def success_ratio(self) -> float:
        n = self.requests
        return sum(r.summary.by_status.get("ok", 0) for r in self.runs) / n if n else math.nan

    @property
    def p95_ms(self) -> float:
        """Median over the repetitions of each run's p95 (NaN when no run had an ok request)."""
        return _median([r.p95_ms for r in self.runs])

    @property
    def per_million_usd(self) -> float:
        """Median over the repetitions of each run's cost per million requests."""
        return _median([r.per_million_usd for r in self.runs])

    @property
    def cold_starts(self) -> int:
        return sum(r.summary.cold_starts for r in self.runs)

    def cold_part_means_ms(self) -> dict[str, float]:
        """Mean of each init part over every cold request of every repetition (NaN: unknown)."""
        out = {}
        for part in INIT_PARTS:
            total = sum(r.cold_parts.get(part, (0.0, 0))[0] for r in self.runs)
            count = sum(r.cold_parts.get(part, (0.0, 0))[1] for r in self.runs)
            out[part] = total / count if count else math.nan
        return out

    def latency_cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms, fraction ≤ it) of the repetitions pooled, weighted by their ok counts."""
        parts = [(r.latency_quantiles_ms, r.summary.by_status.get("ok", 0)) for r in self.runs
                 if r.latency_quantiles_ms.size]
        if not parts:
            return np.empty(0), np.empty(0)
        if len(parts) == 1:
            return parts[0][0], CDF_PROBS
        xs = np.unique(np.concatenate([q for q, _ in parts]))
        weights = np.array([w for _, w in parts], dtype=np.float64)
        cdfs = np.stack([np.interp(xs, q, CDF_PROBS, left=0.0, right=1.0) for q, _ in parts])
        return xs, weights @ cdfs / weights.sum()


@dataclass
class Skipped:
    run_id: str
    reason: str


@dataclass
class Experiment:
    """Everything the report shows, computed once; figures and renderers only read it."""

    name: str
    directory: Path
    runs: list[RunReport]
    groups: list[ConfigGroup]
    skipped: list[Skipped]
    warnings: list[str]
    min_sr: float
    generated_at: str
    slo_p95_ms: float | None = None  # the objective the headline checks (None: none given)

    def headlines(self) -> list[str]:
        """One sentence per scenario: who meets the objective, at what cost, against whom."""
        from servelab.analysis.headline import headline

        return [headline([g for g in self.groups if g.scenario == s], scenario=s, slo_p95_ms=self.slo_p95_ms)
                for s in self.scenarios]

    @property
    def front(self) -> list[ConfigGroup]:
        """Pareto-optimal configurations, scenario by scenario, each cheapest last (lowest p95 first)."""
        order = {s: i for i, s in enumerate(self.scenarios)}
        return sorted((g for g in self.groups if g.on_front), key=lambda g: (order[g.scenario], g.p95_ms))

    @property
    def scenarios(self) -> list[str]:
        """The scenarios in first-seen order (one ``""`` when every configuration faced the same load)."""
        return list(dict.fromkeys(g.scenario for g in self.groups))

    @property
    def catalog_dates(self) -> list[str]:
        return sorted({r.cost.catalog_date for r in self.runs if r.cost and r.cost.catalog_date})

    @property
    def machine(self) -> dict[str, Any] | None:
        return next((r.machine for r in self.runs if r.machine), None)

    def group_of(self, run: RunReport) -> ConfigGroup:
        return next(g for g in self.groups if g.key == run.config_key)


# --------------------------------------------------------------------------------- loading


def load_experiment(directory: str | os.PathLike, *, catalog: Any = None, price_entry: str | None = None,
                    include_partial: bool = False, min_sr: float = DEFAULT_MIN_SR,
                    max_bins: int = DEFAULT_MAX_BINS, slo_p95_ms: float | None = None) -> Experiment:
    """Read and summarise every run under ``directory``.

    ``price_entry`` prices the runs whose config names none; ``catalog`` (a
    :class:`~servelab.billing.catalog.Catalog`) defaults to the shipped one. Unfinished runs
    (no ``DONE`` and a ``run.json`` that does not say ``completed``) are left out unless
    ``include_partial``. ``slo_p95_ms`` is the p95 objective the headline checks; by default the
    experiment's own ``slo_p95_ms`` (plan.json), else none. Raises :class:`ConfigError` when there
    is nothing to report.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such experiment directory (give the --out DIR of `servelab run`)")
    if not 0.0 <= min_sr <= 1.0:
        raise ConfigError(f"min_sr must be between 0 and 1, got {min_sr}")
    if max_bins < 1:
        raise ConfigError(f"max_bins must be at least 1, got {max_bins}")
    if slo_p95_ms is not None and not slo_p95_ms > 0:
        raise ConfigError(f"the p95 objective must be a positive number of ms, got {slo_p95_ms}")
    warnings: list[str] = []
    plan = _read_plan(root, warnings)
    plan_configs = {str(r["run_id"]): _plan_config(r) for r in plan.get("runs", [])
                    if isinstance(r, Mapping) and "run_id" in r}
    run_dirs = _run_dirs(root)
    priced = _read_summary_costs(root, warnings)
    order = [*plan_configs, *sorted(set(run_dirs) - set(plan_configs))]

    runs: list[RunReport] = []
    skipped: list[Skipped] = []
    for run_id in order:
        path = run_dirs.get(run_id)
        if path is None:
            skipped.append(Skipped(run_id, "planned, not started (no run directory)"))
            continue
        try:
            report, table = _load_one(run_id, path, plan_configs.get(run_id, {}),
                                      include_partial=include_partial, max_bins=max_bins)
        except _Skip as s:
            skipped.append(Skipped(run_id, str(s)))
            continue
        if run_id in priced:
            report.cost = priced[run_id]
        else:
            if catalog is None and (report.config.get("price_entry") or price_entry):
                catalog = _load_catalog()
            report.cost = _price(report, table, catalog, price_entry)
        del table  # keep only the summary of a run in memory, whatever its size
        runs.append(report)

    if not runs:
        raise ConfigError(_nothing_to_report(root, plan_configs, run_dirs, skipped))
    if not any(r.cost for r in runs):
        warnings.append("no run has a price: give runs a `price_entry` in the experiment, or pass "
                        "--price-entry ID (`servelab cost catalog` lists them); the cost figure is left out")
    groups = _group(runs, min_sr)
    experiment = plan.get("experiment")
    name = str(plan.get("name") or (experiment.get("name") if isinstance(experiment, dict) else None)
               or root.resolve().name)
    single = sum(1 for g in groups if len(g.runs) == 1)
    if single:
        warnings.append(f"{single} of {len(groups)} configuration(s) ran once: their intervals are request-level "
                        "only and cannot show run-to-run variation (set repetitions: 3 or more)")
    if slo_p95_ms is None and isinstance(experiment, dict) and experiment.get("slo_p95_ms"):
        slo_p95_ms = _float(experiment["slo_p95_ms"])
    return Experiment(name=name, directory=root, runs=runs, groups=groups, skipped=skipped,
                      warnings=warnings, min_sr=min_sr,
                      generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), slo_p95_ms=slo_p95_ms)


class _Skip(Exception):
    """A run the report leaves out, with the reason shown to the reader."""


def _read_json(path: Path, warnings: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.append(f"{path}: unreadable ({e}); ignored")
        return None


def _read_plan(root: Path, warnings: list[str]) -> dict[str, Any]:
    path = root / PLAN_FILE
    if not path.is_file():
        return {}
    doc = _read_json(path, warnings)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs", []), list):
        if doc is not None:
            warnings.append(f"{path}: expected {{'name', 'runs': [...]}}; ignored")
        return {}
    return doc


def _plan_config(entry: Mapping[str, Any]) -> dict[str, Any]:
    inner = entry.get("config")
    return dict(inner) if isinstance(inner, Mapping) else {k: v for k, v in entry.items() if k != "run_id"}


def _is_run_dir(p: Path) -> bool:
    markers = ("run.json", "records", CONFIG_FILE, DONE_FILE, SKIPPED_FILE, FAILED_FILE)
    return p.is_dir() and any((p / m).exists() for m in markers)


def _run_dirs(root: Path) -> dict[str, Path]:
    """run id → run directory. ``DIR/runs/*``; else ``DIR/*`` (loose runs); else DIR itself.
    Attempts the executor moved aside (``<run_id>.partial-N``) are not runs of the experiment."""
    if (root / "records").is_dir() and not (root / RUNS_DIR).is_dir():
        return {root.resolve().name: root}
    base = root / RUNS_DIR if (root / RUNS_DIR).is_dir() else root
    return {p.name: p for p in sorted(base.iterdir()) if _is_run_dir(p) and not PARTIAL_ATTEMPT.search(p.name)}


def _read_summary_costs(root: Path, warnings: list[str]) -> dict[str, RunCost]:
    """Prices the executor recorded in summary.json (a ``cost`` object per line), by run id."""
    path = root / SUMMARY_FILE
    if not path.is_file():
        return {}
    out: dict[str, RunCost] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        warnings.append(f"{path}: unreadable ({e}); prices computed from the records")
        return {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            warnings.append(f"{path}:{i}: not JSON; line ignored")
            continue
        cost = doc.get("cost") if isinstance(doc, dict) else None
        if isinstance(cost, dict) and doc.get("run_id") is not None and cost.get("entry_id"):
            per_m = cost.get("per_million_usd")
            out[str(doc["run_id"])] = RunCost(
                entry_id=str(cost["entry_id"]), catalog_date=str(cost.get("catalog_date") or ""),
                total_usd=_float(cost.get("total_usd")), per_million_usd=_float(per_m),
                source="summary.json", notes=tuple(str(n) for n in cost.get("notes") or ()))
    return out


def _run_config(path: Path, planned: dict[str, Any], run_meta: dict[str, Any],
                notes: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run's config (config.json > plan.json > run.json's config) and its machine."""
    config: dict[str, Any] = dict(run_meta.get("config") or {})
    config.update(planned)
    machine = None
    cfg_path = path / CONFIG_FILE
    if cfg_path.is_file():
        doc = _read_json(cfg_path, notes)
        if isinstance(doc, dict):
            machine = doc.get("machine") if isinstance(doc.get("machine"), dict) else None
            inner = doc.get("config") if isinstance(doc.get("config"), dict) else doc.get("run")
            config.update(inner if isinstance(inner, dict)
                          else {k: v for k, v in doc.items() if k not in _CONFIG_SECTIONS})
    elif not planned:
        notes.append("no config.json and not in plan.json: configuration taken from run.json"
                     if run_meta.get("config") else "no configuration found (no config.json, plan.json "
                     "entry or run.json): grouped with other such runs")
    return config, machine


def _load_one(run_id: str, path: Path, planned: dict[str, Any], *, include_partial: bool,
              max_bins: int) -> tuple[RunReport, pa.Table]:
    from servelab.analysis.timeseries import per_second

    notes: list[str] = []
    for marker, what in ((SKIPPED_FILE, "skipped"), (FAILED_FILE, "failed")):
        if (path / marker).is_file() and not (path / DONE_FILE).exists():
            reason = _first_line(path / marker)
            raise _Skip(f"{what}: {reason}" if reason else what)
    status = None
    if (path / "run.json").is_file():
        meta = _read_json(path / "run.json", notes)
        status = meta.get("status") if isinstance(meta, dict) else None
    finished = (path / DONE_FILE).exists() or status == "completed"
    if not finished and not include_partial:
        said = f"run.json says {status!r}" if status else "no run.json status"
        raise _Skip(f"not finished (no DONE, {said}); --partial includes what it measured")
    try:
        loaded = load_run(path)
    except (ServelabError, OSError, pa.ArrowException) as e:
        raise _Skip(f"records unreadable or missing: {e}") from None
    if loaded.table.num_rows == 0:
        raise _Skip("no records")
    config, machine = _run_config(path, planned, loaded.meta, notes)
    if not finished:
        notes.append("partial: the run did not finish")
    summary = summarize_run(loaded)
    table = loaded.table
    bin_s = _bin_width(summary.window_s, table, max_bins)
    report = RunReport(
        run_id=run_id, path=path, config=config, finished=finished, summary=summary,
        series=per_second(table, bin_s=bin_s), bin_s=bin_s,
        latency_quantiles_ms=_latency_quantiles(table), cold_parts=_cold_parts(table),
        config_key=config_key(config), machine=machine, notes=notes,
    )
    return report, table


def _first_line(path: Path) -> str:
    try:
        return path.read_text().strip().splitlines()[0][:300]
    except (OSError, IndexError):
        return ""


def _bin_width(window_s: float, table: pa.Table, max_bins: int) -> float:
    """1 s, or the smallest 1-2-5 × 10^k seconds that keeps a run within ``max_bins`` bins."""
    completed = column(table, "completed_s")
    span = max(window_s, float(np.nanmax(completed)) if np.isfinite(completed).any() else 0.0)
    if span <= max_bins:
        return 1.0
    need = span / max_bins
    exp = 10 ** math.floor(math.log10(need))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= need)


def _latency_quantiles(table: pa.Table) -> np.ndarray:
    latency = column(table, "latency_ms")[mask(table, "status", "ok")]
    latency = latency[np.isfinite(latency)]
    return np.quantile(latency, CDF_PROBS) if latency.size else np.empty(0)


def _cold_parts(table: pa.Table) -> dict[str, tuple[float, int]]:
    cold = mask(table, "cold", True)
    out = {}
    for part in INIT_PARTS:
        values = column(table, part)[cold]
        values = values[np.isfinite(values)]
        out[part] = (float(values.sum()), int(values.size))
    return out


def _load_catalog() -> Any:
    from servelab.billing.catalog import load_catalog

    return load_catalog()


def _price(run: RunReport, table: pa.Table, catalog: Any, default_entry: str | None) -> RunCost | None:
    """Price the run's records as its config's ``price_entry`` (or ``default_entry``)."""
    from servelab.billing.catalog import InstanceHourEntry, ServerlessEntry
    from servelab.billing.pricing import price_run

    entry_id = run.config.get("price_entry") or default_entry
    if not entry_id:
        run.notes.append("not priced: its config has no price_entry")
        return None
    try:
        entry = catalog.get(str(entry_id))
        kwargs: dict[str, Any] = {}
        if isinstance(entry, ServerlessEntry):
            if table.column("memory_mb").null_count == table.num_rows and run.config.get("memory_mb"):
                kwargs["memory_mb"] = int(run.config["memory_mb"])
            if entry.provisioned is not None:
                kwargs["provisioned_instances"] = int(run.config.get("provisioned") or 0)
        elif isinstance(entry, InstanceHourEntry):
            kwargs["instances"] = _instances(run)
        cost = price_run(table, entry.id, catalog=catalog, **kwargs)
    except (ServelabError, ValueError, TypeError) as e:
        run.notes.append(f"not priced as {entry_id}: {e}")
        return None
    notes = cost.notes
    if isinstance(entry, InstanceHourEntry):
        notes = (*notes, f"priced as {kwargs['instances']} instance(s): the config's 'instances', else its "
                 "target's 'machines', else (managed) the most instances that served it, else 1")
    return RunCost(entry_id=cost.entry_id, catalog_date=cost.catalog_date, total_usd=cost.total_usd,
                   per_million_usd=cost.per_million_usd, source="records", notes=notes)


def _instances(run: RunReport) -> int:
    """Instances an instance-hour entry bills, as the executor decides it (bench/targets.py)."""
    settings = run.config.get("target_settings")
    settings = settings if isinstance(settings, Mapping) else {}
    explicit = run.config.get("instances") or settings.get("machines")
    if explicit:
        return int(explicit)
    if run.config.get("kind") == "managed":
        return max(int(settings.get("min_instances") or 0), run.summary.instances, 1)
    return 1


def _nothing_to_report(root: Path, planned: Mapping[str, Any], run_dirs: Mapping[str, Path],
                       skipped: list[Skipped]) -> str:
    if not run_dirs:
        where = root / RUNS_DIR
        planned_note = f"; plan.json lists {len(planned)} run(s), none started" if planned else ""
        return (f"{root}: no runs to report: expected {where}/<run_id>/ with records/ (written by "
                f"`servelab run EXP.yaml --out {root}`){planned_note}")
    reasons = "; ".join(f"{s.run_id}: {s.reason}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"{root}: no run to report — {reasons}{more}"


# ------------------------------------------------------------------------ configurations


def _canon(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def config_key(config: Mapping[str, Any]) -> str:
    """What identifies a configuration: the config less repetition, seed and machine facts."""
    return _canon({k: config[k] for k in sorted(config) if k not in NOT_CONFIGURATION})


def _label_part(key: str, value: Any) -> str:
    if isinstance(value, Mapping) and key == "target":
        value = value.get("kind") or value.get("name") or _canon(value)
    text = _canon(value)
    if len(text) > 40:
        text = text[:39] + "…"
    if key in _LABEL_FORMATS:
        return _LABEL_FORMATS[key].format(text)
    return text if key in AXES else f"{key}={text}"


def config_labels(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Short labels naming only what tells the configurations apart, axes first.

    A key is named when it splits configurations the keys before it left together; so a key
    that follows another (``kind`` and ``price_entry`` follow ``target``, ``workload_spec``
    follows ``workload``) or that never varies is left out. An axis that does not apply to a
    configuration (``None``) is left out of its label.
    """
    configs = list(configs)
    keys = {k for c in configs for k in c if k not in NOT_CONFIGURATION}
    ordered = [k for k in AXES if k in keys] + sorted(k for k in keys if k not in AXES)
    classes: list[tuple[str, ...]] = [() for _ in configs]
    chosen: list[str] = []
    for k in ordered:
        refined = [(*cls, _canon(c.get(k))) for cls, c in zip(classes, configs, strict=True)]
        if len(set(refined)) > len(set(classes)):
            chosen.append(k)
            classes = refined
    if not chosen:  # one configuration: name it by what it is
        chosen = [k for k in ("target", "model") if any(k in c for c in configs)]
    labels = [" · ".join(_label_part(k, c[k]) for k in chosen if c.get(k) is not None) for c in configs]
    return [label or "all runs" for label in labels]


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats: at most as large in both and smaller in one.

    NaN points are never on the front. O(n²) memory in the number of configurations (small).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    xo, yo = x[ok], y[ok]
    le = (xo[None, :] <= xo[:, None]) & (yo[None, :] <= yo[:, None])
    lt = (xo[None, :] < xo[:, None]) | (yo[None, :] < yo[:, None])
    out = np.zeros(x.shape, dtype=bool)
    out[ok] = ~(le & lt).any(axis=1)
    return out


def _group(runs: list[RunReport], min_sr: float) -> list[ConfigGroup]:
    by_key: dict[str, list[RunReport]] = {}
    for r in runs:
        by_key.setdefault(r.config_key, []).append(r)
    firsts = [members[0].config for members in by_key.values()]
    groups = [ConfigGroup(key=k, label=label, runs=members)
              for (k, members), label in zip(by_key.items(), config_labels(firsts), strict=True)]
    for g, scenario in zip(groups, scenario_labels(firsts), strict=True):
        g.eligible = bool(g.success_ratio >= min_sr)
        g.scenario = scenario
        g.intervals = _intervals(g)
    for scenario in dict.fromkeys(g.scenario for g in groups):  # a front per scenario, never across loads
        eligible = [g for g in groups if g.eligible and g.scenario == scenario]
        front = pareto_front(np.array([g.p95_ms for g in eligible]),
                             np.array([g.per_million_usd for g in eligible]))
        for g, on in zip(eligible, front, strict=True):
            g.on_front = bool(on)
    return groups


def _intervals(group: ConfigGroup) -> GroupIntervals:
    """Bootstrap CIs for a configuration, seeded by its key so a report is reproducible."""
    import zlib

    samples = [RunSample(latency_quantiles_ms=r.latency_quantiles_ms, probs=CDF_PROBS,
                         ok=r.summary.by_status.get("ok", 0), count=r.summary.count,
                         total_usd=r.cost.total_usd if r.cost else math.nan) for r in group.runs]
    return group_intervals(samples, seed=zlib.crc32(group.key.encode()))


def scenario_labels(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Per configuration, the load it faced, named by the :data:`SCENARIO_KEYS` that vary
    (``"bursty"``, ``"bursty · mobilenetv2"``); all ``""`` when every configuration shares one."""
    configs = list(configs)
    keys = [k for k in SCENARIO_KEYS if len({_canon(c.get(k)) for c in configs}) > 1]
    if not keys:
        return ["" for _ in configs]
    # workload_spec and duration_s only when the workload label alone does not tell them apart
    shown = [k for k in ("workload", "model") if k in keys] or keys
    full = [tuple(_canon(c.get(k)) for k in keys) for c in configs]
    short = [tuple(_canon(c.get(k)) for k in shown) for c in configs]
    if len(set(short)) < len(set(full)):
        shown = keys
    return [" · ".join(_label_part(k, c.get(k)) for k in shown if c.get(k) is not None) for c in configs]


# ---------------------------------------------------------------------------------- helpers


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _get(d: Mapping[str, float] | None, key: str) -> float:
    return float(d[key]) if d and d.get(key) is not None else math.nan


def _median(values: Iterable[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.median(v)) if v else math.nan


# ---------------------------------------------------------------------------------- writing


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote, and the experiment it summarised."""

    html: Path
    markdown: Path
    figures: dict[str, Path]
    summary_md: str  # the markdown text (also in ``markdown``), for printing
    experiment: Experiment


def write_report(directory: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                 **load_kwargs: Any) -> ReportFiles:
    """Load ``directory`` (see :func:`load_experiment` for ``load_kwargs``) and write the report:
    ``report.html`` (self-contained), ``summary.md`` and one PNG per figure, in ``out_dir``
    (default ``DIR/report/``)."""
    from servelab.analysis.report_figures import figure_file_name, group_colors, render_figures
    from servelab.analysis.report_render import render_html, render_markdown

    exp = load_experiment(directory, **load_kwargs)
    out = Path(out_dir) if out_dir is not None else Path(directory) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    figures = render_figures(exp)
    names = {name: figure_file_name(name) for name in figures}
    for stale in out.glob("timeline-*.png"):  # runs left out since the last report
        if stale.name not in names.values():
            stale.unlink()
    paths = {}
    for name, png in figures.items():
        paths[name] = out / names[name]
        _write_atomic(paths[name], png)
    html_path = out / "report.html"
    _write_atomic(html_path, render_html(exp, figures, group_colors(exp.groups), names).encode())
    md_path = out / "summary.md"
    md = render_markdown(exp, {"html": str(html_path), **{k: str(p) for k, p in paths.items()}})
    _write_atomic(md_path, md.encode())
    return ReportFiles(html=html_path, markdown=md_path, figures=paths, summary_md=md, experiment=exp)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write then rename, so a reader (a browser reloading the report) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
