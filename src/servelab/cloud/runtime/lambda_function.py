"""AWS Lambda entry point: ``lambda_function.handler``. Shipped as-is in the function package.

The model is fetched and loaded at import, in Lambda's INIT phase (billed, and reported as
``Init Duration``), so warm invocations only run inference.
"""

from servelab_infer import BadRequest, Model

MODEL = Model.from_environment()


def handler(event, context):
    try:
        return MODEL.handle(event)
    except BadRequest as e:
        # An error result, not an exception: bad input is the caller's fault, the instance is fine.
        return {"error": str(e), "errorType": "BadRequest"}
