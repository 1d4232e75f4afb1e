"""``servelab models push/pull/ls/rm``: the model store from the command line."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
