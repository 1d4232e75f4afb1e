"""Export to ONNX: ONNX Runtime agrees with PyTorch on held-out inputs, or the export fails loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from servelab.errors import ModelError
from servelab.models.onnx_info import inspect_model
from servelab.models.store import open_store
from servelab.train.export import check_parity, export_onnx, push
from servelab.train.job import parse_job
from servelab.train.trainer import train_local

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cnn_job(**kw) -> object:
    return parse_job({
        "name": "cnn", "seed": 1,
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [3, 16, 16]},
            {"name": "label", "type": "input", "shape": [], "dtype": "int64"},
            {"name": "conv1", "type": "convolution", "srclayers": "data", "num_filters": 8, "kernel": 3, "pad": 1},
            {"name": "bn1", "type": "batch_norm", "srclayers": "conv1"},
            {"name": "relu1", "type": "relu", "srclayers": "bn1"},
            {"name": "pool1", "type": "pooling", "srclayers": "relu1", "kernel": 2},
            {"name": "sl", "type": "slice", "srclayers": "pool1", "num_slices": 2},
            {"name": "a", "type": "convolution", "srclayers": "sl:0", "num_filters": 4, "kernel": 3, "pad": 1},
            {"name": "b", "type": "convolution", "srclayers": "sl:1", "num_filters": 4, "kernel": 3, "pad": 1},
            {"name": "cat", "type": "concat", "srclayers": ["a", "b"]},
            {"name": "gpool", "type": "pooling", "srclayers": "cat", "method": "avg", "global_pool": True},
            {"name": "drop", "type": "dropout", "srclayers": "gpool", "ratio": 0.2},
            {"name": "fc", "type": "inner_product", "srclayers": "drop", "num_output": 4},
            {"name": "loss", "type": "softmax_loss", "srclayers": ["fc", "label"]},
            {"name": "prob", "type": "softmax", "srclayers": "fc"}]},
        "updater": {"type": "adam", "learning_rate": {"base": 0.01}},
        "data": {"type": "synthetic_images", "num_train": 256, "num_test": 128},
        "train_steps": 30, "batch_size": 32, "disp_freq": 10, **kw})


def test_a_trained_cnn_exports_and_onnx_runtime_matches_pytorch(tmp_path: Path) -> None:
    job = _cnn_job()
    result = train_local(job, out_dir=tmp_path, progress=False)
    ex = export_onnx(result.net, job, tmp_path / "model.onnx")
    assert ex.output == "fc" and ex.input_names == ["data"] and ex.held_out and ex.samples == 64
    assert ex.max_abs_diff is not None and ex.max_abs_diff < 1e-4
    info = inspect_model(ex.path)
    assert [s.name for s in info.inputs] == ["data"] and info.inputs[0].shape[1:] == (3, 16, 16)
    assert info.outputs[0].name == "fc" and info.metadata["servelab.job"] == "cnn"
    # batch axis is dynamic: a batch of 5 runs
    from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession

    out = OnnxRuntimeSession(ex.path).infer({"data": np.zeros((5, 3, 16, 16), np.float32)})["fc"]
    assert out.shape == (5, 4)


def test_a_named_output_is_exported_instead_of_the_scores(tmp_path: Path) -> None:
    job = _cnn_job(train_steps=2)
    net = train_local(job, out_dir=tmp_path, progress=False).net
    ex = export_onnx(net, job, tmp_path / "prob.onnx", output="prob")
    from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession

    probs = OnnxRuntimeSession(ex.path).infer({"data": np.random.default_rng(0).normal(
        size=(3, 3, 16, 16)).astype(np.float32)})["prob"]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_recurrent_net_exports_with_a_dynamic_time_axis(tmp_path: Path) -> None:
    job = parse_job({
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [12], "dtype": "int64", "sequence": True},
            {"name": "label", "type": "input", "shape": [12], "dtype": "int64", "sequence": True},
            {"name": "embed", "type": "embedding", "srclayers": "data", "vocab_size": 8, "dim": 8},
            {"name": "lstm", "type": "rnn", "srclayers": "embed", "cell": "lstm", "hidden_size": 16},
            {"name": "scores", "type": "inner_product", "srclayers": "lstm", "num_output": 8, "axis": 2},
            {"name": "loss", "type": "softmax_loss", "srclayers": ["scores", "label"]}]},
        "train_one_batch": {"alg": "bptt"},
        "data": {"type": "synthetic_sequence", "length": 12, "num_train": 64, "num_test": 64},
        "train_steps": 3, "batch_size": 16})
    net = train_local(job, out_dir=tmp_path, progress=False).net
    ex = export_onnx(net, job, tmp_path / "rnn.onnx")
    assert ex.max_abs_diff is not None and ex.max_abs_diff < 1e-4
    from servelab.runtimes.onnxruntime_rt import OnnxRuntimeSession

    x = torch.randint(0, 8, (2, 20))  # longer than trained on
    got = OnnxRuntimeSession(ex.path).infer({"data": x.numpy()})["scores"]
    with torch.no_grad():
        want = net.inference_module("scores")(x).numpy()
    assert got.shape == (2, 20, 8) and np.abs(got - want).max() < 1e-4


def test_parity_check_fails_clearly_when_the_graph_differs_from_the_net(tmp_path: Path) -> None:
    job = _cnn_job(train_steps=2)
    net = train_local(job, out_dir=tmp_path / "a", progress=False).net
    ex = export_onnx(net, job, tmp_path / "model.onnx")
    other = train_local(job.model_copy(update={"seed": 2}), out_dir=tmp_path / "b", progress=False).net
    x = {"data": torch.randn(8, 3, 16, 16)}
    with pytest.raises(ModelError, match=r"differs from PyTorch's by up to .* do not serve it"):
        check_parity(other.inference_module("fc"), ex.path, x, "fc")


def test_push_stores_the_model_by_content(tmp_path: Path) -> None:
    job = _cnn_job(train_steps=1)
    net = train_local(job, out_dir=tmp_path, progress=False).net
    ex = export_onnx(net, job, tmp_path / "model.onnx", check=False)
    ref = push(ex.path, "cnn", home=tmp_path / "home")
    assert ref.startswith("cnn@sha256:")
    stored = open_store(None, home=tmp_path / "home").get(ref)
    assert stored.read_bytes() == ex.path.read_bytes()
