"""Tensors on the wire: specs, dtypes, and the JSON encoding shared by the platform and clients.

The encoding is the Open Inference Protocol (KServe v2) tensor object::

    {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}

with one extension for speed: ``"b64"`` instead of ``"data"`` carries the tensor's raw
little-endian bytes, base64-encoded (a 224x224x3 float image is 600 KB as base64 and several
MB as a JSON number list).

The protocol's own *binary tensor data extension* is faster still: the HTTP body is a JSON
header (its length in the ``Inference-Header-Content-Length`` header) followed by the raw bytes
of every tensor whose ``parameters.binary_data_size`` is set, in order; outputs come back the
same way when the request sets ``parameters.binary_data_output`` (or an output's
``parameters.binary_data``). Inside the platform such a body travels to the instance as one
*binary frame* (:func:`frame_binary`), so the bytes are never base64-encoded or parsed as JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servelab.errors import InputValidationError

# Open Inference Protocol datatype names <-> numpy dtypes.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}

# Largest tensor we agree to decode from a request, in elements (guards memory before limits).
MAX_ELEMENTS = 64 * 1024 * 1024

HEADER_LENGTH_HTTP = "Inference-Header-Content-Length"
# A binary-extension body inside the platform: magic, the JSON header's length (u64 LE), the body.
# JSON text never starts with a NUL byte, so a frame cannot be mistaken for a JSON event.
BINARY_FRAME_MAGIC = b"\x00SLB"
_FRAME_PREFIX = len(BINARY_FRAME_MAGIC) + 8


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None or a string for a dynamic axis), dtype."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # numpy dtype name, e.g. "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def v2_metadata(self) -> dict[str, Any]:
        """As ``/v2/models/{name}`` lists it: dynamic axes are -1."""
        return {
            "name": self.name,
            "datatype": NUMPY_TO_V2[np.dtype(self.dtype)],
            "shape": [d if isinstance(d, int) else -1 for d in self.shape],
        }

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with every dynamic axis set: the first to ``batch``, the others to 1."""
        return tuple(
            d if isinstance(d, int) and d >= 0 else (batch if i == 0 else 1)
            for i, d in enumerate(self.shape)
        )

    def random(self, batch: int = 1, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random tensor that fits this spec (token ids stay small, floats in [0, 1))."""
        rng = rng or np.random.default_rng(0)
        shape = self.concrete_shape(batch)
        dt = np.dtype(self.dtype)
        if dt.kind == "f":
            return rng.random(shape, dtype=np.float32).astype(dt)
        if dt.kind in "iu":
            return rng.integers(0, 100, size=shape).astype(dt)
        if dt.kind == "b":
            return rng.integers(0, 2, size=shape).astype(dt)
        raise InputValidationError(f"cannot make random data for dtype {self.dtype}")


def validate_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, Any], *,
                    exact_dtype: bool = False) -> dict[str, np.ndarray]:
    """Check names, ranks, fixed dims and dtypes; return arrays ready for a runtime.

    Raises :class:`InputValidationError` with a message that names the input and what it expects.
    ``exact_dtype`` (requests from the network): the datatype must be the model's, since a
    client that sends INT64 for an FP32 input has a bug a silent cast would hide; otherwise
    (arrays from Python code) a same-kind cast is made.
    """
    expected = {s.name for s in specs}
    missing = expected - inputs.keys()
    extra = inputs.keys() - expected
    if missing or extra:
        raise InputValidationError(
            f"inputs must be exactly {sorted(expected)}; missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = np.asarray(inputs[spec.name])
        want = np.dtype(spec.dtype)
        if arr.dtype != want:
            if exact_dtype:
                got_v2, want_v2 = NUMPY_TO_V2.get(arr.dtype, str(arr.dtype)), NUMPY_TO_V2.get(want, str(want))
                raise InputValidationError(
                    f"input {spec.name!r} is {got_v2} data, but the model declares it {want_v2}: "
                    f"send datatype {want_v2!r}")
            if np.can_cast(arr.dtype, want, casting="same_kind"):
                arr = arr.astype(want)
            else:
                raise InputValidationError(
                    f"input {spec.name!r} has dtype {arr.dtype}, expected {want}"
                )
        if arr.ndim != len(spec.shape):
            raise InputValidationError(
                f"input {spec.name!r} has shape {list(arr.shape)}, expected rank "
                f"{len(spec.shape)} like {list(spec.shape)}"
            )
        for axis, (got, dim) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if isinstance(dim, int) and dim >= 0 and got != dim:
                raise InputValidationError(
                    f"input {spec.name!r} has shape {list(arr.shape)}, expected {list(spec.shape)} "
                    f"(axis {axis} must be {dim})"
                )
        out[spec.name] = arr
    return out


def encode_tensor(name: str, array: np.ndarray, *, binary: bool = False) -> dict[str, Any]:
    """One Open Inference Protocol tensor object; ``binary`` uses the ``b64`` extension."""
    arr = np.asarray(array)
    try:
        datatype = NUMPY_TO_V2[arr.dtype]
    except KeyError:
        raise InputValidationError(f"tensor {name!r}: unsupported dtype {arr.dtype}") from None
    obj: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
    if binary:
        obj["b64"] = base64.b64encode(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"))
                                      .tobytes()).decode("ascii")
    else:
        obj["data"] = arr.reshape(-1).tolist()
    return obj


def decode_tensor(obj: Mapping[str, Any], raw: bytes | memoryview | None = None) -> tuple[str, np.ndarray]:
    """Inverse of :func:`encode_tensor`; every malformed field gets an error that names it.
    ``raw``: the tensor's bytes from a binary-extension body (its ``binary_data_size`` slice)."""
    if not isinstance(obj, Mapping):
        raise InputValidationError("each tensor must be an object with name, shape, datatype, data")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise InputValidationError("tensor is missing its 'name'")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputValidationError(f"tensor {name!r}: 'shape' must be a list of non-negative ints")
    n = int(np.prod(shape)) if shape else 1
    if n > MAX_ELEMENTS:
        raise InputValidationError(f"tensor {name!r}: {n} elements is over the limit {MAX_ELEMENTS}")
    datatype = obj.get("datatype")
    if datatype not in V2_TO_NUMPY:
        raise InputValidationError(
            f"tensor {name!r}: 'datatype' must be one of {sorted(V2_TO_NUMPY)}, got {datatype!r}"
        )
    dtype = V2_TO_NUMPY[datatype]
    if raw is not None:
        if len(raw) != n * dtype.itemsize:
            raise InputValidationError(f"tensor {name!r}: binary_data_size is {len(raw)} bytes, shape {shape} "
                                       f"of {datatype} needs {n * dtype.itemsize}")
        # no copy on a little-endian machine: the array reads the request's bytes
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    elif "b64" in obj:
        try:
            # strict a2b is ~10x faster than b64decode(validate=True), which runs a regex first
            raw = binascii.a2b_base64(obj["b64"], strict_mode=True)
        except (ValueError, TypeError):
            raise InputValidationError(f"tensor {name!r}: 'b64' is not valid base64") from None
        if len(raw) != n * dtype.itemsize:
            raise InputValidationError(
                f"tensor {name!r}: 'b64' holds {len(raw)} bytes, shape {shape} of {datatype} "
                f"needs {n * dtype.itemsize}"
            )
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    elif "data" in obj:
        try:
            arr = np.asarray(obj["data"], dtype=dtype)
        except (ValueError, TypeError):
            raise InputValidationError(f"tensor {name!r}: 'data' is not a list of {datatype}") from None
        if arr.size != n:
            raise InputValidationError(
                f"tensor {name!r}: 'data' has {arr.size} values, shape {shape} needs {n}"
            )
        arr = arr.reshape(shape)
    else:
        raise InputValidationError(f"tensor {name!r}: give its values as 'data' or 'b64'")
    return name, arr


def decode_tensors(objs: Any, binary: bytes | memoryview | None = None) -> dict[str, np.ndarray]:
    """Decode a request's ``inputs``; ``binary`` is the part of a binary-extension body after the
    JSON header, sliced in order by the tensors' ``parameters.binary_data_size``."""
    if not isinstance(objs, list) or not objs:
        raise InputValidationError("'inputs' must be a non-empty list of tensors")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for obj in objs:
        size = binary_data_size(obj)
        if size is None:
            name, arr = decode_tensor(obj)
        else:
            if binary is None:
                raise InputValidationError(
                    f"tensor {obj.get('name')!r} has binary_data_size but the request has no binary part: "
                    f"send the JSON header's length in the {HEADER_LENGTH_HTTP} HTTP header")
            if offset + size > len(binary):
                raise InputValidationError(f"tensor {obj.get('name')!r}: binary_data_size {size} runs past the "
                                           f"end of the body ({len(binary) - offset} bytes left)")
            name, arr = decode_tensor(obj, raw=binary[offset:offset + size])
            offset += size
        if name in out:
            raise InputValidationError(f"tensor {name!r} given twice")
        out[name] = arr
    if binary is not None and offset != len(binary):
        raise InputValidationError(f"the body has {len(binary)} bytes after the JSON header, but the tensors' "
                                   f"binary_data_size add up to {offset}")
    return out


def binary_data_size(obj: Any) -> int | None:
    """A tensor object's ``parameters.binary_data_size``, checked; None when it has none."""
    params = obj.get("parameters") if isinstance(obj, Mapping) else None
    if not isinstance(params, Mapping) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputValidationError(f"tensor {obj.get('name')!r}: binary_data_size must be an integer >= 0")
    return size


def wants_binary_outputs(request: Mapping[str, Any]) -> set[str] | bool:
    """Which outputs a request asks back as binary: True for all (``binary_data_output``), else the
    names whose ``outputs[].parameters.binary_data`` is true (an empty set: none)."""
    params = request.get("parameters")
    if isinstance(params, Mapping) and params.get("binary_data_output") is True:
        return True
    names: set[str] = set()
    for out in request.get("outputs") or []:
        if isinstance(out, Mapping) and isinstance(out.get("parameters"), Mapping) \
                and out["parameters"].get("binary_data") is True:
            names.add(str(out.get("name")))
    return names


def encode_binary_response(response: dict[str, Any], outputs: Mapping[str, np.ndarray],
                           binary: set[str] | bool) -> tuple[bytes, int]:
    """A response body with the ``binary`` outputs as raw bytes after the JSON header; returns the
    body and the header's length (the ``Inference-Header-Content-Length`` value)."""
    objs, blobs = [], []
    for name, arr in outputs.items():
        if binary is True or (binary is not False and name in binary):
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            obj = encode_tensor(name, arr[:0])  # name, datatype; shape fixed below
            obj.pop("data", None)
            obj["shape"] = list(arr.shape)
            obj["parameters"] = {"binary_data_size": len(data)}
            objs.append(obj)
            blobs.append(data)
        else:
            objs.append(encode_tensor(name, arr))
    header = json.dumps({**response, "outputs": objs}).encode()
    return header + b"".join(blobs), len(header)


def frame_binary(body: bytes, header_length: int) -> bytes:
    """Wrap a binary-extension body for the trip to an instance (see the module docstring)."""
    if not 0 <= header_length <= len(body):
        raise InputValidationError(f"{HEADER_LENGTH_HTTP} is {header_length}, but the body has {len(body)} bytes")
    return BINARY_FRAME_MAGIC + struct.pack("<Q", header_length) + body


def unframe_binary(data: bytes) -> tuple[bytes | memoryview, int] | None:
    """``(body, header_length)`` of a :func:`frame_binary` frame, or None for anything else."""
    if not data.startswith(BINARY_FRAME_MAGIC) or len(data) < _FRAME_PREFIX:
        return None
    (n,) = struct.unpack_from("<Q", data, len(BINARY_FRAME_MAGIC))
    body = memoryview(data)[_FRAME_PREFIX:]
    if n > len(body):
        raise InputValidationError(f"binary frame: header length {n} is past the end of the body")
    return body, n
