"""The layer abstraction: built-in types, user types, the DAG net, phases, sharing, partition_dim."""

from __future__ import annotations

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.layers import LAYERS, Layer, LayerOptions, make_layer, register_layer
from servelab.train.net import Net, NetConfig, build_net
from servelab.train.updaters import make_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(yaml_layers: str, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return build_net(NetConfig.from_yaml("layers:\n" + yaml_layers))


IMG = "  - {name: data, type: input, shape: [3, 8, 8]}\n"
VEC = "  - {name: data, type: input, shape: [6]}\n"
SEQ = "  - {name: data, type: input, shape: [5, 4]}\n"
TOK = "  - {name: data, type: input, shape: [5], dtype: int64}\n"

# (inputs, layer under test, its expected per-sample output shapes)
SHAPE_CASES = {
    "convolution": (IMG, "{name: x, type: convolution, srclayers: data, num_filters: 4, kernel: 3, pad: 1}",
                    [(4, 8, 8)]),
    "conv-stride": (IMG, "{name: x, type: conv, srclayers: data, num_filters: 2, kernel: 3, stride: 2}", [(2, 3, 3)]),
    "pooling-max": (IMG, "{name: x, type: pooling, srclayers: data, method: max, kernel: 2}", [(3, 4, 4)]),
    "pooling-avg": (IMG, "{name: x, type: pooling, srclayers: data, method: avg, kernel: 3, stride: 2}", [(3, 3, 3)]),
    "pooling-global": (IMG, "{name: x, type: pooling, srclayers: data, global_pool: true}", [(3, 1, 1)]),
    "inner_product-flattens": (IMG, "{name: x, type: inner_product, srclayers: data, num_output: 7}", [(7,)]),
    "inner_product-axis2": (SEQ, "{name: x, type: dense, srclayers: data, num_output: 3, axis: 2}", [(5, 3)]),
    "activation": (VEC, "{name: x, type: activation, srclayers: data, mode: tanh}", [(6,)]),
    "relu": (VEC, "{name: x, type: relu, srclayers: data}", [(6,)]),
    "sigmoid": (VEC, "{name: x, type: sigmoid, srclayers: data}", [(6,)]),
    "dropout": (VEC, "{name: x, type: dropout, srclayers: data, ratio: 0.3}", [(6,)]),
    "batch_norm-2d": (IMG, "{name: x, type: batch_norm, srclayers: data}", [(3, 8, 8)]),
    "batch_norm-1d": (VEC, "{name: x, type: batch_norm, srclayers: data}", [(6,)]),
    "split": (VEC, "{name: x, type: split, srclayers: data, num_splits: 3}", [(6,), (6,), (6,)]),
    "slice-points": (VEC, "{name: x, type: slice, srclayers: data, slice_points: [1, 4]}", [(1,), (3,), (2,)]),
    "slice-equal": (IMG, "{name: x, type: slice, srclayers: data, axis: 2, num_slices: 2}", [(3, 4, 8), (3, 4, 8)]),
    "embedding": (TOK, "{name: x, type: embedding, srclayers: data, vocab_size: 10, dim: 4}", [(5, 4)]),
    "rnn-sequence": (SEQ, "{name: x, type: rnn, srclayers: data, cell: lstm, hidden_size: 3}", [(5, 3)]),
    "rnn-last": (SEQ, "{name: x, type: rnn, srclayers: data, cell: rnn, hidden_size: 3, output: last}", [(3,)]),
    "gru-bidirectional": (SEQ, "{name: x, type: rnn, srclayers: data, hidden_size: 3, bidirectional: true}",
                          [(5, 6)]),
    "flatten": (IMG, "{name: x, type: flatten, srclayers: data}", [(192,)]),
    "reshape": (IMG, "{name: x, type: reshape, srclayers: data, shape: [3, 64]}", [(3, 64)]),
    "softmax": (VEC, "{name: x, type: softmax, srclayers: data}", [(6,)]),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_built_in_layer_types_infer_their_output_shapes(case: str) -> None:
    inputs, layer, shapes = SHAPE_CASES[case]
    net = _net(inputs + f"  - {layer}\n")
    x = net.layer("x")
    assert x.out_shapes == shapes
    batch = {"data": torch.randint(0, 10, (3, 5))} if "int64" in inputs else {"data": torch.randn(3, *net.layer(
        "data").options.shape)}
    out = net(batch)
    for name, shape in zip(x.output_names(), shapes, strict=True):
        assert tuple(out[name].shape) == (3, *shape)


def test_concat_of_slices_restores_the_input_and_split_fans_out() -> None:
    net = _net(VEC + "  - {name: sl, type: slice, srclayers: data, slice_points: [2]}\n"
                     "  - {name: cat, type: concat, srclayers: ['sl:0', 'sl:1']}\n"
                     "  - {name: sp, type: split, srclayers: cat}\n"
                     "  - {name: sum, type: add, srclayers: ['sp:0', 'sp:1']}\n")
    x = torch.randn(4, 6)
    out = net({"data": x})
    assert torch.equal(out["cat"], x)
    assert torch.equal(out["sum"], 2 * x)


def test_softmax_loss_and_accuracy_give_the_net_loss_and_accuracy_keys() -> None:
    net = _net(VEC + "  - {name: label, type: input, shape: [], dtype: int64}\n"
                     "  - {name: fc, type: inner_product, srclayers: data, num_output: 3}\n"
                     "  - {name: xent, type: softmax_loss, srclayers: [fc, label]}\n"
                     "  - {name: acc, type: accuracy, srclayers: [fc, label]}\n")
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    out = net({"data": x, "label": y})
    expected = torch.nn.functional.cross_entropy(out["fc"], y)
    assert torch.allclose(out["loss"], expected)
    assert out["accuracy"].item() == pytest.approx((out["fc"].argmax(1) == y).float().mean().item())


def test_accuracy_ignores_padding_labels() -> None:
    net = _net("  - {name: s, type: input, shape: [3]}\n  - {name: y, type: input, shape: [], dtype: int64}\n"
               "  - {name: accuracy, type: accuracy, srclayers: [s, y]}\n")
    scores = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out = net({"s": scores, "y": torch.tensor([0, 2, -100])})
    assert out["accuracy"].item() == pytest.approx(0.5)  # one right, one wrong, one ignored


def test_a_registered_user_layer_type_works_from_yaml() -> None:
    @register_layer("test_scale")
    class Scale(Layer):
        class Options(LayerOptions):
            factor: float = 2.0

        def setup(self, inputs: list[torch.Tensor]) -> None:
            self.bias = torch.nn.Parameter(torch.zeros(inputs[0].shape[1:]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.options.factor + self.bias

    try:
        net = _net(VEC + "  - {name: s, type: test_scale, srclayers: data, factor: 3}\n")
        x = torch.randn(2, 6)
        assert torch.allclose(net({"data": x})["s"], 3 * x)
        assert net.layer("s").type == "test_scale"
        assert [n for n, _ in net.named_parameters()] == ["s.bias"]
    finally:
        LAYERS.pop("test_scale")


def test_a_net_built_in_python_equals_the_yaml_one() -> None:
    yaml_net = _net(VEC + "  - {name: fc1, type: inner_product, srclayers: data, num_output: 4}\n"
                          "  - {name: act, type: tanh, srclayers: fc1}\n")
    torch.manual_seed(0)
    py_net = Net([make_layer("input", "data", shape=[6]),
                  make_layer("inner_product", "fc1", ["data"], num_output=4),
                  make_layer("tanh", "act", "fc1")])
    x = torch.randn(5, 6)
    assert torch.equal(yaml_net({"data": x})["act"], py_net({"data": x})["act"])


def test_share_from_ties_parameters_between_layers() -> None:
    net = _net(VEC + "  - {name: fc1, type: inner_product, srclayers: data, num_output: 6}\n"
                     "  - {name: fc2, type: inner_product, srclayers: fc1, num_output: 6, share_from: fc1}\n")
    assert net.layer("fc1").linear.weight is net.layer("fc2").linear.weight
    assert sum(p.numel() for p in net.parameters()) == 6 * 6 + 6  # counted once
    with pytest.raises(ConfigError, match="cannot share"):
        _net(VEC + "  - {name: fc1, type: inner_product, srclayers: data, num_output: 6}\n"
                   "  - {name: fc2, type: inner_product, srclayers: fc1, num_output: 3, share_from: fc1}\n")


def test_include_limits_a_layer_to_a_phase() -> None:
    net = _net(VEC + "  - {name: label, type: input, shape: [], dtype: int64}\n"
                     "  - {name: fc, type: inner_product, srclayers: data, num_output: 3}\n"
                     "  - {name: loss, type: softmax_loss, srclayers: [fc, label]}\n"
                     "  - {name: acc, type: accuracy, srclayers: [fc, label], include: [test]}\n")
    batch = {"data": torch.randn(4, 6), "label": torch.zeros(4, dtype=torch.int64)}
    assert "acc" not in net.train()(batch) and "accuracy" not in net(batch)
    assert "accuracy" in net.eval()(batch)


def test_dropout_is_active_only_in_training() -> None:
    net = _net(VEC + "  - {name: d, type: dropout, srclayers: data, ratio: 0.5}\n")
    x = torch.ones(64, 6)
    assert (net.train()({"data": x})["d"] == 0).any()
    assert torch.equal(net.eval()({"data": x})["d"], x)


def test_partition_dim_defaults_to_the_net_and_an_explicit_minus_one_overrides() -> None:
    torch.manual_seed(0)
    net = build_net(NetConfig.from_yaml(
        "partition_dim: 0\nlayers:\n" + VEC
        + "  - {name: fc1, type: inner_product, srclayers: data, num_output: 4, partition_dim: 1}\n"
          "  - {name: fc2, type: inner_product, srclayers: fc1, num_output: 4}\n"
          "  - {name: fc3, type: inner_product, srclayers: fc2, num_output: 4, partition_dim: -1}\n"))
    assert [la.partition_dim for la in net.layers] == [0, 1, 0, None]


def test_lr_scale_zero_freezes_a_layer() -> None:
    from servelab.train.updaters import UpdaterConfig

    net = _net(VEC + "  - {name: fc1, type: inner_product, srclayers: data, num_output: 4, lr_scale: 0}\n"
                     "  - {name: fc2, type: inner_product, srclayers: fc1, num_output: 2}\n")
    opt = make_optimizer(net.param_groups(), UpdaterConfig(type="sgd"))
    w1, w2 = net.layer("fc1").linear.weight.clone(), net.layer("fc2").linear.weight.clone()
    net({"data": torch.randn(4, 6)})["fc2"].sum().backward()
    opt.step()
    assert torch.equal(net.layer("fc1").linear.weight, w1)
    assert not torch.equal(net.layer("fc2").linear.weight, w2)


def test_layers_are_in_topological_order_and_named_parameters_follow_layer_names() -> None:
    net = _net("  - {name: fc2, type: inner_product, srclayers: fc1, num_output: 2}\n"
               "  - {name: fc1, type: inner_product, srclayers: data, num_output: 4}\n" + VEC)
    assert [la.name for la in net.layers] == ["data", "fc1", "fc2"]
    assert net.input_names == ["data"]
    assert [n for n, _ in net.named_parameters()] == ["fc1.linear.weight", "fc1.linear.bias",
                                                      "fc2.linear.weight", "fc2.linear.bias"]


def test_forward_hooks_on_layers_still_fire() -> None:
    net = _net(VEC + "  - {name: fc, type: inner_product, srclayers: data, num_output: 2}\n")
    seen: list[tuple[int, ...]] = []
    handle = net.layer("fc").register_forward_hook(lambda mod, args, out: seen.append(tuple(out.shape)))
    net({"data": torch.randn(3, 6)})
    net.inference_module("fc")(torch.randn(4, 6))
    handle.remove()
    net({"data": torch.randn(5, 6)})  # without hooks the net takes its direct path: no call recorded
    assert seen == [(3, 2), (4, 2)]


def test_a_net_pickles_for_worker_processes() -> None:
    import pickle

    net = _net(IMG + "  - {name: c, type: conv, srclayers: data, num_filters: 2}\n"
                     "  - {name: r, type: relu, srclayers: c}\n"
                     "  - {name: s, type: slice, srclayers: r, num_slices: 2}\n"
                     "  - {name: t, type: tanh, srclayers: 's:0'}\n  - {name: g, type: sigmoid, srclayers: 's:1'}\n")
    copy = pickle.loads(pickle.dumps(net))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(copy({"data": x})["t"], net({"data": x})["t"])


def test_inference_module_takes_only_the_inputs_its_output_needs() -> None:
    net = _net(VEC + "  - {name: label, type: input, shape: [], dtype: int64}\n"
                     "  - {name: fc, type: inner_product, srclayers: data, num_output: 3}\n"
                     "  - {name: loss, type: softmax_loss, srclayers: [fc, label]}\n")
    m = net.inference_module("fc")
    assert m.input_names == ["data"]
    x = torch.randn(2, 6)
    net.eval()
    assert torch.equal(m(x), net({"data": x, "label": torch.zeros(2, dtype=torch.int64)})["fc"])
