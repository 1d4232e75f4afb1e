"""The report's figures as PNG bytes, drawn from an :class:`~servelab.analysis.report.Experiment`.

matplotlib is imported here and only here, when a report is drawn (``servelab --help`` stays
fast), and used through its object API (``Figure`` + the Agg canvas): no pyplot, so no global
figure state, no GUI backend to pick, and nothing to close.

Every figure takes already-summarised data (quantiles, per-bin series, sums), so drawing costs
the same for a run of a thousand requests as for one of a million.
"""

from __future__ import annotations

import io
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from servelab.errors import RuntimeNotAvailableError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from servelab.analysis.report import ConfigGroup, Experiment, RunReport

DPI = 100
WIDTH_IN = 10.0
STYLE: dict[str, Any] = {
    "font.size": 10.5, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.labelsize": 10.5,
    "legend.fontsize": 9.5, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "figure.facecolor": "white",
}
# Cold-start parts: (init field, legend label, colour). "other" is init_ms minus the parts.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("init_process_ms", "process start", "#4c72b0"),
    ("init_import_ms", "imports", "#dd8452"),
    ("init_fetch_ms", "model fetch", "#55a868"),
    ("init_load_ms", "model load", "#c44e52"),
)
OTHER_COLOR = "#b0b0b0"


def _mpl() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeNotAvailableError(
            "the report draws its figures with matplotlib, which is not installed: "
            "pip install 'servelab[plot]'") from None
    return matplotlib, Figure, FigureCanvasAgg


def figure_file_name(name: str) -> str:
    """A safe PNG file name for a figure name (run ids may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png"


def render_figures(exp: Experiment) -> dict[str, bytes]:
    """name → PNG bytes: ``latency_cdf``, ``cost_vs_p95`` (when any run is priced),
    ``cold_starts`` (when any run had one), and ``timeline-<run_id>`` per run."""
    matplotlib, _, _ = _mpl()
    colors = group_colors(exp.groups)
    out: dict[str, bytes] = {}
    with matplotlib.rc_context(STYLE):
        out["latency_cdf"] = _png(latency_cdf(exp.groups, colors))
        if any(math.isfinite(g.per_million_usd) for g in exp.groups):
            out["cost_vs_p95"] = _png(cost_vs_p95(exp, colors))
        if any(g.cold_starts for g in exp.groups):
            out["cold_starts"] = _png(cold_start_bars(exp.groups, colors))
        for run in exp.runs:
            out[f"timeline-{run.run_id}"] = _png(timeline(run, exp.group_of(run).label))
    be = breakeven_png(exp)
    if be is not None:
        out["breakeven"] = be
    return out


def breakeven_png(exp: Experiment) -> bytes | None:
    """Cost per 1M requests vs rate for the experiment's serverless / server / managed targets,
    from their measured function times and price entries (servelab.analysis.breakeven), with
    the measured configurations marked; None when fewer than two of those kinds were priced."""
    from servelab.analysis.breakeven import break_even, figure_png, offerings_from_experiment
    from servelab.errors import ServelabError

    offerings, marks, _ = offerings_from_experiment(exp)
    if not offerings:
        return None
    measured = [m[1] for m in marks if m[1] > 0]
    lo = min([0.01, *[r / 10 for r in measured]])
    hi = max([1000.0, *[r * 10 for r in measured]])
    try:
        result = break_even(offerings, np.logspace(np.log10(lo), np.log10(hi), 201))
    except ServelabError as e:
        exp.warnings.append(f"break-even figure left out: {e}")
        return None
    return figure_png(result, title="cost per 1M requests vs average rate (steady load, measured service times)",
                      marks=marks)


def group_colors(groups: list[ConfigGroup]) -> dict[str, Any]:
    """One colour per configuration, the same in every figure (tab10, tab20 beyond ten)."""
    matplotlib, _, _ = _mpl()
    cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {g.key: cmap(i % cmap.N) for i, g in enumerate(groups)}


def _new(height_in: float, **subplots: Any) -> tuple[Figure, Any]:
    _, figure_cls, canvas_cls = _mpl()
    fig = figure_cls(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    canvas_cls(fig)
    return fig, fig.subplots(**subplots)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _wide(values: np.ndarray, ratio: float = 20.0) -> bool:
    """Whether finite positive ``values`` span more than ``ratio``: then a log axis reads better."""
    v = values[np.isfinite(values) & (values > 0)]
    return bool(v.size and v.max() / v.min() > ratio)


def _log_axis(axis: Any) -> None:
    """Log scale with plain-number ticks at 1-2-5 steps (``20``, ``50``, ``100``, not ``10^2``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def _plain_fraction() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:.10g}")


def _footnote(fig: Figure, text: str) -> None:
    """Small grey text under the axes, with room kept for it by the layout."""
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.set(rect=(0, 0.045, 1, 0.955))  # type: ignore[call-arg]
    fig.text(0.01, 0.008, text, fontsize=8, color="0.35", ha="left", va="bottom")


def _legend(fig: Figure, ax: Axes, n: int, **kwargs: Any) -> None:
    """In the axes for a few entries, under the figure for many (so no line is hidden)."""
    if n <= 6:
        ax.legend(**kwargs)
    else:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2 if n <= 16 else 3)


# ------------------------------------------------------------------------------ latency CDF


def latency_cdf(groups: list[ConfigGroup], colors: dict[str, Any]) -> Figure:
    """Left: CDF of ok latencies per configuration. Right: the tail, fraction slower than x (log)."""
    n = len(groups)
    fig, (ax, tail) = _new(4.6 + (0.25 * math.ceil(n / 2) if n > 6 else 0), ncols=2,
                           gridspec_kw={"width_ratios": [3, 2]})
    all_x = []
    for g in groups:
        xs, cdf = g.latency_cdf()
        if not xs.size:
            continue
        all_x.append(xs)
        ok = sum(r.summary.by_status.get("ok", 0) for r in g.runs)
        ax.plot(xs, cdf, color=colors[g.key], lw=1.8, label=g.label)
        surv = 1.0 - cdf
        keep = surv >= 1.0 / max(ok, 1)  # beyond one request the tail is interpolation, not data
        tail.plot(xs[keep], surv[keep], color=colors[g.key], lw=1.8)
    if not all_x:
        ax.text(0.5, 0.5, "no successful request in any run", ha="center", va="center",
                transform=ax.transAxes)
    elif _wide(np.concatenate(all_x)):
        for a in (ax, tail):
            a.set_xscale("log")
            _log_axis(a.xaxis)
    for p, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        ax.axhline(p, color="0.4", lw=0.8, ls=":")
        ax.annotate(name, (1.0, p), xycoords=("axes fraction", "data"), xytext=(2, 0),
                    textcoords="offset points", va="center", fontsize=8.5, color="0.35")
    for p, name in ((0.05, "p95"), (0.01, "p99"), (0.001, "p99.9")):
        tail.axhline(p, color="0.4", lw=0.8, ls=":")
        tail.annotate(name, (1.0, p), xycoords=("axes fraction", "data"), xytext=(2, 0),
                      textcoords="offset points", va="center", fontsize=8.5, color="0.35")
    ax.set(title="Latency CDF per configuration", xlabel="latency of ok requests (ms)",
           ylabel="fraction of requests ≤ latency", ylim=(0, 1.01))
    tail.set_yscale("log")
    tail.yaxis.set_major_formatter(_plain_fraction())
    tail.set(title="Tail: fraction slower than x", xlabel="latency of ok requests (ms)",
             ylabel="fraction of requests > latency", ylim=(None, 1.05))
    if all_x:
        _legend(fig, ax, n, loc="lower right")
    return fig


# ---------------------------------------------------------------------------------- timeline


def _steps(t: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Step coordinates that also cover the last bin (``step(where="post")`` stops at its start)."""
    return np.append(t, t[-1] + width), np.append(y, y[-1])


def timeline(run: RunReport, label: str) -> Figure:
    """Latency p50/p99 per bin, instances and cold starts, and the arrival rate underneath."""
    fig, (lat, inst, rate) = _new(6.6, nrows=3, sharex=True,
                                  gridspec_kw={"height_ratios": [2.2, 1.2, 1.4]})
    ts = run.series.to_pydict()
    t = np.asarray(ts["t_s"], dtype=np.float64)
    width = run.bin_s
    per = "per s" if width == 1 else f"per {width:g} s"
    outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
    fig.suptitle(f"{run.run_id} — {label}", fontsize=12, fontweight="bold")
    if not t.size:
        lat.text(0.5, 0.5, "no records", ha="center", va="center", transform=lat.transAxes)
        return fig

    p50 = np.asarray(ts["latency_p50_ms"], dtype=np.float64)
    p99 = np.asarray(ts["latency_p99_ms"], dtype=np.float64)
    if np.isfinite(p50).any():
        mid = t + width / 2
        lat.plot(mid, p99, color="#c44e52", lw=1.4, marker=".", ms=3, label="p99")
        lat.plot(mid, p50, color="#4c72b0", lw=1.6, marker=".", ms=3, label="p50")
        if _wide(np.concatenate([p50, p99]), 50):
            lat.set_yscale("log")
            _log_axis(lat.yaxis)
        lat.legend(title=f"ok requests,\n{per}", **outside)
    else:
        lat.text(0.5, 0.5, "no successful request", ha="center", va="center", transform=lat.transAxes)
    lat.set(ylabel="latency (ms)")

    count = np.asarray(ts["instances"], dtype=np.float64)
    cold = np.asarray(ts["cold_starts"], dtype=np.float64)
    if cold.any():
        inst.bar(t, cold, width=width, align="edge", color="#c44e52", alpha=0.7,
                 label="requests that waited\nfor a cold start")
    inst.step(*_steps(t, count, width), where="post", color="#2f8f46", lw=2.0, label="instances serving")
    inst.set(ylabel=f"count {per}")
    inst.set_ylim(0, max(count.max(initial=0), cold.max(initial=0), 1) * 1.2)
    inst.yaxis.get_major_locator().set_params(integer=True)
    inst.legend(**outside)

    rate.bar(t, np.asarray(ts["arrival_rps"]), width=width, align="edge", color="0.82",
             label="arrivals (asked)")
    done = np.asarray(ts["ok"], dtype=np.float64) / width
    rate.step(*_steps(t, done, width), where="post", color="#27408b", lw=1.4, label="ok completions")
    bad = np.asarray(ts["not_ok"], dtype=np.float64) / width
    if bad.any():
        rate.step(*_steps(t, bad, width), where="post", color="#c44e52", lw=1.4, label="failed completions")
    rate.set(ylabel="requests/s", xlabel="time since run start (s)")
    rate.set_ylim(bottom=0)
    rate.legend(**outside)
    rate.set_xlim(t[0], t[-1] + width)
    return fig


# --------------------------------------------------------------------------- cost vs latency


def _axis_fraction(values: np.ndarray, log: bool) -> np.ndarray:
    """Where each value sits between the smallest and largest (0–1), on the axis's scale."""
    v = np.log10(values) if log else values
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)


def cost_vs_p95(exp: Experiment, colors: dict[str, Any]) -> Figure:
    """One point per configuration: cost per 1M requests against p95, the Pareto front joined.

    One panel per scenario (configurations that faced the same load): a front drawn across a
    calm and a bursty load would compare runs that did different work.
    """
    from matplotlib.lines import Line2D

    scenarios = [s for s in exp.scenarios if any(_priced(g) for g in exp.groups if g.scenario == s)]
    n = max(len(scenarios), 1)
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = _new(5.6 if n == 1 else 0.4 + 3.9 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(scenarios):
            ax.set_visible(False)
            continue
        groups = [g for g in exp.groups if g.scenario == scenarios[i] and _priced(g)]
        _cost_panel(ax, groups, colors, many=len(scenarios) > 1)
        if scenarios[i]:
            ax.set_title(f"load: {scenarios[i]}", fontsize=11)
    title = "Cost per million requests vs p95 latency (lower left is better)"
    if n > 1:
        title += " — one panel per load"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    handles = [
        Line2D([], [], marker="*", ms=13, ls="--", color="0.25", mfc="0.55", label="Pareto front"),
        Line2D([], [], marker="o", ms=8, ls="", color="0.3", mfc="0.55",
               label=f"configuration, SR ≥ {exp.min_sr:.0%}"),
    ]
    if any(not g.eligible and _priced(g) for g in exp.groups):
        handles.append(Line2D([], [], marker="o", ms=8, ls="", color="0.3", mfc="none",
                              label=f"SR < {exp.min_sr:.0%}: not eligible"))
    entries = sorted({r.cost.entry_id for r in exp.runs if r.cost})
    dates = ", ".join(exp.catalog_dates)
    note = (f"prices: {', '.join(entries[:4])}{' …' if len(entries) > 4 else ''}"
            + (f" (catalog {dates})" if dates else "") + "; one point = median of a configuration's runs")
    # the legend under the panels, the price note as its title: the layout keeps room for both
    leg = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False,
                     title=note, title_fontsize=8)
    leg.get_title().set_color("0.35")
    return fig


def _priced(g: ConfigGroup) -> bool:
    return math.isfinite(g.per_million_usd) and math.isfinite(g.p95_ms)


def _cost_panel(ax: Axes, groups: list[ConfigGroup], colors: dict[str, Any], *, many: bool) -> None:
    x = np.array([g.p95_ms for g in groups])
    y = np.array([g.per_million_usd for g in groups])
    for g in groups:
        face = colors[g.key] if g.eligible else "none"
        ax.scatter([g.p95_ms], [g.per_million_usd], s=220 if g.on_front else 70, facecolors=face,
                   edgecolors=colors[g.key], linewidths=1.8, zorder=3,
                   marker="*" if g.on_front else "o")
    front = sorted((g for g in groups if g.on_front), key=lambda g: g.p95_ms)
    if len(front) > 1:
        ax.step([g.p95_ms for g in front], [g.per_million_usd for g in front], where="post", color="0.25",
                lw=1.2, ls="--", zorder=2)
    log_x, log_y = _wide(x, 10), _wide(y, 10)
    if log_x:
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
    if log_y:
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
    labelled = set(id(g) for g in (groups if len(groups) <= 12 else front))
    fx = _axis_fraction(x, log_x) if groups else x
    for g, frac in zip(groups, fx, strict=True):
        if id(g) not in labelled:
            continue
        # the panel names the load already: the label need not repeat it
        text = g.label.replace(f" · {g.scenario}", "") if g.scenario else g.label
        right = frac > 0.6  # near the right edge: label below left of the point, clear of the front
        ax.annotate(text, (g.p95_ms, g.per_million_usd), xytext=(-9, -15) if right else (9, 6),
                    textcoords="offset points", ha="right" if right else "left", fontsize=9,
                    fontweight="bold" if g.on_front else "normal",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.margins(x=0.18, y=0.18)
    ax.set(xlabel="p95 latency of ok requests (ms)", ylabel="USD per 1M requests" if many
           else "cost per 1M requests (USD)")


# ----------------------------------------------------------------------------- cold starts


def cold_start_bars(groups: list[ConfigGroup], colors: dict[str, Any]) -> Figure:
    """Mean time per cold start by part, one horizontal stacked bar per configuration (every
    configuration gets a row, so "none" is visible too)."""
    shown = groups
    fig, ax = _new(1.9 + 0.55 * len(shown))
    y = np.arange(len(shown))[::-1]
    left = np.zeros(len(shown))
    means = [g.cold_part_means_ms() for g in shown]
    for part, name, color in PARTS:
        widths = np.nan_to_num(np.array([m[part] for m in means]))
        if widths.any():
            ax.barh(y, widths, left=left, color=color, label=name, height=0.62)
            left += widths
    total = np.array([m["init_ms"] for m in means])
    other = np.where(np.isfinite(total), total - left, 0.0)
    other = np.where(other > 0.005 * np.nanmax(np.append(total, 1.0)), other, 0.0)
    if other.any():
        ax.barh(y, other, left=left, color=OTHER_COLOR, label="rest of init (not split)", height=0.62)
    ends = left + other
    for yi, end, g, tot in zip(y, ends, shown, total, strict=True):
        shown_total = tot if math.isfinite(tot) else end
        text = f"{shown_total:,.0f} ms · {g.cold_starts:,} cold" if g.cold_starts else "no cold starts"
        ax.annotate(text, (end, yi), xytext=(5, 0), textcoords="offset points", va="center", fontsize=9,
                    color="0.1" if g.cold_starts else "0.45")
    ax.set_yticks(y, [g.label for g in shown])
    ax.set_xlim(0, max(ends.max(initial=0.0), 1.0) * 1.22)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set(title="Cold-start time by part (mean per cold start)", xlabel="time (ms)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    return fig
