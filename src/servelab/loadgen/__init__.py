"""The open-loop load generator: fires requests at their scheduled times and records them.

- :mod:`~servelab.loadgen.targets`  what it talks to (Lambda Invoke API, Open Inference
  Protocol, any URL, a null target) behind one tiny ``Target`` interface
- :mod:`~servelab.loadgen.payloads` request bodies, built before the run
- :mod:`~servelab.loadgen.runner`   the open-loop runner (one process or several)

The names below are imported on first use, so ``servelab --help`` (which imports this
package's ``cli``) does not pay for numpy, aiohttp and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEFAULT_PAYLOAD": "payloads", "from_files": "payloads", "from_json": "payloads",
    "from_model": "payloads",
    "RunResult": "runner", "run": "runner", "run_load": "runner",
    "TARGETS": "targets", "HttpTarget": "targets", "InvokeResult": "targets", "LambdaTarget": "targets",
    "NullTarget": "targets", "Target": "targets", "TargetKind": "targets", "TargetSpec": "targets",
    "V2InferTarget": "targets",
}
__all__ = [
    "DEFAULT_PAYLOAD",
    "TARGETS",
    "HttpTarget",
    "InvokeResult",
    "LambdaTarget",
    "NullTarget",
    "RunResult",
    "Target",
    "TargetKind",
    "TargetSpec",
    "V2InferTarget",
    "from_files",
    "from_json",
    "from_model",
    "run",
    "run_load",
]

if TYPE_CHECKING:
    from servelab.loadgen.payloads import DEFAULT_PAYLOAD, from_files, from_json, from_model
    from servelab.loadgen.runner import RunResult, run, run_load
    from servelab.loadgen.targets import (
        TARGETS,
        HttpTarget,
        InvokeResult,
        LambdaTarget,
        NullTarget,
        Target,
        TargetKind,
        TargetSpec,
        V2InferTarget,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'servelab.loadgen' has no attribute {name!r}")
    return getattr(importlib.import_module(f"servelab.loadgen.{module}"), name)
