"""The onnxruntime runtime: the ONNX file run by an ``InferenceSession``.

Threading is explicit and per session: ``intra_op_num_threads=threads`` (the threads one
operator may use), ``inter_op_num_threads=1`` and sequential execution (operators run one after
another; these CNN/transformer graphs are chains, so a parallel executor only adds scheduling).
A serverless instance owns a fixed CPU share, so the thread count must be what it was told,
never "all cores", which is onnxruntime's default.

Graph optimisation is ``ORT_ENABLE_ALL`` (onnxruntime's own default, stated here so it is a
choice, not an accident). Measured side by side on the 2-core VM (CPU time of one batch-1
inference, 1 thread): MobileNetV2 9 ms with ``all`` vs 22-24 ms with ``basic``/``extended``
(the NCHWc layout and fused convolutions), VGG16 313 vs 344 ms, ALBERT-base no difference;
session creation differed by less than the run-to-run noise (a few ms for MobileNetV2, within
+-20% for VGG16 and ALBERT), so a lower level would not buy cheaper cold starts.
``graph_optimization`` lets a caller choose another level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from servelab.errors import (
    ConfigError,
    InputValidationError,
    InvalidModelError,
    ModelError,
    RuntimeNotAvailableError,
)
from servelab.runtimes.base import EXTRAS, check_threads
from servelab.tensors import TensorSpec, validate_inputs

GraphOptimization = Literal["disable", "basic", "extended", "all"]
DEFAULT_GRAPH_OPTIMIZATION: GraphOptimization = "all"
CPU_PROVIDER = "CPUExecutionProvider"

# onnxruntime's NodeArg.type strings -> numpy dtype names.
_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
    **{f"tensor({t})": t for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")},
}


def import_library() -> Any:
    """Import onnxruntime, or say which extra installs it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeNotAvailableError(
            f"the onnxruntime runtime needs the onnxruntime package ({e}); "
            f"install it with: pip install '{EXTRAS['onnxruntime']}'"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (``CUDAExecutionProvider`` on a GPU build)."""
    return list(import_library().get_available_providers())


def _spec(arg: Any) -> TensorSpec:
    try:
        dtype = _ORT_TYPES[arg.type]
    except KeyError:
        raise InvalidModelError(f"graph value {arg.name!r} has type {arg.type}; servelab serves "
                                f"tensors of {sorted(_ORT_TYPES)}") from None
    return TensorSpec(arg.name, tuple(arg.shape), dtype)


class OnnxRuntimeSession:
    """An ONNX model loaded into onnxruntime with a fixed thread count."""

    runtime = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 1,
        providers: Sequence[str] | None = None,
        graph_optimization: GraphOptimization = DEFAULT_GRAPH_OPTIMIZATION,
    ) -> None:
        self.threads = check_threads(threads)
        ort = import_library()
        self.path = Path(path)
        self._errors = ort.capi.onnxruntime_pybind11_state
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if graph_optimization not in levels:
            raise ConfigError(
                f"graph_optimization must be one of {sorted(levels)}, got {graph_optimization!r}")
        opts.graph_optimization_level = levels[graph_optimization]
        self.graph_optimization = graph_optimization
        self.session_options = opts
        wanted = list(providers) if providers else [CPU_PROVIDER]
        have = ort.get_available_providers()
        missing = [p for p in wanted if p not in have]
        if missing:
            # onnxruntime would warn and silently fall back to CPU; a benchmark must not.
            raise RuntimeNotAvailableError(
                f"execution provider(s) {missing} not available in this onnxruntime build; "
                f"available: {have}"
            )
        if not self.path.is_file():
            raise InvalidModelError(f"{self.path}: no such file")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        except (self._errors.InvalidProtobuf, self._errors.InvalidGraph, self._errors.NoSuchFile) as e:
            raise InvalidModelError(f"{self.path}: onnxruntime cannot load it: {e}") from None
        except (self._errors.Fail, self._errors.NotImplemented, self._errors.RuntimeException) as e:
            raise ModelError(f"{self.path}: onnxruntime failed to create a session: {e}") from None
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [s.name for s in self.outputs]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = validate_inputs(self.inputs, inputs)
        try:
            results = self._session.run(self._output_names, feed)
        except self._errors.InvalidArgument as e:
            raise InputValidationError(f"onnxruntime rejected the inputs: {e}") from None
        except (self._errors.Fail, self._errors.RuntimeException) as e:
            # Not necessarily the caller's fault (an allocation failure under a memory limit
            # lands here too), so not an InputValidationError; the original stays as __cause__.
            raise ModelError(f"onnxruntime inference failed: {e}") from e
        return dict(zip(self._output_names, results, strict=True))

    def __repr__(self) -> str:
        return (f"OnnxRuntimeSession({self.path.name!r}, threads={self.threads}, "
                f"providers={list(self.providers)})")
