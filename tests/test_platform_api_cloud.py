"""The Lambda API pieces cloud targets use, through boto3 against the real platform on loopback:
tags, published versions with qualified invokes, reserved-concurrency reads and deletes, and the
provisioned-concurrency listing."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from platform_harness import RunningPlatform, zip_code

HANDLER = 'def handler(event, context):\n    return {"echo": event}\n'


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("api-cloud") / "home", token="tok") as p:
        yield p


def _create(c, name: str, **kw) -> dict:
    return c.create_function(FunctionName=name, Role="r", Handler="app.handler", Runtime="python3.11",
                             Code={"ZipFile": zip_code({"app.py": HANDLER})}, MemorySize=256, **kw)


def test_tags_on_create_list_tag_untag_and_get_function(platform: RunningPlatform) -> None:
    c = platform.lambda_client("tok")
    arn = _create(c, "tagged", Tags={"servelab:run-id": "r1", "team": "ml"})["FunctionArn"]
    assert c.list_tags(Resource=arn)["Tags"] == {"servelab:run-id": "r1", "team": "ml"}
    c.tag_resource(Resource=arn, Tags={"stage": "test"})
    c.untag_resource(Resource=arn, TagKeys=["team"])
    assert c.list_tags(Resource=arn)["Tags"] == {"servelab:run-id": "r1", "stage": "test"}
    assert c.get_function(FunctionName="tagged")["Tags"] == {"servelab:run-id": "r1", "stage": "test"}
    c.delete_function(FunctionName="tagged")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.list_tags(Resource=arn)
    _create(c, "tagged")  # re-created: the old tags went with the old function
    assert c.list_tags(Resource=arn)["Tags"] == {}
    c.delete_function(FunctionName="tagged")


def test_bad_tags_and_non_function_arns_are_refused(platform: RunningPlatform) -> None:
    c = platform.lambda_client("tok")
    with pytest.raises(ClientError) as e:
        _create(c, "badtag", Tags={"aws:reserved": "x"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException" and "aws:" in str(e.value)
    with pytest.raises(ClientError) as e:
        c.list_tags(Resource="arn:aws:s3:::bucket")
    assert "not a function ARN" in str(e.value)
    with pytest.raises(ClientError) as e:  # tagging is a management call: the token is required
        platform.lambda_client("wrong").tag_resource(
            Resource="arn:aws:lambda:local:000000000000:function:x", Tags={"a": "b"})
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"


def test_published_version_takes_provisioned_concurrency_and_qualified_invokes(platform: RunningPlatform) -> None:
    c = platform.lambda_client("tok")
    _create(c, "ver")
    v = c.publish_version(FunctionName="ver")
    assert v["Version"] == "1" and v["FunctionArn"].endswith(":ver:1")
    assert c.list_provisioned_concurrency_configs(FunctionName="ver")["ProvisionedConcurrencyConfigs"] == []
    c.put_provisioned_concurrency_config(FunctionName="ver", Qualifier="1", ProvisionedConcurrentExecutions=1)
    listed = c.list_provisioned_concurrency_configs(FunctionName="ver")["ProvisionedConcurrencyConfigs"]
    assert len(listed) == 1 and listed[0]["RequestedProvisionedConcurrentExecutions"] == 1
    resp = c.invoke(FunctionName="ver:1", Payload=b'{"x": 1}')
    assert resp["Payload"].read() == b'{"echo": {"x": 1}}'
    c.delete_provisioned_concurrency_config(FunctionName="ver", Qualifier="1")
    with pytest.raises(ClientError) as e:
        c.get_provisioned_concurrency_config(FunctionName="ver", Qualifier="1")
    assert e.value.response["Error"]["Code"] == "ProvisionedConcurrencyConfigNotFoundException"
    c.delete_function(FunctionName="ver")


def test_reserved_concurrency_reads_and_deletes_back_to_the_default(platform: RunningPlatform) -> None:
    c = platform.lambda_client("tok")
    _create(c, "conc")
    c.put_function_concurrency(FunctionName="conc", ReservedConcurrentExecutions=7)
    assert c.get_function_concurrency(FunctionName="conc")["ReservedConcurrentExecutions"] == 7
    c.delete_function_concurrency(FunctionName="conc")
    assert c.get_function_concurrency(FunctionName="conc")["ReservedConcurrentExecutions"] == 4
    assert c.get_function_configuration(FunctionName="conc")["State"] == "Active"
    c.get_waiter("function_active_v2").wait(FunctionName="conc")
    c.delete_function(FunctionName="conc")


def test_tags_survive_a_platform_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RunningPlatform(home) as p:
        arn = _create(p.lambda_client(), "keep", Tags={"servelab:run-id": "r9"})["FunctionArn"]
    with RunningPlatform(home) as p:
        assert p.lambda_client().list_tags(Resource=arn)["Tags"] == {"servelab:run-id": "r9"}
