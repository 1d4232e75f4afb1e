"""HTTP in front of the platform (aiohttp): the AWS Lambda REST API, the Open Inference
Protocol (KServe v2), Prometheus ``/metrics``, and servelab's own read-only views.

Lambda routes follow botocore's service model closely enough that
``boto3.client("lambda", endpoint_url=...)`` works unchanged; errors carry Lambda's
``x-amzn-ErrorType`` header and ``{"Type", "message"}`` body so boto3 raises the right
exception class. Management routes can require a token: ``Authorization: Bearer TOKEN``, or
boto3 with ``aws_access_key_id=TOKEN`` (read from its SigV4 ``Credential=``).
aiohttp sets TCP_NODELAY on every accepted socket, so a response never waits on Nagle.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from servelab import __version__
from servelab.errors import (
    ConfigError,
    FunctionExistsError,
    FunctionNotFoundError,
    InputValidationError,
    InvalidNameError,
    PlatformError,
    RefNotFoundError,
    ServelabError,
    StoreError,
)
from servelab.platform.functions import (
    BUILTIN_MODEL_HANDLER,
    FunctionConfig,
    apply_servelab_vars,
    lambda_configuration,
    make_config,
)
from servelab.platform.isolation import mode as isolation_mode
from servelab.platform.isolation import peer_uid
from servelab.platform.meter import report_line
from servelab.platform.server import Platform
from servelab.tensors import HEADER_LENGTH_HTTP, frame_binary, unframe_binary

DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
LOG_TAIL_BYTES = 4096
PLATFORM_KEY = web.AppKey("platform", Platform)
TOKEN_KEY = web.AppKey("token", str)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
BACKGROUND_KEY = web.AppKey("background", set)
_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
# Lambda's tag rules: at most 50 per function, keys 1..128 and values 0..256 characters, no "aws:" prefix.
MAX_TAGS = 50
_FUNCTION_ARN_RE = re.compile(r"^arn:aws:lambda:[^:]*:[0-9]*:function:([^:]+)(?::[^:]+)?$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def lambda_error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"Type": "User", "message": message}, status=status,
                             headers={"x-amzn-ErrorType": error_type})


def _error_response(e: Exception) -> web.Response:
    if isinstance(e, FunctionNotFoundError | RefNotFoundError):
        return lambda_error(404, "ResourceNotFoundException", str(e))
    if isinstance(e, FunctionExistsError):
        return lambda_error(409, "ResourceConflictException", str(e))
    if isinstance(e, ConfigError | InvalidNameError | InputValidationError | StoreError):
        return lambda_error(400, "InvalidParameterValueException", str(e))
    if isinstance(e, PlatformError):
        return lambda_error(503, "ServiceException", str(e))
    return lambda_error(500, "ServiceException", f"{type(e).__name__}: {e}")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every servelab error becomes a status code and a message that says what to fix."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return lambda_error(413, "RequestTooLargeException",
                            f"Request must be smaller than {request.app[MAX_BODY_KEY]} bytes for the Invoke "
                            "operation")
    except web.HTTPException:
        raise
    except ServelabError as e:
        return _error_response(e)
    except json.JSONDecodeError as e:
        return lambda_error(400, "InvalidRequestContentException",
                            f"Could not parse request body into json: {e}")


def _authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return hmac.compare_digest(auth[7:].strip(), token)
    m = _CREDENTIAL_RE.search(auth)
    return bool(m) and hmac.compare_digest(m.group(1), token)


def _from_a_function(request: web.Request) -> bool:
    """Whether the caller is a function's instance (its loopback connection belongs to a function
    uid): instances may invoke functions, never manage them (docs/isolation.md)."""
    uids = getattr(request.app[PLATFORM_KEY], "uids", None)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if uids is None or not peer or isolation_mode() != "root":
        return False
    uid = peer_uid(str(peer[0]), int(peer[1]))
    return uid is not None and uids.is_function_uid(uid)


def management(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if _from_a_function(request):
            return lambda_error(403, "AccessDeniedException",
                                "a function's code may invoke functions but not manage the platform")
        if not _authorized(request, request.app[TOKEN_KEY]):
            return lambda_error(403, "AccessDeniedException",
                                "this platform requires a token: send 'Authorization: Bearer TOKEN' "
                                "or use it as the AWS access key id")
        return await handler(request)
    return wrapped


def _platform(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


# ---- Lambda: functions ---------------------------------------------------------------------
def _config_from_create(body: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    name = body.get("FunctionName")
    if not name:
        raise ConfigError("FunctionName is required")
    data: dict[str, Any] = {"name": name}
    if "MemorySize" in body:
        data["memory_mb"] = body["MemorySize"]
    if "Timeout" in body:
        data["timeout_s"] = body["Timeout"]
    if body.get("Description"):
        data["description"] = body["Description"]
    if body.get("Runtime"):
        data["lambda_runtime"] = body["Runtime"]
    handler = body.get("Handler") or BUILTIN_MODEL_HANDLER
    data["handler"] = handler
    tags = {k: v for k, v in (body.get("Tags") or {}).items() if k.startswith("SERVELAB_")}
    variables = {**tags, **((body.get("Environment") or {}).get("Variables") or {})}
    data["env"] = apply_servelab_vars(data, variables)
    code = body.get("Code") or {}
    zip_b64 = code.get("ZipFile")
    code_zip = None
    if zip_b64:
        try:
            code_zip = base64.b64decode(zip_b64, validate=True)
        except ValueError:
            raise ConfigError("Code.ZipFile must be base64") from None
    return data, code_zip


@management
async def create_function(request: web.Request) -> web.Response:
    p = _platform(request)
    body = await request.json()
    data, code_zip = _config_from_create(body)
    cfg = make_config(data)
    tags = _check_tags(body.get("Tags") or {})
    ts = await p.create(cfg, code_zip=code_zip)
    if tags:
        _write_tags(p, cfg.name, tags)
    cfg, _ = p.get(cfg.name)
    return web.json_response(lambda_configuration(cfg, last_modified=ts), status=201)


async def list_functions(request: web.Request) -> web.Response:
    p = _platform(request)
    return web.json_response({"Functions": [lambda_configuration(c, last_modified=ts)
                                            for c, ts in p.registry.list()]})


async def get_function(request: web.Request) -> web.Response:
    p = _platform(request)
    cfg, ts = p.get(request.match_info["name"])
    return web.json_response({
        "Configuration": lambda_configuration(cfg, last_modified=ts),
        "Code": {"RepositoryType": "servelab", "Location": f"servelab://functions/{cfg.name}"},
        "Concurrency": {"ReservedConcurrentExecutions": cfg.max_concurrency},
        "Tags": _read_tags(p, cfg.name),
    })


async def get_function_configuration(request: web.Request) -> web.Response:
    cfg, ts = _platform(request).get(request.match_info["name"])
    return web.json_response(lambda_configuration(cfg, last_modified=ts))


@management
async def update_function_configuration(request: web.Request) -> web.Response:
    p = _platform(request)
    name = request.match_info["name"]
    body = await request.json()
    cfg, _ = p.get(name)
    data = cfg.model_dump()
    if "MemorySize" in body:
        data["memory_mb"] = body["MemorySize"]
    if "Timeout" in body:
        data["timeout_s"] = body["Timeout"]
    if "Description" in body:
        data["description"] = body["Description"]
    if "Handler" in body:
        data["handler"] = body["Handler"]
    if "Environment" in body:
        variables = (body.get("Environment") or {}).get("Variables") or {}
        data["env"] = apply_servelab_vars(data, variables)
    new = make_config(data)
    new, ts = await p.update(name, **{k: v for k, v in new.model_dump().items() if k != "name"})
    return web.json_response(lambda_configuration(new, last_modified=ts))


@management
async def delete_function(request: web.Request) -> web.Response:
    await _platform(request).delete(request.match_info["name"])
    return web.Response(status=204)


@management
async def put_provisioned(request: web.Request) -> web.Response:
    p = _platform(request)
    body = await request.json()
    n = body.get("ProvisionedConcurrentExecutions")
    if not isinstance(n, int) or n < 0:
        raise ConfigError("ProvisionedConcurrentExecutions must be a non-negative integer")
    cfg, ts = await p.update(request.match_info["name"], provisioned=n)
    return web.json_response(_provisioned_view(p, cfg.name, ts), status=202)


async def get_provisioned(request: web.Request) -> web.Response:
    p = _platform(request)
    cfg, ts = p.get(request.match_info["name"])
    if request.query.get("List") == "ALL":  # ListProvisionedConcurrencyConfigs shares this path
        configs = []
        if cfg.provisioned:
            view = _provisioned_view(p, cfg.name, ts)
            configs.append({"FunctionArn": _function_arn(cfg.name, "$LATEST"), **view})
        return web.json_response({"ProvisionedConcurrencyConfigs": configs})
    if cfg.provisioned == 0:
        return lambda_error(404, "ProvisionedConcurrencyConfigNotFoundException",
                            f"No Provisioned Concurrency Config found for function: {cfg.name}")
    return web.json_response(_provisioned_view(p, cfg.name, ts))


@management
async def delete_provisioned(request: web.Request) -> web.Response:
    await _platform(request).update(request.match_info["name"], provisioned=0)
    return web.Response(status=204)


def _provisioned_view(p: Platform, name: str, ts: str) -> dict[str, Any]:
    svc = p.service(name)
    ready = sum(1 for i in svc.instances.values() if i.provisioned and i.state in ("idle", "busy"))
    want = svc.config.provisioned
    return {"RequestedProvisionedConcurrentExecutions": want,
            "AllocatedProvisionedConcurrentExecutions": ready,
            "AvailableProvisionedConcurrentExecutions": ready,
            "Status": "READY" if ready >= want else "IN_PROGRESS", "LastModified": ts}


@management
async def put_concurrency(request: web.Request) -> web.Response:
    body = await request.json()
    n = body.get("ReservedConcurrentExecutions")
    if not isinstance(n, int) or n < 1:
        raise ConfigError("ReservedConcurrentExecutions must be an integer >= 1 (servelab's max concurrency)")
    cfg, _ = await _platform(request).update(request.match_info["name"], max_concurrency=n)
    return web.json_response({"ReservedConcurrentExecutions": cfg.max_concurrency})


async def get_concurrency(request: web.Request) -> web.Response:
    cfg, _ = _platform(request).get(request.match_info["name"])
    return web.json_response({"ReservedConcurrentExecutions": cfg.max_concurrency})


@management
async def delete_concurrency(request: web.Request) -> web.Response:
    """Lambda's "unreserved" has no equivalent on one machine: back to the platform's default."""
    default = FunctionConfig.model_fields["max_concurrency"].default
    await _platform(request).update(request.match_info["name"], max_concurrency=default)
    return web.Response(status=204)


@management
async def publish_version(request: web.Request) -> web.Response:
    """The platform keeps no immutable versions: every function has one, "1", which is its
    current code and configuration. Enough for callers that put provisioned concurrency on a
    published version and invoke it with ``Qualifier``, as AWS requires."""
    p = _platform(request)
    cfg, ts = p.get(request.match_info["name"])
    view = lambda_configuration(cfg, last_modified=ts)
    return web.json_response({**view, "Version": "1", "FunctionArn": _function_arn(cfg.name, "1")},
                             status=201)


# ---- Lambda: tags --------------------------------------------------------------------------
# Tags live beside the function's code (home/functions/NAME/tags.json), so deleting the
# function deletes them. SERVELAB_* tags are settings (read at create) and are kept here too.
def _function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:local:000000000000:function:{name}"
    return arn if qualifier is None else f"{arn}:{qualifier}"


def _tags_path(p: Platform, name: str) -> Path:
    return p.code_dir(name).parent / "tags.json"


def _read_tags(p: Platform, name: str) -> dict[str, str]:
    try:
        return json.loads(_tags_path(p, name).read_text())
    except (OSError, ValueError):
        return {}


def _write_tags(p: Platform, name: str, tags: dict[str, str]) -> None:
    path = _tags_path(p, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tags.json.tmp")
    tmp.write_text(json.dumps(tags, sort_keys=True))
    os.replace(tmp, path)


def _check_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict):
        raise ConfigError("Tags must be an object of string keys and values")
    for k, v in tags.items():
        if not isinstance(k, str) or not 1 <= len(k) <= 128 or k.lower().startswith("aws:"):
            raise ConfigError(f"tag key {k!r}: 1-128 characters, not starting with 'aws:'")
        if not isinstance(v, str) or len(v) > 256:
            raise ConfigError(f"tag {k!r}: the value must be a string of at most 256 characters")
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{len(tags)} tags: a function has at most {MAX_TAGS}")
    return dict(tags)


def _tagged_function(request: web.Request) -> str:
    """The function a tagging call names by ARN; 404 for an ARN of something else or unknown."""
    arn = unquote(request.match_info["arn"])
    m = _FUNCTION_ARN_RE.match(arn)
    if m is None:
        raise ConfigError(f"Resource {arn!r} is not a function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)")
    name = m.group(1)
    _platform(request).get(name)  # FunctionNotFoundError -> 404
    return name


async def list_tags(request: web.Request) -> web.Response:
    name = _tagged_function(request)
    return web.json_response({"Tags": _read_tags(_platform(request), name)})


@management
async def tag_resource(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _tagged_function(request)
    body = await request.json()
    merged = _check_tags({**_read_tags(p, name), **_check_tags((body or {}).get("Tags") or {})})
    _write_tags(p, name, merged)
    return web.Response(status=204)


@management
async def untag_resource(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _tagged_function(request)
    drop = set(request.query.getall("tagKeys", []))
    _write_tags(p, name, {k: v for k, v in _read_tags(p, name).items() if k not in drop})
    return web.Response(status=204)


# ---- Lambda: invoke ------------------------------------------------------------------------
def _facts_header(inv) -> str:
    rec = inv.record
    if rec is None:
        return "{}"
    keys = ("start_kind", "cold", "instance_id", "platform_ms", "queue_ms", "init_ms", "init_process_ms",
            "init_import_ms", "init_fetch_ms", "init_load_ms", "inference_ms", "duration_ms", "billed_ms",
            "memory_mb", "max_memory_used_mb", "batch_size")
    d = rec.to_dict()
    return json.dumps({k: d[k] for k in keys if d.get(k) is not None}, separators=(",", ":"))


def _log_result(inv) -> str:
    rid = inv.request_id
    text = f"START RequestId: {rid} Version: $LATEST\n{inv.log}END RequestId: {rid}\n"
    if inv.record is not None:
        text += report_line(inv.record) + "\n"
    raw = text.encode()[-LOG_TAIL_BYTES:]
    return base64.b64encode(raw).decode()


async def invoke(request: web.Request) -> web.StreamResponse:
    p = _platform(request)
    # Lambda accepts "name:qualifier" (a version or alias); the platform has one version of each
    # function (see publish_version), so the qualifier names the same function.
    name = request.match_info["name"].partition(":")[0]
    svc = p.service(name)  # 404 before reading the body
    kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    body = await request.read()
    request_id = str(uuid.uuid4())
    if kind == "DryRun":
        return web.Response(status=204, headers={"x-amzn-RequestId": request_id})
    if kind == "Event":
        async def background() -> None:
            await svc.invoke(body, request_id)

        request.app[BACKGROUND_KEY].add(t := asyncio.create_task(background()))
        t.add_done_callback(request.app[BACKGROUND_KEY].discard)
        return web.Response(status=202, headers={"x-amzn-RequestId": request_id})
    if kind != "RequestResponse":
        return lambda_error(400, "InvalidParameterValueException",
                            "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun")
    inv = await svc.invoke(body, request_id)
    headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST",
               "X-Servelab-Facts": _facts_header(inv), "Content-Type": "application/json",
               **inv.extra_headers}
    if inv.function_error:
        headers["X-Amz-Function-Error"] = "Unhandled"
    if request.headers.get("X-Amz-Log-Type") == "Tail" and inv.http_status == 200:
        headers["X-Amz-Log-Result"] = _log_result(inv)
    return web.Response(status=inv.http_status, body=inv.payload, headers=headers)


# ---- Open Inference Protocol (KServe v2) ------------------------------------------------------
async def v2_live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def v2_ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def _v2_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def v2_model(request: web.Request) -> web.Response:
    p = _platform(request)
    name = request.match_info["name"]
    try:
        meta = await p.model_metadata(name)
        cfg = p.service(name).config
    except FunctionNotFoundError as e:
        return _v2_error(404, str(e))
    except ServelabError as e:
        return _v2_error(400, str(e))
    return web.json_response({"name": name, "versions": ["1"], "platform": f"{cfg.runtime}_onnx", **meta})


async def v2_model_ready(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _platform(request).services:
        return _v2_error(404, f"model {name!r} not found")
    return web.json_response({"name": name, "ready": True})  # scale from zero buffers: always servable


async def v2_infer(request: web.Request) -> web.Response:
    p = _platform(request)
    name = request.match_info["name"]
    if name not in p.services:
        return _v2_error(404, f"model {name!r} not found")
    body = await request.read()
    header_length = request.headers.get(HEADER_LENGTH_HTTP)
    if header_length is not None:  # the binary tensor data extension
        try:
            body = frame_binary(body, int(header_length))
        except (ValueError, InputValidationError) as e:
            return _v2_error(400, f"bad {HEADER_LENGTH_HTTP}: {e}")
    inv = await p.invoke(name, body)
    headers = {"X-Servelab-Facts": _facts_header(inv)}
    if inv.status == "throttled":
        return web.json_response({"error": "too many requests: the model is at its maximum concurrency"},
                                 status=429, headers=headers)
    if inv.function_error or inv.status != "ok":
        try:
            msg = json.loads(inv.payload).get("errorMessage", inv.payload.decode(errors="replace"))
        except (ValueError, AttributeError):
            msg = inv.payload.decode(errors="replace")
        status = 400 if inv.error_type == "Unhandled" else 504 if inv.status == "timeout" else 500
        return _v2_error(status, msg)
    framed = unframe_binary(inv.payload)
    if framed is not None:
        out, n = framed
        headers[HEADER_LENGTH_HTTP] = str(n)
        return web.Response(body=bytes(out), content_type="application/octet-stream", headers=headers)
    return web.Response(body=inv.payload, content_type="application/json", headers=headers)


# ---- servelab views --------------------------------------------------------------------------
async def metrics(request: web.Request) -> web.Response:
    p = _platform(request)
    g = p.meter.instances
    g.clear()
    for name, svc in p.services.items():
        for state in ("starting", "idle", "busy"):
            g.labels(name, state).set(svc.count(state))
    return web.Response(body=p.meter.exposition(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def info(request: web.Request) -> web.Response:
    p = _platform(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    nodelay = None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    li = p.limits_info
    return web.json_response({
        "version": __version__,
        "limits": {"mode": li.mode if li else "none", "reason": li.reason if li else "limits disabled"},
        "functions": len(p.services), "records_dir": str(p.home / "records"),
        "home": str(p.home), "store_url": p.store_url,
        "max_body_bytes": request.app[MAX_BODY_KEY], "token_required": bool(request.app[TOKEN_KEY]),
        "tcp_nodelay": nodelay,
        "isolation": _isolation_view(p),
    })


def _isolation_view(p: Platform) -> dict[str, Any]:
    if isolation_mode() == "root" and not p.isolate:
        return {"mode": "off", "instance_network": "host",
                "what": "turned off (--no-isolation): instances run as root with a minimal environment"}
    if isolation_mode() == "root":
        return {"mode": "root", "instance_network": p.instance_network,
                "what": "a uid per function, a mount namespace hiding the home, a private /tmp, "
                        "no_new_privs, rlimits, a minimal environment; management refused to functions"}
    return {"mode": "none", "instance_network": "host",
            "what": "the platform is not root: instances run as its user, with a minimal environment only "
                    "(docs/isolation.md)"}


async def instances(request: web.Request) -> web.Response:
    return web.json_response(_platform(request).service(request.match_info["name"]).snapshot())


def make_app(platform: Platform, *, token: str | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_middleware])
    app[PLATFORM_KEY] = platform
    app[TOKEN_KEY] = token  # type: ignore[assignment]
    app[MAX_BODY_KEY] = max_body_bytes
    app[BACKGROUND_KEY] = set()
    fn = "/2015-03-31/functions/{name}"
    app.router.add_post("/2015-03-31/functions", create_function)
    app.router.add_post("/2015-03-31/functions/", create_function)
    app.router.add_get("/2015-03-31/functions", list_functions)
    app.router.add_get("/2015-03-31/functions/", list_functions)
    app.router.add_get(fn, get_function)
    app.router.add_delete(fn, delete_function)
    app.router.add_get(fn + "/configuration", get_function_configuration)
    app.router.add_put(fn + "/configuration", update_function_configuration)
    app.router.add_post(fn + "/invocations", invoke)
    app.router.add_put("/2019-09-30/functions/{name}/provisioned-concurrency", put_provisioned)
    app.router.add_get("/2019-09-30/functions/{name}/provisioned-concurrency", get_provisioned)
    app.router.add_delete("/2019-09-30/functions/{name}/provisioned-concurrency", delete_provisioned)
    app.router.add_put("/2017-10-31/functions/{name}/concurrency", put_concurrency)
    app.router.add_delete("/2017-10-31/functions/{name}/concurrency", delete_concurrency)
    app.router.add_get("/2019-09-30/functions/{name}/concurrency", get_concurrency)
    app.router.add_post(fn + "/versions", publish_version)
    app.router.add_get("/2017-03-31/tags/{arn}", list_tags)
    app.router.add_post("/2017-03-31/tags/{arn}", tag_resource)
    app.router.add_delete("/2017-03-31/tags/{arn}", untag_resource)
    app.router.add_get("/v2/health/live", v2_live)
    app.router.add_get("/v2/health/ready", v2_ready)
    app.router.add_get("/v2/models/{name}", v2_model)
    app.router.add_get("/v2/models/{name}/ready", v2_model_ready)
    app.router.add_post("/v2/models/{name}/infer", v2_infer)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/servelab/v1/info", info)
    app.router.add_get("/servelab/v1/functions/{name}/instances", instances)

    async def on_startup(app: web.Application) -> None:
        await platform.start()

    async def on_cleanup(app: web.Application) -> None:
        await platform.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
