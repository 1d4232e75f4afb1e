"""Runtimes: one interface to run a model — onnxruntime first, torch second.

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
from servelab.runtimes.base import EXTRAS, RUNTIME_NAMES, RuntimeName, Session, check_runtime
from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession
from servelab.runtimes.torch_rt import TorchSession

RUNTIMES: dict[RuntimeName, type] = {
    "onnxruntime": OnnxRuntimeSession,
    "torch": TorchSession,
}


def import_runtime(name: RuntimeName) -> None:
    """Import the runtime's library (onnxruntime, or torch + onnx2torch) without loading a model.

    Raises :class:`~servelab.errors.RuntimeNotAvailableError` naming the extra to install, and
    :class:`~servelab.errors.ConfigError` for a name that is not a runtime.
    """
    check_runtime(name)
    if name == "onnxruntime":
        from servelab.runtimes.onnxruntime_rt import import_library
    else:
        from servelab.runtimes.torch_rt import import_library
    import_library()


def load(
    path: Path,
    *,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
    providers: Sequence[str] | None = None,
) -> Session:
    """Load the ONNX model at ``path`` into ``runtime`` with ``threads`` intra-op threads.

    ``providers`` (onnxruntime only) picks execution providers in order of preference, e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; the default is the CPU provider.
    """
    check_runtime(runtime)
    if runtime == "onnxruntime":
        return OnnxRuntimeSession(Path(path), threads=threads, providers=providers)
    if providers:
        raise ConfigError(f"providers apply to the onnxruntime runtime only, not {runtime!r}")
    return RUNTIMES[runtime](Path(path), threads=threads)


__all__ = [
    "EXTRAS",
    "RUNTIMES",
    "RUNTIME_NAMES",
    "OnnxRuntimeSession",
    "RuntimeName",
    "Session",
    "TorchSession",
    "import_runtime",
    "load",
]
