"""The training zoo (examples/train/*-digits.yaml, char-rnn.yaml): each example trains to its stated
target on offline data, exports ONNX, deploys to a real local platform and serves what PyTorch computes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from platform_harness import RunningPlatform
from servelab.cli import app
from servelab.platform.client import PlatformClient
from servelab.tensors import decode_tensors, encode_tensor
from servelab.train.job import load_job
from servelab.train.net import Net
from servelab.train.trainer import build_for_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# example -> (the output served, the held-out figure, the stated target; "at least" for accuracy,
# "at most" for a loss)
ZOO = {
    "mlp-digits": ("fc2", "accuracy", 0.90),
    "cnn-digits": ("fc", "accuracy", 0.90),
    "char-rnn": ("scores", "accuracy", 0.65),
    "rbm-digits": ("rbm1", "reconstruction_error", 0.045),
    "autoencoder-digits": ("dec1", "loss", 0.045),  # predicting the mean digit: 0.073
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    with RunningPlatform(tmp_path_factory.mktemp("home")) as p:
        yield p


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _trained_net(job_file: Path, out: Path) -> Net:
    from servelab.train.checkpoint import latest_checkpoint, load_checkpoint

    net, _, _ = build_for_job(load_job(job_file))
    net.load_state_dict(load_checkpoint(latest_checkpoint(out / "checkpoints"))["model"])
    return net.eval()


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if name == "char-rnn":
        return rng.integers(0, 12, (3, 20)).astype(np.int64)  # a shorter sequence than trained on
    return rng.random((3, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_example_reaches_its_target_and_serves_what_pytorch_computes(
    name: str, platform: RunningPlatform, tmp_path: Path
) -> None:
    output, figure, target = ZOO[name]
    job_file, out = EXAMPLES / f"{name}.yaml", tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(job_file), "--out", str(out), "--output", output, "--deploy", name,
                                 "--platform", platform.url, "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    tests = [x for x in _records(out) if x["phase"] == "test"]
    final = tests[-1][figure]
    assert final >= target if figure == "accuracy" else final <= target, tests

    x = _inputs(name)
    body = json.dumps({"inputs": [encode_tensor("data", x)]}).encode()
    status, headers, payload = PlatformClient(platform.url).invoke(name, body)
    assert status == 200 and not headers.get("X-Amz-Function-Error"), payload
    served = decode_tensors(json.loads(payload)["outputs"])[output]
    with torch.no_grad():
        want = _trained_net(job_file, out).inference_module(output)(torch.from_numpy(x)).numpy()
    assert served.shape == want.shape
    np.testing.assert_allclose(served, want, atol=1e-5)


def test_rbm_lowers_the_reconstruction_error_logged_in_metrics(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", str(EXAMPLES / "rbm-digits.yaml"), "--out", str(tmp_path), "--no-export",
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    records = _records(tmp_path)
    train = [x["reconstruction_error"] for x in records if x["phase"] == "train"]
    test = [x["reconstruction_error"] for x in records if x["phase"] == "test"]
    assert len(train) == 6 and len(test) == 3  # disp_freq 50, test_freq 100 over 300 steps
    assert train[-1] < 0.6 * train[0] and test[-1] < 0.7 * test[0]


def test_autoencoder_is_pretrained_rbm_by_rbm_then_fine_tuned(tmp_path: Path) -> None:
    from servelab.train.trainer import train_local

    job = load_job(EXAMPLES / "autoencoder-digits.yaml").model_copy(update={"train_steps": 100})
    result = train_local(job, out_dir=tmp_path, progress=False)
    pre = [x for x in _records(tmp_path) if x["phase"] == "pretrain"]
    for layer in ("rbm1", "rbm2"):
        errors = [x["reconstruction_error"] for x in pre if x["layer"] == layer]
        assert errors[-1] < 0.5 * errors[0], (layer, errors)  # each RBM learned its input
    order = [x["layer"] for x in pre]
    assert order == sorted(order) and order[0] == "rbm1" and order[-1] == "rbm2"  # bottom up, one stage at a time
    # the decoder is the encoder's weights, transposed: one set of parameters, no copies
    names = [n for n, _ in result.net.named_parameters()]
    assert names == ["rbm1.visible_bias", "rbm1.hidden.weight", "rbm1.hidden.bias", "rbm2.visible_bias",
                     "rbm2.hidden.weight", "rbm2.hidden.bias"]
    assert result.test_loss < 0.06
