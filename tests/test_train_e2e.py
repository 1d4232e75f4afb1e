"""From a job file to a served function: `servelab train --deploy` on a real local platform."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from platform_harness import RunningPlatform
from servelab.platform.client import PlatformClient
from servelab.tensors import decode_tensors, encode_tensor
from servelab.train.checkpoint import latest_checkpoint, load_checkpoint
from servelab.train.cli import register
from servelab.train.job import load_job
from servelab.train.trainer import build_for_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def version() -> None:  # a second command, so `train` is a sub-command as in `servelab`
        pass

    return app


def _job_file(tmp_path: Path, steps: int) -> Path:
    text = (EXAMPLES / "mlp-synthetic.yaml").read_text()
    text = text.replace("train_steps: 400", f"train_steps: {steps}").replace("checkpoint_freq: 200",
                                                                             "checkpoint_freq: 0")
    path = tmp_path / "mlp.yaml"
    path.write_text(text)
    return path


def test_train_deploy_and_invoke_returns_what_pytorch_predicts(tmp_path: Path) -> None:
    job_file = _job_file(tmp_path, 150)
    out = tmp_path / "run"
    with RunningPlatform(tmp_path / "home") as p:
        r = CliRunner().invoke(_app(), ["train", str(job_file), "--out", str(out), "--deploy", "mlp-fn",
                                        "--platform", p.url, "--quiet"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "deployed" in r.output and "max |diff|" in r.output
        x = np.random.default_rng(7).normal(size=(5, 8)).astype(np.float32)
        body = json.dumps({"inputs": [encode_tensor("data", x)]}).encode()
        status, headers, payload = PlatformClient(p.url).invoke("mlp-fn", body)
    assert status == 200 and not headers.get("X-Amz-Function-Error"), payload
    served = decode_tensors(json.loads(payload)["outputs"])["fc3"]
    job = load_job(job_file)
    net, _, _ = build_for_job(job)
    net.load_state_dict(load_checkpoint(latest_checkpoint(out / "checkpoints"))["model"])
    with torch.no_grad():
        want = net.eval().inference_module("fc3")(torch.from_numpy(x)).numpy()
    assert served.shape == (5, 4)
    np.testing.assert_allclose(served, want, atol=1e-5)
    assert (served.argmax(1) == want.argmax(1)).all()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["phase"] == "test" and metrics[-1]["accuracy"] > 0.8


def test_train_check_prints_the_layers_without_training(tmp_path: Path) -> None:
    r = CliRunner().invoke(_app(), ["train", str(EXAMPLES / "cnn-cifar10.yaml"), "--check"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "conv3" in r.output and "(10,)" in r.output and "ok" in r.output


def test_train_without_deploy_pushes_to_the_local_store(tmp_path: Path, _isolated_home: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(_app(), ["train", str(_job_file(tmp_path, 20)), "--out", str(out), "--quiet",
                                    "--model-name", "mlp-model"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    from servelab.models.store import open_store

    stored = open_store(None, home=_isolated_home).list("mlp-model")
    assert len(stored) == 1 and (out / "model.onnx").read_bytes() == open_store(
        None, home=_isolated_home).get(stored[0].ref).read_bytes()


def test_a_cluster_job_trains_on_two_workers_and_refuses_to_silently_resume(tmp_path: Path) -> None:
    from servelab.errors import ConfigError

    text = (EXAMPLES / "mlp-allreduce.yaml").read_text().replace("train_steps: 400", "train_steps: 60")
    job = tmp_path / "job.yaml"
    job.write_text(text.replace("test_freq: 100", "test_freq: 30").replace("checkpoint_freq: 200",
                                                                         "checkpoint_freq: 30"))
    out = tmp_path / "run"
    r = CliRunner().invoke(_app(), ["train", str(job), "--out", str(out), "--quiet", "--no-export"],
                           catch_exceptions=False, env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "allreduce" in r.output and "60" in r.output
    tests = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["phase"] == "test"]
    assert tests and tests[-1]["step"] == 60 and tests[-1]["accuracy"] > 0.5
    with pytest.raises(ConfigError, match="--resume"):  # checkpoints there: ask, never resume silently
        CliRunner().invoke(_app(), ["train", str(job), "--out", str(out), "--quiet", "--no-export"],
                           catch_exceptions=False)
