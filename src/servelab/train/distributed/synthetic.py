"""A tiny synthetic classification task in the TrainSpec protocol, for tests, benchmarks and docs.

Points from ``classes`` Gaussian blobs in ``features`` dimensions; a one-hidden-layer MLP
(``fc1`` → ReLU → ``fc2``) learns to tell them apart. Data are generated from the seed, never
downloaded. Batches follow SINGA's ``partition_dim: 0``: at step t there is one global mini-batch
of ``batch_size`` rows, and shard s of n takes its s-th contiguous slice, so the union of the
shards is the same whatever n is (what the all-reduce parity test relies on).
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from servelab.train.distributed.spec import TrainSpec


def dataset(seed: int, n: int, features: int, classes: int, split: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled points; the blobs depend on ``seed`` only, the draw on ``split`` too (0 train, 1 held out)."""
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(10_000 + seed)) * 0.6
    g = torch.Generator().manual_seed(20_000 + 2 * seed + split)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, features, generator=g)
    return x, y


class MLP(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.fc2(torch.relu(self.fc1(batch["x"])))
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits, batch["y"])}


class CNN(nn.Module):
    """The blob points as 1 x side x side images: ``conv1`` (3x3, ``channels`` filters) -> ReLU -> ``fc``.

    For the convolution-partitioning tests: ``conv1`` split by batch (partition_dim 0, plain data
    parallelism) or by channel (partition_dim 1, its filters spread over the workers).
    """

    def __init__(self, features: int = 16, channels: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.side = int(features ** 0.5)
        if self.side * self.side != features:
            raise ValueError(f"CNN needs a square number of features, got {features}")
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.fc = nn.Linear(channels * features, classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"].view(-1, 1, self.side, self.side)
        logits = self.fc(torch.relu(self.conv1(x)).flatten(1))
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits, batch["y"])}


def make_data(shard: int, num_shards: int, *, batch_size: int, seed: int, n: int, features: int,
              classes: int, fault: tuple[str, int, int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Shard ``shard``'s batches, epoch after epoch (reshuffled each epoch, from the seed).

    ``fault`` injects a failure for tests: ("kill" or "raise", shard, k) makes that shard's
    process SIGKILL itself (or raise) when asked for its k-th batch (0-based).
    """
    if batch_size % num_shards:
        raise ValueError(f"batch_size {batch_size} is not a multiple of {num_shards} shards")
    x, y = dataset(seed, n, features, classes)
    per = batch_size // num_shards
    i = 0
    for epoch in itertools.count():
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for start in range(0, n - batch_size + 1, batch_size):
            if fault is not None and fault[1] == shard and fault[2] == i:
                if fault[0] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected fault in shard {shard} at batch {i}")
            rows = order[start + shard * per: start + (shard + 1) * per]
            yield {"x": x[rows], "y": y[rows]}
            i += 1


def sgd(params, *, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def accuracy(model: nn.Module, *, seed: int, features: int, classes: int, n: int = 512) -> float:
    x, y = dataset(seed, n, features, classes, split=1)  # held out: another draw from the same blobs
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    out = model({"x": x, "y": y})
    return float((out["logits"].argmax(1) == y).float().mean())


def spec(
    *,
    steps: int = 60,
    batch_size: int = 32,
    lr: float = 0.1,
    momentum: float = 0.0,
    seed: int = 0,
    features: int = 16,
    hidden: int = 32,
    classes: int = 4,
    n: int = 2048,
    checkpoint_freq: int = 0,
    checkpoint_path: Path | None = None,
    model_parallel: tuple[str, ...] = (),
    eval_every: int = 0,
    fault: tuple[str, int, int] | None = None,
    model: str = "mlp",
) -> TrainSpec:
    """A TrainSpec for the blob task; ``batch_size`` is one worker group's mini-batch.

    ``model``: ``mlp`` (features-hidden-classes) or ``cnn`` (:class:`CNN`, ``hidden`` filters).
    """
    make_model = functools.partial(MLP if model == "mlp" else CNN, features, hidden, classes)
    return TrainSpec(
        make_model=make_model,
        make_optimizer=functools.partial(sgd, lr=lr, momentum=momentum),
        make_data=functools.partial(make_data, batch_size=batch_size, seed=seed, n=n, features=features,
                                    classes=classes, fault=fault),
        steps=steps,
        seed=seed,
        checkpoint_freq=checkpoint_freq,
        checkpoint_path=checkpoint_path,
        model_parallel=model_parallel,
        evaluate=functools.partial(accuracy, seed=seed, features=features, classes=classes),
        eval_every=eval_every,
    )
