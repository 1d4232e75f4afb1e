"""``servelab cloud``: package, plan, deploy, invoke, tear down and clean up on the clouds.

    servelab cloud run MODEL --target aws-lambda --bucket B --role-arn R --count 20 --max-cost 0.05
    servelab cloud deploy / invoke / teardown     (one function, step by step)
    servelab cloud cleanup [--run-id R] [--dry-run]
    servelab cloud package MODEL --target … --out DIR

Every command that creates something takes ``--dry-run`` (print the resources and the cost
estimate, create nothing) and ``--max-cost`` (refuse when the estimate is over it). Credentials
come from the SDKs' standard chains only; no option takes a secret. Module imports stay cheap:
boto3 and the Google clients load inside the commands.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Table

console = Console()
CloudKind = Literal["aws-lambda", "sagemaker", "gcp-functions", "cloud-run"]
CLOUD_KINDS: tuple[str, ...] = ("aws-lambda", "sagemaker", "gcp-functions", "cloud-run")

app = typer.Typer(help="Cloud targets: AWS Lambda, SageMaker, Google Cloud Functions / Cloud Run.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# shared options
TARGET = typer.Option("aws-lambda", "--target", "-t", help=f"one of {', '.join(CLOUD_KINDS)}")
NAME = typer.Option(None, "--name", help="function / endpoint / service name (default: from the run id)")
RUN_ID = typer.Option(None, "--run-id", help="tags every resource (default: a new one)")
MEMORY = typer.Option(1769, "--memory-mb", help="memory size (SageMaker serverless: 1024..6144 in 1024 steps)")
TIMEOUT = typer.Option(30, "--timeout-s", help="function timeout")
REGION = typer.Option(None, "--region", help="AWS region (default us-east-1) or GCP region (default us-central1)")
BUCKET = typer.Option(None, "--bucket", help="S3 bucket for the model (model source s3, SageMaker)")
ROLE = typer.Option("", "--role-arn", help="execution role ARN (Lambda, SageMaker)")
SOURCE = typer.Option(None, "--model-source", help="aws-lambda: s3 (default) or bundled; gcp: bundled or gcs")
ENDPOINT = typer.Option(None, "--endpoint-url", help="a Lambda-compatible server instead of AWS (servelab platform)")
S3_ENDPOINT = typer.Option(None, "--s3-endpoint-url", help="an S3-compatible server instead of AWS S3")
RESERVED = typer.Option(None, "--reserved", help="Lambda reserved concurrency")
PROVISIONED = typer.Option(0, "--provisioned", help="Lambda provisioned concurrency (waits until READY)")
MODE = typer.Option("realtime", "--mode", help="SageMaker: realtime or serverless")
INSTANCE_TYPE = typer.Option("ml.c5.large", "--instance-type", help="SageMaker real-time instance type")
INSTANCES = typer.Option(1, "--instances", help="SageMaker real-time instance count (the autoscaling minimum)")
AUTOSCALE_MAX = typer.Option(None, "--autoscaling-max", help="SageMaker: autoscale up to this many instances")
MAX_CONC = typer.Option(5, "--max-concurrency", help="SageMaker serverless max concurrency")
PROJECT = typer.Option(None, "--project", help="GCP project id")
IMAGE = typer.Option(None, "--image", help="container image (Lambda image package, SageMaker, Cloud Run)")
DRY_RUN = typer.Option(False, "--dry-run", help="print what would be created and what it would cost; create nothing")
MAX_COST = typer.Option(None, "--max-cost", help="refuse to start when the estimated cost (USD) is over this")
EXPECTED_MS = typer.Option(200.0, "--expected-ms", help="expected duration of one request, for the estimate")


def _new_run_id() -> str:
    return "cloud-" + uuid.uuid4().hex[:10]


def _source(value: str | None, default: str) -> Any:
    """``--model-source`` checked against the packaging's sources (s3, bundled, gcs)."""
    from typing import get_args

    from servelab.cloud.packaging import ModelSource
    from servelab.errors import ConfigError

    source = value or default
    if source not in get_args(ModelSource):
        raise ConfigError(f"--model-source must be one of {', '.join(get_args(ModelSource))}, got {source!r}")
    return source


def make_deployer(target: str, model: Path, *, name: str | None, run_id: str, memory_mb: int, timeout_s: int,
                  region: str | None, bucket: str | None, role_arn: str, model_source: str | None,
                  endpoint_url: str | None = None, s3_endpoint_url: str | None = None,
                  reserved: int | None = None, provisioned: int = 0, mode: str = "realtime",
                  instance_type: str = "ml.c5.large", instances: int = 1, autoscaling_max: int | None = None,
                  max_concurrency: int = 5, project: str | None = None, image: str | None = None) -> Any:
    """The deployer object for ``target``: plan / deploy / invoke / teardown, the same for all."""
    from servelab.errors import ConfigError

    default_name = "sl-" + run_id.removeprefix("cloud-").lower()[:40]
    if target == "aws-lambda":
        from servelab.cloud.aws_lambda import LambdaFunction, make_spec

        spec = make_spec(function_name=name or default_name, run_id=run_id, role_arn=role_arn, memory_mb=memory_mb,
                         timeout_s=timeout_s, reserved_concurrency=reserved, provisioned_concurrency=provisioned,
                         model_source=model_source or "s3", model_bucket=bucket, image_uri=image,
                         region=region or "us-east-1", endpoint_url=endpoint_url, s3_endpoint_url=s3_endpoint_url)
        return LambdaFunction(spec, poll_s=0.05 if endpoint_url else 5.0)
    if target == "sagemaker":
        from servelab.cloud import sagemaker

        kw: dict[str, Any] = {"image_uri": image} if image else {}
        sm_spec = sagemaker.make_spec(name=name or default_name, run_id=run_id, role_arn=role_arn,
                                   model_bucket=bucket or "", mode=mode, instance_type=instance_type,
                                   instance_count=instances, autoscaling_max=autoscaling_max, memory_mb=memory_mb,
                                   max_concurrency=max_concurrency, region=region or "us-east-1", **kw)
        if not sm_spec.model_bucket:
            raise ConfigError("sagemaker needs --bucket (model.tar.gz is uploaded there)")
        return sagemaker.SageMakerEndpoint(sm_spec)
    if target in ("gcp-functions", "cloud-run"):
        from servelab.cloud import gcp

        if not project:
            raise ConfigError(f"{target} needs --project (your GCP project id)")
        gcp_spec = gcp.make_spec(kind=target, name=name or default_name, run_id=run_id, project=project,
                                 region=region or "us-central1", memory_mb=memory_mb, timeout_s=timeout_s,
                                 model_source=model_source or "bundled", image=image)
        return gcp.GcpFunction(gcp_spec)
    raise ConfigError(f"unknown cloud target {target!r}; one of {', '.join(CLOUD_KINDS)}")


def _print_plan(plan: Any) -> None:
    for line in plan.lines():
        console.print(line, markup=False, highlight=False)


def _payloads(model: Path, payload: Path | None) -> list[bytes]:
    from servelab.loadgen.payloads import from_files, from_model

    return from_files([payload]) if payload else from_model(model, 1, count=8, seed=0)


def _report_table(records: list[Any]) -> Table:
    t = Table(title="invocations (from the REPORT line where the cloud sends one)")
    for col in ("#", "status", "latency ms", "duration ms", "billed ms", "memory MB", "max used MB", "init ms",
                "cold"):
        t.add_column(col, justify="left" if col in ("status", "cold") else "right")

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)

    for i, r in enumerate(records):
        t.add_row(str(i), r.status if r.status == "ok" else f"{r.status}: {r.error}", f(r.latency_ms),
                  f(r.duration_ms), f(r.billed_ms), f(r.memory_mb), f(r.max_memory_used_mb), f(r.init_ms), f(r.cold))
    return t


def _exit_if_all_failed(records: list[Any]) -> None:
    """Exit 99 (as `servelab run` and `loadgen run` do) when requests were sent and none
    succeeded, so a script or CI job sees the failure."""
    from servelab.analysis.thresholds import EXIT_BREACHED

    if records and not any(r.status == "ok" for r in records):
        console.print(f"[red]every request failed ({len(records)} of {len(records)}): exit {EXIT_BREACHED}[/]")
        raise typer.Exit(EXIT_BREACHED)


@app.command("run")
def run_cmd(model: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX model file"),
            target: str = TARGET, name: str | None = NAME, run_id: str | None = RUN_ID, memory_mb: int = MEMORY,
            timeout_s: int = TIMEOUT, region: str | None = REGION, bucket: str | None = BUCKET,
            role_arn: str = ROLE, model_source: str | None = SOURCE, endpoint_url: str | None = ENDPOINT,
            s3_endpoint_url: str | None = S3_ENDPOINT, reserved: int | None = RESERVED,
            provisioned: int = PROVISIONED, mode: str = MODE, instance_type: str = INSTANCE_TYPE,
            instances: int = INSTANCES, autoscaling_max: int | None = AUTOSCALE_MAX, max_concurrency: int = MAX_CONC,
            project: str | None = PROJECT, image: str | None = IMAGE,
            count: int = typer.Option(10, "--count", "-n", help="requests to send, one after another"),
            payload: Path | None = typer.Option(None, "--payload", help="request body file (default: random inputs)"),
            records: Path | None = typer.Option(None, "--records", help="write request records (Parquet) here"),
            dry_run: bool = DRY_RUN, max_cost: float | None = MAX_COST, expected_ms: float = EXPECTED_MS) -> None:
    """Deploy, send COUNT requests, tear down — also after an error, Ctrl-C or SIGTERM."""
    from servelab.cloud.safety import check_budget, teardown_guard
    from servelab.records import RecordWriter

    run_id = run_id or _new_run_id()
    dep = make_deployer(target, model, name=name, run_id=run_id, memory_mb=memory_mb, timeout_s=timeout_s,
                        region=region, bucket=bucket, role_arn=role_arn, model_source=model_source,
                        endpoint_url=endpoint_url, s3_endpoint_url=s3_endpoint_url, reserved=reserved,
                        provisioned=provisioned, mode=mode, instance_type=instance_type, instances=instances,
                        autoscaling_max=autoscaling_max, max_concurrency=max_concurrency, project=project, image=image)
    plan = dep.plan(model, requests=count, expected_duration_ms=expected_ms)
    _print_plan(plan)
    if dry_run:
        console.print("dry run: nothing was created")
        return
    check_budget(plan, max_cost)
    bodies = _payloads(model, payload)
    out = []
    with teardown_guard(dep.teardown):
        dep.deploy(model)
        console.print(f"deployed (run id {run_id}); sending {count} request(s)")
        writer = RecordWriter(records) if records else None
        try:
            for i in range(count):
                rec = dep.invoke(bodies[i % len(bodies)], request_id=f"{run_id}-{i:06d}").record
                out.append(rec)
                if writer:
                    writer.append(rec)
        finally:
            if writer:
                writer.close()
    console.print(_report_table(out))
    console.print(f"torn down: every resource of run {run_id} was deleted")
    _exit_if_all_failed(out)


@app.command("deploy")
def deploy_cmd(model: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX model file"),
               target: str = TARGET, name: str | None = NAME, run_id: str | None = RUN_ID, memory_mb: int = MEMORY,
               timeout_s: int = TIMEOUT, region: str | None = REGION, bucket: str | None = BUCKET,
               role_arn: str = ROLE, model_source: str | None = SOURCE, endpoint_url: str | None = ENDPOINT,
               s3_endpoint_url: str | None = S3_ENDPOINT, reserved: int | None = RESERVED,
               provisioned: int = PROVISIONED, mode: str = MODE, instance_type: str = INSTANCE_TYPE,
               instances: int = INSTANCES, autoscaling_max: int | None = AUTOSCALE_MAX,
               max_concurrency: int = MAX_CONC, project: str | None = PROJECT, image: str | None = IMAGE,
               requests: int = typer.Option(1000, "--requests", help="requests you plan to send, for the estimate"),
               dry_run: bool = DRY_RUN, max_cost: float | None = MAX_COST, expected_ms: float = EXPECTED_MS) -> None:
    """Deploy one function / endpoint and leave it running (tear it down with `teardown --run-id`)."""
    from servelab.cloud.safety import check_budget

    run_id = run_id or _new_run_id()
    dep = make_deployer(target, model, name=name, run_id=run_id, memory_mb=memory_mb, timeout_s=timeout_s,
                        region=region, bucket=bucket, role_arn=role_arn, model_source=model_source,
                        endpoint_url=endpoint_url, s3_endpoint_url=s3_endpoint_url, reserved=reserved,
                        provisioned=provisioned, mode=mode, instance_type=instance_type, instances=instances,
                        autoscaling_max=autoscaling_max, max_concurrency=max_concurrency, project=project, image=image)
    plan = dep.plan(model, requests=requests, expected_duration_ms=expected_ms)
    _print_plan(plan)
    if dry_run:
        console.print("dry run: nothing was created")
        return
    check_budget(plan, max_cost)
    try:
        result = dep.deploy(model)
    except BaseException:
        dep.teardown()  # a half-made deployment is not left behind
        raise
    shown = result.invoke_name if hasattr(result, "invoke_name") else result
    console.print(f"deployed {shown} (run id {run_id}); remove with: servelab cloud teardown --run-id {run_id}")


@app.command("invoke")
def invoke_cmd(name: str = typer.Argument(..., help="function name (name:version for a published version)"),
               model: Path | None = typer.Option(None, "--model", help="make random inputs for this ONNX model"),
               payload: Path | None = typer.Option(None, "--payload", help="request body file"),
               count: int = typer.Option(1, "--count", "-n"), region: str | None = REGION,
               endpoint_url: str | None = ENDPOINT,
               records: Path | None = typer.Option(None, "--records", help="write request records (Parquet) here"),
               run_id: str | None = RUN_ID) -> None:
    """Invoke a deployed AWS Lambda function with LogType=Tail and show its REPORT facts."""
    from servelab.cloud.aws_lambda import Deployed, LambdaFunction, make_spec
    from servelab.errors import ConfigError

    if model is None and payload is None:
        raise ConfigError("give --model (random inputs for it) or --payload FILE")
    fn_name, _, qualifier = name.partition(":")
    fn = LambdaFunction(make_spec(function_name=fn_name, run_id=run_id or _new_run_id(),
                                  region=region or "us-east-1", endpoint_url=endpoint_url))
    fn.deployed = Deployed(function_name=fn_name, qualifier=qualifier or None, function_arn="", package={})
    bodies = _payloads(model, payload) if model else _payloads(Path(), payload)
    out = fn.invoke_many(bodies, count, records_dir=records)
    console.print(_report_table(out))
    _exit_if_all_failed(out)


@app.command("teardown")
def teardown_cmd(run_id: str = typer.Option(..., "--run-id", help="the run whose resources to delete"),
                 target: str = TARGET, region: str | None = REGION, bucket: str | None = BUCKET,
                 endpoint_url: str | None = ENDPOINT, s3_endpoint_url: str | None = S3_ENDPOINT,
                 dry_run: bool = DRY_RUN) -> None:
    """Delete everything tagged with RUN_ID (what `deploy` left running)."""
    _cleanup(run_id=run_id, target=target, region=region, bucket=bucket, endpoint_url=endpoint_url,
             s3_endpoint_url=s3_endpoint_url, dry_run=dry_run)


@app.command("cleanup")
def cleanup_cmd(run_id: str | None = typer.Option(None, "--run-id", "--tag",
                                                  help="only this run's resources (default: all of servelab's)"),
                target: str = typer.Option("aws", "--target", "-t", help="aws (Lambda + S3 + SageMaker) or one of "
                                           "aws-lambda, sagemaker"),
                region: str | None = REGION, bucket: str | None = BUCKET, endpoint_url: str | None = ENDPOINT,
                s3_endpoint_url: str | None = S3_ENDPOINT, dry_run: bool = DRY_RUN) -> None:
    """Remove leftovers by tag (servelab:run-id): Lambda functions, SageMaker endpoints, S3 objects."""
    _cleanup(run_id=run_id, target=target, region=region, bucket=bucket, endpoint_url=endpoint_url,
             s3_endpoint_url=s3_endpoint_url, dry_run=dry_run)


def _cleanup(*, run_id: str | None, target: str, region: str | None, bucket: str | None, endpoint_url: str | None,
             s3_endpoint_url: str | None, dry_run: bool) -> None:
    from servelab.cloud.aws_lambda import sdk_errors
    from servelab.cloud.cleanup import cleanup_lambda, cleanup_s3, cleanup_sagemaker
    from servelab.errors import ConfigError, PlatformError

    if target in ("gcp-functions", "cloud-run"):
        raise ConfigError("GCP cleanup: delete by label, e.g. `gcloud functions list --filter "
                          "labels.servelab-created-by=servelab` (docs/cloud-gcp.md)")
    import boto3

    session = boto3.Session(region_name=region or "us-east-1")
    actions = []
    with sdk_errors("cleanup"):
        if target in ("aws", "aws-lambda"):
            actions += cleanup_lambda(session.client("lambda", endpoint_url=endpoint_url), run_id=run_id,
                                      dry_run=dry_run)
        if target in ("aws", "sagemaker") and endpoint_url is None:
            actions += cleanup_sagemaker(session.client("sagemaker"), run_id=run_id, dry_run=dry_run,
                                         autoscaling=session.client("application-autoscaling"))
        if bucket:
            actions += cleanup_s3(session.client("s3", endpoint_url=s3_endpoint_url), bucket, run_id=run_id,
                                  dry_run=dry_run)
    t = Table(title=("would delete" if dry_run else "deleted") + (f" (run {run_id})" if run_id else " (all runs)"))
    for col in ("kind", "name", "run id", "result"):
        t.add_column(col)
    for a in actions:
        t.add_row(a.kind, a.name, a.run_id, "dry run" if dry_run else "deleted" if a.done else f"FAILED: {a.error}")
    console.print(t if actions else "nothing tagged by servelab was found")
    failed = [a for a in actions if a.error]
    if failed:
        raise PlatformError(f"{len(failed)} resource(s) could not be deleted; see the table")


@app.command("package")
def package_cmd(model: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX model file"),
                out: Path = typer.Option(..., "--out", "-o", help="folder to write"),
                target: str = TARGET, model_source: str | None = SOURCE,
                image: bool = typer.Option(False, "--image", help="aws-lambda: a container build context"),
                model_uri: str | None = typer.Option(None, "--model-uri", help="gs://… for GCP model source gcs")
                ) -> None:
    """Write the deployable package for TARGET (zip, image context, model.tar.gz or GCP source) into OUT."""
    from servelab.cloud import packaging

    out.mkdir(parents=True, exist_ok=True)
    if target == "aws-lambda" and image:
        d = packaging.write_lambda_image_context(out, model, model_source=_source(model_source, "bundled"))
        console.print(f"Lambda image build context in {d}: docker build -t IMAGE {d}, push to ECR, "
                      "then deploy with --image IMAGE_URI")
    elif target == "aws-lambda":
        pkg = packaging.build_lambda_package(model, model_source=_source(model_source, "s3"))
        (out / "function.zip").write_bytes(pkg.zip_bytes)
        (out / "package.json").write_text(json.dumps({"kind": pkg.kind, "handler": pkg.handler, "env": pkg.env,
                                                      "zipped_bytes": pkg.zipped_bytes,
                                                      "unzipped_bytes": pkg.unzipped_bytes,
                                                      "model_sha256": pkg.model_sha256, "notes": pkg.notes},
                                                     indent=2))
        for n in pkg.notes:
            console.print(n)
        console.print(f"wrote {out / 'function.zip'} and {out / 'package.json'}")
    elif target == "sagemaker":
        from servelab.cloud.sagemaker import build_model_archive

        (out / "model.tar.gz").write_bytes(build_model_archive(model))
        console.print(f"wrote {out / 'model.tar.gz'}")
    else:
        src = packaging.write_gcp_source(out, model, model_source=_source(model_source, "bundled"), model_uri=model_uri,
                                         container=target == "cloud-run")
        console.print(f"wrote {', '.join(sorted(p.name for p in src.directory.iterdir()))} into {out}")


def register(root: typer.Typer) -> None:
    """Mount ``servelab cloud …`` on the main app."""
    root.add_typer(app, name="cloud")
