"""Runtimes: one interface to run a model — onnxruntime first, torch second, tensorflow third.

onnxruntime and torch run the zoo's ONNX files; tensorflow runs a SavedModel directory of the
same architecture built with Keras (:mod:`servelab.models.keras_zoo`).

::

    from servelab import runtimes

    runtimes.import_runtime("onnxruntime")          # the heavy import, timed apart from the load
    session = runtimes.load(path, runtime="onnxruntime", threads=1)
    outputs = session.infer({"input": batch})       # dict name -> numpy array

Importing this package is cheap: onnxruntime and torch are imported by :func:`import_runtime`
or :func:`load`, never at module level, so ``servelab --help`` and the platform's control
plane never pay for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from servelab.errors import ConfigError
from servelab.runtimes.base import (
    DEVICES,
    EXTRAS,
    ONNX_RUNTIMES,
    RUNTIME_NAMES,
    Device,
    RuntimeName,
    Session,
    check_runtime,
)
from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession
from servelab.runtimes.tensorflow_rt import TensorFlowSession
from servelab.runtimes.torch_rt import TorchSession

RUNTIMES: dict[RuntimeName, type] = {
    "onnxruntime": OnnxRuntimeSession,
    "torch": TorchSession,
    "tensorflow": TensorFlowSession,
}


def import_runtime(name: RuntimeName) -> None:
    """Import the runtime's library (onnxruntime, or torch + onnx2torch) without loading a model.

    Raises :class:`~servelab.errors.RuntimeNotAvailableError` naming the extra to install, and
    :class:`~servelab.errors.ConfigError` for a name that is not a runtime.
    """
    check_runtime(name)
    if name == "onnxruntime":
        from servelab.runtimes.onnxruntime_rt import import_library
    elif name == "tensorflow":
        from servelab.runtimes.tensorflow_rt import import_library
    else:
        from servelab.runtimes.torch_rt import import_library
    import_library()


def load(
    path: Path,
    *,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
    providers: Sequence[str] | None = None,
    device: Device = "cpu",
) -> Session:
    """Load the ONNX model at ``path`` into ``runtime`` with ``threads`` intra-op threads.

    ``device``: ``cpu``, or ``cuda`` for the first NVIDIA GPU (onnxruntime's CUDA execution
    provider, or torch on ``cuda``); a missing GPU is an error, never a silent CPU fallback.
    ``providers`` (onnxruntime only) picks execution providers explicitly, in order of preference.
    """
    check_runtime(runtime)
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if runtime == "onnxruntime":
        if device == "cuda" and not providers:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return OnnxRuntimeSession(Path(path), threads=threads, providers=providers)
    if providers:
        raise ConfigError(f"providers apply to the onnxruntime runtime only, not {runtime!r}")
    return RUNTIMES[runtime](Path(path), threads=threads, device=device)


__all__ = [
    "DEVICES",
    "EXTRAS",
    "ONNX_RUNTIMES",
    "RUNTIMES",
    "RUNTIME_NAMES",
    "Device",
    "OnnxRuntimeSession",
    "RuntimeName",
    "Session",
    "TensorFlowSession",
    "TorchSession",
    "import_runtime",
    "load",
]
