"""The torch runtime: the same ONNX file, converted to a ``torch.fx.GraphModule`` and run by PyTorch.

Why convert instead of loading a torch checkpoint: the model artifact servelab stores and serves
is the ONNX file, and the study compares *runtimes* on the same model. ``onnx2torch`` rebuilds
the graph operator by operator as torch modules from the ONNX protobuf (no pickle, so it is as
safe on an untrusted upload as onnxruntime). Session creation therefore includes parsing the
ONNX file, shape inference and the conversion: that is what a torch-served ONNX model costs.

Threads: ``torch.set_num_threads`` is process-wide, not per session, so :meth:`TorchSession.infer`
sets it to the session's count before each run (a no-op when it already matches). Inference
runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import InvalidModelError, ModelError, RuntimeNotAvailableError
from servelab.runtimes.base import EXTRAS, check_threads
from servelab.tensors import TensorSpec, validate_inputs

#: The one onnx2torch release servelab is tested with: :func:`_fix_converters` patches its private
#: registry and modules, so another release is refused rather than half-working. It is not in the
#: ``torch`` extra because it declares torchvision, and pip would then replace the CPU torch with a
#: multi-GB CUDA build to match torchvision; it is installed without its dependencies instead
#: (scripts/setup.sh reads this line, and a test keeps the two in step).
ONNX2TORCH_VERSION = "1.5.15"
ONNX2TORCH_INSTALL = f"pip install --no-deps onnx2torch=={ONNX2TORCH_VERSION}"


def _torchvision_stub() -> dict[str, types.ModuleType]:
    """Stand-ins for the two torchvision names onnx2torch binds at import time.

    onnx2torch imports torchvision only for its NonMaxSuppression and RoiAlign converters.
    torchvision has no wheel for a CPU-only torch on PyPI (its wheel links CUDA torch), so
    rather than make the whole runtime depend on it, a model that uses those two operators
    gets this clear error instead.
    """

    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise ModelError("this model uses NonMaxSuppression or RoiAlign, which the torch runtime "
                         "runs through torchvision: install torchvision matching your torch")

    vision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = missing  # type: ignore[attr-defined]
    vision.ops = ops  # type: ignore[attr-defined]
    return {"torchvision": vision, "torchvision.ops": ops}


def import_library() -> tuple[Any, Any]:
    """Import torch and onnx2torch (``torch.fx`` converter), or say which extra installs them."""
    try:
        import torch
    except ImportError as e:
        raise RuntimeNotAvailableError(
            f"the torch runtime needs torch ({e}); install it with: pip install '{EXTRAS['torch']}'"
        ) from None
    if "onnx2torch" in sys.modules:
        return torch, sys.modules["onnx2torch"]
    stubs = {} if importlib.util.find_spec("torchvision") else _torchvision_stub()
    sys.modules.update(stubs)
    try:
        import onnx2torch
    except ImportError as e:
        raise RuntimeNotAvailableError(
            f"the torch runtime converts ONNX with onnx2torch ({e}); install it with: "
            f"pip install '{EXTRAS['torch']}' && {ONNX2TORCH_INSTALL}"
        ) from None
    except RuntimeError as e:  # e.g. "operator torchvision::nms does not exist": a CUDA torchvision
        raise RuntimeNotAvailableError(
            f"importing onnx2torch failed ({e}); the installed torchvision does not match torch: "
            "install the torchvision built for your torch, or uninstall torchvision"
        ) from None
    finally:
        # The stubs served onnx2torch's import only; nobody else should find a fake torchvision.
        for name, module in stubs.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    _check_onnx2torch_version()
    _fix_converters(torch)
    return torch, onnx2torch


def _check_onnx2torch_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("onnx2torch")
    except PackageNotFoundError:  # imported from a source tree: nothing to compare
        return
    if found != ONNX2TORCH_VERSION:
        sys.modules.pop("onnx2torch", None)
        raise RuntimeNotAvailableError(
            f"onnx2torch {found} is installed; servelab's torch runtime is tested with (and patches the "
            f"internals of) {ONNX2TORCH_VERSION} only: {ONNX2TORCH_INSTALL}")


# (op, ONNX version onnx2torch lacks, version whose converter computes the same thing).
# GreaterOrEqual-16 / LessOrEqual-16 only added bfloat16 to the type list, but onnx2torch 1.5.15
# registers them for version 12 alone (ENOT-AutoDL/onnx2torch#240), so any opset >= 16 export
# that uses them (ALBERT's attention mask does) fails to convert.
_VERSION_ALIASES: tuple[tuple[str, int, int], ...] = (
    ("GreaterOrEqual", 16, 12),
    ("LessOrEqual", 16, 12),
)


def _fix_converters(torch: Any) -> None:
    """Register the converters onnx2torch 1.5.15 lacks or gets wrong for torch.onnx exports.

    - the version aliases above;
    - ``Slice`` indexes with a list of slices, which torch deprecates ("will be interpreted as a
      tensor index"): the same indexing with a tuple, as torch asks;
    - shape inference is skipped for models :func:`infer_shapes_light` already did (by id, so
      other callers of onnx2torch in the process are unaffected);
    - ``Flatten`` when ``axis`` equals the input's rank (ALBERT flattens its 2-D attention mask
      with ``axis=2``): ONNX says the result is ``[prod(dims), 1]``, onnx2torch's module
      flattens to 1-D and then fails with "Dimension out of range" on the first inference.
    """
    from onnx2torch import converter as onnx2torch_converter
    from onnx2torch.node_converters import slice as slice_converters
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
    from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node

    if getattr(_fix_converters, "done", False):
        return
    for op, missing, existing in _VERSION_ALIASES:
        new = OperationDescription("", op, missing)
        old = OperationDescription("", op, existing)
        if new not in _CONVERTER_REGISTRY and old in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[new] = _CONVERTER_REGISTRY[old]

    class OnnxFlatten(torch.nn.Module, OnnxToTorchModule):
        """ONNX Flatten: ``[prod(dims[:axis]), prod(dims[axis:])]``, an empty product being 1."""

        def __init__(self, axis: int) -> None:
            super().__init__()
            self.axis = axis

        def forward(self, x: Any) -> Any:
            axis = self.axis + x.dim() if self.axis < 0 else self.axis
            return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))

    def convert_flatten(node: Any, graph: Any) -> Any:
        return OperationConverterResult(torch_module=OnnxFlatten(node.attributes.get("axis", 1)),
                                        onnx_mapping=onnx_mapping_from_node(node=node))

    for version in (1, 9, 11, 13, 21):
        _CONVERTER_REGISTRY[OperationDescription("", "Flatten", version)] = convert_flatten

    def do_slice(x: Any, flip_dims: list, pos_axes_slices: list, neg_axes_slices: list) -> Any:
        if flip_dims:
            x = torch.flip(x, dims=flip_dims)
        if pos_axes_slices:
            x = x[tuple(pos_axes_slices)]
        if neg_axes_slices:
            x = x[tuple(neg_axes_slices)]
        return x

    slice_converters._do_slice = do_slice

    full_inference = onnx2torch_converter.safe_shape_inference

    def shape_inference_unless_done(model: Any, **kwargs: Any) -> Any:
        return model if id(model) in _PREINFERRED else full_inference(model, **kwargs)

    onnx2torch_converter.safe_shape_inference = shape_inference_unless_done
    _fix_converters.done = True  # type: ignore[attr-defined]


def bypass_initializer_identities(model: Any) -> int:
    """Make nodes read initializers directly instead of through ``Identity`` nodes; return how many.

    torch.onnx stores byte-identical weights once and feeds the copies through ``Identity``
    (a seeded VGG16's zero conv biases, for one). onnx2torch's Conv and Gemm converters need
    their weights to *be* initializers, so they fail with a KeyError on such a graph. The
    rewrite changes no value the graph computes; Identity nodes that produce graph outputs stay.
    """
    initializers = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs
    }
    if not alias:
        return 0
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def _spec(vi: Any) -> TensorSpec:
    from onnx import helper

    tt = vi.type.tensor_type
    dims = tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
    )
    return TensorSpec(vi.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name)


# Initializers up to this many elements keep their values during shape inference (a Reshape's
# target shape may be one); larger ones are weights, whose shape is all inference needs.
_SHAPE_INFERENCE_MAX_ELEMENTS = 1024
_PREINFERRED: set[int] = set()  # id()s of ModelProtos whose value_info infer_shapes_light filled


def infer_shapes_light(model: Any) -> None:
    """Fill ``model.graph.value_info`` as ``onnx.shape_inference.infer_shapes`` would, cheaply.

    onnx2torch runs ``infer_shapes`` on the whole model, which serialises and re-parses every
    weight: 16 of the 24 s it took to convert VGG16 (553 MB) here. Inference needs the weights'
    shapes, not their values, so it runs on a skeleton where each large initializer is a graph
    input of the same type and shape.
    """
    from onnx import ModelProto, helper, shape_inference

    skeleton = ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    g, src = skeleton.graph, model.graph
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    declared = {vi.name for vi in src.input}
    for init in src.initializer:
        if math.prod(init.dims) <= _SHAPE_INFERENCE_MAX_ELEMENTS:
            g.initializer.append(init)
        elif init.name not in declared:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    inferred = shape_inference.infer_shapes(skeleton)
    del src.value_info[:]
    src.value_info.extend(inferred.graph.value_info)


def unsupported_ops(model: Any) -> list[str]:
    """``"Op (opset N, node 'name')"`` for every node onnx2torch has no converter for."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    found: dict[tuple[str, str], str] = {}
    for node in model.graph.node:
        domain = node.domain or ""
        key = (domain, node.op_type)
        if key in found:
            continue
        try:
            get_converter(operation_type=node.op_type, version=opsets.get(domain, 0), domain=domain)
        except NotImplementedError:
            where = f"{domain}::" if domain else ""
            found[key] = f"{where}{node.op_type} (opset {opsets.get(domain, 0)}, node {node.name!r})"
    return list(found.values())


class TorchSession:
    """An ONNX model converted to torch by onnx2torch, run with a fixed thread count on the CPU
    (``device="cpu"``) or on the first CUDA GPU (``device="cuda"``: weights stay on the GPU,
    inputs are copied in and outputs out per call, as a GPU server does)."""

    runtime = "torch"

    def __init__(self, path: Path, *, threads: int = 1, device: str = "cpu") -> None:
        self.threads = check_threads(threads)
        torch, onnx2torch = import_library()
        import onnx

        if device not in ("cpu", "cuda"):
            raise ModelError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeNotAvailableError(f"device 'cuda' asked for, but torch {torch.__version__} sees no "
                                           "CUDA GPU (a CPU-only wheel, or no NVIDIA device/driver)")
        self.device = device

        self._torch = torch
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidModelError(f"{self.path}: no such file")
        try:
            model = onnx.load(str(self.path))
        except Exception as e:  # protobuf's DecodeError and friends all mean "not ONNX"
            raise InvalidModelError(f"{self.path}: not an ONNX model ({type(e).__name__}: {e})") from None
        init_names = {i.name for i in model.graph.initializer}
        self.inputs = tuple(_spec(vi) for vi in model.graph.input if vi.name not in init_names)
        self.outputs = tuple(_spec(vi) for vi in model.graph.output)
        bypass_initializer_identities(model)
        missing = unsupported_ops(model)
        if missing:
            raise ModelError(f"{self.path.name}: the torch runtime (onnx2torch) cannot convert "
                             f"operator(s) {'; '.join(missing)}; serve this model with onnxruntime")
        try:
            infer_shapes_light(model)
            _PREINFERRED.add(id(model))
            # A ModelProto, not the path: given a path, onnx2torch writes a temporary copy of the
            # model next to it (into the model store) for shape inference.
            self._module = onnx2torch.convert(model).eval().to(device)
        except Exception as e:  # a converter that rejects an attribute combination, for one
            raise ModelError(f"{self.path.name}: onnx2torch failed to convert it: "
                             f"{type(e).__name__}: {e}") from None
        finally:
            _PREINFERRED.discard(id(model))
        del model
        self._output_names = [s.name for s in self.outputs]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        feed = validate_inputs(self.inputs, inputs)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        # torch.from_numpy shares memory and wants a writable, contiguous array (copied only if not).
        args = [torch.from_numpy(np.require(feed[s.name], requirements=["C", "W"])) for s in self.inputs]
        if self.device != "cpu":
            args = [a.to(self.device, non_blocking=False) for a in args]
        try:
            with torch.inference_mode():
                result = self._module(*args)
        except (RuntimeError, IndexError, ValueError) as e:
            raise ModelError(f"torch inference failed: {e}") from e
        results = result if isinstance(result, (tuple, list)) else (result,)
        return {name: t.cpu().numpy() for name, t in zip(self._output_names, results, strict=True)}

    def __repr__(self) -> str:
        return f"TorchSession({self.path.name!r}, threads={self.threads}, device={self.device!r})"
