"""``servelab models`` sub-commands: the zoo (build, list, info), the store (push, pull, ls, rm)
and runtime benchmarks (bench)."""

from __future__ import annotations

import typer

from servelab.models.store_cli import register as register_store
from servelab.runtimes.bench_cli import register as register_bench

app = typer.Typer(help="Build models from code, inspect them, store them, benchmark them.",
                  no_args_is_help=True)
register_store(app)
register_bench(app)
