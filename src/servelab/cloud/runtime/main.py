"""Google Cloud Functions (2nd gen) / Cloud Run entry point: the HTTP function ``predict``.

Shipped as-is as ``main.py`` with ``servelab_infer.py`` and ``requirements.txt``; deployed with
``--entry-point predict``, or served in a container by ``functions-framework --target predict``.
The model is fetched and loaded at import (the instance's cold start), so warm requests only
run inference. The first response of an instance carries the init parts in the
``X-Servelab-Init`` header and the log.
"""

import json

from servelab_infer import BadRequest, Model

MODEL = Model.from_environment()
JSON = {"Content-Type": "application/json"}


def predict(request):
    event = request.get_json(silent=True)
    if event is None:
        return json.dumps({"error": "the body must be a JSON Open Inference Protocol request"}), 400, JSON
    first = not MODEL._init_reported
    try:
        out = MODEL.handle(event)
    except BadRequest as e:
        return json.dumps({"error": str(e)}), 400, JSON
    headers = dict(JSON)
    if first:
        headers["X-Servelab-Init"] = MODEL.init_line()
    return json.dumps(out), 200, headers
