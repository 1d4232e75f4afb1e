"""``servelab platform up/info``, ``deploy``, ``invoke``, ``functions ls/rm``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
