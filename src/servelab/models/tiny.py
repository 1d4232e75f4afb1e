"""Tiny ONNX models written with ``onnx.helper`` — no torch needed, built in milliseconds.

They exist so the platform, load generator and tests can run real ONNX inference on a machine
with only the ``serve`` extra. Weights are drawn from a seeded generator, so a name and a seed
always give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, out: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="servelab")
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    onnx.save(model, tmp)
    os.replace(tmp, out)
    return out


def _init(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    scale = 1.0 / np.sqrt(max(1, int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]))
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def build_noop(out: Path, seed: int = 0) -> Path:
    """``output = input``, float32 ``[batch, 4]``: measures everything but inference."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "noop", [x], [y])
    return _save(graph, out)


def build_tiny_mlp(out: Path, seed: int = 0) -> Path:
    """Two dense layers, float32 ``[batch, 16] -> [batch, 4]``."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
    inits = [_init(rng, "w1", 16, 32), _init(rng, "b1", 32), _init(rng, "w2", 32, 4),
             _init(rng, "b2", 4)]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
    ]
    return _save(helper.make_graph(nodes, "tiny_mlp", [x], [y], inits), out)


def build_tiny_cnn(out: Path, seed: int = 0) -> Path:
    """Conv-ReLU-pool-dense image classifier, float32 ``[batch, 3, 32, 32] -> [batch, 10]``."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    inits = [_init(rng, "conv_w", 16, 3, 3, 3), _init(rng, "conv_b", 16),
             _init(rng, "fc_w", 10, 16), _init(rng, "fc_b", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    return _save(helper.make_graph(nodes, "tiny_cnn", [x], [y], inits), out)


TINY_BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "noop": build_noop,
    "tiny-mlp": build_tiny_mlp,
    "tiny-cnn": build_tiny_cnn,
}
