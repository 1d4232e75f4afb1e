"""``servelab cost`` sub-commands: the price catalog and run costs."""

from __future__ import annotations

import typer

app = typer.Typer(help="(not yet built)", no_args_is_help=True)
