"""The report's two texts: a self-contained HTML page and a markdown summary.

The HTML has no external reference at all (figures are ``data:image/png;base64`` URIs, the CSS
is inline, no script), so it opens offline, survives being mailed, and prints. Every string
that comes from a run (ids, configs, notes) is escaped.

Numbers are formatted once, here, for both texts: latencies in ms with 2 decimals below 10 ms,
1 below 1 s, none above; the success ratio as a percentage rounded *down* (a run that lost one
request in 100,000 reads 99.99 %, never 100.00 %); money in USD.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import math
from string import Template
from typing import TYPE_CHECKING, Any

from servelab import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping

    from servelab.analysis.report import ConfigGroup, Experiment, RunReport

# Captions: how to read each figure. Kept next to the renderer so the HTML and docs/report.md
# can say the same thing.
HOW_CDF = (
    "Each line is one configuration, its repetitions pooled. A point (x, y) on the left says a "
    "fraction y of the successful requests completed within x ms of their scheduled time: lines "
    "further left are faster, and a line that bends right near the top has a long tail. The right "
    "panel magnifies that tail: the fraction of requests slower than x, on a log scale (0.01 is the "
    "slowest 1 %; the line stops where one request is left). Failed requests are not in these "
    "curves; the SR column counts them.")
HOW_COST = (
    "Each point is one configuration: the median over its repetitions of the p95 latency (x) and of "
    "the cost per million requests (y), priced with the catalog entry named in the table. Stars "
    "joined by the dashed staircase are the Pareto front: for each of them no other configuration "
    "is both cheaper and faster. Hollow points succeeded on fewer than {min_sr} of requests and "
    "cannot be on the front. Lower left is better. Configurations that faced different loads "
    "(workloads or models) are drawn in separate panels, each with its own front: a cheap calm "
    "run does not beat a bursty one.")
HOW_COLD = (
    "For each configuration, the mean time a cold start took, split into the parts the instance "
    "reported: process start, imports, model fetch from the store and model load into the runtime; "
    "grey is the part of init no part accounts for. The label gives the mean total and how many "
    "cold starts it averages.")
HOW_BREAKEVEN = (
    "Each line is what one way of serving this model would cost per million requests at a steady "
    "average rate (x), computed from the service time the experiment measured for it and its price "
    "entry: serverless bills per request (flat; warm requests only, no cold-start init), a server "
    "bills its machines per hour whether busy or not (falling as 1/rate, ending at its capacity), a "
    "managed endpoint adds instances at 70% utilisation (steps). Dotted lines mark where two lines "
    "cross: the break-even rates. Black points are the configurations as measured (their offered "
    "rate and cost). `servelab cost breakeven` draws the same from a profile.")
HOW_TIMELINE = (
    "Top: p50 and p99 latency of the successful requests, by the second they were scheduled in. "
    "Middle: distinct instances that completed requests in that second (green) and requests that "
    "waited for an instance's cold start (red bars); an instance started for a request that another "
    "instance then served adds to the green line without a red bar. Bottom: the arrival rate the "
    "workload asked for (grey bars) and the rate of ok (blue) and failed (red) completions. A "
    "latency peak that lines up with cold starts or a burst of arrivals shows where the time went.")

SUMMARY_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("run", False), ("configuration", False), ("requests", True), ("SR", True), ("mean ms", True),
    ("p50 ms", True), ("p95 ms", True), ("p99 ms", True), ("cold starts", True),
    ("USD per 1M req", True), ("price entry", False),
)


# ------------------------------------------------------------------------------ formatting


def fmt_ms(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if abs(x) < 10:
        return f"{x:.2f}"
    return f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}"


def fmt_sr(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{math.floor(x * 10000 + 1e-9) / 100:.2f}%"


def fmt_usd(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.2e}"


def fmt_int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def fmt_ci(iv: Any, fmt: Any) -> str:
    """``point [low–high]`` of a :class:`~servelab.analysis.stats.Interval` (``-`` when unknown)."""
    if iv is None or not iv.known:
        return "-"
    return f"{fmt(iv.point)} [{fmt(iv.low)}–{fmt(iv.high)}]"


def group_ranks(exp: Experiment) -> dict[str, tuple[str, str]]:
    """Per configuration key: its rank by p95 and by cost within its scenario, ``tie (n)`` where
    its interval overlaps another's (servelab.analysis.stats.rank)."""
    from servelab.analysis.stats import Interval, rank

    out: dict[str, tuple[str, str]] = {}
    for scenario in exp.scenarios:
        groups = [g for g in exp.groups if g.scenario == scenario and g.eligible and g.intervals]
        by_p95 = {r.name: r.text for r in rank([(g.key, g.intervals.latency_ms.get(95, Interval.unknown()))
                                                 for g in groups if g.intervals])}
        by_cost = {r.name: r.text for r in rank([(g.key, g.intervals.per_million_usd)
                                                  for g in groups if g.intervals])}
        for g in groups:
            out[g.key] = (by_p95.get(g.key, "-"), by_cost.get(g.key, "-"))
    return out


GROUP_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("configuration", False), ("runs", True), ("requests", True), ("SR [95% CI]", True),
    ("p50 ms [95% CI]", True), ("p95 ms [95% CI]", True), ("p99 ms [95% CI]", True),
    ("USD per 1M [95% CI]", True), ("rank p95", True), ("rank cost", True),
)


def group_row(g: ConfigGroup, ranks: Mapping[str, tuple[str, str]]) -> list[str]:
    """One configuration-table row: pooled estimates with their bootstrap intervals and ranks."""
    iv = g.intervals
    lat = iv.latency_ms if iv else {}
    rank_p95, rank_cost = ranks.get(g.key, ("-", "-") if g.eligible else ("SR too low", "SR too low"))
    return [g.label + (f" ({g.scenario})" if g.scenario else ""), fmt_int(len(g.runs)), fmt_int(g.requests),
            fmt_ci(iv.success_ratio if iv else None, fmt_sr), fmt_ci(lat.get(50), fmt_ms),
            fmt_ci(lat.get(95), fmt_ms), fmt_ci(lat.get(99), fmt_ms),
            fmt_ci(iv.per_million_usd if iv else None, fmt_usd), rank_p95, rank_cost]


HOW_RANK = (
    "Pooled over each configuration's repetitions, with 95% bootstrap intervals (runs resampled, then "
    "requests within them). Configurations are ranked within a load only where their intervals do "
    "not overlap; overlapping ones are a tie, shown as 'tie (n)'. One repetition gives request-level "
    "intervals only: they cannot show how much a whole run varies.")


def run_row(run: RunReport, group: ConfigGroup) -> list[str]:
    """One summary-table row as plain strings (shared by the HTML and the markdown)."""
    lat = run.summary.latency_ms or {}
    name = run.run_id + ("" if run.finished else " (partial)")
    return [
        name, group.label, fmt_int(run.summary.count), fmt_sr(run.summary.success_ratio),
        fmt_ms(lat.get("mean")), fmt_ms(lat.get("p50")), fmt_ms(lat.get("p95")), fmt_ms(lat.get("p99")),
        fmt_int(run.summary.cold_starts), fmt_usd(run.per_million_usd),
        run.cost.entry_id if run.cost else "-",
    ]


# -------------------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(exp: Experiment, files: Mapping[str, str]) -> str:
    """The terminal summary: the table, the Pareto front, what was left out, where the files are.

    ``files`` maps "html" and figure names to the paths to print.
    """
    lines = [f"# servelab report: {exp.name}", ""]
    lines += [f"**{h}**" for h in exp.headlines()]
    lines += ["", _subtitle(exp, markdown=True), ""]
    lines.append("| " + " | ".join(c for c, _ in SUMMARY_COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for _, num in SUMMARY_COLUMNS) + "|")
    for run in exp.runs:
        lines.append("| " + " | ".join(_md_cell(c) for c in run_row(run, exp.group_of(run))) + " |")
    lines += ["", "Configurations (" + HOW_RANK + ")", ""]
    lines.append("| " + " | ".join(c for c, _ in GROUP_COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for _, num in GROUP_COLUMNS) + "|")
    ranks = group_ranks(exp)
    for g in exp.groups:
        lines.append("| " + " | ".join(_md_cell(c) for c in group_row(g, ranks)) + " |")
    lines.append("")
    front = exp.front
    if front:
        for scenario in dict.fromkeys(g.scenario for g in front):
            steps = "; ".join(f"**{g.label}** (p95 {fmt_ms(g.p95_ms)} ms, USD {fmt_usd(g.per_million_usd)} per 1M)"
                              for g in front if g.scenario == scenario)
            among = f", among runs of load {scenario}" if scenario else ""
            lines.append(f"Pareto front (cost per 1M requests vs p95, SR ≥ {exp.min_sr:.0%}{among}): {steps}.")
    elif any(math.isfinite(g.per_million_usd) for g in exp.groups):
        lines.append(f"Pareto front: empty — no priced configuration reached SR ≥ {exp.min_sr:.0%}.")
    bad = [g.label for g in exp.groups if not g.eligible]
    if bad:
        lines.append(f"SR below {exp.min_sr:.0%}: {', '.join(bad)}.")
    if exp.skipped:
        lines += ["", f"Left out ({len(exp.skipped)}):"]
        lines += [f"- {s.run_id}: {s.reason}" for s in exp.skipped]
    if exp.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in exp.warnings]
    if files:
        lines += ["", f"Report: {files.get('html', '-')}"]
        figs = [p for k, p in files.items() if k != "html"]
        if figs:
            lines.append(f"Figures ({len(figs)}): {_common_dir(figs)}")
    return "\n".join(lines) + "\n"


def _common_dir(paths: list[str]) -> str:
    import os.path

    return os.path.dirname(paths[0]) if len(paths) == 1 else os.path.commonpath(paths)


def _subtitle(exp: Experiment, *, markdown: bool) -> str:
    parts = [f"{len(exp.runs)} run(s) in {len(exp.groups)} configuration(s)",
             f"generated {exp.generated_at}"]
    if exp.catalog_dates:
        parts.append(f"prices: catalog {', '.join(exp.catalog_dates)}")
    where = f"`{exp.directory}`" if markdown else str(exp.directory)
    return f"{where} · " + " · ".join(parts)


# ------------------------------------------------------------------------------------ HTML


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _css_color(rgba: Any) -> str:
    r, g, b = (round(255 * c) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _summary_table(exp: Experiment, colors: Mapping[str, Any]) -> str:
    head = "".join(f'<th class="{"num" if num else ""}">{_e(c)}</th>' for c, num in SUMMARY_COLUMNS)
    rows = []
    for run in exp.runs:
        group = exp.group_of(run)
        cells = run_row(run, group)
        tds = []
        for (col, num), text in zip(SUMMARY_COLUMNS, cells, strict=True):
            cls = ["num"] if num else []
            if col == "SR":
                cls.append("sr")
            inner = _e(text)
            if col == "configuration":
                inner = (f'<span class="swatch" style="background:{_css_color(colors[group.key])}"></span>'
                         + inner + (' <span class="star" title="on the Pareto front">★</span>'
                                    if group.on_front else ""))
            if col == "run":
                inner = f'<a href="#run-{_e(run.run_id)}">{inner}</a>'
            tds.append(f'<td class="{" ".join(cls)}">{inner}</td>')
        tr_cls = " ".join(c for c, on in (("front", group.on_front), ("bad", not group.eligible)) if on)
        rows.append(f'<tr class="{tr_cls}">{"".join(tds)}</tr>')
    return (f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table></div>")


def _groups_table(exp: Experiment, colors: Mapping[str, Any]) -> str:
    head = "".join(f'<th class="{"num" if num else ""}">{_e(c)}</th>' for c, num in GROUP_COLUMNS)
    head += "<th>Pareto front</th>"
    ranks = group_ranks(exp)
    rows = []
    for g in sorted(exp.groups, key=lambda g: (not g.on_front, g.p95_ms if math.isfinite(g.p95_ms) else math.inf)):
        front = "★ yes" if g.on_front else ("no (SR too low)" if not g.eligible else "no")
        cells = group_row(g, ranks)
        tds = [f'<td><span class="swatch" style="background:{_css_color(colors[g.key])}"></span>{_e(cells[0])}</td>']
        tds += [f'<td class="num">{_e(c)}</td>' for c in cells[1:]]
        rows.append(f'<tr class="{"front" if g.on_front else ("bad" if not g.eligible else "")}">'
                    f'{"".join(tds)}<td>{front}</td></tr>')
    return (f'<p class="how">{_e(HOW_RANK)}</p><div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _figure(figures: Mapping[str, bytes], name: str, alt: str, file_name: str) -> str:
    return (f"<figure>{_img(figures[name], alt)}<figcaption>{_e(file_name)}</figcaption></figure>")


def _machine(exp: Experiment) -> str:
    m = exp.machine
    if not m:
        return ""
    parts = [f"{_e(k)}: {_e(v)}" for k, v in m.items() if isinstance(v, str | int | float | bool)]
    return f'<p class="meta">machine: {" · ".join(parts[:8])}</p>' if parts else ""


def _notes(exp: Experiment) -> str:
    out = []
    for run in exp.runs:
        notes = list(run.notes) + ([f"cost ({run.cost.source}): {n}" for n in run.cost.notes] if run.cost else [])
        if notes:
            items = "".join(f"<li>{_e(n)}</li>" for n in notes)
            out.append(f"<details><summary>{_e(run.run_id)}</summary><ul>{items}</ul></details>")
    return "".join(out)


def _configs(exp: Experiment) -> str:
    """Each configuration in full (less what differs between its repetitions), folded."""
    import json

    from servelab.analysis.run_keys import NOT_CONFIGURATION

    out = []
    for g in exp.groups:
        shown = {k: v for k, v in g.runs[0].config.items() if k not in NOT_CONFIGURATION}
        cfg = json.dumps(shown, indent=1, sort_keys=True, default=str)
        runs = ", ".join(r.run_id for r in g.runs)
        out.append(f"<details><summary>{_e(g.label)} — {_e(runs)}</summary>"
                   f"<pre><code>{_e(cfg)}</code></pre></details>")
    return "".join(out)


def render_html(exp: Experiment, figures: Mapping[str, bytes], colors: Mapping[str, Any],
                file_names: Mapping[str, str]) -> str:
    """The whole report as one HTML document (figures embedded)."""
    b: list[str] = [f"<h1>{_e(exp.name)}</h1>"]
    b += [f'<p class="headline"><strong>{_e(h)}</strong></p>' for h in exp.headlines()]
    b += [f'<p class="meta">{_e(_subtitle(exp, markdown=False))}</p>', _machine(exp)]
    b.append('<nav><a href="#summary">Summary</a><a href="#latency">Latency</a><a href="#cost">Cost</a>'
             '<a href="#cold">Cold starts</a><a href="#time">Over time</a><a href="#details">Details</a></nav>')
    if exp.warnings or exp.skipped:
        items = [f"<li>{_e(w)}</li>" for w in exp.warnings]
        items += [f"<li>left out <code>{_e(s.run_id)}</code>: {_e(s.reason)}</li>" for s in exp.skipped]
        b.append(f'<div class="warn"><strong>Read with care</strong><ul>{"".join(items)}</ul></div>')

    b.append('<h2 id="summary">Summary</h2>')
    b.append(f'<p class="how">One row per run. SR = ok requests / all requests. Latencies are of ok '
             f'requests, in ms from the scheduled time (so queueing counts). Cost is what the run would '
             f'cost per million requests as the named price entry. ★ marks configurations on the cost '
             f'/ p95 Pareto front (among those with SR ≥ {exp.min_sr:.0%}).</p>')
    b.append(_summary_table(exp, colors))

    b.append('<h2 id="latency">Latency distribution</h2>')
    b.append(f'<p class="how">{_e(HOW_CDF)}</p>')
    b.append(_figure(figures, "latency_cdf", "latency CDF per configuration", file_names["latency_cdf"]))

    b.append('<h2 id="cost">Cost vs latency</h2>')
    if "cost_vs_p95" in figures:
        b.append(f'<p class="how">{_e(HOW_COST.format(min_sr=f"{exp.min_sr:.0%}"))}</p>')
        b.append(_figure(figures, "cost_vs_p95", "cost per million requests vs p95 latency",
                         file_names["cost_vs_p95"]))
    else:
        b.append('<p class="how">No run has a price, so there is no cost figure. Give the runs a '
                 '<code>price_entry</code> or pass <code>--price-entry ID</code>.</p>')
    b.append(_groups_table(exp, colors))
    if "breakeven" in figures:
        b.append('<h3 id="breakeven">Break-even: cost per 1M requests vs request rate</h3>')
        b.append(f'<p class="how">{_e(HOW_BREAKEVEN)}</p>')
        b.append(_figure(figures, "breakeven", "cost per million requests vs average request rate",
                         file_names["breakeven"]))

    b.append('<h2 id="cold">Cold starts</h2>')
    if "cold_starts" in figures:
        b.append(f'<p class="how">{_e(HOW_COLD)}</p>')
        b.append(_figure(figures, "cold_starts", "cold-start time by part", file_names["cold_starts"]))
    else:
        b.append('<p class="how">No request in any run hit a cold start.</p>')

    b.append('<h2 id="time">Over time</h2>')
    b.append(f'<p class="how">{_e(HOW_TIMELINE)}</p>')
    for run in exp.runs:
        name = f"timeline-{run.run_id}"
        b.append(f'<h3 id="run-{_e(run.run_id)}">{_e(run.run_id)} <span class="meta">'
                 f'{_e(exp.group_of(run).label)}</span></h3>')
        b.append(_figure(figures, name, f"latency, instances and arrival rate over time: {run.run_id}",
                         file_names[name]))

    b.append('<h2 id="details">Details</h2>')
    notes = _notes(exp)
    if notes:
        b.append("<h3>Notes per run (pricing assumptions, missing files)</h3>" + notes)
    b.append("<h3>Configurations</h3>" + _configs(exp))
    template = Template(importlib.resources.files("servelab.analysis").joinpath("report_template.html")
                        .read_text(encoding="utf-8"))
    return template.substitute(title=_e(f"servelab report: {exp.name}"), version=_e(__version__),
                               body="\n".join(x for x in b if x))
