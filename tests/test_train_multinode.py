"""Two nodes, as a user on two hosts runs them: two `servelab train` commands on one job file, each
with its own --node-rank, meeting at node 0's fixed port (here both on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from servelab.train.cli import with_rendezvous
from servelab.train.job import parse_job

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "train"
CLUSTERS = {
    "allreduce": {"nworkers_per_group": 2},
    # two workers on node 0, two parameter-server shards on node 1
    "sync-ps": {"nworkers_per_group": 2, "nservers_per_group": 2, "server_worker_separate": True},
    "async-ps": {"nworker_groups": 2, "nservers_per_group": 2, "server_worker_separate": True},
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(tmp_path: Path, cluster: dict) -> Path:
    doc = yaml.safe_load((EXAMPLES / "mlp-allreduce.yaml").read_text())
    doc.update(train_steps=60, test_freq=0, checkpoint_freq=0, cluster={**cluster, "threads_per_worker": 1})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _servelab(*args: str) -> subprocess.Popen:
    code = "import sys; from servelab.cli import main; sys.argv[0] = 'servelab'; main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SERVELAB_HOME": os.environ.get("SERVELAB_HOME", "")}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={k: v for k, v in env.items() if v})


@pytest.mark.parametrize("framework", list(CLUSTERS))
def test_two_launcher_invocations_train_one_model(framework: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SERVELAB_HOME", str(tmp_path / "home"))
    job, port = _job(tmp_path, CLUSTERS[framework]), str(_port())
    common = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port, "--quiet"]
    export = [] if framework == "allreduce" else ["--no-export"]  # the export path is the same for all three
    nodes = [_servelab("train", str(job), "--out", str(tmp_path / f"node{r}"), "--node-rank", str(r), *common,
                       *export) for r in (1, 0)]  # node 1 first: it must wait for node 0's store
    outs = [p.communicate(timeout=180)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n----\n".join(o[-3000:] for o in outs)
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    assert (node0 / "model.pt").exists() and not (node1 / "model.pt").exists()  # one final model
    if framework == "allreduce":
        assert (node0 / "model.onnx").exists() and not (node1 / "model.onnx").exists()
    assert "trained model are on node 0" in outs[0]
    losses = [json.loads(line)["loss"] for line in (node0 / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["phase"] == "train"]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10  # loss decreases
    ranks = sorted(int(p.stem.split("-")[1]) for p in [*node0.glob("rank-*.json"), *node1.glob("rank-*.json")])
    assert ranks == [0, 1, 2, 3][: len(ranks)] and len(ranks) in (2, 4)  # every process of the world reported


def test_hogwild_across_nodes_is_refused_with_what_to_set(tmp_path: Path) -> None:
    from servelab.cli import app

    job = _job(tmp_path, {"nworker_groups": 2})
    r = CliRunner().invoke(app, ["train", str(job), "--nnodes", "2", "--node-rank", "1", "--master-port", "29999",
                                 "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code != 0
    assert "nnodes: 1" in str(r.exception) + r.output


def test_command_line_rendezvous_overrides_the_file() -> None:
    doc = yaml.safe_load((EXAMPLES / "mlp-allreduce.yaml").read_text())
    doc["cluster"]["rendezvous"] = {"master_addr": "10.0.0.1", "master_port": 29500, "nnodes": 2}
    job = with_rendezvous(parse_job(doc), node_rank=1, nnodes=None, master_addr=None, master_port=None)
    assert job.cluster["rendezvous"] == {"master_addr": "10.0.0.1", "master_port": 29500, "nnodes": 2, "node_rank": 1}
