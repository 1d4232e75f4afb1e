"""Tables for humans and machines: fit the terminal without cutting a number or an id, or print
the same rows as JSON or CSV.

Rich shrinks a table that is wider than the terminal by cutting cells to ``1,…``. A figure or an
id cut that way is worse than useless, so :func:`print_table` never lets Rich do it: every word
of every cell (a number, an id, a ref) keeps its full width, text with spaces wraps at the
spaces, and when the columns still do not fit, the table is split into several tables stacked
vertically, each repeating the key column(s) (the run / id / entry) so every row stays readable.

``--json`` and ``--csv`` print the rows of the same :class:`rich.table.Table` with its headers
as keys, numbers as numbers; commands that have richer data than their table may emit it
themselves instead.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import sys
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

OutputFormat = Literal["table", "json", "csv"]

JSON_OPT = typer.Option(False, "--json", help="Print the table's rows as JSON.")
CSV_OPT = typer.Option(False, "--csv", help="Print the table's rows as CSV.")

_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][+-]?\d+)?$")


def output_format(as_json: bool, as_csv: bool) -> OutputFormat:
    """The format chosen by a command's ``--json`` / ``--csv`` flags."""
    from servelab.errors import ConfigError

    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")
    return "json" if as_json else "csv" if as_csv else "table"


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # not valid markup: the text as it is
            return cell
    return str(cell)


def _value(text: str) -> Any:
    """A cell's text as JSON: numbers as numbers ("1,234" -> 1234), "" and "-" as null."""
    text = text.strip()
    if text in ("", "-", "—"):
        return None
    if _NUMBER.match(text):
        number = text.replace(",", "")
        return float(number) if any(c in number for c in ".eE") else int(number)
    return text


def table_rows(table: Table) -> list[dict[str, Any]]:
    """The rows of a Rich table as dicts keyed by the (plain) column headers."""
    headers = [" ".join(_plain(c.header).split()) or f"column{i}" for i, c in enumerate(table.columns)]
    cells = [list(c.cells) for c in table.columns]
    return [{h: _value(_plain(col[r])) for h, col in zip(headers, cells, strict=True)}
            for r in range(table.row_count)]


def _words_width(cell: Any) -> tuple[int, int]:
    """(longest word, whole cell) widths of a cell, in terminal cells."""
    lines = _plain(cell).splitlines() or [""]
    longest = max((Text(w).cell_len for line in lines for w in line.split()), default=0)
    return longest, max(Text(line).cell_len for line in lines)


def _groups(needs: list[int], pads: list[int], room: int, keys: int) -> list[list[int]]:
    """Column indexes per stacked table: the key columns first in each, then as many as fit."""
    key_cols = list(range(min(keys, len(needs))))
    key_width = sum(needs[i] + pads[i] for i in key_cols)
    groups: list[list[int]] = []
    current: list[int] = []
    used = key_width
    for i in range(len(key_cols), len(needs)):
        w = needs[i] + pads[i]
        if current and used + w > room:
            groups.append(key_cols + current)
            current, used = [], key_width
        current.append(i)
        used += w
    groups.append(key_cols + current)
    return groups


def fit_table(table: Table, width: int, *, keys: int = 1) -> list[Table]:
    """Split ``table`` into tables of at most ``width`` cells that cut no word of any cell."""
    columns = table.columns
    if not columns:
        return [table]
    measured = [[_words_width(c) for c in [col.header, *col.cells]] for col in columns]
    needs = [max(m[0] for m in ms) or 1 for ms in measured]
    naturals = [max(max(m[1] for m in ms), 1) for ms in measured]  # header on one line too
    pads = [table._get_padding_width(i) + (1 if table.box else 0)
            for i in range(len(columns))]
    room = width - (2 if table.box and table.show_edge else 0)
    key_width = sum(needs[i] + pads[i] for i in range(min(keys, len(needs))))
    # a single word longer than a whole line (a long path) folds onto the next line, whole
    needs = [n if i < keys else min(n, max(room - key_width - pads[i], 8)) for i, n in enumerate(needs)]
    groups = _groups(needs, pads, room, keys)
    tables = []
    for n, group in enumerate(groups):
        widths = {i: needs[i] for i in group}
        spare = room - sum(needs[i] + pads[i] for i in group)
        for i in group:  # give spare room to columns whose text would otherwise wrap
            extra = min(max(naturals[i] - needs[i], 0), max(spare, 0))
            widths[i] += extra
            spare -= extra
        part = copy.copy(table)
        part.columns = []
        for i in group:
            col: Column = copy.copy(columns[i])
            col._index = len(part.columns)
            col.width = widths[i]
            col.min_width = col.max_width = None
            col.no_wrap = False
            col.overflow = "fold"
            part.columns.append(col)
        if n:
            part.title = f"{_plain(table.title)} (continued)" if table.title else None
        if n < len(groups) - 1:
            part.caption = None
        tables.append(part)
    return tables


def print_table(table: Table, fmt: OutputFormat = "table", *, console: Console | None = None,
                keys: int = 1) -> None:
    """Print ``table`` as a table that fits the console (see :func:`fit_table`), JSON or CSV."""
    if fmt == "json":
        sys.stdout.write(json.dumps(table_rows(table), indent=2) + "\n")
        return
    if fmt == "csv":
        rows = table_rows(table)
        buf = io.StringIO()
        headers = [" ".join(_plain(c.header).split()) or f"column{i}" for i, c in enumerate(table.columns)]
        writer = csv.DictWriter(buf, fieldnames=headers, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
        return
    console = console or Console()
    for part in fit_table(table, console.width, keys=keys):
        console.print(part)
