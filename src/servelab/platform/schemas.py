"""Request bodies and queries of every HTTP route, as pydantic models.

api.py parses each request through these before it does anything, so a body of the wrong
shape (``[]``, a string, a field of the wrong type) is a 400 that names the field, never an
AttributeError deep inside a handler. The same models give the OpenAPI document
(``GET /openapi.json``). Field names follow the AWS Lambda REST API (botocore's service
model) and the Open Inference Protocol; unknown fields are ignored, as Lambda's optional
features (layers, VPC…) mean nothing on one machine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from servelab.platform.limits import MAX_MEMORY_MB, MIN_MEMORY_MB

EnvKey = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z][a-zA-Z0-9_]*$", max_length=256)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class FunctionEnvironment(_Body):
    Variables: dict[EnvKey, str] = Field(default_factory=dict)


class FunctionCode(_Body):
    ZipFile: str | None = Field(None, description="The deployment package, a zip, base64-encoded")


class CreateFunctionBody(_Body):
    FunctionName: str = Field(..., min_length=1, max_length=140)
    Role: str | None = None
    Runtime: str | None = None
    Handler: str | None = Field(None, max_length=128)
    Description: str | None = Field(None, max_length=256)
    Timeout: Annotated[float, Field(gt=0, le=900)] | None = None
    MemorySize: Annotated[int, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)] | None = None
    Environment: FunctionEnvironment | None = None
    Code: FunctionCode | None = None
    Tags: dict[TagKey, TagValue] | None = None
    Publish: bool | None = None


class UpdateConfigurationBody(_Body):
    Handler: str | None = Field(None, max_length=128)
    Description: str | None = Field(None, max_length=256)
    Timeout: Annotated[float, Field(gt=0, le=900)] | None = None
    MemorySize: Annotated[int, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)] | None = None
    Environment: FunctionEnvironment | None = None
    Runtime: str | None = None
    Role: str | None = None


class PublishVersionBody(_Body):
    CodeSha256: str | None = None
    Description: str | None = Field(None, max_length=256)
    RevisionId: str | None = None


class ProvisionedBody(_Body):
    ProvisionedConcurrentExecutions: int = Field(..., ge=0, le=1000)


class ConcurrencyBody(_Body):
    ReservedConcurrentExecutions: int = Field(..., ge=1, le=1000,
                                              description="servelab's max concurrency for the function")


class TagBody(_Body):
    Tags: dict[TagKey, TagValue] = Field(..., max_length=50)


class DestinationTarget(_Body):
    Destination: str = Field(..., min_length=1, max_length=350,
                             description="A function of this platform: arn:aws:lambda:REGION:ACCOUNT:function:NAME")


class Destinations(_Body):
    OnSuccess: DestinationTarget | None = None
    OnFailure: DestinationTarget | None = None


class EventInvokeConfigBody(_Body):
    MaximumRetryAttempts: int | None = Field(None, ge=0, le=2)
    MaximumEventAgeInSeconds: int | None = Field(None, ge=60, le=21600)
    DestinationConfig: Destinations | None = None


# ---- queries -------------------------------------------------------------------------------
class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QualifierQuery(_Query):
    Qualifier: str | None = Field(None, max_length=128)


class ListFunctionsQuery(_Query):
    Marker: str | None = Field(None, max_length=1024)
    MaxItems: int | None = Field(None, ge=1, le=10000)
    FunctionVersion: Literal["ALL"] | None = None
    MasterRegion: str | None = None


class ProvisionedQuery(_Query):
    Qualifier: str | None = Field(None, max_length=128)
    List: Literal["ALL"] | None = None


class UntagQuery(_Query):
    tagKeys: list[TagKey] = Field(..., min_length=1, max_length=50)


class EventsQuery(_Query):
    state: Literal["queued", "running", "succeeded", "failed"] | None = None
    limit: int = Field(100, ge=1, le=10000)


# ---- headers (documented; parsed by the invoke handler) --------------------------------------
InvocationType = Literal["RequestResponse", "Event", "DryRun"]
LogType = Literal["None", "Tail"]


# ---- Open Inference Protocol ---------------------------------------------------------------
V2Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                     "FP16", "FP32", "FP64", "BYTES"]


class V2Tensor(_Body):
    name: str = Field(..., min_length=1, max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(..., max_length=32)
    datatype: V2Datatype
    parameters: dict[str, Any] | None = None
    data: Any = None
    b64: str | None = Field(None, description="servelab extension: the tensor's bytes, base64, little-endian")


class V2RequestedOutput(_Body):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(_Body):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(..., min_length=1)
    outputs: list[V2RequestedOutput] | None = None
