from pathlib import Path

import pytest

from servelab.errors import InvalidModelError
from servelab.models.onnx_info import inspect_model


def test_inspect_reports_inputs_outputs_and_parameters(tiny_models: dict[str, Path]) -> None:
    info = inspect_model(tiny_models["tiny-mlp"])
    assert [s.name for s in info.inputs] == ["input"]
    assert info.inputs[0].shape == ("batch", 16)
    assert info.inputs[0].dtype == "float32"
    assert info.outputs[0].shape == ("batch", 4)
    assert info.parameter_count == 16 * 32 + 32 + 32 * 4 + 4
    assert info.opset == 17


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x80\x04\x95pickle"])
def test_non_onnx_files_get_a_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(InvalidModelError, match=r"bad\.onnx"):
        inspect_model(bad)


def test_missing_file_is_an_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="no such file"):
        inspect_model(tmp_path / "nope.onnx")
