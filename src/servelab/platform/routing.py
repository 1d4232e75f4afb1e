"""The route table's machinery: each route declares its body and query models, a wrapper
parses them before the handler runs, one middleware turns every error into the protocol's
error shape, and the OpenAPI document is built from the same table.

Error shapes:

- Lambda routes: ``{"Type": "User", "message": ...}`` with the ``x-amzn-ErrorType`` header
  (boto3 raises the matching exception class): 400 ``InvalidRequestContentException`` for a
  body that is not JSON, 400 ``InvalidParameterValueException`` for a field that is wrong,
  404 ``ResourceNotFoundException``, 413 ``RequestTooLargeException``;
- Open Inference Protocol routes (``/v2/...``): ``{"error": ...}`` with the status.

Nothing a client sends can produce a 5xx: a 500 here is a servelab bug, and is logged as one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

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
    ThrottledError,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Protocol = Literal["lambda", "v2", "servelab"]
BODY = web.RequestKey("body", BaseModel)  # where the parsed body and query are put
QUERY = web.RequestKey("query", BaseModel)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    management: bool = False  # needs the token when one is set
    raw_body: str | None = None  # a body passed through as bytes: its media type, for the document
    headers: dict[str, Any] = field(default_factory=dict)  # documented request headers: name -> schema
    ok: int = 200
    tag: str = "lambda"

    @property
    def protocol(self) -> Protocol:
        return "v2" if self.path.startswith("/v2/") else "servelab" if not self.path.startswith("/20") else "lambda"


# ---- errors ----------------------------------------------------------------------------------
def lambda_error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"Type": "User", "message": message}, status=status,
                             headers={"x-amzn-ErrorType": error_type, **(headers or {})})


def v2_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def validation_message(e: ValidationError, what: str) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append((f"{where}: " if where else "") + err["msg"].removeprefix("Value error, "))
    return f"invalid {what}: " + "; ".join(parts)


def _classify(e: Exception) -> tuple[int, str, str]:
    """(status, Lambda error type, message) for an exception raised while serving a request."""
    if isinstance(e, FunctionNotFoundError | RefNotFoundError):
        return 404, "ResourceNotFoundException", str(e)
    if isinstance(e, FunctionExistsError):
        return 409, "ResourceConflictException", str(e)
    if isinstance(e, ThrottledError):
        return 429, "TooManyRequestsException", str(e)
    if isinstance(e, ConfigError | InvalidNameError | InputValidationError | StoreError):
        return 400, "InvalidParameterValueException", str(e)
    if isinstance(e, PlatformError):
        return 503, "ServiceException", str(e)
    if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
        return 400, "InvalidRequestContentException", f"Could not parse request body into json: {e}"
    if isinstance(e, ServelabError):
        return 400, "InvalidParameterValueException", str(e)
    log.exception("unexpected error while serving a request")  # a bug: say so in the log
    return 500, "ServiceException", f"{type(e).__name__}: {e}"


def error_response(e: Exception, protocol: Protocol) -> web.Response:
    status, error_type, message = _classify(e)
    if protocol == "v2":
        return v2_error(status, message)
    return lambda_error(status, error_type, message, {"Retry-After": "1"} if status == 429 else None)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a status code and a message that says what to fix."""
    protocol: Protocol = "v2" if request.path.startswith("/v2/") else "lambda"
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        msg = f"Request must be smaller than {request.app[MAX_BODY_KEY]} bytes"
        if protocol == "v2":
            return v2_error(413, msg)
        return lambda_error(413, "RequestTooLargeException", msg + " for the Invoke operation")
    except web.HTTPException:
        raise
    except Exception as e:
        return error_response(e, protocol)


# ---- parsing ---------------------------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_json(raw: bytes) -> Any:
    """JSON from a body; an empty body is ``{}``. Raises JSONDecodeError / UnicodeDecodeError /
    ValueError (for NaN and Infinity, which Python would otherwise accept)."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
            raise
        raise json.JSONDecodeError(str(e), raw.decode(errors="replace"), 0) from None


INLINE_PARSE_BYTES = 256 * 1024  # parsing more than this would stall the event loop (~80 ms for 3 MB of numbers)


async def parse_json_off_loop(raw: bytes) -> Any:
    """:func:`parse_json`, in a worker thread when the body is large, so other requests go on."""
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_json(raw)
    return await asyncio.to_thread(parse_json, raw)


def parse_model(model: type[BaseModel], data: Any, what: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e, what)) from None


def query_data(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    """The query string as the model's fields want it: lists for list fields, else the last value."""
    data: dict[str, Any] = {}
    for key in request.query:
        info = model.model_fields.get(key)
        values = request.query.getall(key)
        is_list = info is not None and "list" in str(info.annotation)
        data[key] = values if is_list else values[-1]
    return data


def parsed(route: Route) -> Handler:
    """The route's handler, after its query and body have been parsed into request[QUERY]/[BODY]."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if route.query is not None:
            request[QUERY] = parse_model(route.query, query_data(request, route.query), "query string")
        if route.body is not None:
            request[BODY] = parse_model(route.body, await parse_json_off_loop(await request.read()), "request body")
        return await route.handler(request)

    wrapped.__name__ = route.handler.__name__
    return wrapped


M = TypeVar("M", bound=BaseModel)


def body_of(request: web.Request, model: type[M]) -> M:
    """The request's parsed body, as the route's model (set by :func:`parsed`)."""
    value = request[BODY]
    if not isinstance(value, model):
        raise TypeError(f"the route parsed its body as {type(value).__name__}, not {model.__name__}")
    return value


def query_of(request: web.Request, model: type[M]) -> M:
    value = request[QUERY]
    if not isinstance(value, model):
        raise TypeError(f"the route parsed its query as {type(value).__name__}, not {model.__name__}")
    return value


# ---- the OpenAPI document --------------------------------------------------------------------
_LAMBDA_ERROR = {"type": "object", "properties": {"Type": {"type": "string"}, "message": {"type": "string"}}}
_V2_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def openapi_document(routes: list[Route], *, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 for every route, from the same models that parse the requests."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}

    def schema_of(model: type[BaseModel]) -> dict[str, Any]:
        s = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        components.update(s.pop("$defs", {}))
        components[model.__name__] = s
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "operationId": f"{r.method.lower()}_{r.handler.__name__}",
                              "tags": [r.tag], "parameters": []}
        for seg in r.path.split("/"):
            if seg.startswith("{") and seg.endswith("}"):
                op["parameters"].append({"name": seg[1:-1], "in": "path", "required": True,
                                         "schema": {"type": "string"}})
        if r.query is not None:
            for fname, finfo in r.query.model_fields.items():
                fschema = r.query.model_json_schema()["properties"][fname]
                fschema.pop("title", None)
                if "list" in str(finfo.annotation):
                    fschema = {"type": "array", "items": {"type": "string", "minLength": 1}}
                op["parameters"].append({"name": fname, "in": "query", "required": finfo.is_required(),
                                         "schema": fschema, **({"style": "form", "explode": True}
                                                               if fschema.get("type") == "array" else {})})
        for hname, hschema in r.headers.items():
            op["parameters"].append({"name": hname, "in": "header", "required": False, "schema": hschema})
        if r.management:
            op["security"] = [{"bearer": []}, {}]
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema_of(r.body)}}}
        elif r.raw_body is not None:
            op["requestBody"] = {"required": False, "content": {r.raw_body: {"schema": {}}}}
        if not op["parameters"]:
            del op["parameters"]
        err = _V2_ERROR if r.protocol == "v2" else _LAMBDA_ERROR
        op["responses"] = {str(r.ok): {"description": "OK"},
                           "4XX": {"description": "The request was wrong; the message says what to fix",
                                   "content": {"application/json": {"schema": err}}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.1.0",  # JSON Schema 2020-12, as pydantic writes it
            "info": {"title": "servelab platform", "version": version,
                     "description": "The AWS Lambda REST API subset, the Open Inference Protocol (KServe v2) "
                                    "and servelab's views, on one machine."},
            "paths": paths,
            "components": {"schemas": components,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
