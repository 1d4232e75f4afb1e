"""``servelab models build / list / info`` through Typer's runner, and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.errors import InvalidModelError, UnknownModelError
from servelab.models import zoo
from servelab.models.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # rich wraps table cells at the terminal width


def test_list_shows_every_zoo_model_with_its_inputs() -> None:
    result = runner.invoke(app, ["list"], env=WIDE)
    assert result.exit_code == 0, result.output
    for entry in zoo.list_models():
        assert entry.name in result.output
    assert "input float32 [batch,3,224,224]" in result.output  # brackets survive rich markup


def test_build_prints_path_size_params_and_then_reuses(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "tiny-mlp", "--out", str(tmp_path), "--seed", "3"], env=WIDE)
    assert result.exit_code == 0, result.output
    path = tmp_path / "tiny-mlp.onnx"
    assert f"{path}  0.0 MB  676 params  built in" in result.output
    assert zoo.read_zoo_metadata(path)["servelab.zoo.seed"] == "3"

    again = runner.invoke(app, ["build", "tiny-mlp", "--out", str(tmp_path), "--seed", "3"], env=WIDE)
    assert "reused existing build" in again.output
    forced = runner.invoke(app, ["build", "tiny-mlp", "--out", str(tmp_path), "--seed", "3", "--force"],
                           env=WIDE)
    assert "built in" in forced.output


def test_build_defaults_to_a_models_dir_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["build", "noop"]).exit_code == 0
    assert (tmp_path / "models" / "noop.onnx").is_file()


def test_build_torch_model_with_weights_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(zoo.torch_module("vgg-tiny", seed=4).state_dict(), str(weights))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_zoo.py: far faster on the shared 2-core machine
    try:
        result = runner.invoke(app, ["build", "vgg-tiny", "--out", str(tmp_path), "--weights", str(weights)],
                               env=WIDE)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "params  built in" in result.output
    assert zoo.read_zoo_metadata(tmp_path / "vgg-tiny.onnx")["servelab.zoo.weights"].startswith("sha256:")


def test_build_unknown_model_raises_the_library_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "resnet50", "--out", str(tmp_path)])
    assert isinstance(result.exception, UnknownModelError)
    assert "known models:" in str(result.exception)


def test_info_json_describes_the_model(tiny_models: dict[str, Path]) -> None:
    result = runner.invoke(app, ["info", str(tiny_models["tiny-cnn"]), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["inputs"] == [{"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]
    assert info["outputs"][0]["shape"] == ["batch", 10]
    assert info["parameter_count"] == 3 * 3 * 3 * 16 + 16 + 16 * 10 + 10
    assert info["opset"] == 17


def test_info_tables_show_shapes_and_zoo_metadata(tmp_path: Path) -> None:
    path = zoo.build("tiny-cnn", tmp_path, seed=2)
    result = runner.invoke(app, ["info", str(path)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "[batch, 3, 32, 32]" in result.output
    assert "servelab.zoo.seed" in result.output and "618" in result.output


def test_info_on_a_non_onnx_file_is_an_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a model\n")
    result = runner.invoke(app, ["info", str(bogus)])
    assert isinstance(result.exception, InvalidModelError)


def test_info_on_a_non_onnx_file_exits_2_with_a_message(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a model\n")
    proc = subprocess.run([sys.executable, "-m", "servelab.cli", "models", "info", str(bogus)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not an ONNX model" in proc.stderr
