"""``servelab models bench``: latency and throughput of a model on a runtime."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
