"""Google Cloud: the generated source is served for real by functions-framework (the server
Cloud Functions 2nd gen and our Cloud Run image run) on a tiny model; the Cloud Functions and
Cloud Run requests are built with the real client libraries' message types and checked field by
field. No Google endpoint is reached: the deploy flow runs against clients passed to the
constructor that record the requests (docs/cloud-gcp.md says what that does not prove)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from servelab.cloud.gcp import GcpFunction, function_request, gcp_labels, make_spec, service_request
from servelab.cloud.packaging import write_gcp_source
from servelab.errors import ConfigError
from servelab.loadgen.payloads import from_model
from servelab.tensors import decode_tensors

functions_framework = pytest.importorskip("functions_framework", reason="pip install functions-framework")


def _serve(src: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for mod in ("main", "servelab_infer"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.syspath_prepend(str(src))
    return functions_framework.create_app(target="predict", source=str(src / "main.py")).test_client()


def test_generated_source_serves_the_model_with_functions_framework(
        tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_models["tiny-cnn"]
    src = write_gcp_source(tmp_path / "src", model)
    assert sorted(p.name for p in src.directory.iterdir()) == ["main.py", "model.onnx", "requirements.txt",
                                                               "servelab_infer.py"]
    reqs = (src.directory / "requirements.txt").read_text()
    assert "onnxruntime==" in reqs and "functions-framework" in reqs
    client = _serve(src.directory, monkeypatch, src.env)
    body = from_model(model, 1, count=1, seed=2)[0]
    first = client.post("/", data=body, content_type="application/json")
    second = client.post("/", data=body, content_type="application/json")
    assert first.status_code == 200 and second.status_code == 200
    assert "fetch_ms=" in first.headers["X-Servelab-Init"] and "X-Servelab-Init" not in second.headers
    out = first.get_json()["outputs"][0]
    got = np.frombuffer(base64.b64decode(out["b64"]), np.float32).reshape(out["shape"])
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, decode_tensors(json.loads(body)["inputs"]))[0], rtol=1e-5)
    bad = client.post("/", data=b"not json", content_type="application/json")
    assert bad.status_code == 400 and "JSON" in bad.get_json()["error"]


def test_cloud_run_source_has_a_dockerfile_serving_predict(tiny_models, tmp_path: Path) -> None:
    src = write_gcp_source(tmp_path / "run", tiny_models["noop"], container=True)
    docker = (src.directory / "Dockerfile").read_text()
    assert "functions-framework --target=predict" in docker and 'ENV MODEL_PATH="model.onnx"' in docker


def test_function_request_carries_the_runs_settings_and_labels() -> None:
    from google.cloud import functions_v2

    spec = make_spec(name="sl-fn", run_id="Exp-Run.1", project="proj", memory_mb=2048, timeout_s=60,
                     max_instances=5)
    storage = functions_v2.StorageSource(bucket="gcf-v2-uploads", object_="abc.zip")
    req = function_request(spec, storage, {"MODEL_PATH": "model.onnx"})
    assert req.parent == "projects/proj/locations/us-central1" and req.function_id == "sl-fn"
    f = req.function
    assert f.name == "projects/proj/locations/us-central1/functions/sl-fn"
    assert (f.build_config.runtime, f.build_config.entry_point) == ("python311", "predict")
    assert f.build_config.source.storage_source.object_ == "abc.zip"
    sc = f.service_config
    assert (sc.available_memory, sc.timeout_seconds, sc.max_instance_count) == ("2048Mi", 60, 5)
    assert dict(sc.environment_variables) == {"MODEL_PATH": "model.onnx"}
    assert dict(f.labels) == {"servelab-run-id": "exp-run-1", "servelab-created-by": "servelab"}
    # the request serialises the way the API receives it
    wire = json.loads(functions_v2.CreateFunctionRequest.to_json(req))
    assert wire["function"]["serviceConfig"]["availableMemory"] == "2048Mi"


def test_service_request_runs_one_request_per_instance() -> None:
    spec = make_spec(kind="cloud-run", name="sl-run", run_id="r1", project="proj", memory_mb=1024, image="img:1",
                     max_instances=3)
    req = service_request(spec, {"MODEL_PATH": "model.onnx"})
    t = req.service.template
    assert req.service_id == "sl-run" and t.containers[0].image == "img:1"
    assert dict(t.containers[0].resources.limits) == {"memory": "1024Mi", "cpu": "1"}
    assert t.max_instance_request_concurrency == 1 and t.scaling.max_instance_count == 3
    with pytest.raises(ConfigError, match="needs image"):
        service_request(make_spec(kind="cloud-run", name="x", run_id="r", project="p"), {})


class _Op:
    def __init__(self, result: Any) -> None:
        self._result = result

    def result(self, timeout: float | None = None) -> Any:
        return self._result


class RecordingFunctionsClient:
    """Stands in for FunctionServiceClient: records each request, answers like the API."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def generate_upload_url(self, request: Any) -> Any:
        from google.cloud import functions_v2

        self.calls.append(("generate_upload_url", request))
        return functions_v2.GenerateUploadUrlResponse(
            upload_url="https://storage.googleapis.com/upload/signed",
            storage_source=functions_v2.StorageSource(bucket="b", object_="o.zip"))

    def create_function(self, request: Any) -> _Op:
        from google.cloud import functions_v2

        self.calls.append(("create_function", request))
        fn = functions_v2.Function(name=request.function.name,
                                   service_config=functions_v2.ServiceConfig(uri="https://sl-fn-xyz.a.run.app"))
        return _Op(fn)

    def delete_function(self, request: Any) -> _Op:
        self.calls.append(("delete_function", request))
        return _Op(None)


def test_deploy_uploads_the_source_zip_then_creates_and_deletes_the_function(tiny_models, tmp_path: Path) -> None:
    client = RecordingFunctionsClient()
    uploads: list[tuple[str, bytes]] = []
    fn = GcpFunction(make_spec(name="sl-fn", run_id="r1", project="proj"), functions_client=client,
                     put_zip=lambda url, data: uploads.append((url, data)), work_dir=tmp_path / "src")
    url = fn.deploy(tiny_models["noop"])
    assert url == "https://sl-fn-xyz.a.run.app"
    assert uploads[0][0].endswith("/signed") and uploads[0][1][:2] == b"PK"  # a zip
    create = client.calls[1][1]
    assert create.function.build_config.source.storage_source.object_ == "o.zip"
    assert create.function.service_config.environment_variables["MODEL_SHA256"]
    assert fn.teardown() == ["cloud-function projects/proj/locations/us-central1/functions/sl-fn"]
    assert [c[0] for c in client.calls] == ["generate_upload_url", "create_function", "delete_function"]


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.functions_v2", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"servelab\[gcp\].*google-cloud-functions"):
        function_request(make_spec(name="x", run_id="r", project="p"), None, {})


def test_labels_follow_gcp_rules() -> None:
    labels = gcp_labels("AWS-Lambda_tiny.MLP:" + "x" * 80)
    assert all(len(v) <= 63 and v == v.lower() and ":" not in v and "." not in v for v in labels.values())
