"""Bad input never gets a 5xx: malformed requests over every route, then schemathesis fuzzing
the real server from its own OpenAPI document (``/openapi.json``).

The platform runs for real on loopback with a model function and a handler function deployed,
so fuzzed requests reach real handlers, real instances and the real store.
"""

from __future__ import annotations

import collections
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from platform_harness import RunningPlatform, zip_code
from servelab.models.store import open_store
from servelab.platform.api import ROUTES

HANDLER = "def echo(event, context):\n    return {'event': event}\n"
REQUEST_TIMEOUT_S = 30  # a hang fails the test instead of stalling it


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[RunningPlatform]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    with RunningPlatform(home) as p:
        c = p.lambda_client()
        ref = open_store(None, home=home).put("tiny-mlp", tiny_models["tiny-mlp"])
        c.create_function(FunctionName="mlp", Role="r", Code={"ZipFile": b""}, MemorySize=256,
                          Environment={"Variables": {"SERVELAB_MODEL": ref}})
        c.create_function(FunctionName="echo", Role="r", Handler="app.echo", MemorySize=256,
                          Code={"ZipFile": zip_code({"app.py": HANDLER})})
        yield p


def _send(p: RunningPlatform, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(p.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


NOT_AN_OBJECT = [b"not json", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00", b"{", b'{"a": NaN}', b"[1, 2, {}]"]
WRONG_FIELDS = [b'{"FunctionName": 5}', b'{"Environment": []}', b'{"Environment": {"Variables": 3}}',
                b'{"MemorySize": "lots"}', b'{"Timeout": -1}', b'{"Tags": ["x"]}', b'{"DestinationConfig": "x"}',
                b'{"MaximumRetryAttempts": 9}', b'{"ProvisionedConcurrentExecutions": -3}',
                b'{"ReservedConcurrentExecutions": "many"}']
BAD_NAMES = ["..%2Fx", "mlp:..%2Fx", "a" * 300, "%00", "mlp:1:2", "mlp:bad%2Fqual", "%F0%28%8C%28"]
Case = tuple[str, str, "bytes | None", dict[str, str], bool]  # method, path, body, headers, must be 4xx


def _concrete(path: str, name: str) -> str:
    return path.replace("{name}", name).replace(
        "{arn}", "arn:aws:lambda:local:000000000000:function:" + name)


def _wrong_for(route, body: bytes) -> bool:
    """Whether ``body`` sets a field ``route``'s model has, to a wrong value (else it is ignored)."""
    fields = json.loads(body).keys()
    return route.body is not None and any(f in route.body.model_fields for f in fields)


def _malformed() -> list[Case]:
    cases: list[Case] = []
    for r in ROUTES:
        if r.path == "/openapi.json":
            continue
        if "{" in r.path:
            cases += [(r.method, _concrete(r.path, name), b"{}" if r.method in ("POST", "PUT") else None, {}, True)
                      for name in BAD_NAMES]
        if r.method in ("POST", "PUT"):
            target = _concrete(r.path, "echo" if "invocations" in r.path else "mlp")
            # an invoke payload may be any JSON value (Lambda passes it on); elsewhere an object
            json_values = (b"[", b"n", b"4", b'"')
            cases += [(r.method, target, body, {}, "invocations" not in r.path or not body.startswith(json_values))
                      for body in NOT_AN_OBJECT]
            cases += [(r.method, target, body, {}, _wrong_for(r, body)) for body in WRONG_FIELDS]
        if r.query is not None:
            # a DELETE whose query is merely ignored would really delete: aim those at no function
            target = _concrete(r.path, "ghost" if r.method == "DELETE" else "mlp")
            body = None if r.method in ("GET", "DELETE") else b"{}"
            for q, value in (("Qualifier", "../x"), ("MaxItems", "abc"), ("List", "NOPE"), ("tagKeys", ""),
                             ("limit", "-1"), ("state", "exploded")):
                cases.append((r.method, f"{target}?{q}={value}", body, {}, q in r.query.model_fields))
    fn = "/2015-03-31/functions/mlp/invocations"
    cases += [("POST", fn, b"{}", {"X-Amz-Invocation-Type": "Bogus"}, True),
              ("POST", fn, b"{}", {"X-Amz-Log-Type": "Everything"}, True),
              ("POST", "/2015-03-31/functions/echo/invocations", b"{}", {"X-Amz-Invocation-Type": "Event"}, False)]
    infer = "/v2/models/mlp/infer"
    int64 = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "INT64", "data": list(range(16))}]}
    short = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 3}]}
    wrong_shape = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1.0] * 6}]}
    cases += [("POST", infer, json.dumps(b).encode(), {}, True) for b in (int64, short, wrong_shape)]
    cases += [("POST", infer, b'{"inputs": []}', {}, True),
              ("POST", infer, b"{}", {"Inference-Header-Content-Length": "-1"}, True),
              ("POST", infer, b"{}", {"Inference-Header-Content-Length": "abc"}, True),
              ("POST", infer, b"{}", {"Inference-Header-Content-Length": "99999"}, True),
              ("POST", "/2017-03-31/tags/arn:aws:s3:::bucket", b'{"Tags": {}}', {}, True),
              ("GET", "/servelab/v1/functions/..%2F..%2Fetc/instances", None, {}, True)]
    return cases


def test_malformed_requests_over_every_route_get_4xx_never_5xx(platform: RunningPlatform) -> None:
    cases = _malformed()
    assert len(cases) >= 90
    routes_hit = {(m, p.split("?")[0]) for m, p, *_ in cases}
    failures = []
    for method, path, body, headers, must_be_4xx in cases:
        t0 = time.monotonic()
        status, out = _send(platform, method, path, body, headers)
        too_slow = time.monotonic() - t0 > REQUEST_TIMEOUT_S
        if status >= 500 or too_slow or (must_be_4xx and not 400 <= status < 500):
            failures.append((method, path, body, headers, status, out[:300]))
    assert not failures, failures
    assert sum(c[4] for c in cases) >= 90
    assert len({(m, p) for m, p in routes_hit}) >= len(ROUTES) - 5  # bad names and bodies reach every route
    # the platform is still healthy and serving
    assert _send(platform, "GET", "/v2/health/ready")[0] == 200
    status, out = _send(platform, "POST", "/2015-03-31/functions/echo/invocations", b'{"ok": 1}')
    assert status == 200 and json.loads(out) == {"event": {"ok": 1}}


def test_specific_bad_inputs_get_the_documented_answer(platform: RunningPlatform) -> None:
    fn = "/2015-03-31/functions"
    status, out = _send(platform, "PUT", fn + "/mlp/configuration", b"[]")
    assert status == 400 and "request body" in json.loads(out)["message"]
    status, out = _send(platform, "POST", fn + "/echo/invocations", b"{not json")
    assert status == 400 and "Could not parse request body into json" in json.loads(out)["message"]
    status, out = _send(platform, "GET", fn + "/mlp:..%2Fx")
    assert status == 400 and "invalid qualifier" in json.loads(out)["message"]
    status, out = _send(platform, "POST", fn + "/mlp/invocations?Qualifier=../x", b"{}")
    assert status == 400 and "invalid qualifier" in json.loads(out)["message"]
    int64 = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "INT64", "data": list(range(16))}]}
    status, out = _send(platform, "POST", "/v2/models/mlp/infer", json.dumps(int64).encode())
    assert status == 400 and "INT64" in json.loads(out)["error"] and "FP32" in json.loads(out)["error"]
    b64 = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "b64": "AAAA"}]}
    status, out = _send(platform, "POST", "/v2/models/mlp/infer", json.dumps(b64).encode())
    assert status == 400 and "needs 64" in json.loads(out)["error"]
    status, out = _send(platform, "POST", "/v2/models/mlp/infer", b"[]")
    assert status == 400 and "error" in json.loads(out)
    status, out = _send(platform, "GET", "/v2/models/nope")
    assert status == 404 and "error" in json.loads(out)


def test_openapi_document_lists_every_route(platform: RunningPlatform) -> None:
    status, out = _send(platform, "GET", "/openapi.json")
    doc = json.loads(out)
    assert status == 200 and doc["openapi"].startswith("3.")
    for r in ROUTES:
        assert r.method.lower() in doc["paths"][r.path], (r.method, r.path)
    put_cfg = doc["paths"]["/2015-03-31/functions/{name}/configuration"]["put"]
    ref = put_cfg["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "MemorySize" in doc["components"]["schemas"][ref]["properties"]


FUZZ_EXAMPLES = 6  # per operation and mode: 2 x 31 operations x 6 = ~370 requests


def test_fuzzed_requests_from_the_openapi_document_never_get_a_5xx(platform: RunningPlatform) -> None:
    """schemathesis generates valid (positive) and invalid (negative) requests for every
    operation in /openapi.json and sends them to the real server: no 5xx, no hang."""
    schema = schemathesis.openapi.from_url(f"{platform.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ROUTES) - 1  # all but /openapi.json itself, which schemathesis skips
    sent: list[tuple[str, str, int]] = []
    failures: list[tuple] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            def run(case) -> None:
                if case.method == "DELETE" and case.path_parameters and \
                        case.path_parameters.get("name") in ("mlp", "echo"):
                    return  # keep the two functions the other cases reach
                t0 = time.monotonic()
                response = case.call(timeout=REQUEST_TIMEOUT_S)
                sent.append((case.method, case.formatted_path, response.status_code))
                if response.status_code >= 500 or time.monotonic() - t0 > REQUEST_TIMEOUT_S:
                    failures.append((case.method, case.formatted_path, case.query, case.headers, case.body,
                                     response.status_code, response.text[:300]))

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid: a route whose only input is a string in its path
                assert mode == GenerationMode.NEGATIVE and not op.body and not op.query
    print('fuzz:', len(sent), 'requests; statuses', sorted(collections.Counter(s for *_, s in sent).items()))
    assert not failures, failures[:5]
    assert len(sent) >= 90
    assert _send(platform, "GET", "/v2/health/ready")[0] == 200
