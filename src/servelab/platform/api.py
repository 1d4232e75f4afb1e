"""HTTP in front of the platform (aiohttp): the AWS Lambda REST API, the Open Inference
Protocol (KServe v2), Prometheus ``/metrics``, servelab's own views and ``/openapi.json``.

Lambda routes follow botocore's service model closely enough that
``boto3.client("lambda", endpoint_url=...)`` works unchanged; errors carry Lambda's
``x-amzn-ErrorType`` header and ``{"Type", "message"}`` body so boto3 raises the right
exception class. Management routes can require a token: ``Authorization: Bearer TOKEN``, or
boto3 with ``aws_access_key_id=TOKEN`` (read from its SigV4 ``Credential=``). With a token set,
callers without it see functions but not their environment values.
aiohttp sets TCP_NODELAY on every accepted socket, so a response never waits on Nagle.

Every route is declared once in :data:`ROUTES` with its body and query models
(``schemas.py``); ``routing.py`` parses them before the handler runs and builds the OpenAPI
document from the same table. Function names and qualifiers are checked in ``names.py``.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from servelab import __version__
from servelab.errors import ConfigError, FunctionNotFoundError, InputValidationError
from servelab.platform.events import EventInvokeConfig
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
from servelab.platform.names import function_arn, parse_function_ref
from servelab.platform.routing import (
    MAX_BODY_KEY,
    QUERY,
    Handler,
    Route,
    body_of,
    errors_middleware,
    lambda_error,
    openapi_document,
    parse_json_off_loop,
    parse_model,
    parsed,
    query_of,
    v2_error,
)
from servelab.platform.schemas import (
    ConcurrencyBody,
    CreateFunctionBody,
    EventInvokeConfigBody,
    EventsQuery,
    ListFunctionsQuery,
    ProvisionedBody,
    ProvisionedQuery,
    PublishVersionBody,
    QualifierQuery,
    TagBody,
    UntagQuery,
    UpdateConfigurationBody,
    V2InferenceRequest,
)
from servelab.platform.server import Platform
from servelab.platform.service import Invocation
from servelab.tensors import HEADER_LENGTH_HTTP, frame_binary, unframe_binary

DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
LOG_TAIL_BYTES = 4096
HIDDEN = "(hidden: send the platform's token to see environment values)"
HIDDEN_ERROR = "(hidden: send the platform's token to see the error)"
PLATFORM_KEY = web.AppKey("platform", Platform)
TOKEN_KEY: web.AppKey[str | None] = web.AppKey("token")
_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
# Lambda's tag rules: at most 50 per function, keys 1..128 and values 0..256 characters, no "aws:" prefix.
MAX_TAGS = 50

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ROUTES", "errors_middleware", "lambda_error", "make_app"]


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN_KEY]
    if not token:
        return True
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return hmac.compare_digest(auth[7:].strip().encode(), token.encode())
    m = _CREDENTIAL_RE.search(auth)
    return m is not None and hmac.compare_digest(m.group(1).encode(), token.encode())


def _from_a_function(request: web.Request) -> bool:
    """Whether the caller is a function's instance (its loopback connection belongs to a function
    uid): instances may invoke functions, never manage them (docs/isolation.md)."""
    uids = getattr(request.app[PLATFORM_KEY], "uids", None)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if uids is None or not peer or isolation_mode() != "root":
        return False
    uid = peer_uid(str(peer[0]), int(peer[1]))
    return uid is not None and uids.is_function_uid(uid)


def _guarded(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if _from_a_function(request):
            return lambda_error(403, "AccessDeniedException",
                                "a function's code may invoke functions but not manage the platform")
        if not _authorized(request):
            return lambda_error(403, "AccessDeniedException",
                                "this platform requires a token: send 'Authorization: Bearer TOKEN' "
                                "or use it as the AWS access key id")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    return wrapped


def _platform(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


def _name(request: web.Request) -> str:
    """The function the path names (name, NAME:QUALIFIER or an ARN; checked once, in names.py)."""
    qualifier = getattr(request.get(QUERY), "Qualifier", None)
    return parse_function_ref(request.match_info["name"], query_qualifier=qualifier)[0]


def _view(request: web.Request, cfg: FunctionConfig, ts: str) -> dict[str, Any]:
    """The function's Lambda view; without the token (when one is set) user variables are hidden.

    ``SERVELAB_*`` variables are the platform's own settings (model, runtime, batching...),
    not secrets, so they stay visible; the function's own environment may hold keys.
    """
    view = lambda_configuration(cfg, last_modified=ts)
    if not _authorized(request):
        variables = view["Environment"]["Variables"]
        view["Environment"]["Variables"] = {k: (v if k.startswith("SERVELAB_") else HIDDEN)
                                            for k, v in variables.items()}
    return view


# ---- Lambda: functions ---------------------------------------------------------------------
def _config_from_create(body: CreateFunctionBody) -> tuple[dict[str, Any], bytes | None]:
    data: dict[str, Any] = {"name": body.FunctionName}
    if body.MemorySize is not None:
        data["memory_mb"] = body.MemorySize
    if body.Timeout is not None:
        data["timeout_s"] = body.Timeout
    if body.Description:
        data["description"] = body.Description
    if body.Runtime:
        data["lambda_runtime"] = body.Runtime
    data["handler"] = body.Handler or BUILTIN_MODEL_HANDLER
    tags = {k: v for k, v in (body.Tags or {}).items() if k.startswith("SERVELAB_")}
    variables = {**tags, **(body.Environment.Variables if body.Environment else {})}
    data["env"] = apply_servelab_vars(data, variables)
    code_zip = None
    if body.Code is not None and body.Code.ZipFile:
        try:
            code_zip = base64.b64decode(body.Code.ZipFile, validate=True)
        except ValueError:
            raise ConfigError("Code.ZipFile must be base64") from None
    return data, code_zip


async def create_function(request: web.Request) -> web.Response:
    p = _platform(request)
    body = body_of(request, CreateFunctionBody)
    data, code_zip = _config_from_create(body)
    cfg = make_config(data)
    tags = _check_tags(body.Tags or {})
    ts = await p.create(cfg, code_zip=code_zip)
    if tags:
        _write_tags(p, cfg.name, tags)
    cfg, _ = p.get(cfg.name)
    return web.json_response(_view(request, cfg, ts), status=201)


async def list_functions(request: web.Request) -> web.Response:
    p = _platform(request)
    q = query_of(request, ListFunctionsQuery)
    functions = [_view(request, c, ts) for c, ts in p.registry.list()]
    start = 0
    if q.Marker:
        try:
            start = int(q.Marker)
        except ValueError:
            raise ConfigError(f"Marker {q.Marker!r} is not one this platform gave out (a NextMarker)") from None
    end = len(functions) if q.MaxItems is None else start + q.MaxItems
    out: dict[str, Any] = {"Functions": functions[start:end]}
    if end < len(functions):
        out["NextMarker"] = str(end)
    return web.json_response(out)


async def get_function(request: web.Request) -> web.Response:
    p = _platform(request)
    cfg, ts = p.get(_name(request))
    return web.json_response({
        "Configuration": _view(request, cfg, ts),
        "Code": {"RepositoryType": "servelab", "Location": f"servelab://functions/{cfg.name}"},
        "Concurrency": {"ReservedConcurrentExecutions": cfg.max_concurrency},
        "Tags": _read_tags(p, cfg.name),
    })


async def get_function_configuration(request: web.Request) -> web.Response:
    cfg, ts = _platform(request).get(_name(request))
    return web.json_response(_view(request, cfg, ts))


async def update_function_configuration(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _name(request)
    body = body_of(request, UpdateConfigurationBody)
    cfg, _ = p.get(name)
    data = cfg.model_dump()
    if body.MemorySize is not None:
        data["memory_mb"] = body.MemorySize
    if body.Timeout is not None:
        data["timeout_s"] = body.Timeout
    if body.Description is not None:
        data["description"] = body.Description
    if body.Handler is not None:
        data["handler"] = body.Handler
    if body.Environment is not None:
        data["env"] = apply_servelab_vars(data, body.Environment.Variables)
    new = make_config(data)
    new, ts = await p.update(name, **{k: v for k, v in new.model_dump().items() if k != "name"})
    return web.json_response(_view(request, new, ts))


async def delete_function(request: web.Request) -> web.Response:
    await _platform(request).delete(_name(request))
    return web.Response(status=204)


async def put_provisioned(request: web.Request) -> web.Response:
    p = _platform(request)
    body = body_of(request, ProvisionedBody)
    cfg, ts = await p.update(_name(request), provisioned=body.ProvisionedConcurrentExecutions)
    return web.json_response(_provisioned_view(p, cfg.name, ts), status=202)


async def get_provisioned(request: web.Request) -> web.Response:
    p = _platform(request)
    q = query_of(request, ProvisionedQuery)
    cfg, ts = p.get(_name(request))
    if q.List == "ALL":  # ListProvisionedConcurrencyConfigs shares this path
        configs = []
        if cfg.provisioned:
            view = _provisioned_view(p, cfg.name, ts)
            configs.append({"FunctionArn": function_arn(cfg.name, "$LATEST"), **view})
        return web.json_response({"ProvisionedConcurrencyConfigs": configs})
    if cfg.provisioned == 0:
        return lambda_error(404, "ProvisionedConcurrencyConfigNotFoundException",
                            f"No Provisioned Concurrency Config found for function: {cfg.name}")
    return web.json_response(_provisioned_view(p, cfg.name, ts))


async def delete_provisioned(request: web.Request) -> web.Response:
    await _platform(request).update(_name(request), provisioned=0)
    return web.Response(status=204)


def _provisioned_view(p: Platform, name: str, ts: str) -> dict[str, Any]:
    svc = p.service(name)
    ready = sum(1 for i in svc.instances.values() if i.provisioned and i.state in ("idle", "busy"))
    want = svc.config.provisioned
    return {"RequestedProvisionedConcurrentExecutions": want,
            "AllocatedProvisionedConcurrentExecutions": ready,
            "AvailableProvisionedConcurrentExecutions": ready,
            "Status": "READY" if ready >= want else "IN_PROGRESS", "LastModified": ts}


async def put_concurrency(request: web.Request) -> web.Response:
    body = body_of(request, ConcurrencyBody)
    cfg, _ = await _platform(request).update(_name(request), max_concurrency=body.ReservedConcurrentExecutions)
    return web.json_response({"ReservedConcurrentExecutions": cfg.max_concurrency})


async def get_concurrency(request: web.Request) -> web.Response:
    cfg, _ = _platform(request).get(_name(request))
    return web.json_response({"ReservedConcurrentExecutions": cfg.max_concurrency})


async def delete_concurrency(request: web.Request) -> web.Response:
    """Lambda's "unreserved" has no equivalent on one machine: back to the platform's default."""
    default = FunctionConfig.model_fields["max_concurrency"].default
    await _platform(request).update(_name(request), max_concurrency=default)
    return web.Response(status=204)


async def publish_version(request: web.Request) -> web.Response:
    """The platform keeps no immutable versions: every function has one, "1", which is its
    current code and configuration. Enough for callers that put provisioned concurrency on a
    published version and invoke it with ``Qualifier``, as AWS requires."""
    p = _platform(request)
    cfg, ts = p.get(_name(request))
    view = _view(request, cfg, ts)
    return web.json_response({**view, "Version": "1", "FunctionArn": function_arn(cfg.name, "1")}, status=201)


# ---- Lambda: asynchronous invocation configuration -------------------------------------------
def _event_config_view(cfg: EventInvokeConfig) -> dict[str, Any]:
    dest: dict[str, Any] = {}
    if cfg.on_success:
        dest["OnSuccess"] = {"Destination": cfg.on_success}
    if cfg.on_failure:
        dest["OnFailure"] = {"Destination": cfg.on_failure}
    return {"LastModified": cfg.last_modified, "FunctionArn": function_arn(cfg.function, "$LATEST"),
            "MaximumRetryAttempts": cfg.max_retry_attempts, "MaximumEventAgeInSeconds": cfg.max_event_age_s,
            "DestinationConfig": dest}


def _check_destination(p: Platform, arn: str | None) -> str | None:
    if arn is None:
        return None
    if not arn.startswith("arn:aws:lambda:"):
        raise ConfigError(f"destination {arn!r}: this platform delivers invocation records only to its own "
                          "functions (arn:aws:lambda:REGION:ACCOUNT:function:NAME); SQS, SNS and EventBridge "
                          "destinations are not available locally")
    p.get(parse_function_ref(arn)[0])  # 404 when the destination function does not exist
    return arn


async def _save_event_config(request: web.Request, *, merge: bool) -> web.Response:
    p = _platform(request)
    name = _name(request)
    p.get(name)
    body = body_of(request, EventInvokeConfigBody)
    old = (p.event_queue.get_config(name) if merge else None) or EventInvokeConfig(name)
    dest = body.DestinationConfig
    on_success = old.on_success if dest is None or dest.OnSuccess is None else dest.OnSuccess.Destination
    on_failure = old.on_failure if dest is None or dest.OnFailure is None else dest.OnFailure.Destination
    cfg = EventInvokeConfig(
        name,
        old.max_retry_attempts if body.MaximumRetryAttempts is None else body.MaximumRetryAttempts,
        old.max_event_age_s if body.MaximumEventAgeInSeconds is None else body.MaximumEventAgeInSeconds,
        _check_destination(p, on_success), _check_destination(p, on_failure))
    return web.json_response(_event_config_view(p.event_queue.put_config(cfg)))


async def put_event_invoke_config(request: web.Request) -> web.Response:
    return await _save_event_config(request, merge=False)


async def update_event_invoke_config(request: web.Request) -> web.Response:
    return await _save_event_config(request, merge=True)


async def get_event_invoke_config(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _name(request)
    p.get(name)
    cfg = p.event_queue.get_config(name)
    if cfg is None:
        return lambda_error(404, "ResourceNotFoundException",
                            f"The function {name} doesn't have an EventInvokeConfig")
    return web.json_response(_event_config_view(cfg))


async def delete_event_invoke_config(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _name(request)
    p.get(name)
    if not p.event_queue.delete_config(name):
        return lambda_error(404, "ResourceNotFoundException",
                            f"The function {name} doesn't have an EventInvokeConfig")
    return web.Response(status=204)


# ---- Lambda: tags --------------------------------------------------------------------------
# Tags live beside the function's code (home/functions/NAME/tags.json), so deleting the
# function deletes them. SERVELAB_* tags are settings (read at create) and are kept here too.
def _tags_path(p: Platform, name: str) -> Path:
    return p.code_dir(name).parent / "tags.json"


def _read_tags(p: Platform, name: str) -> dict[str, str]:
    try:
        tags = json.loads(_tags_path(p, name).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def _write_tags(p: Platform, name: str, tags: dict[str, str]) -> None:
    path = _tags_path(p, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tags.json.tmp")
    tmp.write_text(json.dumps(tags, sort_keys=True))
    os.replace(tmp, path)


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    for k in tags:
        if k.lower().startswith("aws:"):
            raise ConfigError(f"tag key {k!r}: keys starting with 'aws:' are reserved")
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"{len(tags)} tags: a function has at most {MAX_TAGS}")
    return dict(tags)


def _tagged_function(request: web.Request) -> str:
    """The function a tagging call names by ARN; 404 for an unknown one."""
    arn = unquote(request.match_info["arn"])
    if not re.match(r"^arn:aws[a-zA-Z-]*:lambda:[^:]*:[0-9]*:function:", arn):
        raise ConfigError(f"Resource {arn!r} is not a function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)")
    name = parse_function_ref(arn)[0]
    _platform(request).get(name)  # FunctionNotFoundError -> 404
    return name


async def list_tags(request: web.Request) -> web.Response:
    name = _tagged_function(request)
    return web.json_response({"Tags": _read_tags(_platform(request), name)})


async def tag_resource(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _tagged_function(request)
    body = body_of(request, TagBody)
    merged = _check_tags({**_read_tags(p, name), **_check_tags(body.Tags)})
    _write_tags(p, name, merged)
    return web.Response(status=204)


async def untag_resource(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _tagged_function(request)
    drop = set(query_of(request, UntagQuery).tagKeys)
    _write_tags(p, name, {k: v for k, v in _read_tags(p, name).items() if k not in drop})
    return web.Response(status=204)


# ---- Lambda: invoke ------------------------------------------------------------------------
def _facts_header(inv: Invocation) -> str:
    rec = inv.record
    if rec is None:
        return "{}"
    keys = ("start_kind", "cold", "instance_id", "platform_ms", "queue_ms", "init_ms", "init_process_ms",
            "init_import_ms", "init_fetch_ms", "init_load_ms", "inference_ms", "duration_ms", "billed_ms",
            "memory_mb", "max_memory_used_mb", "batch_size")
    d = rec.to_dict()
    return json.dumps({k: d[k] for k in keys if d.get(k) is not None}, separators=(",", ":"))


def _log_result(inv: Invocation) -> str:
    rid = inv.request_id
    text = f"START RequestId: {rid} Version: $LATEST\n{inv.log}END RequestId: {rid}\n"
    if inv.record is not None:
        text += report_line(inv.record) + "\n"
    raw = text.encode()[-LOG_TAIL_BYTES:]
    return base64.b64encode(raw).decode()


INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
LOG_TYPES = ("None", "Tail")


async def invoke(request: web.Request) -> web.StreamResponse:
    p = _platform(request)
    # Lambda accepts "name:qualifier" (a version or alias); the platform has one version of each
    # function (see publish_version), so a valid qualifier names the same function.
    svc = p.service(_name(request))  # 404 before reading the body
    kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if kind not in INVOCATION_TYPES:
        return lambda_error(400, "InvalidParameterValueException",
                            f"X-Amz-Invocation-Type must be one of {', '.join(INVOCATION_TYPES)}, got {kind!r}")
    log_type = request.headers.get("X-Amz-Log-Type", "None")
    if log_type not in LOG_TYPES:
        return lambda_error(400, "InvalidParameterValueException",
                            f"X-Amz-Log-Type must be None or Tail, got {log_type!r}")
    body = await request.read()
    # as on Lambda, the payload must be JSON: 400 InvalidRequestContentException if not. This
    # costs a parse the instance repeats: ~1 ms for a 0.8 MB b64 tensor, ~80 ms (in a thread)
    # for the same tensor as a 3 MB list of numbers
    await parse_json_off_loop(body)
    request_id = str(uuid.uuid4())
    if kind == "DryRun":
        return web.Response(status=204, headers={"x-amzn-RequestId": request_id})
    if kind == "Event":
        # written to the durable queue before the 202: accepted means it will run, crash or not
        await p.events.put(svc.config.name, body, request_id)
        return web.Response(status=202, headers={"x-amzn-RequestId": request_id})
    inv = await svc.invoke(body, request_id)
    headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST",
               "X-Servelab-Facts": _facts_header(inv), "Content-Type": "application/json",
               **inv.extra_headers}
    if inv.function_error:
        headers["X-Amz-Function-Error"] = "Unhandled"
    if log_type == "Tail" and inv.http_status == 200:
        headers["X-Amz-Log-Result"] = _log_result(inv)
    return web.Response(status=inv.http_status, body=inv.payload, headers=headers)


# ---- Open Inference Protocol (KServe v2) ------------------------------------------------------
async def v2_live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def v2_ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def _v2_model(request: web.Request) -> str:
    """The model (function) a v2 path names: a valid name, of a deployed function."""
    name = parse_function_ref(request.match_info["name"])[0]
    if name not in _platform(request).services:
        raise FunctionNotFoundError(f"model {name!r} not found", function=name)
    return name


async def v2_model(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _v2_model(request)
    meta = await p.model_metadata(name)
    cfg = p.service(name).config
    return web.json_response({"name": name, "versions": ["1"], "platform": f"{cfg.runtime}_onnx", **meta})


async def v2_model_ready(request: web.Request) -> web.Response:
    name = _v2_model(request)
    return web.json_response({"name": name, "ready": True})  # scale from zero buffers: always servable


async def v2_infer(request: web.Request) -> web.Response:
    p = _platform(request)
    name = _v2_model(request)
    body = await request.read()
    header_length = request.headers.get(HEADER_LENGTH_HTTP)
    if header_length is not None:  # the binary tensor data extension
        try:
            n = int(header_length)
            if not 0 < n <= len(body):
                raise ValueError(f"it must be between 1 and the body's length, {len(body)}")
            header = body[:n]
            body = frame_binary(body, n)
        except (ValueError, InputValidationError) as e:
            return v2_error(400, f"bad {HEADER_LENGTH_HTTP} {header_length!r}: {e}")
    else:
        header = body
    # the request's shape is checked here; its tensors against the model's inputs (names,
    # datatypes, shapes, byte lengths) by the instance, which decodes them anyway
    parse_model(V2InferenceRequest, await parse_json_off_loop(header), "inference request")
    inv = await p.invoke(name, body)
    headers = {"X-Servelab-Facts": _facts_header(inv)}
    if inv.status == "throttled":
        return web.json_response({"error": "too many requests: the model is at its maximum concurrency"},
                                 status=429, headers={**headers, "Retry-After": "1"})
    if inv.function_error or inv.status != "ok":
        try:
            msg = json.loads(inv.payload).get("errorMessage", inv.payload.decode(errors="replace"))
        except (ValueError, AttributeError):
            msg = inv.payload.decode(errors="replace")
        status = 400 if inv.error_type == "Unhandled" else 504 if inv.status == "timeout" else 500
        return web.json_response({"error": msg}, status=status, headers=headers)
    framed = unframe_binary(inv.payload)
    if framed is not None:
        out, n_out = framed
        headers[HEADER_LENGTH_HTTP] = str(n_out)
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
        "version": __version__, "platform_id": p.platform_id, "pid": os.getpid(),
        "limits": {"mode": li.mode if li else "none", "reason": li.reason if li else "limits disabled"},
        "functions": len(p.services), "records_dir": str(p.home / "records"),
        "home": str(p.home), "store_url": p.store_url,
        "max_body_bytes": request.app[MAX_BODY_KEY], "token_required": bool(request.app[TOKEN_KEY]),
        "tcp_nodelay": nodelay, "isolation": _isolation_view(p), "events_waiting": p.event_queue.waiting,
        "max_event_queue": p.event_queue.max_queued,
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
    return web.json_response(_platform(request).service(_name(request)).snapshot())


async def events(request: web.Request) -> web.Response:
    """The function's asynchronous events: waiting, running, and the newest finished ones."""
    p = _platform(request)
    name = _name(request)
    p.get(name)
    q = query_of(request, EventsQuery)
    events = p.event_queue.list(name, q.state, q.limit)
    if not _authorized(request):  # a function's error output may hold what its environment holds
        for e in events:
            e["last_error"] = HIDDEN_ERROR if e["last_error"] else None
    return web.json_response({"function": name, "events": events})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(ROUTES, version=__version__))


# ---- the route table -------------------------------------------------------------------------
_FN = "/2015-03-31/functions/{name}"
_INVOKE_HEADERS = {"X-Amz-Invocation-Type": {"type": "string", "enum": list(INVOCATION_TYPES)},
                   "X-Amz-Log-Type": {"type": "string", "enum": list(LOG_TYPES)}}
ROUTES: list[Route] = [
    Route("POST", "/2015-03-31/functions", create_function, "CreateFunction", body=CreateFunctionBody,
          management=True, ok=201),
    Route("GET", "/2015-03-31/functions", list_functions, "ListFunctions", query=ListFunctionsQuery),
    Route("GET", _FN, get_function, "GetFunction", query=QualifierQuery),
    Route("DELETE", _FN, delete_function, "DeleteFunction", query=QualifierQuery, management=True, ok=204),
    Route("GET", _FN + "/configuration", get_function_configuration, "GetFunctionConfiguration",
          query=QualifierQuery),
    Route("PUT", _FN + "/configuration", update_function_configuration, "UpdateFunctionConfiguration",
          body=UpdateConfigurationBody, management=True),
    Route("POST", _FN + "/invocations", invoke, "Invoke (RequestResponse, Event or DryRun)",
          query=QualifierQuery, raw_body="application/json", headers=_INVOKE_HEADERS),
    Route("POST", _FN + "/versions", publish_version, "PublishVersion", body=PublishVersionBody, management=True,
          ok=201),
    Route("PUT", "/2019-09-30/functions/{name}/provisioned-concurrency", put_provisioned,
          "PutProvisionedConcurrencyConfig", body=ProvisionedBody, query=QualifierQuery, management=True, ok=202),
    Route("GET", "/2019-09-30/functions/{name}/provisioned-concurrency", get_provisioned,
          "GetProvisionedConcurrencyConfig / ListProvisionedConcurrencyConfigs", query=ProvisionedQuery),
    Route("DELETE", "/2019-09-30/functions/{name}/provisioned-concurrency", delete_provisioned,
          "DeleteProvisionedConcurrencyConfig", query=QualifierQuery, management=True, ok=204),
    Route("PUT", "/2017-10-31/functions/{name}/concurrency", put_concurrency, "PutFunctionConcurrency",
          body=ConcurrencyBody, management=True),
    Route("DELETE", "/2017-10-31/functions/{name}/concurrency", delete_concurrency, "DeleteFunctionConcurrency",
          management=True, ok=204),
    Route("GET", "/2019-09-30/functions/{name}/concurrency", get_concurrency, "GetFunctionConcurrency"),
    Route("PUT", "/2019-09-25/functions/{name}/event-invoke-config", put_event_invoke_config,
          "PutFunctionEventInvokeConfig", body=EventInvokeConfigBody, query=QualifierQuery, management=True),
    Route("POST", "/2019-09-25/functions/{name}/event-invoke-config", update_event_invoke_config,
          "UpdateFunctionEventInvokeConfig", body=EventInvokeConfigBody, query=QualifierQuery, management=True),
    Route("GET", "/2019-09-25/functions/{name}/event-invoke-config", get_event_invoke_config,
          "GetFunctionEventInvokeConfig", query=QualifierQuery),
    Route("DELETE", "/2019-09-25/functions/{name}/event-invoke-config", delete_event_invoke_config,
          "DeleteFunctionEventInvokeConfig", query=QualifierQuery, management=True, ok=204),
    Route("GET", "/2017-03-31/tags/{arn}", list_tags, "ListTags"),
    Route("POST", "/2017-03-31/tags/{arn}", tag_resource, "TagResource", body=TagBody, management=True, ok=204),
    Route("DELETE", "/2017-03-31/tags/{arn}", untag_resource, "UntagResource", query=UntagQuery,
          management=True, ok=204),
    Route("GET", "/v2/health/live", v2_live, "Server live", tag="v2"),
    Route("GET", "/v2/health/ready", v2_ready, "Server ready", tag="v2"),
    Route("GET", "/v2/models/{name}", v2_model, "Model metadata", tag="v2"),
    Route("GET", "/v2/models/{name}/ready", v2_model_ready, "Model ready", tag="v2"),
    Route("POST", "/v2/models/{name}/infer", v2_infer, "Inference (JSON, or the binary tensor extension)",
          raw_body="application/json", tag="v2",
          headers={HEADER_LENGTH_HTTP: {"type": "integer", "minimum": 1}}),
    Route("GET", "/metrics", metrics, "Prometheus metrics", tag="servelab"),
    Route("GET", "/servelab/v1/info", info, "The platform's settings and state", tag="servelab"),
    Route("GET", "/servelab/v1/functions/{name}/instances", instances, "A function's instances", tag="servelab"),
    Route("GET", "/servelab/v1/functions/{name}/events", events, "A function's asynchronous events",
          query=EventsQuery, tag="servelab"),
    Route("GET", "/openapi.json", openapi, "This document", tag="servelab"),
]


def make_app(platform: Platform, *, token: str | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_middleware])
    app[PLATFORM_KEY] = platform
    app[TOKEN_KEY] = token
    app[MAX_BODY_KEY] = max_body_bytes
    for route in ROUTES:
        handler = parsed(route)
        if route.management:
            handler = _guarded(handler)
        app.router.add_route(route.method, route.path, handler)
        if route.path == "/2015-03-31/functions":  # botocore sends a trailing slash here
            app.router.add_route(route.method, route.path + "/", handler)

    async def on_startup(app: web.Application) -> None:
        await platform.start()

    async def on_cleanup(app: web.Application) -> None:
        await platform.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
