"""The cluster section: SINGA's topology decides the framework (pure functions, no processes)."""

from __future__ import annotations

import pytest

from servelab.errors import ConfigError
from servelab.train.cluster import FRAMEWORKS, TOPOLOGY_TABLE, ClusterConfig, cluster_from, framework_for


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "local"),
        # SINGA's frameworks.md table, row by row
        ({"nworker_groups": 1, "nserver_groups": 1, "nworkers_per_group": 3, "nservers_per_group": 2,
          "server_worker_separate": True}, "sync-ps"),  # Sandblaster
        ({"nworker_groups": 1, "nserver_groups": 1, "nworkers_per_group": 3, "nservers_per_group": 3,
          "server_worker_separate": False}, "allreduce"),  # AllReduce
        ({"nworker_groups": 2, "nserver_groups": 1, "nworkers_per_group": 2, "nservers_per_group": 2,
          "server_worker_separate": True}, "async-ps"),  # Downpour
        ({"nworker_groups": 3, "nworkers_per_group": 1}, "hogwild"),  # single-node Hogwild
        ({"nworkers_per_group": 1, "server_worker_separate": True}, "sync-ps"),  # one worker, one server
        ({"nworker_groups": 2, "server_worker_separate": True}, "async-ps"),
    ],
)
def test_topology_gives_the_framework_singa_named(settings: dict, expected: str) -> None:
    assert framework_for(cluster_from(settings)) == expected


def test_every_framework_is_reachable_from_some_topology() -> None:
    assert set(TOPOLOGY_TABLE.values()) == set(FRAMEWORKS)


def test_several_server_groups_are_refused_with_what_to_set() -> None:
    with pytest.raises(ConfigError, match="nserver_groups: 1"):
        cluster_from({"nworker_groups": 3, "nserver_groups": 3})


def test_multi_worker_groups_sharing_memory_are_refused() -> None:
    with pytest.raises(ConfigError, match="server_worker_separate: true"):
        cluster_from({"nworker_groups": 2, "nworkers_per_group": 2})


def test_hogwild_on_gpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="device: cpu"):
        cluster_from({"nworker_groups": 2, "device": "cuda"})


def test_unknown_key_and_bad_backend_are_named() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.nworkers"):
        cluster_from({"nworkers": 2})
    with pytest.raises(ConfigError, match="nccl"):
        cluster_from({"backend": "nccl", "device": "cpu"})


def test_auto_backend_follows_the_device() -> None:
    assert ClusterConfig().resolved_backend == "shm"  # one CPU machine: shared memory beats loopback TCP
    two_nodes = {"nnodes": 2, "master_port": 29500}
    assert ClusterConfig(rendezvous=two_nodes).resolved_backend == "gloo"
    assert ClusterConfig(device="cuda").resolved_backend == "nccl"
    assert ClusterConfig(device="cuda", backend="gloo").resolved_backend == "gloo"


def test_world_size_counts_separate_servers_only() -> None:
    assert ClusterConfig(nworkers_per_group=3, nservers_per_group=3).world_size == 3
    downpour = ClusterConfig(nworker_groups=2, nworkers_per_group=2, nservers_per_group=2, server_worker_separate=True)
    assert (downpour.nworkers, downpour.nservers, downpour.world_size) == (4, 2, 6)


def test_several_nodes_need_a_fixed_port() -> None:
    with pytest.raises(ConfigError, match="master_port"):
        cluster_from({"nworkers_per_group": 2, "rendezvous": {"nnodes": 2, "node_rank": 1}})
    ok = cluster_from({"nworkers_per_group": 2, "rendezvous": {"nnodes": 2, "node_rank": 1, "master_port": 29500}})
    assert ok.rendezvous.node_rank == 1


def test_server_groups_need_separate_servers_and_enough_worker_groups() -> None:
    ok = cluster_from({"nworker_groups": 4, "nserver_groups": 2, "server_worker_separate": True})
    assert framework_for(ok) == "async-ps" and ok.nservers == 2 and ok.world_size == 6
    with pytest.raises(ConfigError, match="at least as many worker groups"):
        cluster_from({"nworker_groups": 1, "nserver_groups": 2, "server_worker_separate": True})
