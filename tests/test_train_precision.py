"""Mixed precision: bf16 autocast on CPU trains in bfloat16; fp16 (with loss scaling) is for GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.job import load_job
from servelab.train.trainer import train_local

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bf16_autocast_trains_the_digits_mlp_in_bfloat16(tmp_path: Path) -> None:
    job = load_job(EXAMPLES / "mlp-digits.yaml").model_copy(update={"precision": "bf16", "train_steps": 200})
    seen: set[torch.dtype] = set()

    def record(module, args, out) -> None:
        if torch.is_grad_enabled() and isinstance(out, torch.Tensor):  # training steps, not the test passes
            seen.add(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train_local(job, out_dir=tmp_path, progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in seen  # the inner products ran in bfloat16
    assert all(p.dtype == torch.float32 for p in result.net.parameters())  # the master weights did not
    assert result.test_accuracy >= 0.85


def test_fp16_on_cpu_is_refused_with_what_to_use(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is allowed there")
    job = load_job(EXAMPLES / "mlp-digits.yaml").model_copy(update={"precision": "fp16", "train_steps": 2})
    with pytest.raises(ConfigError, match="precision: bf16"):
        train_local(job, out_dir=tmp_path, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_fp16_with_loss_scaling_trains_on_a_gpu(tmp_path: Path) -> None:
    job = load_job(EXAMPLES / "mlp-digits.yaml").model_copy(update={"precision": "fp16", "device": "cuda"})
    assert train_local(job, out_dir=tmp_path, progress=False).test_accuracy >= 0.85


def test_bf16_allreduce_workers_train_in_bfloat16(tmp_path: Path) -> None:
    from servelab.train.distributed import launch

    job = load_job(EXAMPLES / "mlp-digits.yaml").model_copy(
        update={"precision": "bf16", "train_steps": 200, "cluster": {"nworkers_per_group": 2}})
    result = launch(job, out_dir=tmp_path, timeout_s=120)
    assert result.framework == "allreduce"
    assert result.eval_log[-1][2] >= 0.85  # held-out accuracy of the replicas trained in bf16


def test_mixed_precision_outside_allreduce_is_refused(tmp_path: Path) -> None:
    from servelab.train.distributed import launch

    ps = {"nworkers_per_group": 2, "server_worker_separate": True}
    job = load_job(EXAMPLES / "mlp-digits.yaml").model_copy(update={"precision": "bf16", "cluster": ps})
    with pytest.raises(ConfigError, match="local and allreduce"):
        launch(job, out_dir=tmp_path / "ps")
    if not torch.cuda.is_available():
        fp16 = job.model_copy(update={"precision": "fp16", "cluster": {"nworkers_per_group": 2}})
        with pytest.raises(ConfigError, match="precision: bf16"):
            launch(fp16, out_dir=tmp_path / "fp16")
