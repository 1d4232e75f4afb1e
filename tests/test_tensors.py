import numpy as np
import pytest

from servelab.errors import InputValidationError
from servelab.tensors import (
    TensorSpec,
    decode_tensor,
    decode_tensors,
    encode_tensor,
    validate_inputs,
)


@pytest.mark.parametrize("binary", [False, True])
def test_tensor_round_trips_through_json_encoding(binary: bool) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    name, back = decode_tensor(encode_tensor("x", arr, binary=binary))
    assert name == "x"
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, arr)


def test_b64_with_wrong_byte_count_is_rejected_with_the_sizes() -> None:
    obj = encode_tensor("x", np.zeros((2, 2), np.float32), binary=True)
    obj["shape"] = [2, 3]
    with pytest.raises(InputValidationError, match="needs 24"):
        decode_tensor(obj)


def test_unknown_datatype_names_the_allowed_ones() -> None:
    with pytest.raises(InputValidationError, match="FP32"):
        decode_tensor({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1.0]})


def test_duplicate_tensor_names_are_rejected() -> None:
    t = encode_tensor("x", np.zeros(1, np.float32))
    with pytest.raises(InputValidationError, match="twice"):
        decode_tensors([t, t])


def test_validate_inputs_checks_names_rank_and_fixed_dims() -> None:
    specs = [TensorSpec("input", ("batch", 16), "float32")]
    ok = validate_inputs(specs, {"input": np.zeros((5, 16), np.float64)})
    assert ok["input"].dtype == np.float32  # safe same-kind cast
    with pytest.raises(InputValidationError, match="missing"):
        validate_inputs(specs, {"x": np.zeros((1, 16))})
    with pytest.raises(InputValidationError, match="axis 1 must be 16"):
        validate_inputs(specs, {"input": np.zeros((1, 15), np.float32)})
    with pytest.raises(InputValidationError, match="rank"):
        validate_inputs(specs, {"input": np.zeros((16,), np.float32)})
    with pytest.raises(InputValidationError, match="dtype"):
        validate_inputs(specs, {"input": np.zeros((1, 16), np.complex64)})


def test_random_fills_dynamic_axes() -> None:
    spec = TensorSpec("ids", ("batch", 128), "int64")
    assert spec.random(4).shape == (4, 128)


def test_binary_extension_decodes_in_order_and_checks_sizes() -> None:
    import numpy as np

    from servelab.errors import InputValidationError
    from servelab.tensors import decode_tensors, encode_binary_response, frame_binary, unframe_binary

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[7, 8]], dtype=np.int64)
    objs = [{"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
            {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [7, 8]}]
    got = decode_tensors(objs, a.tobytes())
    assert got["a"].tolist() == a.tolist() and got["b"].tolist() == b.tolist()
    with pytest.raises(InputValidationError, match="add up to 24"):
        decode_tensors(objs, a.tobytes() + b"\0")
    with pytest.raises(InputValidationError, match="no binary part"):
        decode_tensors(objs)
    body, n = encode_binary_response({"id": "x"}, {"y": a}, True)
    framed = unframe_binary(frame_binary(body, n))
    assert framed is not None and bytes(framed[0]) == body and framed[1] == n
    assert unframe_binary(b'{"inputs": []}') is None
    with pytest.raises(InputValidationError):
        frame_binary(b"{}", 3)
