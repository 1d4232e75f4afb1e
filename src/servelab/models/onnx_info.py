"""Read what an ONNX file holds — inputs, outputs, parameters — and reject what is not ONNX.

ONNX files are protobuf, parsed by ``onnx``; nothing here unpickles anything, so it is safe to
call on an untrusted upload.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from servelab.errors import InvalidModelError
from servelab.tensors import TensorSpec


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    file_size_bytes: int
    parameter_count: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    producer: str = ""
    initializer_count: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "file_size_bytes": self.file_size_bytes,
            "parameter_count": self.parameter_count,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "opset": self.opset,
            "producer": self.producer,
            "initializer_count": self.initializer_count,
            "metadata": self.metadata,
        }


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise InvalidModelError(f"graph value {vi.name!r} is not a tensor; servelab serves tensor models")
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    if tt.elem_type == TensorProto.UNDEFINED:
        raise InvalidModelError(f"graph value {vi.name!r} has no element type")
    np_dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    return TensorSpec(vi.name, tuple(dims), np.dtype(np_dtype).name)


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Parse and check ``path``; raise :class:`InvalidModelError` saying why it is not usable."""
    p = Path(path)
    if not p.is_file():
        raise InvalidModelError(f"{p}: no such file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends; all mean "not ONNX"
        raise InvalidModelError(f"{p}: not an ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node and not model.graph.output:
        raise InvalidModelError(f"{p}: not an ONNX model (no graph found)")
    try:
        onnx.checker.check_model(model if p.stat().st_size < 2**31 - 1 else str(p))
    except Exception as e:
        raise InvalidModelError(f"{p}: ONNX checker rejected it: {e}") from None
    init_names = {init.name for init in model.graph.initializer}
    params = sum(int(np.prod(init.dims)) if init.dims else 1 for init in model.graph.initializer)
    inputs = tuple(_spec(vi) for vi in model.graph.input if vi.name not in init_names)
    outputs = tuple(_spec(vi) for vi in model.graph.output)
    if not inputs or not outputs:
        raise InvalidModelError(f"{p}: the graph needs at least one input and one output")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ModelInfo(
        path=p,
        file_size_bytes=p.stat().st_size,
        parameter_count=params,
        inputs=inputs,
        outputs=outputs,
        opset=opset,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        initializer_count=len(model.graph.initializer),
        metadata={m.key: m.value for m in model.metadata_props},
    )
