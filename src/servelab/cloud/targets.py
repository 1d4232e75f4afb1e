"""Cloud target kinds for experiments, registered with the bench registry.

The registry imports this module the first time an experiment names a kind it does not know
(``servelab.bench.registry.PLUGIN_MODULES``), so it stays cheap: pydantic specs here, boto3
and the rest only when a run deploys.

- ``aws-lambda``: the function is deployed per run (cold), driven by the load generator
  through Lambda's Invoke API (SigV4-signed on AWS, plain on a Lambda-compatible ``endpoint_url``)
  with ``LogType=Tail``, so every record carries the REPORT line's facts; deleted after the run.
- ``sagemaker``: a real-time or serverless endpoint deployed per run, driven through
  InvokeEndpoint (SigV4, service ``sagemaker``); records carry client latency only (SageMaker
  reports no billed duration); deleted after the run;
- ``gcp-functions``, ``cloud-run``: the function / service deployed per run from the generated
  source (Cloud Run: from ``image``), driven over HTTPS with a Google ID token; deleted after.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from servelab.bench.registry import register_target
from servelab.bench.spec import TargetSpecBase
from servelab.bench.targets import BenchTarget, Endpoint

LAMBDA_URL = "https://lambda.{region}.amazonaws.com"


class AwsLambdaTargetSpec(TargetSpecBase):
    """AWS Lambda (or a Lambda-compatible endpoint). Axes used: models, memory_mb, provisioned."""

    kind: Literal["aws-lambda"] = "aws-lambda"
    region: str = "us-east-1"
    role_arn: str = ""
    model_source: Literal["s3", "bundled"] = "s3"
    model_bucket: str | None = None
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    function_timeout_s: int = Field(30, ge=1, le=900)
    reserved_concurrency: int | None = Field(None, ge=1)
    layers: tuple[str, ...] = ()
    image_uri: str | None = None
    endpoint_url: str | None = None  # a Lambda-compatible server (servelab's platform); default AWS
    s3_endpoint_url: str | None = None
    expected_duration_ms: float = Field(200.0, gt=0)  # for the cost estimate the budget checks
    max_cost_usd: float | None = Field(None, ge=0)  # refuse runs once the estimates add up past it
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"runtime", "batch_size"})
    DEFAULT_PRICE: ClassVar[str | None] = "aws-lambda-x86-us-east-1"


class SageMakerTargetSpec(TargetSpecBase):
    """SageMaker real-time (instance type and count, optional autoscaling up to ``autoscaling_max``)
    or serverless (memory from the run's memory_mb axis, max concurrency). Axes used: models, memory_mb."""

    kind: Literal["sagemaker"] = "sagemaker"
    region: str = "us-east-1"
    role_arn: str = ""
    model_bucket: str = ""
    autoscaling_max: int | None = Field(None, ge=1)
    runtime_url: str | None = None  # default https://runtime.sagemaker.REGION.amazonaws.com
    mode: Literal["realtime", "serverless"] = "realtime"
    instance_type: str = "ml.c5.large"
    instance_count: int = Field(1, ge=1)
    max_concurrency: int = Field(5, ge=1, le=200)
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"runtime", "batch_size", "provisioned"})
    DEFAULT_PRICE: ClassVar[str | None] = "aws-sagemaker-ml.c5.large-us-east-1"


class GcpFunctionsTargetSpec(TargetSpecBase):
    """Cloud Functions gen2 (Cloud Run: the same with ``image``). Axes used: models, memory_mb."""

    kind: Literal["gcp-functions"] = "gcp-functions"
    project: str = ""
    region: str = "us-central1"
    max_instances: int = Field(10, ge=1)
    function_timeout_s: int = Field(60, ge=1, le=3600)
    FIXED_AXES: ClassVar[frozenset[str]] = frozenset({"runtime", "batch_size", "provisioned"})
    DEFAULT_PRICE: ClassVar[str | None] = "gcp-cloudfunctions-gen2-us-central1"


class CloudRunTargetSpec(GcpFunctionsTargetSpec):
    kind: Literal["cloud-run"] = "cloud-run"  # type: ignore[assignment]
    image: str = ""


def _install_sigterm(target: Any) -> None:
    """SIGTERM becomes KeyboardInterrupt, so the executor's ``finally`` tears cloud resources down."""
    if threading.current_thread() is threading.main_thread() and not getattr(target, "_term_installed", False):
        def _on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        target._old_term = signal.signal(signal.SIGTERM, _on_term)
        target._term_installed = True


def _restore_sigterm(target: Any) -> None:
    if getattr(target, "_term_installed", False):
        with contextlib.suppress(ValueError, TypeError):
            old = target._old_term
            signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)
        target._term_installed = False


def _function_name(run_id: str) -> str:
    return "servelab-" + hashlib.sha256(run_id.encode()).hexdigest()[:12]


class AwsLambdaTarget(BenchTarget):
    kind: ClassVar[str] = "aws-lambda"
    spec: AwsLambdaTargetSpec

    def __init__(self, spec: TargetSpecBase, ctx: Any) -> None:
        super().__init__(spec, ctx)
        self.function: Any = None
        self.spent_estimate_usd = 0.0
        self._old_term: Any = None
        self._term_installed = False

    @classmethod
    def overhead_s(cls, run: Any) -> float:
        # create + wait Active (~1-5 s on AWS), provisioned concurrency (minutes on AWS), delete
        return 5.0 + (120.0 if run.provisioned else 0.0)

    def start(self) -> None:
        _install_sigterm(self)

    def lambda_function(self, run: Any) -> Any:
        from servelab.cloud.aws_lambda import LambdaFunction, make_spec

        s = self.spec
        spec = make_spec(function_name=_function_name(run.run_id), run_id=run.run_id, role_arn=s.role_arn,
                         memory_mb=run.memory_mb or 1769, timeout_s=s.function_timeout_s,
                         reserved_concurrency=s.reserved_concurrency, provisioned_concurrency=run.provisioned or 0,
                         architecture=s.architecture, model_source=s.model_source, model_bucket=s.model_bucket,
                         layers=s.layers, image_uri=s.image_uri, region=s.region, endpoint_url=s.endpoint_url,
                         s3_endpoint_url=s.s3_endpoint_url, price_entry=s.price)
        poll = 0.05 if s.endpoint_url else 5.0
        return LambdaFunction(spec, poll_s=poll)

    def prepare(self, run: Any, model_path: Path) -> Endpoint:
        from servelab.cloud.safety import check_budget
        from servelab.loadgen.targets import TargetSpec
        from servelab.workload import generate, load_spec

        fn = self.lambda_function(run)
        requests = len(generate(load_spec(run.workload_spec), duration_s=run.duration_s, seed=run.seed))
        plan = fn.plan(model_path, requests=requests, expected_duration_ms=self.spec.expected_duration_ms,
                       window_s=max(run.duration_s, 300.0))
        if self.spec.max_cost_usd is not None:
            plan.estimate_usd += self.spent_estimate_usd  # the budget is for the whole experiment
            check_budget(plan, self.spec.max_cost_usd)
        self.function = fn
        deployed = fn.deploy(model_path)
        self.spent_estimate_usd = plan.estimate_usd
        url = self.spec.endpoint_url or LAMBDA_URL.format(region=self.spec.region)
        region = None if self.spec.endpoint_url else self.spec.region  # sign only for AWS itself
        return Endpoint(target=TargetSpec("lambda", url=url, name=deployed.invoke_name, aws_region=region),
                        info={"url": url, "function": deployed.invoke_name, "arn": deployed.function_arn,
                              "package": deployed.package, "timings_s": deployed.timings_s,
                              "plan": plan.to_dict(), "tags": {"servelab:run-id": run.run_id}})

    def cooldown(self) -> None:
        self._teardown_function()
        super().cooldown()

    def _teardown_function(self) -> None:
        if self.function is not None:
            fn, self.function = self.function, None
            fn.teardown()

    def teardown(self) -> None:
        try:
            self._teardown_function()
        finally:
            _restore_sigterm(self)

    def price_args(self, run: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
        args = super().price_args(run, summary)
        if args is not None and run.provisioned:
            args["provisioned_instances"] = run.provisioned
        return args


class _DeployedPerRun(BenchTarget):
    """A cloud endpoint deployed in ``prepare`` and deleted in ``cooldown`` / ``teardown``."""

    def __init__(self, spec: TargetSpecBase, ctx: Any) -> None:
        super().__init__(spec, ctx)
        self.deployed: Any = None

    def start(self) -> None:
        _install_sigterm(self)

    def cooldown(self) -> None:
        self._teardown_deployed()
        super().cooldown()

    def teardown(self) -> None:
        try:
            self._teardown_deployed()
        finally:
            _restore_sigterm(self)

    def price_args(self, run: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
        # the records carry client latency and no memory size: price at the run's memory
        args = super().price_args(run, summary)
        if args is not None and run.memory_mb:
            args.setdefault("memory_mb", run.memory_mb)
        return args

    def _teardown_deployed(self) -> None:
        if self.deployed is not None:
            d, self.deployed = self.deployed, None
            d.teardown()


class SageMakerTarget(_DeployedPerRun):
    kind: ClassVar[str] = "sagemaker"
    spec: SageMakerTargetSpec

    @classmethod
    def overhead_s(cls, run: Any) -> float:
        return 600.0  # an endpoint takes minutes to be InService, and to delete

    def endpoint(self, run: Any) -> Any:
        from servelab.cloud.sagemaker import SageMakerEndpoint, make_spec

        s = self.spec
        fields: dict[str, Any] = {
            "name": _function_name(run.run_id), "run_id": run.run_id, "role_arn": s.role_arn,
            "model_bucket": s.model_bucket, "mode": s.mode, "instance_type": s.instance_type,
            "instance_count": s.instance_count, "autoscaling_max": s.autoscaling_max,
            "max_concurrency": s.max_concurrency, "region": s.region, "price_entry": s.price}
        if s.mode == "serverless" and run.memory_mb:
            fields["memory_mb"] = run.memory_mb
        return SageMakerEndpoint(make_spec(**fields))

    def price_args(self, run: Any, summary: dict[str, Any]) -> dict[str, Any] | None:
        args = BenchTarget.price_args(self, run, summary)
        if args is None:
            return None
        if self.spec.mode == "realtime":  # instance-hours for the endpoint's instances
            args["instances"] = self.spec.autoscaling_max or self.spec.instance_count
            if self.spec.autoscaling_max:
                args["notes"] = [f"billed as {self.spec.autoscaling_max} instance(s) for the whole window: "
                                 "the autoscaling maximum, an upper bound"]
        else:
            args["memory_mb"] = run.memory_mb or 2048
        return args

    def prepare(self, run: Any, model_path: Path) -> Endpoint:
        from servelab.loadgen.targets import TargetSpec

        ep = self.endpoint(run)
        self.deployed = ep
        arn = ep.deploy(model_path)
        name = ep.names()["endpoint"]
        url = self.spec.runtime_url or f"https://runtime.sagemaker.{self.spec.region}.amazonaws.com"
        region = None if self.spec.runtime_url else self.spec.region  # sign only for AWS itself
        return Endpoint(target=TargetSpec("sagemaker", url=url, name=name, aws_region=region),
                        info={"url": url, "endpoint": name, "arn": arn, "mode": self.spec.mode,
                              "notes": ["SageMaker reports no billed duration: records carry client latency"]})


class GcpFunctionsTarget(_DeployedPerRun):
    kind: ClassVar[str] = "gcp-functions"
    spec: GcpFunctionsTargetSpec

    @classmethod
    def overhead_s(cls, run: Any) -> float:
        return 180.0  # Cloud Build + rollout

    def function(self, run: Any) -> Any:
        from servelab.cloud.gcp import GcpFunction, make_spec

        s = self.spec
        fields: dict[str, Any] = {
            "kind": s.kind, "name": _function_name(run.run_id), "run_id": run.run_id, "project": s.project,
            "region": s.region, "memory_mb": run.memory_mb or 2048, "timeout_s": s.function_timeout_s,
            "max_instances": s.max_instances}
        if s.price:
            fields["price_entry"] = s.price
        if isinstance(s, CloudRunTargetSpec):
            fields["image"] = s.image or None
        return GcpFunction(make_spec(**fields))

    def prepare(self, run: Any, model_path: Path) -> Endpoint:
        from servelab.loadgen.targets import TargetSpec

        fn = self.function(run)
        self.deployed = fn
        url = fn.deploy(model_path)
        return Endpoint(target=TargetSpec("http", url=url, id_token_audience=url),
                        info={"url": url, "kind": self.spec.kind,
                              "notes": [f"{self.spec.kind} reports no billed duration: records carry client latency"]})


class CloudRunTarget(GcpFunctionsTarget):
    kind: ClassVar[str] = "cloud-run"
    spec: CloudRunTargetSpec


register_target("aws-lambda", AwsLambdaTargetSpec, AwsLambdaTarget)
register_target("sagemaker", SageMakerTargetSpec, SageMakerTarget)
register_target("gcp-functions", GcpFunctionsTargetSpec, GcpFunctionsTarget)
register_target("cloud-run", CloudRunTargetSpec, CloudRunTarget)
