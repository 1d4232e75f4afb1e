"""Cloud targets: run servelab's experiments on AWS Lambda, SageMaker and Google Cloud.

Each cloud has one module (``aws_lambda``, ``sagemaker``, ``gcp``) that packages a model with
the shipped handler (``runtime/``), deploys it through the cloud's own SDK, invokes it and
tears it down; ``targets`` plugs them into experiments (``kind: aws-lambda`` …), ``safety``
holds dry-run plans, budgets and guaranteed teardown, ``cleanup`` removes leftovers by tag, and
``cli`` is ``servelab cloud``. SDKs (boto3, google-cloud-*) are imported only when used.
"""
