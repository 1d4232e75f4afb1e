"""The cost of servelab's layer abstraction: a ``Net`` built from YAML vs the same model in plain PyTorch.

For three models — the MLP of ``examples/train/mlp-synthetic.yaml`` (8-64-64-4, batch 64), a small
CNN on 3x16x16 images (conv-bn-relu-pool x2, dense; batch 32) and the GRU of
``examples/train/rnn-echo.yaml`` (embedding 16, GRU 64, 24 steps; batch 32) — the two versions
get identical parameters (copied from the Net; their outputs are checked to match) and the same
pre-made batches in memory, so data loading is out of the picture. Two measurements each:

- ``train``: one SGD-with-momentum step (forward, cross-entropy, backward, update), samples/s;
- ``infer b1``: a forward pass at batch 1 in eval mode, no grad (where per-layer Python cost
  weighs most), samples/s.

The two versions alternate in blocks of about ``--block-s`` seconds (the step count is calibrated
in the warm-up) for ``--repeats`` rounds, the order flipping each round, so the shared machine's
load drift hits both alike. The table gives each version's median wall-clock samples/s and the
median of the per-round overhead ``1 - servelab / plain`` (adjacent blocks paired), on wall-clock
time and on CPU time (``time.process_time``; with one intra-op thread that is the work done, which
other tenants of a shared machine disturb far less than the wall clock), with the CPU quartiles.

    .venv/bin/python benchmarks/bench_train_overhead.py              # ~1 minute
    .venv/bin/python benchmarks/bench_train_overhead.py --repeats 5 --block-s 0.05

Writes every round's figure, with the machine, to ``benchmarks/results/train-overhead-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from servelab.runtimes.bench import machine_info
from servelab.train.job import load_job
from servelab.train.net import Net, NetConfig, build_net

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT.parent / "examples" / "train"

CNN_YAML = """
layers:
  - {name: data, type: input, shape: [3, 16, 16]}
  - {name: label, type: input, shape: [], dtype: int64}
  - {name: conv1, type: convolution, srclayers: data, num_filters: 16, kernel: 3, pad: 1}
  - {name: bn1, type: batch_norm, srclayers: conv1}
  - {name: relu1, type: relu, srclayers: bn1}
  - {name: pool1, type: pooling, srclayers: relu1, kernel: 2}
  - {name: conv2, type: convolution, srclayers: pool1, num_filters: 32, kernel: 3, pad: 1}
  - {name: relu2, type: relu, srclayers: conv2}
  - {name: pool2, type: pooling, srclayers: relu2, kernel: 2}
  - {name: fc, type: inner_product, srclayers: pool2, num_output: 10}
  - {name: loss, type: softmax_loss, srclayers: [fc, label]}
"""


class PlainMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 64), nn.Linear(64, 64), nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class PlainCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.fc = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class PlainGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.gru, self.fc = nn.Embedding(8, 16), nn.GRU(16, 64, batch_first=True), nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(self.embed(x))[0])


def _strip_metrics(cfg: NetConfig) -> NetConfig:
    """Loss only: the plain models compute no accuracy either."""
    return cfg.model_copy(update={"layers": [la for la in cfg.layers if la.type != "accuracy"]})


def models() -> dict[str, dict]:
    mlp = _strip_metrics(load_job(EXAMPLES / "mlp-synthetic.yaml").neuralnet)
    rnn = _strip_metrics(load_job(EXAMPLES / "rnn-echo.yaml").neuralnet)
    g = torch.Generator().manual_seed(0)
    return {
        "mlp": {"cfg": mlp, "plain": PlainMLP, "scores": "fc3", "batch": 64,
                "x": lambda b: torch.randn(b, 8, generator=g), "y": lambda b: torch.randint(0, 4, (b,), generator=g)},
        "cnn": {"cfg": NetConfig.from_yaml(CNN_YAML), "plain": PlainCNN, "scores": "fc", "batch": 32,
                "x": lambda b: torch.randn(b, 3, 16, 16, generator=g),
                "y": lambda b: torch.randint(0, 10, (b,), generator=g)},
        "gru": {"cfg": rnn, "plain": PlainGRU, "scores": "scores", "batch": 32,
                "x": lambda b: torch.randint(0, 8, (b, 24), generator=g),
                "y": lambda b: torch.randint(0, 8, (b, 24), generator=g)},
    }


def _copy_params(net: Net, plain: nn.Module) -> None:
    ours, theirs = list(net.state_dict().values()), list(plain.state_dict().values())
    assert [t.shape for t in ours] == [t.shape for t in theirs], "the plain model must mirror the Net"
    plain.load_state_dict(dict(zip(plain.state_dict().keys(), ours, strict=True)))


def _xent(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(scores if scores.dim() == 2 else scores.movedim(-1, 1), y)


def _train_steps(step: Callable[[dict], None], batches: list[dict], n: int) -> tuple[float, float]:
    """(wall-clock samples/s, CPU-time samples/s) over ``n`` calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        step(batches[i % len(batches)])
    samples = n * batches[0]["label"].shape[0]
    return samples / (time.perf_counter() - t0), samples / max(time.process_time() - c0, 1e-9)


def bench_model(name: str, spec: dict, *, repeats: int, block_s: float) -> dict:
    torch.manual_seed(0)
    net = build_net(spec["cfg"])
    plain = spec["plain"]()
    _copy_params(net, plain)
    batches = [{"data": spec["x"](spec["batch"]), "label": spec["y"](spec["batch"])} for _ in range(8)]
    singles = [{"data": spec["x"](1)} for _ in range(8)]
    with torch.no_grad():
        net.eval(), plain.eval()
        diff = (net(batches[0])[spec["scores"]] - plain(batches[0]["data"])).abs().max().item()
    assert diff < 1e-5, f"{name}: the plain model does not compute what the Net does ({diff})"
    opt_net = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)

    def net_step(b: dict) -> None:
        opt_net.zero_grad(set_to_none=True)
        net(b)["loss"].backward()
        opt_net.step()

    def plain_step(b: dict) -> None:
        opt_plain.zero_grad(set_to_none=True)
        _xent(plain(b["data"]), b["label"]).backward()
        opt_plain.step()

    infer_net = net.inference_module(spec["scores"])

    def net_infer(b: dict) -> None:
        infer_net(b["data"])

    def plain_infer(b: dict) -> None:
        plain(b["data"])

    rounds: dict[str, dict[str, list[float]]] = {m: {"servelab": [], "plain": [], "servelab_cpu": [], "plain_cpu": []}
                                                 for m in ("train", "infer b1")}
    steps: dict[str, int] = {}
    for mode, fns, data in (("train", (net_step, plain_step), batches),
                            ("infer b1", (net_infer, plain_infer), [{**s, "label": s["data"]} for s in singles])):
        for m in (net, plain):
            m.train(mode == "train")
        ctx = torch.no_grad() if mode != "train" else torch.enable_grad()
        with ctx:
            for fn in fns:  # warm-up, and calibrate a block to about block_s seconds
                rate, _ = _train_steps(fn, data, 20)
            n = steps[mode] = max(10, int(block_s * rate / data[0]["label"].shape[0]))
            for r in range(repeats):
                order = list(zip(("servelab", "plain"), fns, strict=True))
                for who, fn in order if r % 2 == 0 else order[::-1]:
                    wall, cpu = _train_steps(fn, data, n)
                    rounds[mode][who].append(wall)
                    rounds[mode][f"{who}_cpu"].append(cpu)
    return {"model": name, "batch": spec["batch"], "max_abs_diff": diff, "steps_per_block": steps, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21, help="rounds (each times both versions once)")
    ap.add_argument("--block-s", type=float, default=0.25, help="seconds per timed block (calibrated in warm-up)")
    ap.add_argument("--models", default="mlp,cnn,gru")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console(width=150)
    machine = machine_info()
    specs = models()
    results = []
    for name in args.models.split(","):
        console.log(f"{name}: {args.repeats} rounds of ~{args.block_s} s blocks")
        results.append(bench_model(name, specs[name], repeats=args.repeats, block_s=args.block_s))
    t = Table(title="servelab layer Net vs plain PyTorch (samples/s, median of rounds; 1 thread)")
    for col in ("model", "batch", "mode", "plain", "servelab", "overhead wall", "overhead CPU", "CPU IQR"):
        t.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for r in results:
        for mode, by in r["rounds"].items():
            p, s = statistics.median(by["plain"]), statistics.median(by["servelab"])
            # Per-round overheads pair adjacent blocks, so load drift between rounds cancels; CPU time
            # (one thread) is what the other tenants of a shared machine disturb least.
            summary = {"plain": p, "servelab": s}
            for kind, (ours, theirs) in {"wall": ("servelab", "plain"), "cpu": ("servelab_cpu", "plain_cpu")}.items():
                per_round = [1 - sv / pv for sv, pv in zip(by[ours], by[theirs], strict=True)]
                q1, med, q3 = statistics.quantiles(per_round, n=4)
                summary |= {f"overhead_{kind}": med, f"overhead_{kind}_q1": q1, f"overhead_{kind}_q3": q3}
            r.setdefault("median", {})[mode] = summary
            t.add_row(r["model"], str(r["batch"] if mode == "train" else 1), mode, f"{p:,.0f}", f"{s:,.0f}",
                      f"{summary['overhead_wall'] * 100:+.1f}%", f"{summary['overhead_cpu'] * 100:+.1f}%",
                      f"{summary['overhead_cpu_q1'] * 100:+.1f}% .. {summary['overhead_cpu_q3'] * 100:+.1f}%")
    console.print(t)
    machine["load_avg_1m_end"] = machine_info()["load_avg_1m"]
    console.print(f"load average {machine['load_avg_1m']:.1f} at the start, "
                  f"{machine['load_avg_1m_end']:.1f} at the end")
    out = args.out or ROOT / "results" / f"train-overhead-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "train-overhead", "machine": machine, "threads": 1,
                               "repeats": args.repeats, "block_s": args.block_s, "results": results}, indent=1))
    console.print(f"raw results: {out}")


if __name__ == "__main__":
    main()
