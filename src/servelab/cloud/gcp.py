"""Google Cloud Functions (2nd gen) and Cloud Run through the official Python clients.

    spec = GcpSpec(kind="gcp-functions", name="mnv2", run_id="r1", project="my-proj", memory_mb=2048)
    fn = GcpFunction(spec)
    with teardown_guard(fn.teardown):
        url = fn.deploy(model)            # source: main.py + servelab_infer.py + requirements.txt (+ model)
        rec = fn.invoke(payload).record   # HTTPS with a Google ID token

Cloud Functions: the source zip (as the study deployed it: ``main.py`` and ``requirements.txt``)
is uploaded to a signed URL from ``GenerateUploadUrl`` and built by Cloud Build;
``CreateFunction`` names the runtime, the entry point ``predict``, memory, timeout and instance
limits. Cloud Run: the same source with a Dockerfile (functions-framework) is built and pushed by
you (``gcloud builds submit`` or docker), and ``CreateService`` runs the image with one request
per instance (the serverless model the study measured).

Every resource carries the labels ``servelab-run-id`` and ``servelab-created-by`` (GCP labels
allow only lowercase letters, digits, ``-`` and ``_``). The clients are imported lazily; without
them a ConfigError names the pip extra. Credentials: Application Default Credentials only.

Neither platform reports billed time in its HTTP responses; records carry the client's latency
and, on an instance's first request, the init parts the handler sends in ``X-Servelab-Init``.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servelab.cloud.packaging import GcpSource, ModelSource, write_gcp_source
from servelab.cloud.safety import (
    TAG_CREATED_BY,
    TAG_RUN_ID,
    CloudPlan,
    PlannedResource,
    estimate_serverless_usd,
    redact,
)
from servelab.config import validated
from servelab.errors import ConfigError, PlatformError
from servelab.records import RequestRecord, Status

GcpKind = Literal["gcp-functions", "cloud-run"]
INIT_HEADER = "X-Servelab-Init"
_INIT_RE = re.compile(r"fetch_ms=([0-9.]+) load_ms=([0-9.]+)")
OPERATION_TIMEOUT_S = 900.0


def gcp_labels(run_id: str) -> dict[str, str]:
    """servelab's tags as GCP labels: lowercase letters, digits, '-' and '_', at most 63 characters."""
    value = re.sub(r"[^a-z0-9_-]", "-", run_id.lower())[:63]
    return {TAG_RUN_ID.replace(":", "-"): value, TAG_CREATED_BY.replace(":", "-"): "servelab"}


class GcpSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: GcpKind = "gcp-functions"
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
    run_id: str
    project: str
    region: str = "us-central1"
    memory_mb: int = Field(2048, ge=128, le=32768)
    cpu: str | None = None  # default: the platform's choice for the memory size
    timeout_s: int = Field(60, ge=1, le=3600)
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(10, ge=1)
    concurrency: int = Field(1, ge=1, le=1000)  # requests per instance (Cloud Run)
    runtime: str = "python311"
    model_source: ModelSource = "bundled"
    model_uri: str | None = None  # gs://bucket/key with model_source 'gcs'
    image: str | None = None  # Cloud Run: the image built from the source's Dockerfile
    price_entry: str = "gcp-cloudfunctions-gen2-us-central1"

    @field_validator("model_source")
    @classmethod
    def _src(cls, v: str) -> str:
        if v == "s3":
            raise ValueError("GCP models are 'bundled' in the source or fetched from 'gcs'")
        return v

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def resource_name(self) -> str:
        return f"{self.parent}/{'functions' if self.kind == 'gcp-functions' else 'services'}/{self.name}"


def make_spec(**kwargs: Any) -> GcpSpec:
    return validated(GcpSpec, "Google Cloud settings", **kwargs)


def _import(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this Google Cloud target needs {package}: pip install 'servelab[gcp]' "
                          f"(or pip install {package})") from None


def function_request(spec: GcpSpec, storage_source: Any, env: dict[str, str]) -> Any:
    """The CreateFunctionRequest for ``spec`` (google.cloud.functions_v2)."""
    f2 = _import("google.cloud.functions_v2", "google-cloud-functions")
    service = f2.ServiceConfig(available_memory=f"{spec.memory_mb}Mi", timeout_seconds=spec.timeout_s,
                               min_instance_count=spec.min_instances, max_instance_count=spec.max_instances,
                               max_instance_request_concurrency=spec.concurrency, environment_variables=env,
                               ingress_settings=f2.ServiceConfig.IngressSettings.ALLOW_ALL)
    if spec.cpu:
        service.available_cpu = spec.cpu
    fn = f2.Function(name=spec.resource_name, description=f"servelab run {spec.run_id}",
                     build_config=f2.BuildConfig(runtime=spec.runtime, entry_point="predict",
                                                 source=f2.Source(storage_source=storage_source)),
                     service_config=service, labels=gcp_labels(spec.run_id))
    return f2.CreateFunctionRequest(parent=spec.parent, function=fn, function_id=spec.name)


def service_request(spec: GcpSpec, env: dict[str, str]) -> Any:
    """The CreateServiceRequest for ``spec`` (google.cloud.run_v2)."""
    if not spec.image:
        raise ConfigError("cloud-run needs image: build the source folder's Dockerfile (servelab cloud gcp-source "
                          "--target cloud-run) and push it, e.g. to Artifact Registry")
    run = _import("google.cloud.run_v2", "google-cloud-run")
    from google.protobuf import duration_pb2

    limits = {"memory": f"{spec.memory_mb}Mi", "cpu": spec.cpu or "1"}
    container = run.Container(image=spec.image, resources=run.ResourceRequirements(limits=limits),
                              env=[run.EnvVar(name=k, value=v) for k, v in env.items()])
    template = run.RevisionTemplate(
        containers=[container], max_instance_request_concurrency=spec.concurrency,
        timeout=duration_pb2.Duration(seconds=spec.timeout_s),
        scaling=run.RevisionScaling(min_instance_count=spec.min_instances, max_instance_count=spec.max_instances))
    service = run.Service(template=template, labels=gcp_labels(spec.run_id),
                          description=f"servelab run {spec.run_id}")
    return run.CreateServiceRequest(parent=spec.parent, service=service, service_id=spec.name)


@dataclass
class GcpOutcome:
    record: RequestRecord
    payload: bytes


def _put_zip(url: str, data: bytes) -> None:
    """Upload the source to GenerateUploadUrl's signed URL (a plain HTTPS PUT, as gcloud does)."""
    req = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": "application/zip"})
    with urllib.request.urlopen(req, timeout=300) as r:
        if r.status >= 300:
            raise PlatformError(f"source upload failed: HTTP {r.status}")


def _id_token(audience: str) -> str:
    """A Google ID token for ``audience`` from Application Default Credentials."""
    oauth = _import("google.oauth2.id_token", "google-auth")
    transport = _import("google.auth.transport.requests", "google-auth[requests]")
    return oauth.fetch_id_token(transport.Request(), audience)


class GcpFunction:
    """One Cloud Function or Cloud Run service. Clients are built from Application Default
    Credentials unless given; ``put_zip`` and ``id_token`` are injectable for tests."""

    def __init__(self, spec: GcpSpec, *, functions_client: Any = None, run_client: Any = None,
                 put_zip: Callable[[str, bytes], None] = _put_zip, id_token: Callable[[str], str] = _id_token,
                 work_dir: str | Path | None = None) -> None:
        self.spec = spec
        self._functions = functions_client
        self._run = run_client
        self.put_zip = put_zip
        self.id_token = id_token
        self.work_dir = Path(work_dir) if work_dir else None
        self.url: str | None = None
        self.created: list[PlannedResource] = []
        self._token: str | None = None

    @property
    def functions_client(self) -> Any:
        if self._functions is None:
            self._functions = _import("google.cloud.functions_v2", "google-cloud-functions").FunctionServiceClient()
        return self._functions

    @property
    def run_client(self) -> Any:
        if self._run is None:
            self._run = _import("google.cloud.run_v2", "google-cloud-run").ServicesClient()
        return self._run

    def source(self, model_path: str | Path) -> GcpSource:
        import tempfile

        out = self.work_dir or Path(tempfile.mkdtemp(prefix="servelab-gcp-"))
        return write_gcp_source(out, model_path, model_source=self.spec.model_source, model_uri=self.spec.model_uri,
                                container=self.spec.kind == "cloud-run")

    def plan(self, model_path: str | Path, *, requests: int, expected_duration_ms: float = 200.0) -> CloudPlan:
        s = self.spec
        what = "cloud-function" if s.kind == "gcp-functions" else "cloud-run-service"
        res = [PlannedResource(what, s.resource_name, f"{s.memory_mb} MB, timeout {s.timeout_s} s, instances "
                                                      f"{s.min_instances}..{s.max_instances}")]
        if s.kind == "gcp-functions":
            res.insert(0, PlannedResource("gcs-source-upload", f"{s.parent} (Cloud Functions' upload bucket)"))
        total, notes = estimate_serverless_usd(s.price_entry, requests=requests, duration_ms=expected_duration_ms,
                                               memory_mb=s.memory_mb)
        assumptions = [f"{requests:,} request(s) of ~{expected_duration_ms:g} ms", *notes,
                       "Cloud Build, Artifact Registry storage and idle min instances not included"]
        return CloudPlan(target=f"{s.kind} ({s.region})", resources=res, estimate_usd=total, entry_id=s.price_entry,
                         assumptions=assumptions)

    def deploy(self, model_path: str | Path) -> str:
        src = self.source(model_path)
        s = self.spec
        env = {**src.env, "MODEL_SHA256": src.model_sha256}
        try:
            if s.kind == "gcp-functions":
                upload = self.functions_client.generate_upload_url(request={"parent": s.parent})
                self.put_zip(upload.upload_url, src.zip_bytes)
                op = self.functions_client.create_function(request=function_request(s, upload.storage_source, env))
                self.created.append(PlannedResource("cloud-function", s.resource_name))
                result = op.result(timeout=OPERATION_TIMEOUT_S)
                self.url = result.service_config.uri or result.url
            else:
                op = self.run_client.create_service(request=service_request(s, env))
                self.created.append(PlannedResource("cloud-run-service", s.resource_name))
                self.url = op.result(timeout=OPERATION_TIMEOUT_S).uri
        except ConfigError:
            raise
        except Exception as e:  # google.api_core exceptions: the cloud's answer
            raise PlatformError(f"deploying {s.resource_name}: {type(e).__name__}: {e}") from None
        return self.url

    def invoke(self, payload: bytes, *, request_id: str | None = None) -> GcpOutcome:
        if not self.url:
            raise ConfigError("deploy() before invoke()")
        if self._token is None:
            self._token = self.id_token(self.url)
        rid = request_id or uuid.uuid4().hex
        req = urllib.request.Request(self.url, data=payload, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self._token}"})
        t0 = time.perf_counter()
        status: Status = "ok"
        error = None
        http_status = None
        body = b""
        init = None
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout_s + 30) as r:
                http_status, body, init = r.status, r.read(), r.headers.get(INIT_HEADER)
        except urllib.error.HTTPError as e:
            http_status, body = e.code, e.read()
            status = "throttled" if e.code == 429 else "timeout" if e.code == 504 else "error"
            error = f"HTTP {e.code}: {body[:300].decode('utf-8', 'replace')}"
        except (urllib.error.URLError, OSError) as e:
            status, error = "error", f"{type(e).__name__}: {e}"[:300]
        latency_ms = (time.perf_counter() - t0) * 1000.0
        facts: dict[str, Any] = {"memory_mb": self.spec.memory_mb}
        m = _INIT_RE.search(init or "")
        if m:  # the instance's first request: it was a cold start, and these are its init parts
            facts.update(cold=True, start_kind="cold", init_fetch_ms=float(m.group(1)), init_load_ms=float(m.group(2)))
        record = RequestRecord(run_id=self.spec.run_id, request_id=rid, target=self.spec.name, scheduled_s=0.0,
                               sent_s=0.0, completed_s=latency_ms / 1000.0, latency_ms=latency_ms, send_lag_ms=0.0,
                               status=status, error=redact(error) if error else None,
                               http_status=http_status, **facts)
        return GcpOutcome(record=record, payload=body)

    def teardown(self) -> list[str]:
        removed, failed = [], []
        for res in reversed(self.created):
            try:
                if res.kind == "cloud-function":
                    self.functions_client.delete_function(request={"name": res.name}).result(
                        timeout=OPERATION_TIMEOUT_S)
                else:
                    self.run_client.delete_service(request={"name": res.name}).result(timeout=OPERATION_TIMEOUT_S)
                removed.append(f"{res.kind} {res.name}")
            except Exception as e:
                if type(e).__name__ == "NotFound":
                    removed.append(f"{res.kind} {res.name} (already gone)")
                else:
                    failed.append(f"{res.kind} {res.name}: {type(e).__name__}: {e}")
        self.created = []
        if failed:
            raise PlatformError("teardown left resources behind: " + "; ".join(failed) +
                                f"; find them by the label servelab-run-id={gcp_labels(self.spec.run_id)}")
        return removed
