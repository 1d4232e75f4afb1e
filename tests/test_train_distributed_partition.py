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
    with pytest.raises(ConfigError, match="only inner-product"):  # a ReLU holds no nn.Linear or nn.Conv2d
        apply_model_parallel(net, ("1",))
    with pytest.raises(ConfigError, match="not a submodule"):
        apply_model_parallel(net, ("fc9",))


@pytest.mark.parametrize("partition_dim", [0, 1])
def test_convolution_partitioned_on_batch_or_channel_equals_the_unpartitioned_layer(
    partition_dim: int, tmp_path: Path
) -> None:
    # partition_dim 0: each worker convolves its half of the batch (replicated filters, averaged
    # gradients); partition_dim 1: each worker holds 4 of the 8 filters and convolves the whole batch
    split = ("conv1",) if partition_dim == 1 else ()
    one_step = blob_spec(steps=1, lr=1.0, hidden=8, model="cnn", model_parallel=split)
    result = launch_spec(one_step, TWO, out_dir=tmp_path / "one", timeout_s=60)
    torch.manual_seed(one_step.seed)
    full = one_step.make_model()
    rows_of_worker0 = next(iter(one_step.make_data(0, 2)))
    # output: worker 0's loss is the unpartitioned net's on its rows
    torch.testing.assert_close(result.losses[0], full(rows_of_worker0)["loss"].item(), atol=1e-5, rtol=1e-5)
    # gradient: with lr 1 one SGD step moves each parameter by exactly its gradient
    reference = train_in_process(one_step)
    assert result.final_state["conv1.weight"].shape == (8, 1, 3, 3)  # gathered whole again
    assert_same_params(result.final_state, reference, atol=1e-5)
    grads = {k: full.state_dict()[k] - reference[k] for k in reference}
    assert all(g.abs().max() > 0 for g in grads.values())  # every parameter had a gradient to match
    # and over many steps, with momentum
    many = blob_spec(steps=10, lr=0.3, momentum=0.9, hidden=8, model="cnn", model_parallel=split)
    trained = launch_spec(many, TWO, out_dir=tmp_path / "many", timeout_s=60)
    assert_same_params(trained.final_state, train_in_process(many), atol=1e-5)


def test_a_grouped_convolution_cannot_be_split_by_channel() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ConfigError, match="grouped convolution"):
        apply_model_parallel(net, ("0",))


def test_a_yaml_convolution_with_partition_dim_1_is_split_by_channel() -> None:
    from servelab.train.distributed.spec import model_parallel_layers
    from servelab.train.net import NetConfig, build_net

    net = build_net(NetConfig.from_yaml("""
layers:
  - {name: data, type: input, shape: [1, 8, 8]}
  - {name: conv1, type: convolution, srclayers: data, num_filters: 8, kernel: 3, pad: 1, partition_dim: 1}
  - {name: pool1, type: pooling, srclayers: conv1, kernel: 2, partition_dim: 1}
"""))
    with pytest.raises(ConfigError, match="only inner-product and convolution"):
        model_parallel_layers(net)  # a pooling layer holds no filters to split
    net = build_net(NetConfig.from_yaml("""
layers:
  - {name: data, type: input, shape: [1, 8, 8]}
  - {name: conv1, type: convolution, srclayers: data, num_filters: 8, kernel: 3, pad: 1, partition_dim: 1}
"""))
    assert model_parallel_layers(net) == ("conv1",)
