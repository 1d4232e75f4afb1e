"""What the load generator talks to: a tiny ``Target`` interface and its HTTP implementations.

A target only sends one request and says what happened; the runner owns scheduling, timing,
timeouts and seeds (MLPerf's system-under-test split). ``invoke`` never raises for HTTP or
network trouble: it returns an :class:`InvokeResult` whose ``status`` says what went wrong, so
one bad response can never stop a run.

Every HTTP target shares the runner's one ``aiohttp.ClientSession`` (one connection pool with
keep-alive). Targets are built by a :class:`TargetSpec` — a small frozen, picklable description
— so each generator process can build its own target on its own session.

Units: durations in milliseconds (``*_ms``), memory in MB (``*_mb``).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import aiohttp

from servelab.errors import ConfigError
from servelab.records import Status

TargetKind = Literal["lambda", "v2", "http", "sagemaker", "null"]

# Header the local platform sets on every invocation response: JSON of RequestRecord fields.
FACTS_HEADER = "X-Servelab-Facts"
# Header we send so a server (ours) can correlate its logs with the generator's request id.
REQUEST_ID_HEADER = "X-Servelab-Request-Id"
MAX_ERROR_CHARS = 300

# Server facts a target may report, and the type each is stored as.
FACT_TYPES: dict[str, type] = {
    "start_kind": str, "cold": bool, "instance_id": str,
    "platform_ms": float, "queue_ms": float, "init_ms": float, "init_process_ms": float,
    "init_import_ms": float, "init_fetch_ms": float, "init_load_ms": float,
    "inference_ms": float, "duration_ms": float, "billed_ms": float,
    "memory_mb": int, "max_memory_used_mb": float, "batch_size": int,
}


@dataclass(slots=True)
class InvokeResult:
    """The outcome of one request as the target saw it; ``facts`` are RequestRecord fields."""

    status: Status
    http_status: int | None = None
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Target(Protocol):
    name: str

    async def invoke(self, request_id: str, payload: bytes) -> InvokeResult: ...


def clean_facts(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only known fact fields with values of the right type; drop what cannot be used.

    A server that sends a field we do not know, or a value of the wrong type, must not break a
    run or the Parquet schema, so such entries are dropped rather than raised on.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        kind = FACT_TYPES.get(key)
        if kind is None or value is None:
            continue
        try:
            if kind is bool:
                if not isinstance(value, bool):
                    continue
                out[key] = value
            elif kind is str:
                out[key] = str(value)
            else:
                if isinstance(value, bool):
                    continue
                out[key] = kind(value)
        except (TypeError, ValueError):
            continue
    if out.get("start_kind") not in (None, "warm", "prewarmed", "cold"):
        del out["start_kind"]
    return out


def parse_facts_header(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        raw = json.loads(value)
    except ValueError:
        return {}
    return clean_facts(raw) if isinstance(raw, dict) else {}


_REPORT_FIELDS = {
    "Duration": ("duration_ms", float),
    "Billed Duration": ("billed_ms", float),
    "Memory Size": ("memory_mb", int),
    "Max Memory Used": ("max_memory_used_mb", float),
    "Init Duration": ("init_ms", float),
}
_REPORT_RE = re.compile(r"(Billed Duration|Max Memory Used|Memory Size|Init Duration|Duration): "
                        r"([0-9]+(?:\.[0-9]+)?) (?:ms|MB)")


def parse_report_line(log_tail: str) -> dict[str, Any]:
    """Facts from AWS Lambda's ``REPORT RequestId: …`` log line (the last one in ``log_tail``).

    ``Init Duration`` appears only on a cold start, so its presence sets ``cold``.
    """
    lines = [ln for ln in log_tail.splitlines() if ln.startswith("REPORT ")]
    if not lines:
        return {}
    facts: dict[str, Any] = {}
    for key, value in _REPORT_RE.findall(lines[-1]):
        name, kind = _REPORT_FIELDS[key]
        facts[name] = kind(float(value))
    cold = "init_ms" in facts
    facts["cold"] = cold
    facts["start_kind"] = "cold" if cold else "warm"
    return facts


def parse_log_result(header: str | None) -> dict[str, Any]:
    """Decode ``X-Amz-Log-Result`` (base64 of the log tail) and parse its REPORT line."""
    if not header:
        return {}
    try:
        text = base64.b64decode(header).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return {}
    return parse_report_line(text)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def error_message(body: bytes) -> str:
    """The human part of an error body: Lambda's ``message``/``Message``/``errorMessage``,
    the Open Inference Protocol's ``error``, or the raw text."""
    text = body.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return _short(text)
    if isinstance(obj, dict):
        kind = obj.get("errorType") or obj.get("Type") or obj.get("__type")
        for key in ("errorMessage", "message", "Message", "error", "detail"):
            if isinstance(obj.get(key), str):
                msg = obj[key]
                return _short(f"{kind}: {msg}" if isinstance(kind, str) and kind != "User" else msg)
    return _short(text)


def network_error(exc: BaseException) -> InvokeResult:
    """A request that got no HTTP answer: connection refused, reset, server gone…"""
    if isinstance(exc, TimeoutError):  # aiohttp's socket timeouts (ServerTimeoutError) too
        return InvokeResult("timeout", error=_short(f"{type(exc).__name__}: {exc}"))
    return InvokeResult("error", error=_short(f"{type(exc).__name__}: {exc}".rstrip(": ")))


def http_failure(status: int, body: bytes, headers: Mapping[str, str]) -> InvokeResult:
    """A non-2xx answer: 429 is a throttle, everything else an error with the server's message."""
    kind = headers.get("X-Amzn-ErrorType", "").split(":")[0]
    msg = error_message(body)
    text = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {msg}" if msg else "")
    return InvokeResult("throttled" if status == 429 else "error", status, _short(text),
                        parse_facts_header(headers.get(FACTS_HEADER)))


class _HttpPost:
    """Shared POST-and-classify logic; subclasses choose the URL, headers and response rules."""

    name: str
    url: str

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    def headers(self, request_id: str, payload: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", REQUEST_ID_HEADER: request_id}

    def on_ok(self, status: int, body: bytes, headers: Mapping[str, str]) -> InvokeResult:
        return InvokeResult("ok", status, None, parse_facts_header(headers.get(FACTS_HEADER)))

    async def invoke(self, request_id: str, payload: bytes) -> InvokeResult:
        try:
            async with self.session.post(self.url, data=payload,
                                         headers=self.headers(request_id, payload)) as resp:
                body = await resp.read()
                if 200 <= resp.status < 300:
                    return self.on_ok(resp.status, body, resp.headers)
                return http_failure(resp.status, body, resp.headers)
        except (aiohttp.ClientError, OSError) as e:
            return network_error(e)


class LambdaTarget(_HttpPost):
    """The AWS Lambda Invoke REST API: ``POST {base}/2015-03-31/functions/{fn}/invocations``.

    Works against the local platform (facts from ``X-Servelab-Facts``) and against AWS itself
    (facts from the ``REPORT`` line in ``X-Amz-Log-Result``; requests are SigV4-signed with
    botocore's credential chain when ``aws_region`` is given).
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, function: str, *,
                 aws_region: str | None = None) -> None:
        super().__init__(session)
        self.name = function
        self.url = f"{base_url.rstrip('/')}/2015-03-31/functions/{function}/invocations"
        self._signer = _SigV4(aws_region, "lambda") if aws_region else None

    def headers(self, request_id: str, payload: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/json", "X-Amz-Log-Type": "Tail",
             "X-Amz-Invocation-Type": "RequestResponse", REQUEST_ID_HEADER: request_id}
        return self._signer.sign(self.url, payload, h) if self._signer else h

    def on_ok(self, status: int, body: bytes, headers: Mapping[str, str]) -> InvokeResult:
        facts = parse_log_result(headers.get("X-Amz-Log-Result"))
        facts.update(parse_facts_header(headers.get(FACTS_HEADER)))
        function_error = headers.get("X-Amz-Function-Error")
        if function_error:
            return InvokeResult("error", status, _short(f"function error ({function_error}): "
                                                        f"{error_message(body)}"), facts)
        return InvokeResult("ok", status, None, facts)


class V2InferTarget(_HttpPost):
    """Open Inference Protocol (KServe v2): ``POST {base}/v2/models/{model}/infer``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str) -> None:
        super().__init__(session)
        self.name = model
        self.url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"


class SageMakerTarget(_HttpPost):
    """SageMaker InvokeEndpoint: ``POST {runtime}/endpoints/{endpoint}/invocations``, SigV4-signed
    for service ``sagemaker`` when ``aws_region`` is given (``runtime`` is
    ``https://runtime.sagemaker.REGION.amazonaws.com``). SageMaker reports no billed duration:
    records carry the client's latency only."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, endpoint: str, *,
                 aws_region: str | None = None) -> None:
        super().__init__(session)
        self.name = endpoint
        self.url = f"{base_url.rstrip('/')}/endpoints/{endpoint}/invocations"
        self._signer = _SigV4(aws_region, "sagemaker") if aws_region else None

    def headers(self, request_id: str, payload: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json", REQUEST_ID_HEADER: request_id}
        return self._signer.sign(self.url, payload, h) if self._signer else h

    def on_ok(self, status: int, body: bytes, headers: Mapping[str, str]) -> InvokeResult:
        # servelab's inference script answers a bad request with 200 and {"error": ...}
        if body[:1] == b"{" and b'"error"' in body[:4096]:
            try:
                err = json.loads(body).get("error")
            except ValueError:
                err = None
            if err:
                return InvokeResult("error", status, _short(f"model error: {err}"), {})
        return InvokeResult("ok", status, None, {})


class HttpTarget(_HttpPost):
    """Any URL: POST the payload; 2xx is ok, 429 throttled, anything else an error. With
    ``id_token_audience`` each request carries a Google ID token (Cloud Functions / Cloud Run
    that do not allow unauthenticated calls), fetched from Application Default Credentials."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, id_token_audience: str | None = None,
                 fetch_token: Callable[[str], str] | None = None) -> None:
        super().__init__(session)
        self.name = url
        self.url = url
        self._token = _IdToken(id_token_audience, fetch_token or _google_id_token) if id_token_audience else None
        if self._token is not None:
            self._token.get()  # fail fast on missing credentials, before the first scheduled send

    def headers(self, request_id: str, payload: bytes) -> dict[str, str]:
        h = super().headers(request_id, payload)
        if self._token is not None:
            h["Authorization"] = f"Bearer {self._token.get()}"
        return h


class NullTarget:
    """Does no I/O and answers ok at once: measures the harness's own overhead."""

    def __init__(self, session: aiohttp.ClientSession | None = None, name: str = "null") -> None:
        self.name = name

    async def invoke(self, request_id: str, payload: bytes) -> InvokeResult:
        return InvokeResult("ok")


def _google_id_token(audience: str) -> str:
    try:
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token
    except ImportError:
        raise ConfigError("Google ID tokens need google-auth: pip install 'servelab[gcp]'") from None
    return id_token.fetch_id_token(Request(), audience)


class _IdToken:
    """A Google ID token, fetched when the target is built and again before its hour runs out
    (that refetch blocks the event loop for one HTTPS round trip every 45 minutes)."""

    REFRESH_S = 45 * 60.0

    def __init__(self, audience: str, fetch: Callable[[str], str]) -> None:
        self.audience = audience
        self._fetch = fetch
        self._token: str | None = None
        self._at = 0.0

    def get(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._at > self.REFRESH_S:
            self._token, self._at = self._fetch(self.audience), now
        return self._token


class _SigV4:
    """Signs a request for AWS with botocore (imported only when signing is asked for)."""

    def __init__(self, region: str, service: str) -> None:
        try:
            import botocore.session
            from botocore.auth import SigV4Auth
        except ImportError:
            raise ConfigError("signing for AWS needs botocore: pip install 'servelab[s3]'") from None
        creds = botocore.session.get_session().get_credentials()
        if creds is None:
            raise ConfigError("aws_region is set but no AWS credentials were found "
                              "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        self._auth = SigV4Auth(creds.get_frozen_credentials(), service, region)

    def sign(self, url: str, payload: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.awsrequest import AWSRequest

        req = AWSRequest(method="POST", url=url, data=payload, headers=headers)
        self._auth.add_auth(req)
        return dict(req.headers.items())


@dataclass(frozen=True)
class TargetSpec:
    """A picklable description of a target; calling it with a session builds the target.

    ``url`` is the platform base URL (lambda, v2), the SageMaker runtime URL (sagemaker) or the
    full URL (http); ``name`` is the function (lambda), model (v2) or endpoint (sagemaker).
    ``aws_region`` signs lambda / sagemaker requests for AWS; ``id_token_audience`` sends a
    Google ID token with http requests.
    """

    kind: TargetKind
    url: str = ""
    name: str = ""
    aws_region: str | None = None
    id_token_audience: str | None = None

    REQUIRES: ClassVar[dict[str, tuple[str, ...]]] = {
        "lambda": ("url", "name"), "v2": ("url", "name"), "http": ("url",), "sagemaker": ("url", "name"),
        "null": (),
    }

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise ConfigError(f"target kind must be one of {sorted(TARGETS)}, got {self.kind!r}")
        missing = [f for f in self.REQUIRES[self.kind] if not getattr(self, f)]
        if missing:
            raise ConfigError(f"a {self.kind!r} target needs {' and '.join(missing)}")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"target url must start with http:// or https://, got {self.url!r}")

    def __call__(self, session: aiohttp.ClientSession) -> Target:
        if self.kind == "lambda":
            return LambdaTarget(session, self.url, self.name, aws_region=self.aws_region)
        if self.kind == "v2":
            return V2InferTarget(session, self.url, self.name)
        if self.kind == "http":
            return HttpTarget(session, self.url, id_token_audience=self.id_token_audience)
        if self.kind == "sagemaker":
            return SageMakerTarget(session, self.url, self.name, aws_region=self.aws_region)
        return NullTarget(session)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


TARGETS: dict[TargetKind, type] = {
    "lambda": LambdaTarget, "v2": V2InferTarget, "http": HttpTarget, "sagemaker": SageMakerTarget,
    "null": NullTarget,
}
