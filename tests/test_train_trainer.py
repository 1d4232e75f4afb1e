"""Single-process training: BP learns, BPTT learns through time, checkpoints resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.checkpoint import latest_checkpoint, load_checkpoint
from servelab.train.job import load_job, parse_job
from servelab.train.trainer import train_local
from servelab.train.updaters import LearningRateConfig, lr_factor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_mlp_reaches_target_accuracy_on_the_synthetic_task(tmp_path: Path) -> None:
    job = load_job(EXAMPLES / "mlp-synthetic.yaml").model_copy(update={"train_steps": 300, "checkpoint_freq": 0})
    result = train_local(job, out_dir=tmp_path, progress=False)
    assert result.test_accuracy is not None and result.test_accuracy >= 0.9
    recs = _records(tmp_path)
    train = [r for r in recs if r["phase"] == "train"]
    assert [r["step"] for r in train] == list(range(50, 301, 50))
    assert train[-1]["loss"] < train[0]["loss"] / 2
    assert all(r["samples_per_s"] > 0 for r in train)
    assert [r["step"] for r in recs if r["phase"] == "test"] == [100, 200, 300]
    assert load_job(tmp_path / "job.yaml") == job  # the artefact of record reproduces the job
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 300


def _rnn_job(recurrent: bool, **kw) -> object:
    hidden = ({"name": "h", "type": "rnn", "srclayers": "embed", "cell": "gru", "hidden_size": 32} if recurrent
              else {"name": "h", "type": "inner_product", "srclayers": "embed", "num_output": 32, "axis": 2})
    return parse_job({
        "name": "echo", "seed": 0,
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [16], "dtype": "int64", "sequence": True},
            {"name": "label", "type": "input", "shape": [16], "dtype": "int64", "sequence": True},
            {"name": "embed", "type": "embedding", "srclayers": "data", "vocab_size": 8, "dim": 8},
            hidden,
            {"name": "scores", "type": "inner_product", "srclayers": "h", "num_output": 8, "axis": 2},
            {"name": "loss", "type": "softmax_loss", "srclayers": ["scores", "label"]},
            {"name": "accuracy", "type": "accuracy", "srclayers": ["scores", "label"]}]},
        "train_one_batch": {"alg": "bptt", "unroll_len": 8, "clip_grad_norm": 5.0},
        "updater": {"type": "adam", "learning_rate": {"base": 0.02}},
        "data": {"type": "synthetic_sequence", "vocab_size": 8, "length": 16, "delay": 2, "num_train": 2048,
                 "num_test": 256},
        "train_steps": 150, "batch_size": 32, "disp_freq": 50, **kw})


def test_truncated_bptt_learns_the_echo_task_by_carrying_state_across_windows(tmp_path: Path) -> None:
    result = train_local(_rnn_job(True), out_dir=tmp_path, progress=False)
    assert result.test_accuracy is not None and result.test_accuracy > 0.95
    # Training runs windows of 8 steps with delay 2: the first two labels of the second window
    # need the state carried over from the first. Without carrying, the training accuracy stalls
    # near 12/14 + 2/14/8 = 0.875 (measured: 0.89), however long it trains.
    last_train = [r for r in _records(tmp_path) if r["phase"] == "train"][-1]
    assert last_train["accuracy"] > 0.95


def test_without_recurrence_the_echo_task_stays_near_chance(tmp_path: Path) -> None:
    result = train_local(_rnn_job(False, train_steps=60), out_dir=tmp_path, progress=False)
    assert result.test_accuracy is not None and result.test_accuracy < 0.3  # chance is 1/8


class _Stop(Exception):
    pass


def _resume_job() -> object:
    return parse_job({
        "name": "resume", "seed": 5,
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [8]},
            {"name": "label", "type": "input", "shape": [], "dtype": "int64"},
            {"name": "fc1", "type": "inner_product", "srclayers": "data", "num_output": 32},
            {"name": "bn", "type": "batch_norm", "srclayers": "fc1"},
            {"name": "relu", "type": "relu", "srclayers": "bn"},
            {"name": "drop", "type": "dropout", "srclayers": "relu", "ratio": 0.3},
            {"name": "fc2", "type": "inner_product", "srclayers": "drop", "num_output": 4},
            {"name": "loss", "type": "softmax_loss", "srclayers": ["fc2", "label"]}]},
        "updater": {"type": "sgd", "momentum": 0.9,
                    "learning_rate": {"type": "step", "base": 0.05, "step_size": 15, "gamma": 0.5}},
        "data": {"type": "synthetic", "num_train": 256, "num_test": 64},
        "train_steps": 40, "batch_size": 32, "disp_freq": 5, "checkpoint_freq": 10, "test_freq": 20})


def test_a_resumed_job_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    job = _resume_job()
    straight = train_local(job, out_dir=tmp_path / "a", progress=False)

    def crash_at_25(record: dict) -> None:
        if record["phase"] == "train" and record["step"] == 25:
            raise _Stop

    with pytest.raises(_Stop):
        train_local(job, out_dir=tmp_path / "b", progress=False, on_metrics=crash_at_25)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-00000020.pt"
    with pytest.raises(ConfigError, match="--resume"):
        train_local(job, out_dir=tmp_path / "b", progress=False)
    resumed = train_local(job, out_dir=tmp_path / "b", progress=False, resume=True)
    assert resumed.resumed_from_step == 20
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise: same batches, same dropout masks, same momentum
    losses = lambda out: [(r["phase"], r["step"], r["loss"]) for r in _records(out)]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # the interrupted run's extra lines are gone


class Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this ran on load",))


def test_checkpoints_load_weights_only_and_refuse_pickled_objects(tmp_path: Path) -> None:
    job = _resume_job().model_copy(update={"train_steps": 10})
    result = train_local(job, out_dir=tmp_path, progress=False)
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 10 and set(state) >= {"model", "optimizer", "scheduler", "rng"}
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "step": 1, "payload": Evil()}, evil)
    with pytest.raises(ConfigError, match="weights_only"):
        load_checkpoint(evil)


def test_a_diverging_loss_stops_with_advice(tmp_path: Path) -> None:
    job = parse_job({
        "neuralnet": {"layers": [
            {"name": "data", "type": "input", "shape": [8]},
            {"name": "target", "type": "input", "shape": [8], "source": "data"},
            {"name": "fc", "type": "inner_product", "srclayers": "data", "num_output": 8},
            {"name": "loss", "type": "euclidean_loss", "srclayers": ["fc", "target"]}]},
        "updater": {"type": "sgd", "learning_rate": {"base": 1000.0}},
        "data": {"type": "synthetic", "separation": 50.0}, "train_steps": 200, "batch_size": 16})
    with pytest.raises(ConfigError, match="learning rate"):
        train_local(job, out_dir=tmp_path, progress=False)


def test_learning_rate_schedules() -> None:
    f = lambda **kw: [round(lr_factor(LearningRateConfig(**kw), s), 6) for s in (0, 1, 5, 10)]  # noqa: E731
    assert f(type="fixed") == [1, 1, 1, 1]
    assert f(type="step", step_size=5, gamma=0.5) == [1, 1, 0.5, 0.25]
    assert f(type="exponential", gamma=0.5) == [1, 0.5, 0.03125, 0.000977]
    assert f(type="linear", base=1.0, final=0.0, total_steps=10) == [1, 0.9, 0.5, 0]
    assert f(type="cosine", base=1.0, final=0.0, total_steps=10) == [1, 0.975528, 0.5, 0]
    assert f(type="fixed", warmup_steps=4) == [0.25, 0.5, 1, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: the device: cuda path needs one")
def test_training_on_cuda_learns_and_exports_to_a_matching_onnx(tmp_path: Path) -> None:
    from servelab.train.export import export_onnx

    job = load_job(EXAMPLES / "mlp-synthetic.yaml").model_copy(update={"device": "cuda", "train_steps": 300})
    result = train_local(job, out_dir=tmp_path, progress=False)
    assert next(result.net.parameters()).is_cuda and result.test_accuracy >= 0.9
    ex = export_onnx(result.net, job, tmp_path / "model.onnx")
    assert ex.max_abs_diff < 1e-4 and next(result.net.parameters()).is_cuda  # export leaves the net where it was


def test_cuda_without_a_gpu_is_refused_with_the_reason(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    job = load_job(EXAMPLES / "mlp-synthetic.yaml").model_copy(update={"device": "cuda"})
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train_local(job, out_dir=tmp_path, progress=False)


def test_data_that_does_not_fit_the_input_layer_is_named(tmp_path: Path) -> None:
    job = parse_job({"neuralnet": {"layers": [
        {"name": "data", "type": "input", "shape": [5]},
        {"name": "label", "type": "input", "shape": [], "dtype": "int64"},
        {"name": "fc", "type": "inner_product", "srclayers": "data", "num_output": 4},
        {"name": "loss", "type": "softmax_loss", "srclayers": ["fc", "label"]}]},
        "data": {"type": "synthetic", "dim": 8}, "train_steps": 5})
    with pytest.raises(ConfigError, match=r"input layer 'data' declares shape \[5\] but the data gives \[8\]"):
        train_local(job, out_dir=tmp_path, progress=False)
