"""Model inference inside a cloud function: load one ONNX model per instance, answer Open
Inference Protocol requests.

This file is shipped as-is inside every function package servelab builds (the AWS Lambda zip
or container image, the Google Cloud Functions / Cloud Run source), and the local platform runs
the very same file in its tests. So it imports only the standard library, numpy and
onnxruntime — plus boto3 (preinstalled on Lambda) or google-cloud-storage when the model is
fetched at init — and never servelab.

Where the model comes from (environment variables, read once at init):

- ``MODEL_PATH``: a file inside the package (baked in), relative to this file's folder;
- ``MODEL_S3_URI``: ``s3://bucket/key``, read into memory at init (the study's AWS setup);
  ``MODEL_S3_ENDPOINT_URL`` points boto3 at an S3-compatible server instead of AWS;
- ``MODEL_GCS_URI``: ``gs://bucket/key`` (Google Cloud Storage);
- ``MODEL_SHA256`` (optional): the fetched bytes must have this digest;
- ``MODEL_THREADS`` (optional): onnxruntime's intra-op threads (default: onnxruntime's choice).

Requests are ``{"inputs": [{"name", "shape", "datatype", "data" | "b64"}]}`` (the body
servelab's load generator sends); responses are ``{"model_name", "outputs": [...]}`` with
``b64`` outputs when the request used ``b64``. The first response of an instance prints one
``SERVELAB_INIT fetch_ms=… load_ms=… source=…`` line, so the init parts reach the invocation's
log tail (Lambda's ``LogResult``), where servelab reads them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

import numpy as np

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
V2_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_ELEMENTS = 64 * 1024 * 1024


class BadRequest(ValueError):
    """The request does not fit the model; the message says which tensor and why."""


def _split_uri(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri[len(scheme):] if uri.startswith(scheme) else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} is not a {scheme}bucket/key URI")
    return bucket, key


def fetch_model(env: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The model's bytes and where they came from, per the environment (see the module doc)."""
    env = dict(os.environ if env is None else env)
    if env.get("MODEL_S3_URI"):
        import boto3  # preinstalled in Lambda's Python runtimes

        bucket, key = _split_uri(env["MODEL_S3_URI"], "s3://")
        s3 = boto3.client("s3", endpoint_url=env.get("MODEL_S3_ENDPOINT_URL") or None)
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        source = "s3"
    elif env.get("MODEL_GCS_URI"):
        from google.cloud import storage

        bucket, key = _split_uri(env["MODEL_GCS_URI"], "gs://")
        data = storage.Client().bucket(bucket).blob(key).download_as_bytes()
        source = "gcs"
    elif env.get("MODEL_PATH"):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), env["MODEL_PATH"])
        with open(path, "rb") as f:
            data = f.read()
        source = "bundled"
    else:
        raise RuntimeError("no model configured: set MODEL_PATH, MODEL_S3_URI or MODEL_GCS_URI")
    want = env.get("MODEL_SHA256")
    if want and hashlib.sha256(data).hexdigest() != want.removeprefix("sha256:"):
        raise RuntimeError(f"the model fetched from {source} does not match MODEL_SHA256 {want}")
    return data, source


class Model:
    """One loaded ONNX model and the request/response translation around it."""

    def __init__(self, model_bytes: bytes, *, threads: int | None = None, name: str = "model",
                 fetch_ms: float = 0.0, source: str = "bytes") -> None:
        import onnxruntime as ort

        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.fetch_ms = fetch_ms
        self.source = source
        self.name = name
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self._init_reported = False

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> Model:
        env = dict(os.environ if env is None else env)
        t0 = time.perf_counter()
        data, source = fetch_model(env)
        fetch_ms = (time.perf_counter() - t0) * 1000.0
        threads = int(env["MODEL_THREADS"]) if env.get("MODEL_THREADS") else None
        return cls(data, threads=threads, name=env.get("MODEL_NAME", "model"), fetch_ms=fetch_ms, source=source)

    def init_line(self) -> str:
        return f"SERVELAB_INIT fetch_ms={self.fetch_ms:.2f} load_ms={self.load_ms:.2f} source={self.source}"

    def handle(self, event: Any) -> dict[str, Any]:
        """Run one request. Raises :class:`BadRequest` when the request does not fit the model."""
        if not self._init_reported:  # the first request of this instance: say what its init took
            print(self.init_line())
            self._init_reported = True
        if not isinstance(event, dict) or not isinstance(event.get("inputs"), list):
            raise BadRequest('the event must be {"inputs": [tensor, ...]} (Open Inference Protocol)')
        feeds: dict[str, np.ndarray] = {}
        binary = False
        for obj in event["inputs"]:
            name, arr, used_b64 = decode_tensor(obj)
            if name not in self.inputs:
                raise BadRequest(f"unknown input {name!r}; the model takes {sorted(self.inputs)}")
            feeds[name] = arr
            binary = binary or used_b64
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise BadRequest(f"missing input(s) {missing}")
        names = [o.name for o in self.session.get_outputs()]
        try:
            outs = self.session.run(names, feeds)
        except Exception as e:  # onnxruntime's shape/type errors are the caller's to fix
            raise BadRequest(f"the model refused the inputs: {e}") from None
        tensors = [encode_tensor(n, o, binary=binary) for n, o in zip(names, outs, strict=True)]
        resp: dict[str, Any] = {"model_name": self.name, "outputs": tensors}
        if "id" in event:
            resp["id"] = event["id"]
        return resp


def decode_tensor(obj: Any) -> tuple[str, np.ndarray, bool]:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise BadRequest("each input must be an object with name, shape, datatype and data or b64")
    name = obj["name"]
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"tensor {name!r}: 'shape' must be a list of non-negative ints")
    n = int(np.prod(shape)) if shape else 1
    if n > MAX_ELEMENTS:
        raise BadRequest(f"tensor {name!r}: {n} elements is over the limit {MAX_ELEMENTS}")
    dtype = DTYPES.get(str(obj.get("datatype")))
    if dtype is None:
        raise BadRequest(f"tensor {name!r}: 'datatype' must be one of {sorted(DTYPES)}")
    dt = np.dtype(dtype)
    if "b64" in obj:
        try:
            raw = base64.b64decode(obj["b64"], validate=True)
        except ValueError:
            raise BadRequest(f"tensor {name!r}: 'b64' is not valid base64") from None
        if len(raw) != n * dt.itemsize:
            raise BadRequest(f"tensor {name!r}: 'b64' holds {len(raw)} bytes, shape {shape} needs {n * dt.itemsize}")
        return name, np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt).reshape(shape), True
    if "data" in obj:
        arr = np.asarray(obj["data"], dtype=dt)
        if arr.size != n:
            raise BadRequest(f"tensor {name!r}: 'data' has {arr.size} values, shape {shape} needs {n}")
        return name, arr.reshape(shape), False
    raise BadRequest(f"tensor {name!r}: give its values as 'data' or 'b64'")


def encode_tensor(name: str, arr: np.ndarray, *, binary: bool) -> dict[str, Any]:
    arr = np.asarray(arr)
    obj: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": V2_NAMES.get(arr.dtype, "FP32")}
    if binary:
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        obj["b64"] = base64.b64encode(raw).decode("ascii")
    else:
        obj["data"] = arr.reshape(-1).tolist()
    return obj
