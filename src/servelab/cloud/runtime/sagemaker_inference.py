"""SageMaker inference script: ``code/inference.py`` in the model.tar.gz servelab builds.

SageMaker's framework containers (PyTorch, scikit-learn) load it through the inference
toolkit's four hooks and pip-install ``code/requirements.txt`` (onnxruntime) at start-up.
The model is ``model.onnx`` at the top of the archive (``/opt/ml/model``).
"""

import json
import os

from servelab_infer import BadRequest, Model


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.onnx"), "rb") as f:
        threads = int(os.environ["MODEL_THREADS"]) if os.environ.get("MODEL_THREADS") else None
        return Model(f.read(), threads=threads, name=os.environ.get("MODEL_NAME", "model"), source="bundled")


def input_fn(request_body, content_type="application/json"):
    if content_type != "application/json":
        raise BadRequest(f"content type {content_type!r}: send application/json")
    if isinstance(request_body, (bytes, bytearray)):
        request_body = request_body.decode("utf-8")
    return json.loads(request_body)


def predict_fn(event, model):
    try:
        return model.handle(event)
    except BadRequest as e:
        return {"error": str(e), "errorType": "BadRequest"}


def output_fn(prediction, accept="application/json"):
    return json.dumps(prediction), "application/json"
