"""AWS Lambda through boto3: package, deploy, invoke (with the REPORT line), tear down.

    spec = LambdaSpec(function_name="mnv2", run_id="r1", role_arn="arn:aws:iam::…:role/…",
                      model_bucket="my-models", memory_mb=1769)
    fn = LambdaFunction(spec)                 # boto3 clients from the standard credential chain
    print("\n".join(fn.plan(model, requests=100).lines()))
    with teardown_guard(fn.teardown):         # deleted after success, error, Ctrl-C or SIGTERM
        fn.deploy(model)
        outcome = fn.invoke(payload)          # outcome.record: a RequestRecord from the REPORT line

The same code runs against servelab's local platform (``endpoint_url``), which speaks Lambda's
REST API: servelab's tests deploy, invoke and delete through it with fake credentials.

What is created, all tagged ``servelab:run-id=<run id>``: the model object in S3 (when
``model_source`` is ``s3``, the study's setup: fetched at init), the function, and — with
provisioned concurrency — a published version holding it (AWS does not allow provisioned
concurrency on ``$LATEST``). The execution role is not created: pass ``role_arn`` (docs say
which policy it needs), so servelab needs no IAM write permission.

Units: ms for durations, MB for memory, seconds for timeouts and waits.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servelab.cloud.packaging import LambdaPackage, ModelSource, build_lambda_package
from servelab.cloud.report_line import cloud_request_id, decode_log_tail, record_from_invoke
from servelab.cloud.safety import CloudPlan, PlannedResource, estimate_serverless_usd, run_tags
from servelab.config import validate_name, validated
from servelab.core.resources import MAX_MEMORY_MB, MIN_MEMORY_MB
from servelab.errors import ConfigError, PlatformError
from servelab.records import RequestRecord, Status

PROVISIONED_POLL_S = 5.0  # AWS takes minutes to allocate provisioned concurrency
PROVISIONED_TIMEOUT_S = 900.0
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one vCPU per 1769 MB (AWS docs), up to 6
S3_MODEL_PREFIX = "servelab"


AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                       "AWS_REGION")


class LambdaSpec(BaseModel):
    """One function's settings. ``endpoint_url`` (and ``s3_endpoint_url``) point at a
    Lambda-compatible (S3-compatible) server instead of AWS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function_name: str
    run_id: str
    role_arn: str = ""
    memory_mb: int = Field(1769, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    timeout_s: int = Field(30, ge=1, le=900)
    reserved_concurrency: int | None = Field(None, ge=1)
    provisioned_concurrency: int = Field(0, ge=0)
    runtime: str = "python3.11"
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    model_source: ModelSource = "s3"
    model_bucket: str | None = None
    layers: tuple[str, ...] = ()
    image_uri: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    price_entry: str | None = None  # default: the x86 or arm entry for us-east-1
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("function_name")
    @classmethod
    def _fn(cls, v: str) -> str:
        validate_name(v, what="function name")
        if len(v) > 64:
            raise ValueError(f"a Lambda function name has at most 64 characters (got {len(v)})")
        return v

    @property
    def entry_id(self) -> str:
        if self.price_entry:
            return self.price_entry
        return "aws-lambda-arm-us-east-1" if self.architecture == "arm64" else "aws-lambda-x86-us-east-1"

    @property
    def threads(self) -> int:
        return max(1, min(6, round(self.memory_mb / LAMBDA_MB_PER_VCPU)))

    def model_key(self, model_path: Path) -> str:
        return f"{S3_MODEL_PREFIX}/{self.run_id}/{model_path.name}"


def make_spec(**kwargs: Any) -> LambdaSpec:
    return validated(LambdaSpec, "AWS Lambda settings", **kwargs)


@dataclass
class InvokeOutcome:
    """One invocation: the response payload, the log tail and the record built from them."""

    record: RequestRecord
    payload: bytes
    log_tail: str
    cloud_request_id: str | None = None


@dataclass
class Deployed:
    function_name: str
    qualifier: str | None  # the published version holding provisioned concurrency, else None
    function_arn: str
    package: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def invoke_name(self) -> str:
        """``name`` or ``name:version``: Lambda accepts the qualifier in the function name."""
        return f"{self.function_name}:{self.qualifier}" if self.qualifier else self.function_name


def _client_error_code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def sdk_errors(what: str) -> Iterator[None]:
    """botocore's exceptions as servelab's: missing credentials and bad parameters are the
    user's to fix (ConfigError), the rest is the cloud's answer (PlatformError)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:  # no SDK: nothing of its can be raised
        yield
        return
    try:
        yield
    except NoCredentialsError:
        raise ConfigError(f"{what}: no AWS credentials found; set them the standard way (AWS_PROFILE, "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role)") from None
    except ClientError as e:
        code = _client_error_code(e)
        msg = e.response.get("Error", {}).get("Message", str(e))
        cls = ConfigError if code in ("InvalidParameterValueException", "ValidationException",
                                      "AccessDeniedException", "AccessDenied") else PlatformError
        raise cls(f"{what}: {code}: {msg}") from None
    except BotoCoreError as e:
        raise PlatformError(f"{what}: {type(e).__name__}: {e}") from None


class LambdaFunction:
    """One function's life on AWS Lambda (or a Lambda-compatible endpoint).

    ``session``: a ``boto3.Session`` (default: a new one: the standard credential chain).
    ``sleep`` and ``clock`` are injected so waits are testable; ``poll_s`` is the interval at
    which provisioned concurrency is polled until READY.
    """

    def __init__(self, spec: LambdaSpec, *, session: Any = None, poll_s: float = PROVISIONED_POLL_S,
                 ready_timeout_s: float = PROVISIONED_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, lambda_client: Any = None,
                 s3_client: Any = None) -> None:
        self.spec = spec
        self._session = session
        self._lambda = lambda_client
        self._s3 = s3_client
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        self.sleep = sleep
        self.clock = clock
        self.created: list[PlannedResource] = []  # in creation order; teardown goes backwards
        self.deployed: Deployed | None = None

    # -------------------------------------------------------------------------- clients
    def _boto_session(self) -> Any:
        if self._session is None:
            try:
                import boto3
            except ImportError:
                raise ConfigError("AWS targets need boto3: pip install 'servelab[aws]'") from None
            self._session = boto3.Session(region_name=self.spec.region)
        return self._session

    @property
    def lambda_client(self) -> Any:
        if self._lambda is None:
            from botocore.config import Config

            self._lambda = self._boto_session().client(
                "lambda", endpoint_url=self.spec.endpoint_url, region_name=self.spec.region,
                config=Config(read_timeout=self.spec.timeout_s + 60, retries={"mode": "standard"}))
        return self._lambda

    @property
    def s3_client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._boto_session().client("s3", endpoint_url=self.spec.s3_endpoint_url,
                                                   region_name=self.spec.region)
        return self._s3

    # ----------------------------------------------------------------------------- plan
    def package(self, model_path: Path) -> LambdaPackage:
        return build_lambda_package(model_path, model_source=self.spec.model_source)

    def resources(self, model_path: Path, pkg: LambdaPackage | None = None) -> list[PlannedResource]:
        s = self.spec
        pkg = pkg or self.package(model_path)
        out: list[PlannedResource] = []
        if s.model_source == "s3":
            out.append(PlannedResource("s3-object", f"s3://{s.model_bucket}/{s.model_key(Path(model_path))}",
                                       f"{pkg.model_bytes / 1e6:.1f} MB model"))
        if pkg.kind == "zip-s3":
            out.append(PlannedResource("s3-object", f"s3://{s.model_bucket}/{S3_MODEL_PREFIX}/{s.run_id}/code.zip",
                                       f"{pkg.zipped_bytes / 1e6:.1f} MB code"))
        size = (f"{pkg.zipped_bytes / 1e6:.1f} MB" if pkg.zipped_bytes >= 1e6 else f"{pkg.zipped_bytes / 1e3:.0f} kB")
        what = f"image {s.image_uri}" if pkg.kind == "image" else f"{pkg.kind}, {size}"
        out.append(PlannedResource("lambda-function", s.function_name,
                                   f"{s.memory_mb} MB, timeout {s.timeout_s} s, {s.architecture}, {what}"))
        if s.reserved_concurrency:
            out.append(PlannedResource("lambda-reserved-concurrency", s.function_name, str(s.reserved_concurrency)))
        if s.provisioned_concurrency:
            out.append(PlannedResource("lambda-version", f"{s.function_name}:<published>"))
            out.append(PlannedResource("lambda-provisioned-concurrency", f"{s.function_name}:<published>",
                                       f"{s.provisioned_concurrency} instance(s), billed while it exists"))
        return out

    def plan(self, model_path: str | Path, *, requests: int, expected_duration_ms: float = 200.0,
             window_s: float = 300.0) -> CloudPlan:
        """Resources and cost for deploying and sending ``requests`` requests of about
        ``expected_duration_ms`` each; provisioned concurrency is priced for ``window_s``
        (AWS bills it in 5-minute steps from enable to disable)."""
        model_path = Path(model_path)
        s = self.spec
        pkg = self.package(model_path)
        total, notes = estimate_serverless_usd(s.entry_id, requests=requests, duration_ms=expected_duration_ms,
                                               memory_mb=s.memory_mb, provisioned=s.provisioned_concurrency,
                                               window_s=window_s)
        worst, _ = estimate_serverless_usd(s.entry_id, requests=requests, duration_ms=s.timeout_s * 1000.0,
                                           memory_mb=s.memory_mb, provisioned=s.provisioned_concurrency,
                                           window_s=window_s)
        assumptions = [f"{requests:,} request(s) of ~{expected_duration_ms:g} ms at {s.memory_mb} MB "
                       "(--expected-ms sets the duration)", *pkg.notes, *notes,
                       "S3 storage and requests, CloudWatch Logs and data transfer not included"]
        return CloudPlan(target=f"aws-lambda ({s.region})", resources=self.resources(model_path, pkg),
                         estimate_usd=total, entry_id=s.entry_id, assumptions=assumptions, worst_case_usd=worst)

    # --------------------------------------------------------------------------- deploy
    def deploy(self, model_path: str | Path) -> Deployed:
        """Create everything, wait until the function (and its provisioned concurrency) is ready.
        Each resource is remembered as soon as it exists, so :meth:`teardown` removes it even
        when a later step fails."""
        with sdk_errors(f"deploying {self.spec.function_name}"):
            return self._deploy(Path(model_path))

    def _deploy(self, model_path: Path) -> Deployed:
        s = self.spec
        t0 = self.clock()
        pkg = self.package(model_path)
        env = {**pkg.env, "MODEL_SHA256": pkg.model_sha256, "MODEL_THREADS": str(s.threads)}
        tags = run_tags(s.run_id, s.tags)
        if not s.role_arn and s.endpoint_url is None:
            raise ConfigError("AWS Lambda needs an execution role: pass role_arn (--role-arn); "
                              "docs/cloud-aws-lambda.md shows a minimal one")
        if (s.model_source == "s3" or pkg.kind == "zip-s3") and not s.model_bucket:
            raise ConfigError("model_source 's3' (and zips over 50 MB) need model_bucket: an S3 bucket you own "
                              "in the function's region")
        if s.model_source == "s3":
            key = s.model_key(model_path)
            self._put_object(key, model_path.read_bytes(), tags)
            env["MODEL_S3_URI"] = f"s3://{s.model_bucket}/{key}"
            if s.s3_endpoint_url:
                env["MODEL_S3_ENDPOINT_URL"] = s.s3_endpoint_url
            if s.endpoint_url:
                # servelab's platform gives instances a minimal environment; like Lambda injecting its
                # execution role's credentials, the function asks for the caller's AWS credentials
                env["SERVELAB_PASS_ENV"] = ",".join(AWS_CREDENTIAL_VARS)
        if pkg.kind == "zip":
            code: dict[str, Any] = {"ZipFile": pkg.zip_bytes}
        elif pkg.kind == "zip-s3":
            key = f"{S3_MODEL_PREFIX}/{s.run_id}/code.zip"
            self._put_object(key, pkg.zip_bytes, tags)
            code = {"S3Bucket": s.model_bucket, "S3Key": key}
        else:
            if not s.image_uri:
                raise ConfigError(" ".join(pkg.notes))
            code = {"ImageUri": s.image_uri}
        body: dict[str, Any] = {
            "FunctionName": s.function_name, "Role": s.role_arn or "arn:aws:iam::000000000000:role/servelab",
            "Code": code, "Description": f"servelab run {s.run_id}", "Timeout": s.timeout_s,
            "MemorySize": s.memory_mb, "Environment": {"Variables": env}, "Tags": tags,
            "Architectures": [s.architecture],
        }
        if pkg.kind == "image":
            body["PackageType"] = "Image"
            env.pop("MODEL_PATH", None)  # the image sets it itself
        else:
            body.update(PackageType="Zip", Runtime=s.runtime, Handler=pkg.handler)
            if s.layers:
                body["Layers"] = list(s.layers)
        created = self.lambda_client.create_function(**body)
        self.created.append(PlannedResource("lambda-function", s.function_name))
        self.lambda_client.get_waiter("function_active_v2").wait(
            FunctionName=s.function_name, WaiterConfig={"Delay": int(self.poll_s), "MaxAttempts": 300})
        t_active = self.clock()
        if s.reserved_concurrency:
            self.lambda_client.put_function_concurrency(FunctionName=s.function_name,
                                                        ReservedConcurrentExecutions=s.reserved_concurrency)
        qualifier = None
        timings = {"create_s": round(t_active - t0, 3)}
        if s.provisioned_concurrency:
            qualifier = self.lambda_client.publish_version(FunctionName=s.function_name)["Version"]
            self.lambda_client.put_provisioned_concurrency_config(
                FunctionName=s.function_name, Qualifier=qualifier,
                ProvisionedConcurrentExecutions=s.provisioned_concurrency)
            self.created.append(PlannedResource("lambda-provisioned-concurrency", f"{s.function_name}:{qualifier}"))
            self.wait_provisioned(qualifier)
            timings["provisioned_ready_s"] = round(self.clock() - t_active, 3)
        self.deployed = Deployed(
            function_name=s.function_name, qualifier=qualifier, function_arn=created.get("FunctionArn", ""),
            package={"kind": pkg.kind, "zipped_bytes": pkg.zipped_bytes, "unzipped_bytes": pkg.unzipped_bytes,
                     "model_sha256": pkg.model_sha256, "model_source": s.model_source,
                     "code_sha256": pkg.code_sha256},
            timings_s=timings)
        return self.deployed

    def _put_object(self, key: str, data: bytes, tags: dict[str, str]) -> None:
        from urllib.parse import urlencode

        self.s3_client.put_object(Bucket=self.spec.model_bucket, Key=key, Body=data, Tagging=urlencode(tags))
        self.created.append(PlannedResource("s3-object", f"s3://{self.spec.model_bucket}/{key}"))

    def wait_provisioned(self, qualifier: str) -> dict[str, Any]:
        """Poll GetProvisionedConcurrencyConfig until READY (botocore has no waiter for it)."""
        deadline = self.clock() + self.ready_timeout_s
        while True:
            cfg = self.lambda_client.get_provisioned_concurrency_config(FunctionName=self.spec.function_name,
                                                                        Qualifier=qualifier)
            status = cfg.get("Status")
            if status == "READY":
                return cfg
            if status == "FAILED":
                raise PlatformError(f"provisioned concurrency for {self.spec.function_name}:{qualifier} FAILED: "
                                    f"{cfg.get('StatusReason', 'no reason given')}")
            if self.clock() >= deadline:
                raise PlatformError(f"provisioned concurrency for {self.spec.function_name}:{qualifier} not READY "
                                    f"after {self.ready_timeout_s:.0f} s (status {status}, "
                                    f"{cfg.get('AllocatedProvisionedConcurrentExecutions')} of "
                                    f"{cfg.get('RequestedProvisionedConcurrentExecutions')} allocated)")
            self.sleep(self.poll_s)

    # --------------------------------------------------------------------------- invoke
    def invoke(self, payload: bytes, *, run_id: str | None = None, request_id: str | None = None,
               t_run0: float | None = None) -> InvokeOutcome:
        """One synchronous invocation with ``LogType=Tail``; its record comes from the REPORT line.
        ``t_run0`` (a ``time.perf_counter()`` value) is the run's start, for the clock fields."""
        if self.deployed is None:
            raise ConfigError("deploy() the function before invoking it")
        rid = request_id or uuid.uuid4().hex
        start = time.perf_counter()
        base = start if t_run0 is None else t_run0
        sent = start - base
        status: Status = "ok"
        error = None
        http_status: int | None = None
        log_tail = ""
        body = b""
        facts_header = None
        try:
            resp = self.lambda_client.invoke(FunctionName=self.deployed.invoke_name,
                                             InvocationType="RequestResponse", LogType="Tail", Payload=payload)
            body = resp["Payload"].read()
            http_status = int(resp.get("StatusCode", 200))
            log_tail = decode_log_tail(resp.get("LogResult"))
            headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            facts_header = headers.get("x-servelab-facts")
            if resp.get("FunctionError"):
                status = "timeout" if b"Sandbox.Timedout" in body or b"Task timed out" in body else "error"
                error = f"function error ({resp['FunctionError']}): {body[:300].decode('utf-8', 'replace')}"
            elif body.startswith(b'{"error"'):  # the shipped handler's answer to a bad request
                status, error = "error", json.loads(body).get("error")
        except Exception as e:  # botocore ClientError / connection errors: recorded, never raised
            code = _client_error_code(e)
            http_status = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            status = "throttled" if code == "TooManyRequestsException" or http_status == 429 else "error"
            error = f"{type(e).__name__}: {e}"[:300]
        done = time.perf_counter() - base
        record = record_from_invoke(run_id=run_id or self.spec.run_id, request_id=rid,
                                    target=self.deployed.invoke_name, scheduled_s=sent, sent_s=sent,
                                    completed_s=done, status=status, http_status=http_status, error=error,
                                    log_tail=log_tail, facts_header=facts_header)
        return InvokeOutcome(record=record, payload=body, log_tail=log_tail,
                             cloud_request_id=cloud_request_id(log_tail))

    def invoke_many(self, payloads: Sequence[bytes], count: int, *, records_dir: str | Path | None = None
                    ) -> list[RequestRecord]:
        """``count`` invocations one after another (payload i = payloads[i % len]), recorded
        to ``records_dir`` (Parquet parts, as every servelab run)."""
        from servelab.records import RecordWriter

        out: list[RequestRecord] = []
        writer = RecordWriter(records_dir) if records_dir is not None else None
        t0 = time.perf_counter()
        try:
            for i in range(count):
                rid = f"{self.spec.run_id}-{i:06d}"
                rec = self.invoke(payloads[i % len(payloads)], t_run0=t0, request_id=rid).record
                out.append(rec)
                if writer is not None:
                    writer.append(rec)
        finally:
            if writer is not None:
                writer.close()
        return out

    # ------------------------------------------------------------------------- teardown
    def teardown(self) -> list[str]:
        """Delete what :meth:`deploy` created, newest first; what is already gone is fine.
        Raises PlatformError naming the leftovers (and the cleanup command) if a delete fails."""
        removed: list[str] = []
        failed: list[str] = []
        for res in reversed(self.created):
            try:
                self._delete(res)
                removed.append(f"{res.kind} {res.name}")
            except Exception as e:
                if _client_error_code(e) in ("ResourceNotFoundException", "NoSuchKey", "NoSuchBucket",
                                             "ProvisionedConcurrencyConfigNotFoundException"):
                    removed.append(f"{res.kind} {res.name} (already gone)")
                else:
                    failed.append(f"{res.kind} {res.name}: {type(e).__name__}: {e}")
        self.created = []
        self.deployed = None
        if failed:
            raise PlatformError("teardown left resources behind: " + "; ".join(failed) +
                                f"; remove them with: servelab cloud cleanup --run-id {self.spec.run_id}")
        return removed

    def _delete(self, res: PlannedResource) -> None:
        if res.kind == "lambda-function":
            self.lambda_client.delete_function(FunctionName=res.name)  # deletes its versions and configs too
        elif res.kind == "lambda-provisioned-concurrency":
            name, _, qualifier = res.name.partition(":")
            # stop the provisioned billing first: deleting the function would too, but later
            with contextlib.suppress(Exception):
                self.lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        elif res.kind == "s3-object":
            bucket, _, key = res.name.removeprefix("s3://").partition("/")
            self.s3_client.delete_object(Bucket=bucket, Key=key)
