"""The frameworks run real processes on loopback (gloo, 1 torch thread each) on a tiny blob task."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.cluster import ClusterConfig
from servelab.train.distributed import TrainSpec, WorkerFailedError, launch_spec
from servelab.train.distributed._common import batches
from servelab.train.distributed.synthetic import spec as blob_spec

ALLREDUCE = ClusterConfig(nworkers_per_group=2)
SYNC_PS = ClusterConfig(nworkers_per_group=2, nservers_per_group=2, server_worker_separate=True)
ASYNC_PS = ClusterConfig(nworker_groups=2, nservers_per_group=2, server_worker_separate=True)
HOGWILD = ClusterConfig(nworker_groups=2)
TIMEOUT_S = 60


def train_in_process(spec: TrainSpec) -> dict[str, torch.Tensor]:
    """The reference: one worker, the whole mini-batch, no processes."""
    torch.manual_seed(spec.seed)
    model = spec.make_model()
    opt = spec.make_optimizer(model.parameters())
    data = batches(spec, 0, 1, torch.device("cpu"))
    for _ in range(spec.steps):
        opt.zero_grad()
        model(next(data))["loss"].backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize(
    ("cluster", "framework"),
    [(ClusterConfig(), "local"), (ALLREDUCE, "allreduce"), (SYNC_PS, "sync-ps"), (ASYNC_PS, "async-ps"),
     (HOGWILD, "hogwild")],
)
def test_each_framework_trains_the_blob_task_to_target_accuracy(cluster, framework, tmp_path: Path) -> None:
    result = launch_spec(blob_spec(steps=80, lr=0.2), cluster, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    assert result.framework == framework
    assert result.samples == 80 * 32
    # worker 0's loss: under Hogwild the other worker may have trained the shared values before its first step
    assert sum(result.losses[-5:]) / 5 < 0.5 * math.log(4)  # chance: ln(4 classes)
    assert result.eval_log[-1][2] >= 0.75  # held-out accuracy; chance is 0.25
    assert set(result.final_state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert (tmp_path / "model.pt").exists()
    if framework == "async-ps":
        # every push of both groups reached both servers and was applied (no bound set)
        assert result.staleness["updates"] == 2 * 80 and result.staleness["dropped"] == 0


@pytest.mark.parametrize(("backend", "workers"), [("gloo", 2), ("shm", 2), ("shm", 3)])
def test_allreduce_workers_match_one_worker_on_the_combined_batch(backend: str, workers: int, tmp_path: Path) -> None:
    spec = blob_spec(steps=15, lr=0.3, momentum=0.9, batch_size=16 * workers)
    cluster = ClusterConfig(nworkers_per_group=workers, backend=backend)
    result = launch_spec(spec, cluster, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    assert_same_params(result.final_state, train_in_process(spec))
    # every replica applied the same averaged gradient: the workers' losses fall alike
    logs = [json.loads((tmp_path / f"rank-{r}.json").read_text())["losses"] for r in range(workers)]
    assert all(len(x) == 15 and x[-1] < x[0] for x in logs)


def test_shm_backend_needs_one_cpu_machine() -> None:
    with pytest.raises(ValueError, match="shm"):
        ClusterConfig(nworkers_per_group=2, backend="shm", device="cuda")
    with pytest.raises(ValueError, match="nnodes 1"):
        ClusterConfig(nworkers_per_group=2, backend="shm", rendezvous={"nnodes": 2, "master_port": 29500})


def test_sync_parameter_server_matches_one_worker_on_the_combined_batch(tmp_path: Path) -> None:
    # the updater (SGD with momentum) runs on the two servers, each over its slice of the parameters
    spec = blob_spec(steps=15, lr=0.3, momentum=0.9)
    ps = launch_spec(spec, SYNC_PS, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    assert ps.nservers == 2
    assert_same_params(ps.final_state, train_in_process(spec))


def test_async_staleness_bound_drops_stale_gradients(tmp_path: Path) -> None:
    cluster = ASYNC_PS.model_copy(update={"max_staleness": 0, "nservers_per_group": 1})
    result = launch_spec(blob_spec(steps=30), cluster, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    s = result.staleness
    assert s["updates"] + s["dropped"] == 60  # every push was either applied or dropped
    assert s["max"] >= 0 and (s["dropped"] == 0) == (s["max"] == 0)


@pytest.mark.parametrize(("cluster", "victim"), [(ALLREDUCE, 1), (SYNC_PS, 1), (ASYNC_PS, 0)])
def test_a_worker_killed_mid_job_stops_the_job_with_its_name_then_the_job_resumes(
    cluster: ClusterConfig, victim: int, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    settings = {"steps": 20, "lr": 0.3, "momentum": 0.9, "checkpoint_freq": 5, "checkpoint_path": ckpt}
    t0 = time.monotonic()
    with pytest.raises(WorkerFailedError) as info:
        # the victim SIGKILLs itself when asked for its 13th batch: peers are blocked on it mid-step
        launch_spec(blob_spec(**settings, fault=("kill", victim, 12)), cluster, out_dir=tmp_path / "a",
                    timeout_s=TIMEOUT_S)
    assert time.monotonic() - t0 < 30
    err = info.value
    assert (err.rank, err.role, err.exitcode) == (victim, "worker", -9)
    assert f"rank {victim}" in str(err) and "SIGKILL" in str(err) and str(err.pid) in str(err)

    resumed = launch_spec(blob_spec(**settings), cluster, out_dir=tmp_path / "b", timeout_s=TIMEOUT_S)
    if cluster is ASYNC_PS:
        # servers checkpoint every 5 of their updates (both groups'); the dead group resumes at what they kept
        assert 5 <= resumed.start_step <= 12 and len(resumed.losses) == 20 - resumed.start_step
    else:  # synchronous: step 10 was the last checkpoint, and the result is the run never interrupted
        assert resumed.start_step == 10 and len(resumed.losses) == 10
        assert_same_params(resumed.final_state, train_in_process(blob_spec(**settings)))


def test_a_worker_that_raises_is_reported_with_its_exception(tmp_path: Path) -> None:
    with pytest.raises(WorkerFailedError, match=r"rank 1.*injected fault in shard 1") as info:
        launch_spec(blob_spec(steps=20, fault=("raise", 1, 3)), HOGWILD, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    assert "Traceback" in info.value.detail


def test_hogwild_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    settings = {"steps": 12, "checkpoint_freq": 4, "checkpoint_path": tmp_path / "ckpt"}
    launch_spec(blob_spec(**settings), HOGWILD, out_dir=tmp_path / "a", timeout_s=TIMEOUT_S)
    again = launch_spec(blob_spec(**{**settings, "steps": 16}), HOGWILD, out_dir=tmp_path / "b", timeout_s=TIMEOUT_S)
    assert again.start_step == 12 and len(again.losses) == 4


def test_checkpoints_of_another_framework_are_refused(tmp_path: Path) -> None:
    settings = {"steps": 4, "checkpoint_freq": 2, "checkpoint_path": tmp_path / "ckpt"}
    launch_spec(blob_spec(**settings), ClusterConfig(), out_dir=tmp_path / "a", timeout_s=TIMEOUT_S)
    with pytest.raises(ConfigError, match="written by framework 'local'"):
        launch_spec(blob_spec(**settings), SYNC_PS, out_dir=tmp_path / "b", timeout_s=TIMEOUT_S)


def test_two_nodes_rendezvous_on_a_fixed_port(tmp_path: Path, unused_port: int) -> None:
    """Two launchers, as on two machines (here both on loopback), form one allreduce job."""
    results: dict[int, object] = {}

    def node(rank: int) -> None:
        rdv = {"nnodes": 2, "node_rank": rank, "master_port": unused_port}
        cluster = ClusterConfig(nworkers_per_group=2, rendezvous=rdv)
        results[rank] = launch_spec(blob_spec(steps=10), cluster, out_dir=tmp_path / f"n{rank}", timeout_s=TIMEOUT_S)

    threads = [threading.Thread(target=node, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert set(results) == {0, 1}
    assert_same_params(results[0].final_state, train_in_process(blob_spec(steps=10)))
    assert results[1].final_state == {}  # worker 0 lives on node 0


def test_forced_framework_must_fit_the_server_placement(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server_worker_separate: True"):
        launch_spec(blob_spec(steps=2), ALLREDUCE, out_dir=tmp_path, framework="sync-ps")


def test_model_parallel_outside_allreduce_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allreduce"):
        launch_spec(blob_spec(steps=2, model_parallel=("fc1",)), SYNC_PS, out_dir=tmp_path)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cuda_without_a_gpu_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"torch.cuda.is_available\(\) is False"):
        launch_spec(blob_spec(steps=2), ClusterConfig(nworkers_per_group=2, device="cuda"), out_dir=tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_cuda_nccl_worker_trains_like_the_cpu_reference(tmp_path: Path) -> None:
    # one GPU: one nccl worker (two nccl ranks cannot share a GPU); benchmarks/gpu_check_train.py does more
    cluster = ClusterConfig(device="cuda", backend="nccl")
    spec = blob_spec(steps=15, lr=0.3, momentum=0.9)
    result = launch_spec(spec, cluster, out_dir=tmp_path, framework="allreduce", timeout_s=TIMEOUT_S)
    assert_same_params(result.final_state, train_in_process(spec), atol=1e-4)


@pytest.mark.parametrize("nservers_per_group", [1, 2])
def test_two_server_groups_serve_their_worker_groups_and_sync_their_replicas(
    nservers_per_group: int, tmp_path: Path
) -> None:
    # SINGA's topology: worker group g talks to server group g % 2; the groups average every 5 rounds
    cluster = ClusterConfig(nworker_groups=2, nserver_groups=2, nservers_per_group=nservers_per_group,
                            server_worker_separate=True, sync_freq=5)
    result = launch_spec(blob_spec(steps=42, lr=0.2), cluster, out_dir=tmp_path, timeout_s=TIMEOUT_S)
    assert (result.framework, result.nservers) == ("async-ps", 2 * nservers_per_group)
    assert result.eval_log[-1][2] >= 0.75  # held-out accuracy; chance is 0.25
    servers = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2, 2 + result.nservers)]
    assert [s["server_group"] for s in servers] == [0] * nservers_per_group + [1] * nservers_per_group
    assert all(s["syncs"] == 9 for s in servers)  # rounds 5, 10, …, 40, and the last partial one (42)
    assert all(s["applied"] == 42 for s in servers)  # each server group applied its own worker group's pushes
    for j in range(nservers_per_group):  # after the final sync both replicas of each slice are the same
        a, b = servers[j]["checksum"], servers[nservers_per_group + j]["checksum"]
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


def test_auto_falls_back_to_gloo_when_shared_memory_is_short_and_explicit_shm_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servelab.train.distributed import shm

    spec = blob_spec(steps=5, lr=0.3)
    launch_spec(spec, ALLREDUCE, out_dir=tmp_path / "a", timeout_s=TIMEOUT_S)
    assert json.loads((tmp_path / "a" / "rank-0.json").read_text())["grad_sync"] == "shm"
    monkeypatch.setattr(shm, "shm_free_bytes", lambda: 1024)  # a tiny /dev/shm, as in a default container
    result = launch_spec(spec, ALLREDUCE, out_dir=tmp_path / "b", timeout_s=TIMEOUT_S)
    assert json.loads((tmp_path / "b" / "rank-0.json").read_text())["grad_sync"] == "ddp"
    assert_same_params(result.final_state, train_in_process(spec))
    with pytest.raises(ConfigError, match="--shm-size"):
        launch_spec(spec, ClusterConfig(nworkers_per_group=2, backend="shm"), out_dir=tmp_path / "c")
