"""The tensorflow runtime: a Keras-built SavedModel (the zoo's MobileNetV2, tiny) served by TensorFlow.

Skipped where TensorFlow is not installed (``pip install 'servelab[tensorflow]'``). The model is
built in a child process: TensorFlow fixes its thread pools at first use, and the runtime must be
the first to set them in this process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from servelab import runtimes
from servelab.errors import ConfigError, InputValidationError, InvalidModelError

BUILD = """
import sys, numpy as np
from servelab.models.keras_zoo import build_saved_model
import keras, tensorflow as tf
path = build_saved_model("mobilenetv2-tiny", sys.argv[1], seed=3)
x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
y = tf.saved_model.load(str(path)).signatures["serving_default"](input=tf.constant(x))["output"].numpy()
np.savez(sys.argv[2], x=x, y=y)
print(path)
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("tf")
    ref = root / "ref.npz"
    out = subprocess.run([sys.executable, "-c", BUILD, str(root), str(ref)], capture_output=True, text=True,
                         timeout=300, check=True)
    path = Path(out.stdout.strip().splitlines()[-1])
    data = np.load(ref)
    return path, data["x"], data["y"]


def test_a_keras_built_saved_model_serves_its_outputs_through_the_runtime(saved_model) -> None:
    path, x, y = saved_model
    session = runtimes.load(path, runtime="tensorflow", threads=1)
    assert session.runtime == "tensorflow" and session.threads == 1
    assert [(s.name, s.shape, s.dtype) for s in session.inputs] == [("input", (None, 64, 64, 3), "float32")]
    assert [(s.name, s.shape) for s in session.outputs] == [("output", (None, 10))]
    out = session.infer({"input": x})["output"]
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)  # softmax rows


def test_tensorflow_runs_with_the_thread_count_it_was_given_and_refuses_another(saved_model) -> None:
    import tensorflow as tf

    path, _, _ = saved_model
    runtimes.load(path, runtime="tensorflow", threads=1)
    assert tf.config.threading.get_intra_op_parallelism_threads() == 1
    assert tf.config.threading.get_inter_op_parallelism_threads() == 1
    with pytest.raises(ConfigError, match="cannot change to 2"):
        runtimes.load(path, runtime="tensorflow", threads=2)


def test_bad_inputs_and_models_get_clear_errors(saved_model, tmp_path: Path) -> None:
    path, x, _ = saved_model
    session = runtimes.load(path, runtime="tensorflow", threads=1)
    with pytest.raises(InputValidationError, match="input"):
        session.infer({"input": x[:, :32]})
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not a model")
    with pytest.raises(InvalidModelError, match="serves a SavedModel directory"):
        runtimes.load(onnx, runtime="tensorflow")


def test_the_runtime_benchmark_measures_tensorflow_in_its_own_process(saved_model) -> None:
    from servelab.runtimes.bench import bench_isolated, summarize

    path, _, _ = saved_model
    [record] = bench_isolated(path, "tensorflow", [1], [1], repeats=3, warmup=1)
    assert record["runtime"] == "tensorflow" and len(record["latencies_ms"]) == 3
    assert record["file_size_bytes"] > 100_000 and record["session_create_ms"] > 0
    assert summarize([record])[0]["median_ms"] > 0
