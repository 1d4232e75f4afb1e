"""What every runtime session looks like, and the checks shared by all runtimes.

A *session* is a loaded model ready to run: its input and output specs, the runtime and the
number of threads it was loaded with, and ``infer``. The platform's worker, the benchmark and
the tests only ever see this interface, so adding a runtime never touches them.

Times in this package are milliseconds (``*_ms``) unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np

from servelab.errors import ConfigError
from servelab.tensors import TensorSpec

RuntimeName = Literal["onnxruntime", "torch", "tensorflow"]
RUNTIME_NAMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
# The runtimes that run the zoo's ONNX files (tensorflow runs a Keras-built SavedModel instead).
ONNX_RUNTIMES: tuple[RuntimeName, ...] = ("onnxruntime", "torch")
Device = Literal["cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)

# The pyproject extra that installs each runtime's library, for "not installed" messages.
EXTRAS: dict[RuntimeName, str] = {"onnxruntime": "servelab[serve]", "torch": "servelab[torch]",
                                  "tensorflow": "servelab[tensorflow]"}


@runtime_checkable
class Session(Protocol):
    """A model loaded by one runtime. ``infer`` validates its inputs against ``inputs``."""

    runtime: str
    threads: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_runtime(name: str) -> RuntimeName:
    """Return ``name`` if it is a known runtime, else raise :class:`ConfigError` listing them."""
    if name not in RUNTIME_NAMES:
        raise ConfigError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIME_NAMES)}")
    return name


def check_threads(threads: int) -> int:
    """Threads must be a positive int: 0 would mean "all cores" to onnxruntime, which hides the setting."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    return threads
