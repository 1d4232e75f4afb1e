"""A layer-net job (servelab.train.job) run by the frameworks: launch(job), and the torchrun entry point."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.distributed import launch, spec_from_job
from servelab.train.job import parse_job
from servelab.train.net import Net

JOB = {
    "name": "mlp-dist",
    "seed": 0,
    "threads": 1,
    "neuralnet": {"layers": [
        {"name": "data", "type": "input", "shape": [8]},
        {"name": "label", "type": "input", "shape": [], "dtype": "int64"},
        # feature-parallel with its own learning-rate scale: the servers must honour it too
        {"name": "fc1", "type": "inner_product", "srclayers": "data", "num_output": 32, "partition_dim": 1,
         "lr_scale": 2.0},
        {"name": "relu1", "type": "relu", "srclayers": "fc1"},
        {"name": "fc2", "type": "inner_product", "srclayers": "relu1", "num_output": 4},
        {"name": "loss", "type": "softmax_loss", "srclayers": ["fc2", "label"]},
        {"name": "accuracy", "type": "accuracy", "srclayers": ["fc2", "label"]},
    ]},
    "updater": {"type": "sgd", "momentum": 0.9, "learning_rate": {"type": "step", "base": 0.05, "step_size": 20}},
    "data": {"type": "synthetic", "num_classes": 4, "dim": 8, "num_train": 1024, "num_test": 256},
    "train_steps": 40,
    "batch_size": 32,
    "test_freq": 20,
    "checkpoint_freq": 20,
    "cluster": {"nworkers_per_group": 2},
}


def job_with(cluster: dict, *, model_parallel: bool = True):
    doc = json.loads(json.dumps(JOB))
    doc["cluster"] = cluster
    if not model_parallel:
        for layer in doc["neuralnet"]["layers"]:
            layer.pop("partition_dim", None)
    return parse_job(doc)


def test_hybrid_allreduce_job_and_sync_ps_job_train_the_same_net(tmp_path: Path) -> None:
    hybrid = launch(job_with({"nworkers_per_group": 2}), out_dir=tmp_path / "ar", timeout_s=60)
    ps = launch(job_with({"nworkers_per_group": 2, "nservers_per_group": 2, "server_worker_separate": True},
                         model_parallel=False), out_dir=tmp_path / "ps", timeout_s=60)
    assert (hybrid.framework, ps.framework) == ("allreduce", "sync-ps")
    for k, v in hybrid.final_state.items():
        torch.testing.assert_close(v, ps.final_state[k], atol=1e-5, rtol=1e-4)
    assert isinstance(hybrid.net, Net)  # ready for part A's ONNX export
    assert hybrid.eval_log[-1][1] == 40 and hybrid.eval_log[-1][2] > 0.6  # test-split accuracy (chance 0.25)
    records = [json.loads(line) for line in (tmp_path / "ar" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["phase"] == "test"] == [20, 40]
    assert (tmp_path / "ar" / "checkpoints").is_dir()


def test_job_adapter_finds_feature_parallel_layers_and_splits_the_batch() -> None:
    spec = spec_from_job(job_with({"nworkers_per_group": 2}))
    assert spec.model_parallel == ("fc1",)
    batch = next(iter(spec.make_data(0, 2)))
    assert next(iter(batch.values())).shape[0] == 16  # a group's batch of 32 over 2 workers


def test_batch_that_does_not_split_over_the_group_is_refused() -> None:
    doc = job_with({"nworkers_per_group": 3})
    with pytest.raises(ConfigError, match="multiple of nworkers_per_group 3"):
        spec_from_job(doc)


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_the_documented_torchrun_command_runs_a_job(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(job_with({"nworkers_per_group": 2}).to_yaml())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port),
           "-m", "servelab.train.distributed.worker", str(job), "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    logs = [json.loads((tmp_path / "out" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [len(x["losses"]) for x in logs] == [40, 40]
    assert (tmp_path / "out" / "model.pt").exists()
