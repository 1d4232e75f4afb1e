"""Find and remove what servelab left in a cloud account, by the tags every resource carries.

A run that was killed (``kill -9``, a lost laptop lid) cannot tear itself down. Every resource
servelab creates is tagged ``servelab:run-id=<run id>`` and ``servelab:created-by=servelab``
(:func:`servelab.cloud.safety.run_tags`); these functions list resources with those tags — one
run's (``run_id``) or all of servelab's — and delete them, or with ``dry_run`` only say so.

Only list and tag-read calls are made before deleting, so a dry run needs read permissions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servelab.cloud.safety import TAG_CREATED_BY, TAG_RUN_ID


@dataclass
class CleanupAction:
    kind: str
    name: str
    run_id: str
    done: bool = False
    error: str | None = None


def _matches(tags: dict[str, str], run_id: str | None) -> bool:
    if TAG_RUN_ID not in tags and tags.get(TAG_CREATED_BY) != "servelab":
        return False
    return run_id is None or tags.get(TAG_RUN_ID) == run_id


def _apply(actions: list[CleanupAction], delete: Any, dry_run: bool) -> list[CleanupAction]:
    if dry_run:
        return actions
    for a in actions:
        try:
            delete(a)
            a.done = True
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("ResourceNotFoundException", "ValidationException", "NoSuchKey"):
                a.done = True  # gone in the meantime
            else:
                a.error = f"{type(e).__name__}: {e}"
    return actions


def cleanup_lambda(client: Any, *, run_id: str | None = None, dry_run: bool = False) -> list[CleanupAction]:
    """Delete servelab's Lambda functions (their versions and provisioned concurrency go with them)."""
    actions: list[CleanupAction] = []
    for page in client.get_paginator("list_functions").paginate():
        for f in page.get("Functions", []):
            tags = client.list_tags(Resource=f["FunctionArn"]).get("Tags", {})
            if _matches(tags, run_id):
                actions.append(CleanupAction("lambda-function", f["FunctionName"], tags.get(TAG_RUN_ID, "")))
    return _apply(actions, lambda a: client.delete_function(FunctionName=a.name), dry_run)


def cleanup_s3(client: Any, bucket: str, *, run_id: str | None = None, dry_run: bool = False,
               prefix: str = "servelab/") -> list[CleanupAction]:
    """Delete servelab's objects in ``bucket`` (under ``servelab/<run id>/``, tagged by run)."""
    actions: list[CleanupAction] = []
    want = f"{prefix}{run_id}/" if run_id else prefix
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=want):
        for obj in page.get("Contents", []):
            tags = {t["Key"]: t["Value"] for t in
                    client.get_object_tagging(Bucket=bucket, Key=obj["Key"]).get("TagSet", [])}
            if _matches(tags, run_id):
                actions.append(CleanupAction("s3-object", f"s3://{bucket}/{obj['Key']}", tags.get(TAG_RUN_ID, "")))

    def delete(a: CleanupAction) -> None:
        client.delete_object(Bucket=bucket, Key=a.name.removeprefix(f"s3://{bucket}/"))

    return _apply(actions, delete, dry_run)


def cleanup_sagemaker(client: Any, *, run_id: str | None = None, dry_run: bool = False,
                      autoscaling: Any = None) -> list[CleanupAction]:
    """Delete servelab's SageMaker endpoints, endpoint configs and models (and the endpoints'
    autoscaling targets, when an application-autoscaling client is given)."""
    actions: list[CleanupAction] = []
    listings = (("sagemaker-endpoint", "list_endpoints", "Endpoints", "EndpointName", "EndpointArn"),
                ("sagemaker-endpoint-config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName",
                 "EndpointConfigArn"),
                ("sagemaker-model", "list_models", "Models", "ModelName", "ModelArn"))
    for kind, op, key, name_key, arn_key in listings:
        for page in client.get_paginator(op).paginate():
            for item in page.get(key, []):
                tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=item[arn_key]).get("Tags", [])}
                if _matches(tags, run_id):
                    actions.append(CleanupAction(kind, item[name_key], tags.get(TAG_RUN_ID, "")))

    def delete(a: CleanupAction) -> None:
        if a.kind == "sagemaker-endpoint":
            if autoscaling is not None:
                from servelab.cloud.sagemaker import scalable_resource_id

                try:
                    autoscaling.deregister_scalable_target(
                        ServiceNamespace="sagemaker", ResourceId=scalable_resource_id(a.name, "AllTraffic"),
                        ScalableDimension="sagemaker:variant:DesiredInstanceCount")
                except Exception as e:  # not every endpoint had autoscaling
                    if getattr(e, "response", {}).get("Error", {}).get("Code") != "ObjectNotFoundException":
                        raise
            client.delete_endpoint(EndpointName=a.name)
        elif a.kind == "sagemaker-endpoint-config":
            client.delete_endpoint_config(EndpointConfigName=a.name)
        else:
            client.delete_model(ModelName=a.name)

    return _apply(actions, delete, dry_run)
