"""SINGA's updaters (Nesterov, AdaDelta, AdaMax, Adam) follow their published rules; LRN its formula."""

from __future__ import annotations

import math

import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.net import NetConfig, build_net
from servelab.train.updaters import UpdaterConfig, make_optimizer


def _steps(updater: dict, grads: list[float], start: float = 1.0) -> list[float]:
    """Apply ``grads`` to one scalar parameter; the values after each step."""
    p = torch.nn.Parameter(torch.tensor([start]))
    opt = make_optimizer([p], UpdaterConfig.model_validate(updater))
    seen = []
    for g in grads:
        p.grad = torch.tensor([g])
        opt.step()
        seen.append(p.item())
    return seen


def test_nesterov_takes_the_look_ahead_step() -> None:
    lr, mu, g1, g2 = 0.1, 0.9, 0.5, -0.2
    v1 = g1
    p1 = 1.0 - lr * (g1 + mu * v1)
    v2 = mu * v1 + g2
    p2 = p1 - lr * (g2 + mu * v2)
    got = _steps({"type": "nesterov", "momentum": mu, "learning_rate": {"base": lr}}, [g1, g2])
    assert got == pytest.approx([p1, p2], rel=1e-6)


def test_adadelta_follows_zeilers_rule() -> None:
    rho, eps, lr = 0.9, 1e-6, 1.0
    p, acc_g, acc_d, want = 1.0, 0.0, 0.0, []
    for g in (0.5, -0.2, 0.3):
        acc_g = rho * acc_g + (1 - rho) * g * g
        delta = math.sqrt(acc_d + eps) / math.sqrt(acc_g + eps) * g
        acc_d = rho * acc_d + (1 - rho) * delta * delta
        p -= lr * delta
        want.append(p)
    got = _steps({"type": "adadelta", "rho": rho, "eps": eps, "learning_rate": {"base": lr}}, [0.5, -0.2, 0.3])
    assert got == pytest.approx(want, rel=1e-5)


def test_adamax_divides_by_the_infinity_norm() -> None:
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, m, u, want = 1.0, 0.0, 0.0, []
    for t, g in enumerate((0.5, -2.0, 0.3), start=1):
        m = b1 * m + (1 - b1) * g
        u = max(b2 * u, abs(g) + eps)
        p -= lr / (1 - b1**t) * m / u
        want.append(p)
    got = _steps({"type": "adamax", "learning_rate": {"base": lr}}, [0.5, -2.0, 0.3])
    assert got == pytest.approx(want, rel=1e-5)


def test_adam_first_step_is_the_learning_rate_times_the_sign() -> None:
    got = _steps({"type": "adam", "learning_rate": {"base": 0.01}}, [3.0])
    assert got == pytest.approx([0.99], rel=1e-6)


def test_nesterov_without_momentum_is_refused() -> None:
    with pytest.raises(ConfigError, match="momentum > 0"):
        _steps({"type": "nesterov"}, [1.0])


def test_lrn_normalises_by_the_neighbouring_channels() -> None:
    net = build_net(NetConfig.from_yaml("""
layers:
  - {name: data, type: input, shape: [6, 2, 2]}
  - {name: norm, type: lrn, srclayers: data, local_size: 3, alpha: 0.5, beta: 0.75, knorm: 2.0}
"""))
    x = torch.randn(2, 6, 2, 2)
    out = net({"data": x})["norm"]
    sq = x.pow(2)
    want = torch.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - 1), min(6, c + 2)  # local_size 3: the channel and one on each side
        window = sq[:, lo:hi].sum(1)
        want[:, c] = x[:, c] / (2.0 + 0.5 / 3 * window) ** 0.75
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)


def test_lrn_exports_as_the_onnx_lrn_operator_with_the_same_outputs(tmp_path) -> None:
    import onnx

    from servelab.train.export import check_parity
    from servelab.train.job import parse_job

    job = parse_job({"neuralnet": {"layers": [
        {"name": "data", "type": "input", "shape": [6, 3, 3]},
        {"name": "norm", "type": "lrn", "srclayers": "data", "local_size": 5, "alpha": 0.1},
    ]}})
    from servelab.train.export import export_onnx

    net = build_net(job.neuralnet)
    ex = export_onnx(net, job, tmp_path / "lrn.onnx", "norm", check=False)
    assert [n.op_type for n in onnx.load(ex.path).graph.node] == ["LRN"]
    diff = check_parity(net.inference_module("norm"), ex.path, {"data": torch.randn(4, 6, 3, 3)}, "norm")
    assert diff < 1e-5


def test_an_even_lrn_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="local_size must be odd"):
        build_net(NetConfig.from_yaml("""
layers:
  - {name: data, type: input, shape: [6, 2, 2]}
  - {name: norm, type: lrn, srclayers: data, local_size: 4}
"""))
