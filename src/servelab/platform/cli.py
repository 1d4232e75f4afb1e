"""``servelab platform up/info``, ``servelab deploy``, ``servelab invoke``, ``servelab functions …``."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from servelab.errors import ConfigError, FunctionExistsError
from servelab.tables import CSV_OPT, JSON_OPT, output_format, print_table

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_ENV = "SERVELAB_TOKEN"
URL_ENV = "SERVELAB_PLATFORM"

platform_app = typer.Typer(help="Run the local serverless platform.", no_args_is_help=True)
functions_app = typer.Typer(help="List, inspect and delete deployed functions.", no_args_is_help=True)
console = Console()

UrlOpt = typer.Option(None, "--platform", help=f"Platform URL (default: ${URL_ENV} or {DEFAULT_URL}).")
TokenOpt = typer.Option(None, "--token", help=f"Management token (default: ${TOKEN_ENV}).")


def _client(url: str | None, token: str | None):
    from servelab.platform.client import PlatformClient

    return PlatformClient(url or os.environ.get(URL_ENV, DEFAULT_URL), token=token or os.environ.get(TOKEN_ENV))


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def bind_socket(host: str, port: int):
    """Bind the listening socket before anything else starts, so a busy port is one clear line."""
    import socket

    from servelab.errors import StartupError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does: restarts need no wait
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        hint = "stop whatever listens there or pass another --port" if e.errno == 98 else "check --host and --port"
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}; {hint}") from None
    return sock


def check_exposure(host: str, token: str | None, allow_unauthenticated: bool) -> None:
    """Beyond loopback, anyone who can reach the port could deploy code: insist on a token."""
    if host in LOOPBACK_HOSTS or token or allow_unauthenticated:
        return
    raise ConfigError(f"--host {host} exposes the platform beyond this machine without a token: anyone who "
                      "can reach it could deploy and run code. Set --token (or $SERVELAB_TOKEN), or pass "
                      "--allow-unauthenticated to accept that")


@platform_app.command("up")
def up(
    host: str = typer.Option("127.0.0.1", help="Address to bind. Loopback by default; say 0.0.0.0 to expose it "
                                               "(needs --token or --allow-unauthenticated)."),
    port: int = typer.Option(8080, help="TCP port."),
    home: Path = typer.Option(None, help="State directory (default: $SERVELAB_HOME or ~/.servelab)."),
    store: str = typer.Option(None, help="Model store URL (default: the local store in HOME; or s3://…)."),
    token: str | None = typer.Option(None, help=f"Require this token on management calls (default: ${TOKEN_ENV})."),
    limits: str = typer.Option("auto", help="Instance limits: auto, cgroup2, cgroup1, rlimit, none."),
    max_body_mb: float = typer.Option(6.0, help="Largest request body, MB (Lambda: 6)."),
    instance_network: str = typer.Option("host", help="Instances' network (as root): host (loopback and the "
                                         "machine's network) or none (an empty network namespace)."),
    isolation: bool = typer.Option(True, "--isolation/--no-isolation",
                                   help="As root, run each function's instances as its own uid with a private "
                                        "view of the files (docs/isolation.md). --no-isolation: only to measure "
                                        "what it costs."),
    allow_unauthenticated: bool = typer.Option(
        False, "--allow-unauthenticated", help="Accept binding beyond loopback without a token."),
    max_event_queue: int = typer.Option(10_000, help="Most Event invocations waiting at once (429 above)."),
    event_retry_delay_s: float = typer.Option(
        60.0, help="Wait before an Event invocation's first retry (doubles for the second; Lambda: 60)."),
    host_memory_mb: float | None = typer.Option(None, "--host-memory-mb",
                                         help="Memory budget shared by all functions' instances, MB: idle "
                                              "instances are evicted, starts that cannot fit wait (default: none)."),
    host_eviction: str = typer.Option("lru", "--host-eviction", help="Who is evicted first: lru or greedy-dual."),
) -> None:
    """Start the platform in the foreground (Ctrl-C stops it and its instances)."""
    from aiohttp import web

    from servelab.config import default_home
    from servelab.platform.api import make_app
    from servelab.platform.server import LIMITS_CHOICES, Platform

    if limits not in LIMITS_CHOICES:
        raise ConfigError(f"--limits must be one of {', '.join(LIMITS_CHOICES)}")
    if max_event_queue < 1 or event_retry_delay_s < 0:
        raise ConfigError("--max-event-queue must be at least 1 and --event-retry-delay-s at least 0")
    home = home or default_home()
    token = token or os.environ.get(TOKEN_ENV)
    if host_eviction not in ("lru", "greedy-dual"):
        raise ConfigError(f"--host-eviction must be lru or greedy-dual, got {host_eviction!r}")
    if host_memory_mb is not None and host_memory_mb <= 0:
        raise ConfigError(f"--host-memory-mb must be > 0, got {host_memory_mb:g}")
    if instance_network not in ("host", "none"):
        raise ConfigError(f"--instance-network must be host or none, got {instance_network!r}")
    check_exposure(host, token, allow_unauthenticated)
    platform = Platform(home, store_url=store, limits=limits, port=port,
                        max_event_queue=max_event_queue, event_retry_delay_s=event_retry_delay_s,
                        instance_network=instance_network, isolate=isolation,  # type: ignore[arg-type]
                        host_memory_mb=host_memory_mb, host_eviction=host_eviction)  # type: ignore[arg-type]
    platform.lock_home()  # a second platform on this home stops here, before touching anything
    try:
        sock = bind_socket(host, port)
    except BaseException:
        platform.home_lock.release()
        raise
    app = make_app(platform, token=token, max_body_bytes=int(max_body_mb * 1024 * 1024))

    async def banner(_: web.Application) -> None:
        li = platform.limits_info
        console.print(f"[bold green]servelab platform[/] on http://{host}:{port}  home={home}")
        console.print(f"  limits: {li.mode if li else 'none'} ({li.reason if li else 'disabled'})")
        console.print(f"  functions: {len(platform.services)}  token: {'required' if token else 'off'}"
                      f"  stale instances cleaned: {platform.stale_cleaned}")
        from servelab.platform.isolation import mode as isolation_mode

        iso = isolation_mode()
        console.print(f"  isolation: {iso}" + (f" (instance network: {instance_network})" if iso == "root" else
                                                 " (not root: instances run as this user; docs/isolation.md)"))
        if platform.host is not None:
            console.print(f"  host memory budget: {platform.host.budget_mb:g} MB, eviction {platform.host.order}")

    app.on_startup.append(banner)
    web.run_app(app, sock=sock, print=None, handle_signals=True)


@platform_app.command("info")
def info(url: str = UrlOpt, token: str = TokenOpt) -> None:
    """Which limits mode this machine gives instances, and the running platform's state."""
    from servelab.errors import LimitsError, PlatformError
    from servelab.platform.limits import detect

    try:
        li = detect()
        console.print(f"limits on this machine: [bold]{li.mode}[/] — {li.reason}")
    except LimitsError as e:
        console.print(f"limits on this machine: none usable ({e})")
    from servelab.platform.isolation import mode as isolation_mode

    iso = isolation_mode()
    console.print(f"isolation on this machine: [bold]{iso}[/] — " + (
        "a uid per function, a private view of the files, no_new_privs (docs/isolation.md)" if iso == "root" else
        "not root: instances would run as this user with a minimal environment only (docs/isolation.md)"))
    try:
        console.print_json(data=_client(url, token).info())
    except PlatformError as e:
        console.print(f"[yellow]{e}[/]")


def _push_model(model: str, client) -> str:
    """A local ONNX file goes into the platform's store first; a ref or stored name passes through."""
    path = Path(model)
    if not path.is_file():
        if path.suffix == ".onnx" or "/" in model or os.sep in model:
            raise ConfigError(f"model file {model} not found; give an existing .onnx file, a store ref "
                              "(name@sha256:...) or a stored model name")
        return model
    from servelab.models.store import open_store

    info = client.info()
    store = open_store(info.get("store_url"), home=Path(info["home"]))
    return store.put(path.stem.replace(" ", "-")[:64] or "model", path)


def _zip_dir(code: Path) -> str:
    import io
    import zipfile

    if not code.is_dir():
        raise ConfigError(f"--code {code} is not a directory")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(code.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                zf.write(f, f.relative_to(code).as_posix())
    return base64.b64encode(buf.getvalue()).decode()


def deploy(
    name: str = typer.Argument(..., help="Function name."),
    model: str = typer.Option(None, help="ONNX file, store ref (name@sha256:…) or stored model name."),
    runtime: str = typer.Option("onnxruntime", help="onnxruntime or torch."),
    memory_mb: int = typer.Option(1024, help="Memory size, MB (128..10240); CPU share follows it."),
    timeout_s: float = typer.Option(30.0, help="Invocation timeout, seconds."),
    max_concurrency: int = typer.Option(4, help="Most instances at once."),
    provisioned: int = typer.Option(0, help="Instances kept warm at all times."),
    batch_size: int = typer.Option(1, help="Largest batch per instance."),
    batch_wait_ms: float = typer.Option(0.0, help="Longest a request waits for a batch to fill."),
    keep_alive_s: float = typer.Option(600.0, help="Idle time before an instance is reclaimed."),
    keep_alive_policy: str = typer.Option(
        "fixed", help="fixed, hybrid (ATC'20 histogram), faascache (greedy-dual; keep-alive is its TTL) or scheduled."),
    admission: str = typer.Option("throttle", help="Above max concurrency: throttle (429) or queue."),
    start_mode: str = typer.Option("fork", help="fork (from a fork server) or spawn (fresh interpreter)."),
    handler: str = typer.Option(None, help="A Python handler 'module.function' from --code."),
    code: Path = typer.Option(None, help="Directory holding the handler's code."),
    env: list[str] = typer.Option(None, help="KEY=VALUE for the function's environment (repeatable)."),
    url: str = UrlOpt,
    token: str = TokenOpt,
) -> None:
    """Deploy a model (and optionally a handler) as a function; update it if it exists."""
    client = _client(url, token)
    from servelab.platform.functions import servelab_vars

    variables = servelab_vars({
        "runtime": runtime, "batching.max_batch_size": batch_size, "batching.max_wait_ms": batch_wait_ms,
        "keep_alive.keep_alive_s": keep_alive_s, "keep_alive.kind": keep_alive_policy, "admission": admission,
        "start_mode": start_mode, "max_concurrency": max_concurrency,
    })
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--env {item!r} must look like KEY=VALUE")
        variables[key] = value
    if model:
        variables["SERVELAB_MODEL"] = _push_model(model, client)
    body = {"FunctionName": name, "Role": "servelab", "MemorySize": memory_mb, "Timeout": timeout_s,
            "Handler": handler or "servelab.model", "Environment": {"Variables": variables},
            "Code": {"ZipFile": _zip_dir(code)} if code else {}}
    try:
        cfg = client.create(body)
        verb = "created"
    except FunctionExistsError:
        if code:
            raise ConfigError(f"function {name!r} exists; code cannot be updated in place: "
                              f"'servelab functions rm {name}' first") from None
        cfg = client.update(name, {k: v for k, v in body.items() if k not in ("Code", "Role", "FunctionName")})
        verb = "updated"
    if provisioned:
        client.put_provisioned(name, provisioned)
    console.print(f"[green]{verb}[/] {cfg['FunctionName']}  memory={cfg['MemorySize']} MB  "
                  f"model={cfg['Environment']['Variables'].get('SERVELAB_MODEL', '-')}")


def invoke(
    name: str = typer.Argument(..., help="Function name."),
    payload: str = typer.Option(None, help="JSON payload, or @FILE."),
    random_batch: int = typer.Option(0, "--random", help="Send a random input of this batch size "
                                                         "(read from the model's metadata)."),
    log: bool = typer.Option(True, help="Print the REPORT line."),
    url: str = UrlOpt,
    token: str = TokenOpt,
) -> None:
    """Invoke a function once and print its response and REPORT line."""
    client = _client(url, token)
    if payload and random_batch:
        raise ConfigError("give --payload or --random, not both")
    if random_batch:
        import numpy as np

        from servelab.tensors import V2_TO_NUMPY, TensorSpec, encode_tensor

        meta = client.model_metadata(name)
        rng = np.random.default_rng(0)
        tensors = []
        for i in meta["inputs"]:
            spec = TensorSpec(i["name"], tuple(d if d >= 0 else None for d in i["shape"]),
                              V2_TO_NUMPY[i["datatype"]].name)
            tensors.append(encode_tensor(spec.name, spec.random(random_batch, rng=rng), binary=True))
        body = json.dumps({"inputs": tensors}).encode()
    elif payload:
        body = Path(payload[1:]).read_bytes() if payload.startswith("@") else payload.encode()
    else:
        body = b"{}"
    _, headers, out = client.invoke(name, body, log=log)
    text = out.decode(errors="replace")
    console.print(text if len(text) < 2000 else text[:2000] + f"… ({len(text)} bytes)", markup=False)
    if log and headers.get("X-Amz-Log-Result"):
        console.print(base64.b64decode(headers["X-Amz-Log-Result"]).decode().strip().splitlines()[-1],
                      markup=False, soft_wrap=True)  # one REPORT line, as Lambda prints it
    if headers.get("X-Amz-Function-Error"):
        # the HTTP call succeeded but the function did not: scripts must see that in the exit code
        console.print(f"[red]function error: {headers['X-Amz-Function-Error']}[/]")
        raise typer.Exit(1)


def _short_ref(ref: str) -> str:
    """``name@sha256:<64 hex>`` -> ``name@sha256:<12 hex>``: still a ref the store resolves, and it fits."""
    return re.sub(r"(@sha256:[0-9a-f]{12})[0-9a-f]{52}\b", r"\1", ref)


@functions_app.command("ls")
def functions_ls(url: str = UrlOpt, token: str = TokenOpt, as_json: bool = JSON_OPT, as_csv: bool = CSV_OPT) -> None:
    """List deployed functions (model refs shortened to 12 hex digits; --json/--csv give them whole)."""
    fmt = output_format(as_json, as_csv)
    t = Table("name", "memory MB", "timeout s", "model", "runtime", "batch", "start", "modified")
    for f in _client(url, token).list():
        v = f["Environment"]["Variables"]
        model = v.get("SERVELAB_MODEL") or f["Handler"]
        t.add_row(f["FunctionName"], str(f["MemorySize"]), str(f["Timeout"]),
                  _short_ref(model) if fmt == "table" else model, v.get("SERVELAB_RUNTIME", ""),
                  v.get("SERVELAB_BATCH_SIZE", ""), v.get("SERVELAB_START_MODE", ""), f["LastModified"][:19])
    print_table(t, fmt, console=console)


@functions_app.command("rm")
def functions_rm(name: str, url: str = UrlOpt, token: str = TokenOpt) -> None:
    """Delete a function and stop its instances."""
    _client(url, token).delete(name)
    console.print(f"deleted {name}")


@functions_app.command("instances")
def functions_instances(name: str, url: str = UrlOpt, token: str = TokenOpt, as_json: bool = JSON_OPT,
                        as_csv: bool = CSV_OPT) -> None:
    """Show a function's instances and their states."""
    fmt = output_format(as_json, as_csv)
    snap = _client(url, token).instances(name)
    if fmt == "json":  # the whole snapshot, waiting count included
        typer.echo(json.dumps(snap, indent=2))
        return
    t = Table("id", "state", "kind", "provisioned", "pid", "served", "age s", "idle s", "init ms", "rss MB")
    for i in snap["instances"]:
        t.add_row(i["id"], i["state"], i["kind"], "yes" if i["provisioned"] else "no", str(i["pid"]),
                  str(i["served"]), str(i["age_s"]), str(i["idle_s"] or ""), str(i["init_ms"]),
                  str(i["max_rss_mb"]))
    print_table(t, fmt, console=console)
    if fmt == "table":
        console.print(f"waiting requests: {snap['waiting']}")


def register(app: typer.Typer) -> None:
    app.add_typer(platform_app, name="platform")
    app.add_typer(functions_app, name="functions")
    app.command("deploy")(deploy)
    app.command("invoke")(invoke)
