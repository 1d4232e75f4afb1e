"""partition_dim 1: inner-product layers split by output feature across the workers of a group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from servelab.errors import ConfigError
from servelab.train.cluster import ClusterConfig
from servelab.train.distributed import WorkerFailedError, launch_spec
from servelab.train.distributed.partition import apply_model_parallel
from servelab.train.distributed.synthetic import spec as blob_spec
from test_train_distributed import assert_same_params, train_in_process

TWO = ClusterConfig(nworkers_per_group=2)


def test_feature_parallel_layer_computes_the_unpartitioned_forward_and_backward(tmp_path: Path) -> None:
    # one SGD step: worker 0's loss is the forward, the new parameters are (old - lr * gradient)
    spec = blob_spec(steps=1, lr=1.0, model_parallel=("fc1",))
    result = launch_spec(spec, TWO, out_dir=tmp_path, timeout_s=60)

    torch.manual_seed(spec.seed)
    full = spec.make_model()
    rows_of_worker0 = next(iter(spec.make_data(0, 2)))
    torch.testing.assert_close(result.losses[0], full(rows_of_worker0)["loss"].item(), atol=1e-6, rtol=1e-6)
    # the gathered fc1 is whole again (32 x 16), and every parameter moved by the full-batch gradient
    assert result.final_state["fc1.weight"].shape == (32, 16)
    assert_same_params(result.final_state, train_in_process(spec))


@pytest.mark.parametrize("split", [("fc1",), ("fc2",), ("fc1", "fc2")])
def test_hybrid_net_trains_exactly_like_the_unpartitioned_net(split: tuple[str, ...], tmp_path: Path) -> None:
    # data parallel (batch split) for the layers not named, feature parallel for the named ones
    spec = blob_spec(steps=10, lr=0.3, momentum=0.9, model_parallel=split)
    result = launch_spec(spec, TWO, out_dir=tmp_path, timeout_s=60)
    assert_same_params(result.final_state, train_in_process(spec))


def test_a_layer_whose_width_does_not_split_evenly_is_named(tmp_path: Path) -> None:
    spec = blob_spec(steps=1, hidden=33, model_parallel=("fc1",))
    with pytest.raises(WorkerFailedError, match="33 outputs, which cannot be split across 2 workers"):
        launch_spec(spec, TWO, out_dir=tmp_path, timeout_s=60)


def test_only_inner_product_layers_can_be_feature_parallel() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ConfigError, match="only inner-product"):  # a ReLU holds no nn.Linear
        apply_model_parallel(net, ("1",))
    with pytest.raises(ConfigError, match="not a submodule"):
        apply_model_parallel(net, ("fc9",))
