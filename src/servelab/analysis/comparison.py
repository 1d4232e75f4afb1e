"""An experiment's configurations compared with intervals: what ``servelab run`` prints at the end
and writes to ``DIR/comparison.json``.

The same numbers as the report's configuration table (:mod:`servelab.analysis.report`, with
bootstrap intervals from :mod:`servelab.analysis.stats`): the headline per load, then per
configuration its pooled SR, p50/p95/p99 and cost per 1M requests with 95% intervals, and its
rank by p95 and by cost — a rank only where intervals separate, ``tie (n)`` otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table

from servelab.analysis.report import load_experiment
from servelab.analysis.report_render import GROUP_COLUMNS, group_ranks, group_row


def comparison(directory: str | os.PathLike[str], **load_kwargs: Any) -> dict[str, Any]:
    """The comparison of every configuration under ``directory`` (see :func:`load_experiment`)."""
    exp = load_experiment(directory, **load_kwargs)
    ranks = group_ranks(exp)
    groups = []
    for g in exp.groups:
        by_p95, by_cost = ranks.get(g.key, ("-", "-"))
        groups.append({"label": g.label, "scenario": g.scenario, "runs": [r.run_id for r in g.runs],
                       "requests": g.requests, "eligible": g.eligible,
                       "intervals": g.intervals.to_dict() if g.intervals else None,
                       "rank_p95": by_p95, "rank_cost": by_cost, "row": group_row(g, ranks)})
    return {"experiment": exp.name, "headlines": exp.headlines(), "slo_p95_ms": exp.slo_p95_ms,
            "min_sr": exp.min_sr, "groups": groups, "warnings": exp.warnings}


def comparison_table(doc: dict[str, Any]) -> Table:
    """The comparison as a rich table, the headlines as its caption."""
    t = Table(title="configurations (pooled repetitions, 95% bootstrap intervals; rank only where they separate)")
    for col, num in GROUP_COLUMNS:
        t.add_column(col, justify="right" if num else "left", overflow="fold")
    for g in doc["groups"]:
        t.add_row(*g["row"])
    t.caption = "\n".join(doc["headlines"])
    t.caption_justify = "left"
    return t
