"""Importing ONNX to fine-tune: an ``onnx`` layer holds a converted model whose weights train.

Round trip on the zoo's exported models: train -> export ONNX -> import as a layer -> the same
outputs; then a job fine-tunes the imported classifier and exports it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.export import export_onnx
from servelab.train.job import load_job, parse_job
from servelab.train.net import NetConfig, build_net
from servelab.train.trainer import evaluate, train_local

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_and_exported(name: str, steps: int, tmp_path: Path, output: str | None = None):
    job = load_job(EXAMPLES / f"{name}.yaml").model_copy(update={"train_steps": steps})
    result = train_local(job, out_dir=tmp_path / name, progress=False)
    ex = export_onnx(result.net, job, tmp_path / name / "model.onnx", output)
    return job, result.net, ex


@pytest.mark.parametrize(("name", "shape"), [("mlp-digits", [1, 8, 8]), ("cnn-digits", [1, 8, 8]),
                                              ("autoencoder-digits", [1, 8, 8])])
def test_an_exported_zoo_model_imports_with_the_same_outputs(name: str, shape: list[int], tmp_path: Path) -> None:
    _, net, ex = _trained_and_exported(name, 30, tmp_path)
    imported = build_net(NetConfig.model_validate({"layers": [
        {"name": "data", "type": "input", "shape": shape},
        {"name": "model", "type": "onnx", "srclayers": "data", "path": str(ex.path)},
    ]})).eval()
    x = torch.rand(16, *shape)
    with torch.no_grad():
        want = net.eval().inference_module(ex.output)(x)
        got = imported({"data": x})["model"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    params = list(imported.parameters())
    assert params and all(p.requires_grad for p in params)  # ready to fine-tune
    # the auto-encoder's tied weights come back untied (the ONNX file holds W and its transpose)
    assert sum(p.numel() for p in params) >= sum(p.numel() for p in net.parameters())


def test_an_imported_classifier_fine_tunes_and_exports_again(tmp_path: Path) -> None:
    _, _, ex = _trained_and_exported("mlp-digits", 20, tmp_path)  # a weak start: 20 steps
    doc = {
        "name": "mlp-digits-finetuned", "seed": 1, "threads": 1,
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [1, 8, 8]},
            {"name": "label", "type": "input", "shape": [], "dtype": "int64"},
            {"name": "imported", "type": "onnx", "srclayers": "data", "path": str(ex.path)},
            {"name": "loss", "type": "softmax_loss", "srclayers": ["imported", "label"]},
            {"name": "accuracy", "type": "accuracy", "srclayers": ["imported", "label"]},
        ]},
        "updater": {"type": "sgd", "momentum": 0.9, "learning_rate": {"base": 0.05}},
        "data": {"type": "digits"}, "train_steps": 150, "batch_size": 32,
    }
    job = parse_job(doc)
    torch.manual_seed(job.seed)
    from servelab.train.data import make_data

    before = evaluate(build_net(job.neuralnet), make_data(job, "test"))["accuracy"]
    result = train_local(job, out_dir=tmp_path / "ft", progress=False)
    assert result.test_accuracy > before + 0.05 and result.test_accuracy >= 0.9, (before, result.test_accuracy)
    again = export_onnx(result.net, job, tmp_path / "ft" / "model.onnx")
    assert again.max_abs_diff is not None and again.max_abs_diff < 1e-4


def test_a_missing_onnx_file_is_named() -> None:
    with pytest.raises(ConfigError, match="no file"):
        build_net(NetConfig.model_validate({"layers": [
            {"name": "data", "type": "input", "shape": [4]},
            {"name": "m", "type": "onnx", "srclayers": "data", "path": "/nonexistent/model.onnx"},
        ]}))
