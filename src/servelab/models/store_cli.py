"""``servelab models push/pull/ls/rm``: the model store from the command line.

Every command takes ``--store URL`` (a directory, ``file://`` or ``s3://bucket/prefix``;
default: ``$SERVELAB_STORE``, else the local store under ``$SERVELAB_HOME``) and
``--endpoint-url`` for S3-compatible servers. Errors are raised as ServelabError and turned into
a message and exit code 2 by :func:`servelab.cli.main`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import typer

from servelab.tables import CSV_OPT, JSON_OPT, output_format, print_table

STORE_ENV = "SERVELAB_STORE"

StoreOpt = typer.Option(
    None,
    "--store",
    envvar=STORE_ENV,
    help="Store URL: a directory, file:///path or s3://bucket/prefix "
    f"(default: ${STORE_ENV}, else $SERVELAB_HOME/store).",
    show_default=False,
)
EndpointOpt = typer.Option(
    None,
    "--endpoint-url",
    help="S3-compatible endpoint (MinIO, moto, …); boto3 also reads $AWS_ENDPOINT_URL.",
    show_default=False,
)


def _open(store: str | None, endpoint_url: str | None):  # -> ModelStore; imports kept lazy
    from servelab.config import default_home
    from servelab.models.store import open_store

    return open_store(store, home=default_home(), endpoint_url=endpoint_url)


def push(
    file: Path = typer.Argument(..., help="The ONNX file to store.", show_default=False),
    name: str = typer.Option(..., "--name", "-n", help="Model name (letters, digits, _ . -)."),
    validate: bool = typer.Option(True, help="Check that FILE is a loadable ONNX model first."),
    store: str = StoreOpt,
    endpoint_url: str = EndpointOpt,
) -> None:
    """Store FILE as a new version of NAME and print its ref (NAME@sha256:HEX)."""
    ref = _open(store, endpoint_url).put(name, file, validate=validate)
    typer.echo(ref)


def pull(
    ref: str = typer.Argument(..., help="NAME (newest version) or NAME@sha256:HEX.", show_default=False),
    out: Path = typer.Option(
        None, "--out", "-o", help="Where to write it (a file or a directory; default: ./NAME.onnx)."
    ),
    store: str = StoreOpt,
    endpoint_url: str = EndpointOpt,
) -> None:
    """Copy a stored model, after checking its sha256, to OUT; print the path written."""
    st = _open(store, endpoint_url)
    model = st.resolve(ref)
    verified = st.get(model.ref)  # pin the digest: a push in between must not change what we copy
    dest = out if out is not None else Path(f"{model.name}.onnx")
    if dest.is_dir():
        dest = dest / f"{model.name}.onnx"
    _copy_atomic(verified, dest)
    typer.echo(str(dest))


def ls(
    name: str = typer.Argument(None, help="Only this model's versions.", show_default=False),
    store: str = StoreOpt,
    endpoint_url: str = EndpointOpt,
    as_json: bool = JSON_OPT,
    as_csv: bool = CSV_OPT,
) -> None:
    """List stored models: name, digest, size, creation time; newest first within a name."""
    from rich.console import Console
    from rich.table import Table

    from servelab.models.store import SHORT_HEX

    fmt = output_format(as_json, as_csv)
    st = _open(store, endpoint_url)
    models = st.list(name)
    if fmt == "json":  # whole refs and exact sizes for machines
        typer.echo(json.dumps([{"name": m.name, "ref": f"{m.name}@sha256:{m.hex}", "size_bytes": m.size_bytes,
                                "created_at": m.created_at} for m in models], indent=2))
        return
    if not models:
        what = f"no versions of {name!r}" if name else "no models"
        typer.echo(f"{what} in {st.url}")
        return
    table = Table(title=st.url, title_justify="left")
    table.add_column("name")
    table.add_column("ref digest")
    table.add_column("size MB", justify="right")
    table.add_column("created (UTC)")
    for m in models:
        created = m.created_at.replace("T", " ")[:19]
        size_mb = m.size_bytes / 1e6
        size = f"{size_mb:,.2f}" if size_mb >= 0.01 else "<0.01"
        table.add_row(m.name, f"sha256:{m.hex[:SHORT_HEX]}", size, created)
    print_table(table, fmt, console=Console())


def rm(
    ref: str = typer.Argument(..., help="NAME@sha256:HEX for one version, or NAME for all of them.",
                              show_default=False),
    store: str = StoreOpt,
    endpoint_url: str = EndpointOpt,
) -> None:
    """Delete one version, or every version of a bare NAME; print each ref removed."""
    from servelab.models.store import parse_ref

    st = _open(store, endpoint_url)
    name, digest = parse_ref(ref)
    doomed = st.list(name) if digest is None else [st.resolve(ref)]
    st.delete(ref)
    for m in doomed:
        typer.echo(f"removed {m.ref}")


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy so that ``dest`` is either the old file or the whole new one, never half of it."""
    if dest.exists() and not dest.is_file():  # /dev/stdout, a FIFO: write through, never replace
        with open(dest, "wb") as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, 4 * 2**20)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, 4 * 2**20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def register(app: typer.Typer) -> None:
    """Add push, pull, ls and rm to the ``servelab models`` app."""
    app.command()(push)
    app.command()(pull)
    app.command("ls")(ls)
    app.command("rm")(rm)
