"""Runtimes: onnxruntime and torch run the same ONNX file and agree; bad inputs and settings are
answered with servelab errors that say what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from servelab import runtimes
from servelab.errors import (
    ConfigError,
    InputValidationError,
    InvalidModelError,
    ModelError,
    RuntimeNotAvailableError,
)
from servelab.runtimes import torch_rt

RUNTIME_NAMES = list(runtimes.ONNX_RUNTIMES)  # tensorflow: tests/test_runtime_tensorflow.py


def _save(tmp_path: Path, name: str, nodes: list, inputs: list, outputs: list, inits: list = ()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _assert_same_outputs(path: Path, feed: dict[str, np.ndarray]) -> None:
    ort_out = runtimes.load(path, runtime="onnxruntime").infer(feed)
    torch_out = runtimes.load(path, runtime="torch").infer(feed)
    assert ort_out.keys() == torch_out.keys()
    for name in ort_out:
        assert ort_out[name].shape == torch_out[name].shape
        assert ort_out[name].dtype == torch_out[name].dtype
        np.testing.assert_allclose(torch_out[name], ort_out[name], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ same outputs


@pytest.mark.parametrize("model", ["tiny-cnn", "tiny-mlp", "noop"])
def test_both_runtimes_give_the_same_outputs_on_tiny_models(tiny_models: dict[str, Path], model: str) -> None:
    session = runtimes.load(tiny_models[model])
    rng = np.random.default_rng(1)
    feed = {s.name: s.random(3, rng=rng) for s in session.inputs}
    _assert_same_outputs(tiny_models[model], feed)


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
def test_session_describes_the_model_and_its_settings(tiny_models: dict[str, Path], runtime: str) -> None:
    session = runtimes.load(tiny_models["tiny-cnn"], runtime=runtime, threads=2)
    assert isinstance(session, runtimes.Session)
    assert (session.runtime, session.threads) == (runtime, 2)
    assert [(s.name, s.shape, s.dtype) for s in session.inputs] == [
        ("input", ("batch", 3, 32, 32), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in session.outputs] == [("logits", ("batch", 10), "float32")]
    out = session.infer({"input": np.zeros((5, 3, 32, 32), np.float32)})
    assert list(out) == ["logits"] and out["logits"].shape == (5, 10)


# ------------------------------------------------------------------------------ input validation


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
@pytest.mark.parametrize(
    ("feed", "expected"),
    [
        ({"image": np.zeros((1, 3, 32, 32), np.float32)}, "missing ['input'], unexpected ['image']"),
        ({"input": np.zeros((1, 3, 16, 16), np.float32)}, "axis 2 must be 32"),
        ({"input": np.zeros((3, 32, 32), np.float32)}, "expected rank 4"),
        ({"input": np.full((1, 3, 32, 32), "x")}, "expected float32"),
    ],
    ids=["wrong-name", "wrong-dim", "wrong-rank", "wrong-dtype"],
)
def test_bad_inputs_are_input_validation_errors_that_name_the_input(
    tiny_models: dict[str, Path], runtime: str, feed: dict, expected: str
) -> None:
    session = runtimes.load(tiny_models["tiny-cnn"], runtime=runtime)
    with pytest.raises(InputValidationError) as info:
        session.infer(feed)
    assert expected in str(info.value)


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
def test_integer_inputs_are_cast_to_the_float_the_model_takes(tiny_models: dict[str, Path],
                                                              runtime: str) -> None:
    session = runtimes.load(tiny_models["tiny-mlp"], runtime=runtime)
    ints = np.arange(32, dtype=np.int64).reshape(2, 16)
    np.testing.assert_allclose(session.infer({"input": ints})["logits"],
                               session.infer({"input": ints.astype(np.float32)})["logits"])


# ------------------------------------------------------------------------------ settings


def test_onnxruntime_session_options_follow_the_threads_setting(tiny_models: dict[str, Path]) -> None:
    import onnxruntime as ort

    session = runtimes.load(tiny_models["tiny-mlp"], runtime="onnxruntime", threads=2)
    opts = session.session_options
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session.providers == ("CPUExecutionProvider",)


def test_torch_sessions_each_run_with_their_own_thread_count(tiny_models: dict[str, Path]) -> None:
    import torch

    one = runtimes.load(tiny_models["tiny-mlp"], runtime="torch", threads=1)
    two = runtimes.load(tiny_models["tiny-mlp"], runtime="torch", threads=2)
    feed = {"input": np.ones((1, 16), np.float32)}
    saved = torch.get_num_threads()
    try:
        two.infer(feed)
        assert torch.get_num_threads() == 2
        one.infer(feed)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("call", [
    lambda p: runtimes.load(p, runtime="tvm"),
    lambda p: runtimes.import_runtime("tvm"),
])
def test_unknown_runtime_is_a_config_error_listing_the_choices(tiny_models: dict[str, Path], call) -> None:
    with pytest.raises(ConfigError, match=r"unknown runtime 'tvm': choose one of onnxruntime, torch, tensorflow"):
        call(tiny_models["noop"])


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_threads_must_be_a_positive_integer(tiny_models: dict[str, Path], runtime: str, threads) -> None:
    with pytest.raises(ConfigError, match="threads must be an integer >= 1"):
        runtimes.load(tiny_models["noop"], runtime=runtime, threads=threads)


def test_an_unavailable_execution_provider_is_refused_not_silently_replaced(
    tiny_models: dict[str, Path],
) -> None:
    from servelab.runtimes.onnxruntime_rt import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(RuntimeNotAvailableError, match=r"\['CUDAExecutionProvider'\] not available"):
        runtimes.load(tiny_models["noop"], providers=["CUDAExecutionProvider"])


def test_providers_are_an_onnxruntime_setting(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="onnxruntime runtime only"):
        runtimes.load(tiny_models["noop"], runtime="torch", providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
def test_a_file_that_is_not_onnx_is_an_invalid_model_error(tmp_path: Path, runtime: str) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"definitely not protobuf \x00\xff" * 10)
    with pytest.raises(InvalidModelError, match=r"model\.onnx"):
        runtimes.load(bogus, runtime=runtime)
    with pytest.raises(InvalidModelError, match="no such file"):
        runtimes.load(tmp_path / "missing.onnx", runtime=runtime)


def test_importing_servelab_runtimes_imports_neither_runtime_library() -> None:
    code = ("import sys, servelab.runtimes, servelab.runtimes.bench_cli; "
            "print(sorted(m for m in ('onnxruntime', 'torch', 'onnx2torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ torch conversion


def test_an_operator_onnx2torch_cannot_convert_is_named_in_a_model_error(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    path = _save(tmp_path, "hardmax", [helper.make_node("Hardmax", ["x"], ["y"], name="pick")], [x], [y])
    runtimes.load(path, runtime="onnxruntime")  # a valid model: only the torch runtime refuses it
    with pytest.raises(ModelError, match=r"cannot convert operator\(s\) Hardmax \(opset 17, node 'pick'\)"):
        runtimes.load(path, runtime="torch")


def test_opset16_comparisons_and_flatten_to_rank_convert_like_onnxruntime(tmp_path: Path) -> None:
    """What ALBERT's attention mask needs: GreaterOrEqual/LessOrEqual-16 and Flatten(axis=rank)."""
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", 6])
    outs = [helper.make_tensor_value_info("ge", TensorProto.BOOL, ["batch", 6]),
            helper.make_tensor_value_info("le", TensorProto.BOOL, ["batch", 6]),
            helper.make_tensor_value_info("flat", TensorProto.INT64, [None, 1])]
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    nodes = [helper.make_node("GreaterOrEqual", ["mask", "one"], ["ge"]),
             helper.make_node("LessOrEqual", ["mask", "one"], ["le"]),
             helper.make_node("Flatten", ["mask"], ["flat"], axis=2)]
    path = _save(tmp_path, "mask_ops", nodes, [mask], outs, [one])
    _assert_same_outputs(path, {"mask": np.array([[0, 1, 2, 1, 0, 3], [1, 1, 1, 0, 0, 0]], np.int64)})


def test_weights_shared_through_identity_nodes_convert(tmp_path: Path) -> None:
    """torch.onnx stores identical weights once and feeds copies through Identity (VGG16's zero biases)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 5, 5])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    nodes = [helper.make_node("Identity", ["b"], ["b_copy"]),
             helper.make_node("Conv", ["x", "w", "b_copy"], ["y"], pads=[1, 1, 1, 1])]
    path = _save(tmp_path, "shared", nodes, [x], [y], inits)
    _assert_same_outputs(path, {"x": rng.random((2, 2, 5, 5), dtype=np.float32)})


@pytest.mark.parametrize("model", ["tiny-cnn", "tiny-mlp"])
def test_light_shape_inference_matches_onnx_shape_inference(tiny_models: dict[str, Path], model: str) -> None:
    full = onnx.shape_inference.infer_shapes(onnx.load(tiny_models[model]))
    light = onnx.load(tiny_models[model])
    torch_rt.infer_shapes_light(light)
    as_bytes = lambda m: {v.name: v.SerializeToString() for v in m.graph.value_info}  # noqa: E731
    assert as_bytes(light) == as_bytes(full) != {}


def test_the_torch_runtime_leaves_no_fake_torchvision_behind() -> None:
    runtimes.import_runtime("torch")
    module = sys.modules.get("torchvision")
    assert module is None or getattr(module, "__file__", None) is not None


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mobilenetv2-tiny", "vgg-tiny", "albert-tiny"])
def test_the_study_model_families_match_across_runtimes(tmp_path_factory: pytest.TempPathFactory,
                                                        model: str) -> None:
    """The study's architectures at test size, exported by torch.onnx like the full models."""
    from servelab.models import zoo

    path = zoo.build(model, tmp_path_factory.getbasetemp() / "zoo")
    feed = zoo.sample_inputs(model, 2)
    if "attention_mask" in feed:
        feed["attention_mask"][1, 5:] = 0  # padding must be honoured by both runtimes
    _assert_same_outputs(path, feed)


def test_cuda_device_without_a_gpu_is_a_clear_error_not_a_cpu_fallback(tiny_models) -> None:
    import torch

    from servelab import runtimes
    from servelab.errors import ConfigError, RuntimeNotAvailableError

    with pytest.raises(ConfigError, match="device must be one of"):
        runtimes.load(tiny_models["tiny-mlp"], device="tpu")  # type: ignore[arg-type]
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the GPU path is checked by benchmarks/gpu_check_serving.py")
    with pytest.raises(RuntimeNotAvailableError, match="no CUDA GPU"):
        runtimes.load(tiny_models["tiny-mlp"], runtime="torch", device="cuda")
    with pytest.raises(RuntimeNotAvailableError, match="CUDAExecutionProvider"):
        runtimes.load(tiny_models["tiny-mlp"], runtime="onnxruntime", device="cuda")
