"""``servelab models`` sub-commands: the zoo (build, list, info), the store (push, pull, ls, rm)
and runtime benchmarks (bench).

Only typer and rich at import time; onnx, numpy and torch load when a command runs. Library
errors (unknown model, bad weights, not an ONNX file) propagate as ServelabError, which
:func:`servelab.cli.main` prints and turns into exit code 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servelab.models.store_cli import register as register_store
from servelab.runtimes.bench_cli import register as register_bench
from servelab.tables import CSV_OPT, JSON_OPT, output_format, print_table

app = typer.Typer(help="Build models from code, inspect them, store them, benchmark them.",
                  no_args_is_help=True)


@app.command("build")
def build_cmd(
    name: str = typer.Argument(..., help="Zoo model name (see `servelab models list`)."),
    out: Path = typer.Option(Path("models"), "--out", help="Directory to write NAME.onnx into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    weights: Path | None = typer.Option(None, "--weights", show_default=False,
                                 help="State dict (.safetensors, .pt, .pth) to use instead of "
                                      "seeded weights; .pt files are loaded with weights_only=True."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical build exists."),
) -> None:
    """Build a zoo model into OUT/NAME.onnx (reused if already built with the same seed/weights)."""
    from servelab.models import zoo
    from servelab.models.onnx_info import inspect_model

    console = Console()
    entry = zoo.get_entry(name)  # unknown names fail before the spinner starts
    reused = not force and zoo.cached_path(name, out, seed=seed, weights=weights) is not None
    started = time.perf_counter()
    with console.status(f"Building [bold]{entry.name}[/] (seed {seed})…", spinner="dots"):
        path = zoo.build(name, out, seed=seed, weights=weights, force=force)
    elapsed_s = time.perf_counter() - started
    info = inspect_model(path)
    how = "reused existing build" if reused else f"built in {elapsed_s:.1f} s"
    console.print(f"{path}  {info.file_size_bytes / 1e6:.1f} MB  {info.parameter_count:,} params  {how}",
                  highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(as_json: bool = JSON_OPT, as_csv: bool = CSV_OPT) -> None:
    """List the models the zoo can build."""
    from servelab.models import zoo

    table = Table(title="servelab model zoo")
    for col in ("name", "family", "torch", "inputs", "description"):
        table.add_column(col, overflow="fold")
    for e in zoo.list_models():
        table.add_row(e.name, e.family, "yes" if e.needs_torch else "no", escape(e.input_summary),
                      escape(e.description))
    print_table(table, output_format(as_json, as_csv), console=Console())


@app.command("info")
def info_cmd(
    path: Path = typer.Argument(..., help="An ONNX file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show an ONNX file's inputs, outputs, size, parameter count, opset and metadata."""
    from servelab.models.onnx_info import inspect_model

    info = inspect_model(path)  # InvalidModelError for anything that is not a usable ONNX model
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
        return
    console = Console()
    facts = Table.grid(padding=(0, 2))
    for key, value in (
        ("file", str(info.path)),
        ("size", f"{info.file_size_bytes / 1e6:.2f} MB ({info.file_size_bytes:,} bytes)"),
        ("parameters", f"{info.parameter_count:,} in {info.initializer_count} initializers"),
        ("opset", str(info.opset)),
        ("producer", info.producer or "-"),
        *((k, v) for k, v in info.metadata.items()),
    ):
        facts.add_row(f"[bold]{escape(key)}[/]", escape(value))
    console.print(facts)
    tensors = Table()
    for col in ("", "name", "shape", "dtype"):
        tensors.add_column(col)
    for kind, specs in (("input", info.inputs), ("output", info.outputs)):
        for s in specs:
            shape = "[" + ", ".join(str(d) for d in s.shape) + "]"
            tensors.add_row(kind, escape(s.name), escape(shape), s.dtype)
    console.print(tensors)


register_store(app)
register_bench(app)
