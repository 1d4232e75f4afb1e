"""Amazon SageMaker endpoints through boto3: real-time (instances, autoscaling) and serverless.

    spec = SageMakerSpec(name="mnv2", run_id="r1", role_arn="…", model_bucket="my-models",
                         mode="serverless", memory_mb=2048, max_concurrency=5)
    ep = SageMakerEndpoint(spec)
    with teardown_guard(ep.teardown):
        ep.deploy(model)                   # model.tar.gz to S3, model, endpoint config, endpoint
        record = ep.invoke(payload).record

The model is packaged as SageMaker's framework containers expect: ``model.onnx`` at the top of
``model.tar.gz`` and ``code/inference.py`` (model_fn / input_fn / predict_fn / output_fn) with
``code/requirements.txt`` (onnxruntime) — the same ``servelab_infer.py`` the Lambda handler uses.
Real-time endpoints can autoscale through Application Auto Scaling (target tracking on
``SageMakerVariantInvocationsPerInstance``).

SageMaker reports no per-request duration or billed time in its responses (only CloudWatch's
``ModelLatency`` metric), so records carry the client's latency; a serverless endpoint's bill
is priced from it as an upper bound, a real-time endpoint's from instance hours.

No SageMaker server can run locally: servelab's tests check every request against botocore's
service model with ``botocore.stub.Stubber`` and recorded-shape responses (docs/cloud-sagemaker.md).
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servelab.cloud.aws_lambda import _client_error_code, sdk_errors
from servelab.cloud.packaging import CORE_FILE, RUNTIME_DIR, requirements_txt, sha256_file
from servelab.cloud.safety import (
    CloudPlan,
    PlannedResource,
    estimate_instances_usd,
    estimate_serverless_usd,
    redact,
    run_tags,
)
from servelab.config import validated
from servelab.errors import ConfigError, PlatformError
from servelab.records import RequestRecord, Status

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# A CPU PyTorch inference container (AWS Deep Learning Containers, us-east-1); its inference
# toolkit runs code/inference.py and installs code/requirements.txt. Other regions: other accounts.
DEFAULT_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)


def scalable_resource_id(endpoint: str, variant: str = VARIANT) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


class SageMakerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    run_id: str
    role_arn: str
    model_bucket: str
    mode: Literal["realtime", "serverless"] = "realtime"
    instance_type: str = "ml.c5.large"
    instance_count: int = Field(1, ge=1)
    autoscaling_max: int | None = Field(None, ge=1)  # None: no autoscaling
    target_invocations_per_instance: float = Field(100.0, gt=0)  # per minute, SageMaker's metric
    scale_in_cooldown_s: int = Field(300, ge=0)
    scale_out_cooldown_s: int = Field(60, ge=0)
    memory_mb: int = 2048
    max_concurrency: int = Field(5, ge=1, le=200)
    image_uri: str = DEFAULT_IMAGE
    region: str = "us-east-1"
    price_entry: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SageMakerSpec:
        if self.mode == "serverless" and self.memory_mb not in SERVERLESS_MEMORY_MB:
            raise ValueError(f"serverless memory_mb must be one of {SERVERLESS_MEMORY_MB} (got {self.memory_mb})")
        if self.autoscaling_max is not None and self.autoscaling_max < self.instance_count:
            raise ValueError(f"autoscaling_max ({self.autoscaling_max}) is below instance_count "
                             f"({self.instance_count})")
        if self.autoscaling_max is not None and self.mode == "serverless":
            raise ValueError("autoscaling applies to real-time endpoints; serverless ones scale by max_concurrency")
        return self

    @property
    def entry_id(self) -> str:
        if self.price_entry:
            return self.price_entry
        if self.mode == "serverless":
            return "aws-sagemaker-serverless-us-east-1"
        return f"aws-sagemaker-{self.instance_type}-us-east-1"

    @property
    def model_key(self) -> str:
        return f"servelab/{self.run_id}/model.tar.gz"


def make_spec(**kwargs: Any) -> SageMakerSpec:
    return validated(SageMakerSpec, "SageMaker settings", **kwargs)


def build_model_archive(model_path: str | Path) -> bytes:
    """model.tar.gz: ``model.onnx`` + ``code/inference.py``, ``code/servelab_infer.py``,
    ``code/requirements.txt``. Entries have fixed times, so the bytes are reproducible."""
    model = Path(model_path)
    if not model.is_file():
        raise ConfigError(f"model file {model} does not exist")
    files = {"model.onnx": model.read_bytes(),
             "code/inference.py": (RUNTIME_DIR / "sagemaker_inference.py").read_bytes(),
             f"code/{CORE_FILE}": (RUNTIME_DIR / CORE_FILE).read_bytes(),
             "code/requirements.txt": requirements_txt().replace("numpy==", "numpy>=").encode()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class SageMakerOutcome:
    record: RequestRecord
    payload: bytes
    variant: str | None = None


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


class SageMakerEndpoint:
    """One endpoint's life. Clients default to a boto3 Session (the standard credential chain);
    tests pass stubbed clients."""

    def __init__(self, spec: SageMakerSpec, *, session: Any = None, sagemaker_client: Any = None,
                 runtime_client: Any = None, autoscaling_client: Any = None, s3_client: Any = None,
                 poll_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._session = session
        self._clients: dict[str, Any] = {"sagemaker": sagemaker_client, "sagemaker-runtime": runtime_client,
                                         "application-autoscaling": autoscaling_client, "s3": s3_client}
        self.poll_s = poll_s
        self.clock = clock
        self.created: list[PlannedResource] = []

    def client(self, service: str) -> Any:
        if self._clients.get(service) is None:
            if self._session is None:
                try:
                    import boto3
                except ImportError:
                    raise ConfigError("SageMaker needs boto3: pip install 'servelab[aws]'") from None
                self._session = boto3.Session(region_name=self.spec.region)
            self._clients[service] = self._session.client(service, region_name=self.spec.region)
        return self._clients[service]

    # ----------------------------------------------------------------------------- plan
    def names(self) -> dict[str, str]:
        n = self.spec.name
        return {"model": f"{n}-model", "config": f"{n}-config", "endpoint": n}

    def variant(self) -> dict[str, Any]:
        s = self.spec
        v: dict[str, Any] = {"VariantName": VARIANT, "ModelName": self.names()["model"]}
        if s.mode == "serverless":
            v["ServerlessConfig"] = {"MemorySizeInMB": s.memory_mb, "MaxConcurrency": s.max_concurrency}
        else:
            v.update(InitialInstanceCount=s.instance_count, InstanceType=s.instance_type, InitialVariantWeight=1.0)
        return v

    def plan(self, model_path: str | Path, *, requests: int, expected_duration_ms: float = 200.0,
             window_s: float = 3600.0) -> CloudPlan:
        s = self.spec
        names = self.names()
        res = [PlannedResource("s3-object", f"s3://{s.model_bucket}/{s.model_key}",
                               f"{Path(model_path).stat().st_size / 1e6:.1f} MB model + code"),
               PlannedResource("sagemaker-model", names["model"], s.image_uri),
               PlannedResource("sagemaker-endpoint-config", names["config"],
                               f"serverless {s.memory_mb} MB, max concurrency {s.max_concurrency}"
                               if s.mode == "serverless" else f"{s.instance_count} x {s.instance_type}"),
               PlannedResource("sagemaker-endpoint", names["endpoint"])]
        if s.autoscaling_max:
            res.append(PlannedResource("autoscaling-target", scalable_resource_id(names["endpoint"]),
                                       f"{s.instance_count}..{s.autoscaling_max} instances, target "
                                       f"{s.target_invocations_per_instance:g} invocations/instance/min"))
        if s.mode == "serverless":
            total, notes = estimate_serverless_usd(s.entry_id, requests=requests, duration_ms=expected_duration_ms,
                                                   memory_mb=s.memory_mb)
            assumptions = [f"{requests:,} request(s) of ~{expected_duration_ms:g} ms", *notes]
        else:
            n = s.autoscaling_max or s.instance_count
            total, notes = estimate_instances_usd(s.entry_id, instances=n, window_s=window_s, requests=requests)
            assumptions = [f"{n} instance(s) for {window_s:g} s (the autoscaling maximum, an upper bound)"
                           if s.autoscaling_max else f"{n} instance(s) for {window_s:g} s", *notes]
        assumptions.append("S3 storage, data processing and CloudWatch not included")
        return CloudPlan(target=f"sagemaker {s.mode} ({s.region})", resources=res, estimate_usd=total,
                         entry_id=s.entry_id, assumptions=assumptions)

    # --------------------------------------------------------------------------- deploy
    def deploy(self, model_path: str | Path, *, wait: bool = True) -> str:
        with sdk_errors(f"deploying SageMaker endpoint {self.spec.name}"):
            return self._deploy(Path(model_path), wait=wait)

    def _deploy(self, model_path: Path, *, wait: bool) -> str:
        s = self.spec
        names = self.names()
        tags = _tag_list(run_tags(s.run_id))
        archive = build_model_archive(model_path)
        from urllib.parse import urlencode

        self.client("s3").put_object(Bucket=s.model_bucket, Key=s.model_key, Body=archive,
                                     Tagging=urlencode(run_tags(s.run_id)))
        self.created.append(PlannedResource("s3-object", f"s3://{s.model_bucket}/{s.model_key}"))
        sm = self.client("sagemaker")
        env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
               "MODEL_NAME": model_path.stem, "MODEL_SHA256": sha256_file(model_path)}
        sm.create_model(ModelName=names["model"], ExecutionRoleArn=s.role_arn, Tags=tags,
                        PrimaryContainer={"Image": s.image_uri, "ModelDataUrl": f"s3://{s.model_bucket}/{s.model_key}",
                                          "Environment": env})
        self.created.append(PlannedResource("sagemaker-model", names["model"]))
        sm.create_endpoint_config(EndpointConfigName=names["config"], ProductionVariants=[self.variant()], Tags=tags)
        self.created.append(PlannedResource("sagemaker-endpoint-config", names["config"]))
        arn = sm.create_endpoint(EndpointName=names["endpoint"], EndpointConfigName=names["config"],
                                 Tags=tags)["EndpointArn"]
        self.created.append(PlannedResource("sagemaker-endpoint", names["endpoint"]))
        if wait:
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName=names["endpoint"], WaiterConfig={"Delay": int(self.poll_s), "MaxAttempts": 120})
        if s.autoscaling_max:
            self._autoscale(names["endpoint"])
        return arn

    def _autoscale(self, endpoint: str) -> None:
        s = self.spec
        aas = self.client("application-autoscaling")
        rid = scalable_resource_id(endpoint)
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                     ScalableDimension=SCALABLE_DIMENSION, MinCapacity=s.instance_count,
                                     MaxCapacity=s.autoscaling_max)
        self.created.append(PlannedResource("autoscaling-target", rid))
        aas.put_scaling_policy(
            PolicyName=f"{endpoint}-invocations", ServiceNamespace="sagemaker", ResourceId=rid,
            ScalableDimension=SCALABLE_DIMENSION, PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": s.target_invocations_per_instance,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": s.scale_in_cooldown_s, "ScaleOutCooldown": s.scale_out_cooldown_s})

    # --------------------------------------------------------------------------- invoke
    def invoke(self, payload: bytes, *, request_id: str | None = None) -> SageMakerOutcome:
        rid = request_id or uuid.uuid4().hex
        t0 = time.perf_counter()
        status: Status = "ok"
        error = None
        http_status: int | None = None
        body = b""
        variant = None
        try:
            resp = self.client("sagemaker-runtime").invoke_endpoint(
                EndpointName=self.names()["endpoint"], ContentType="application/json", Accept="application/json",
                Body=payload)
            body = resp["Body"].read()
            variant = resp.get("InvokedProductionVariant")
            http_status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
            if body.startswith(b'{"error"'):
                status, error = "error", body[:300].decode("utf-8", "replace")
        except Exception as e:
            code = _client_error_code(e)
            http_status = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            status = "throttled" if code in ("ThrottlingException", "ServiceUnavailable") else "error"
            if code == "ModelError" and "timed out" in str(e):
                status = "timeout"
            error = f"{type(e).__name__}: {e}"[:300]
        latency_ms = (time.perf_counter() - t0) * 1000.0
        s = self.spec
        record = RequestRecord(run_id=s.run_id, request_id=rid, target=self.names()["endpoint"], scheduled_s=0.0,
                               sent_s=0.0, completed_s=latency_ms / 1000.0, latency_ms=latency_ms, send_lag_ms=0.0,
                               status=status, error=redact(error) if error else None,
                               http_status=http_status,
                               memory_mb=s.memory_mb if s.mode == "serverless" else None)
        return SageMakerOutcome(record=record, payload=body, variant=variant)

    # ------------------------------------------------------------------------- teardown
    def teardown(self, *, wait: bool = True) -> list[str]:
        """Delete newest first; the endpoint is deleted before its config and model (AWS's order)."""
        removed, failed = [], []
        for res in reversed(self.created):
            try:
                self._delete(res, wait=wait)
                removed.append(f"{res.kind} {res.name}")
            except Exception as e:
                code = _client_error_code(e)
                if code in ("ValidationException", "ObjectNotFoundException", "NoSuchKey"):
                    removed.append(f"{res.kind} {res.name} (already gone)")
                else:
                    failed.append(f"{res.kind} {res.name}: {type(e).__name__}: {e}")
        self.created = []
        if failed:
            raise PlatformError("teardown left resources behind: " + "; ".join(failed) +
                                f"; remove them with: servelab cloud cleanup --run-id {self.spec.run_id}")
        return removed

    def _delete(self, res: PlannedResource, *, wait: bool) -> None:
        sm = self.client("sagemaker")
        if res.kind == "autoscaling-target":
            self.client("application-autoscaling").deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=res.name, ScalableDimension=SCALABLE_DIMENSION)
        elif res.kind == "sagemaker-endpoint":
            sm.delete_endpoint(EndpointName=res.name)
            if wait:
                sm.get_waiter("endpoint_deleted").wait(
                    EndpointName=res.name, WaiterConfig={"Delay": int(self.poll_s), "MaxAttempts": 120})
        elif res.kind == "sagemaker-endpoint-config":
            sm.delete_endpoint_config(EndpointConfigName=res.name)
        elif res.kind == "sagemaker-model":
            sm.delete_model(ModelName=res.name)
        elif res.kind == "s3-object":
            bucket, _, key = res.name.removeprefix("s3://").partition("/")
            self.client("s3").delete_object(Bucket=bucket, Key=key)
