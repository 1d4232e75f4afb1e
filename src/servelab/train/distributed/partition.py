"""Model parallelism for inner-product and convolution layers: SINGA's ``partition_dim: 1``.

Inside a worker group every layer is data parallel (``partition_dim: 0``: each worker takes a
slice of the mini-batch, parameters are replicated) unless it is marked ``partition_dim: 1``:
then its output features (an inner-product layer's outputs, a convolution's output channels,
i.e. its filters), and so its weight rows (filters) and bias, are split across the group's workers.
SINGA's partitioner inserted connection layers where the two meet; here they are two
differentiable collectives that :func:`apply_model_parallel` hooks onto the layer:

1. Concate over the batch (``gather(dim=0)``): every worker gets the whole mini-batch of inputs;
2. each worker computes its slice of output features for the whole mini-batch;
3. Concate over features (the last axis of an inner product, the channel axis 1 of a
   convolution), then Slice back to this worker's rows, so the next (data-parallel) layer sees
   its own rows with every feature.

Backward of a gather is the sum of every worker's gradient for this worker's chunk (an
all-reduce, then a slice: gloo has no reduce-scatter). Each worker's loss is the mean over its
rows and data-parallel gradients are averaged (DDP), so the sharded parameters' gradients are
divided by the group size to match: the result equals the unpartitioned layer trained on the
whole mini-batch (``tests/test_train_distributed_partition.py`` checks forward and backward).

Not covered: grouped convolutions and other layers at ``partition_dim: 1``, SINGA's ``location``
(whole layers placed on workers: pipeline parallelism), and skipping the round trip between two
consecutive feature-parallel layers (each layer gathers and slices on its own).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from servelab.errors import ConfigError


class _Gather(torch.autograd.Function):
    """All-gather equal chunks along ``dim``; backward: all-reduce the gradient, keep this rank's chunk."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, group: Any) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        size = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        size, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(size, dim=ctx.dim)[rank].contiguous(), None, None


def gather(x: torch.Tensor, dim: int, group: Any = None) -> torch.Tensor:
    """SINGA's Concate connection layer across the workers of ``group`` (differentiable)."""
    return _Gather.apply(x, dim, group)


class _FeatureParallel:
    """The hooks that make a layer holding a row shard of its ``nn.Linear`` compute the whole layer.

    Hooks on the layer, not a replacement module: the layer may call its ``nn.Linear`` or use its
    ``weight``/``bias`` directly (``F.linear``); either way its output holds this worker's features.
    """

    def __init__(self, group: Any, feature_dim: int) -> None:
        self.group = group
        self.feature_dim = feature_dim  # -1: inner product's features; 1: a convolution's channels
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (gather(args[0], 0, self.group), *args[1:])  # Concate (dim 0): every worker sees every row

    def after(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        rows = out.shape[0] // self.size
        all_features = gather(out, self.feature_dim, self.group)  # Concate (features)
        return all_features.narrow(0, self.rank * rows, rows)  # Slice (dim 0): back to my rows


def apply_model_parallel(model: nn.Module, names: tuple[str, ...], *, group: Any = None) -> list[str]:
    """Make each named layer feature-parallel across ``group``; returns the names of the now-sharded parameters.

    A named module must be an ``nn.Linear`` or ``nn.Conv2d``, or hold exactly one of them (an
    inner-product or convolution layer). Its weight rows (filters) and bias are cut to this
    worker's share; the layer still takes and returns this worker's rows. Every worker must call
    it on an identically initialised model (same seed).
    """
    sharded: list[str] = []
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ConfigError(f"model_parallel names {name!r}, which is not a submodule of the model")
        layer = modules[name]
        found = [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if len(found) != 1:
            raise ConfigError(
                f"{name!r} is a {type(layer).__name__} with {len(found)} nn.Linear/nn.Conv2d; only inner-product "
                "and convolution layers (exactly one of them) can be feature-parallel"
            )
        sub, linear = found[0]
        conv = isinstance(linear, nn.Conv2d)
        width_attr = "out_channels" if conv else "out_features"
        if conv and getattr(linear, "groups", 1) != 1:
            raise ConfigError(f"layer {name!r} is a grouped convolution (groups {getattr(linear, 'groups', 1)}); "
                              "only groups: 1 can be split by channel")
        hooks = _FeatureParallel(group, 1 if conv else -1)
        width = int(getattr(linear, width_attr))
        if width % hooks.size:
            raise ConfigError(
                f"layer {name!r} has {width} outputs, which cannot be split across {hooks.size} "
                "workers: make its output size a multiple of nworkers_per_group"
            )
        for attr in ("weight", "bias"):
            p = getattr(linear, attr)
            if p is None:
                continue
            shard = nn.Parameter(p.detach().chunk(hooks.size, dim=0)[hooks.rank].clone())
            # each worker's loss is a mean over its own rows: average, as DDP does for replicated params
            shard.register_hook(lambda g, n=hooks.size: g / n)
            setattr(linear, attr, shard)
            sharded.append(".".join(x for x in (name, sub, attr) if x))
        setattr(linear, width_attr, width // hooks.size)
        # what full_state_dict gathers; torch types Module.__setattr__ for tensors and modules only,
        # but a plain object is stored as an ordinary attribute
        linear.servelab_feature_parallel = hooks  # type: ignore[assignment]
        layer.register_forward_pre_hook(hooks.before)
        layer.register_forward_hook(hooks.after)
    return sharded


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with every feature-parallel layer gathered whole (collective: call on all workers)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        hooks = getattr(module, "servelab_feature_parallel", None)
        if hooks is None:
            continue
        for attr in ("weight", "bias"):
            p = getattr(module, attr)
            if p is None:
                continue
            parts = [torch.empty_like(p) for _ in range(hooks.size)]
            dist.all_gather(parts, p.detach().contiguous(), group=hooks.group)
            state[f"{name}.{attr}" if name else attr] = torch.cat(parts, dim=0).cpu()
    return state
