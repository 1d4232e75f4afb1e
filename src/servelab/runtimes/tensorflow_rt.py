"""The TensorFlow runtime: a SavedModel directory run by TensorFlow (the study's other runtime).

The study compared TensorFlow 1.15 with ONNX Runtime and found the smaller, faster runtime the
better serverless choice. TensorFlow does not run ONNX files, and converting ONNX to TensorFlow
(onnx-tf) is unmaintained, so this runtime serves what TensorFlow serves natively: a
**SavedModel** with a ``serving_default`` signature. servelab builds the same architectures
from code with Keras (``weights=None``, seeded: :mod:`servelab.models.keras_zoo`), so a
comparison with onnxruntime and torch runs the same network, not the same file. Keras models
take images channels-last (NHWC) where the ONNX zoo takes NCHW; the input spec says which.

Threads: TensorFlow's intra- and inter-op pools are process-wide and fixed when TensorFlow
first runs an op. A session asks for ``threads`` intra-op threads and 1 inter-op thread before
that; a second session in the same process asking for a different count is refused with a
clear error instead of running silently with the first count (the platform's instances are a
process each, so this only matters to callers that mix counts in one process).

Inference runs the signature's concrete function eagerly, inputs validated against the spec
first (as every servelab runtime does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import ConfigError, InvalidModelError, ModelError, RuntimeNotAvailableError
from servelab.runtimes.base import EXTRAS, check_threads
from servelab.tensors import TensorSpec, validate_inputs

SIGNATURE = "serving_default"


def import_library() -> Any:
    """Import TensorFlow (quietly), or say which extra installs it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # its C++ start-up banner is noise in a worker's log
    try:
        import tensorflow as tf
    except ImportError as e:
        raise RuntimeNotAvailableError(
            f"the tensorflow runtime needs TensorFlow ({e}); install it with: pip install '{EXTRAS['tensorflow']}'"
        ) from None
    return tf


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def _set_threads(tf: Any, threads: int) -> None:
    cfg = tf.config.threading
    if (cfg.get_intra_op_parallelism_threads(), cfg.get_inter_op_parallelism_threads()) == (threads, 1):
        return
    try:
        cfg.set_intra_op_parallelism_threads(threads)
        cfg.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise ConfigError(
            f"TensorFlow already runs with {cfg.get_intra_op_parallelism_threads()} intra-op thread(s) in this "
            f"process and cannot change to {threads} (its thread pools are fixed at first use); load "
            "sessions with different thread counts in separate processes"
        ) from None


def _spec(name: str, tensor_spec: Any) -> TensorSpec:
    dtype = tensor_spec.dtype.as_numpy_dtype
    shape = tuple(None if d is None else int(d) for d in tensor_spec.shape.as_list())
    return TensorSpec(name, shape, np.dtype(dtype).name)


class TensorFlowSession:
    """A SavedModel loaded into TensorFlow with a fixed intra-op thread count."""

    runtime = "tensorflow"

    def __init__(self, path: Path, *, threads: int = 1, device: str = "cpu") -> None:
        self.threads = check_threads(threads)
        if device != "cpu":
            raise ConfigError("the tensorflow runtime here is tensorflow-cpu: device must be 'cpu'")
        path = Path(path)
        if not is_saved_model(path):
            what = "an ONNX file" if path.suffix == ".onnx" else f"{path}"
            raise InvalidModelError(
                f"the tensorflow runtime serves a SavedModel directory (with saved_model.pb), not {what}; "
                "build one from code with `servelab.models.keras_zoo.build_saved_model(name, out_dir)`"
            )
        tf = import_library()
        _set_threads(tf, self.threads)
        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise InvalidModelError(f"{path}: TensorFlow could not load this SavedModel: {e}") from None
        if SIGNATURE not in loaded.signatures:
            raise InvalidModelError(f"{path}: no '{SIGNATURE}' signature (it has: {', '.join(loaded.signatures)})")
        self._tf = tf
        self._loaded = loaded  # keeps the variables the function closes over alive
        self._fn = loaded.signatures[SIGNATURE]
        _, kwargs = self._fn.structured_input_signature
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(k, v) for k, v in sorted(kwargs.items()))
        outputs = self._fn.structured_outputs
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(k, v) for k, v in sorted(outputs.items()))
        self.path = path

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = validate_inputs(self.inputs, inputs)
        try:
            out = self._fn(**{k: self._tf.constant(v) for k, v in arrays.items()})
        except self._tf.errors.OpError as e:
            raise ModelError(f"TensorFlow failed to run the model: {e.message}") from None
        return {k: v.numpy() for k, v in out.items()}
