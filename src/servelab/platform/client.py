"""A small synchronous client for the platform's HTTP API, for the CLI and scripts.

Plain ``urllib`` on purpose: the CLI makes a handful of calls, and boto3 is an optional extra.
Any AWS SDK works against the same endpoints (see docs/platform.md).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from servelab.errors import (
    ConfigError,
    FunctionExistsError,
    FunctionNotFoundError,
    PlatformError,
    ThrottledError,
)

DEFAULT_URL = "http://127.0.0.1:8080"


class PlatformClient:
    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: bytes | dict | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                msg = json.loads(payload).get("message") or json.loads(payload).get("error") or payload.decode()
            except ValueError:
                msg = payload.decode(errors="replace")
            kind = e.headers.get("x-amzn-ErrorType", "")
            if e.code == 404:
                raise FunctionNotFoundError(msg) from None
            if e.code == 409:
                raise FunctionExistsError(msg) from None
            if e.code == 429 or kind == "TooManyRequestsException":
                raise ThrottledError(msg) from None
            if e.code in (400, 413):
                raise ConfigError(msg) from None
            raise PlatformError(f"HTTP {e.code} {kind}: {msg}") from None
        except urllib.error.URLError as e:
            raise PlatformError(f"cannot reach the platform at {self.url} ({e.reason}); "
                                "start it with 'servelab platform up'") from None

    def info(self) -> dict[str, Any]:
        return json.loads(self._call("GET", "/servelab/v1/info")[2])

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self._call("POST", "/2015-03-31/functions", body)[2])

    def update(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self._call("PUT", f"/2015-03-31/functions/{name}/configuration", body)[2])

    def put_provisioned(self, name: str, n: int) -> dict[str, Any]:
        path = f"/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=$LATEST"
        return json.loads(self._call("PUT", path, {"ProvisionedConcurrentExecutions": n})[2])

    def list(self) -> list[dict[str, Any]]:
        return json.loads(self._call("GET", "/2015-03-31/functions")[2])["Functions"]

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/2015-03-31/functions/{name}")

    def instances(self, name: str) -> dict[str, Any]:
        return json.loads(self._call("GET", f"/servelab/v1/functions/{name}/instances")[2])

    def model_metadata(self, name: str) -> dict[str, Any]:
        return json.loads(self._call("GET", f"/v2/models/{name}")[2])

    def invoke(self, name: str, payload: bytes, *, log: bool = False) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        if log:
            headers["X-Amz-Log-Type"] = "Tail"
        return self._call("POST", f"/2015-03-31/functions/{name}/invocations", payload, headers)
