"""Which ``pip install 'servelab[EXTRA]'`` provides a missing optional import.

The CLI catches :class:`ModuleNotFoundError` for these packages at its top level and prints one
line naming the extra to install, instead of a traceback. Library code may still raise its own,
more specific :class:`~servelab.errors.RuntimeNotAvailableError` / ``ConfigError`` messages.
"""

from __future__ import annotations

# top-level import name -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_FOR_MODULE: dict[str, str] = {
    "onnxruntime": "serve",
    "torch": "torch",
    "transformers": "torch",
    "safetensors": "torch",
    "onnx2torch": "torch",
    "boto3": "aws",
    "botocore": "aws",
    "google": "gcp",
    "matplotlib": "plot",
    "functions_framework": "test",
    "moto": "test",
    "scipy": "test",
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that provides ``exc.name``, or None if it is not an optional package."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return None
    return (f"this command needs {exc.name}, which is not installed: "
            f"pip install 'servelab[{extra}]' (or: bash scripts/setup.sh {extra})")
