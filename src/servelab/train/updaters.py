"""SINGA's Updater and learning-rate generators, as torch optimizers and a LambdaLR schedule.

The updater is the rule that turns a gradient into a parameter change; in SINGA it ran on the
servers, per parameter slice. Here :func:`make_optimizer` builds the torch optimizer for it
(whoever holds the parameters — a single process, a parameter server, every all-reduce worker —
calls it), honouring each layer's ``lr_scale``/``wd_scale`` through parameter groups, and
:func:`make_scheduler` builds the learning-rate schedule, stepped once per training step.

Learning-rate types (``updater.learning_rate.type``), for step ``t`` and base rate ``base``:

- ``fixed``: ``base``;
- ``step``: ``base * gamma ** (t // step_size)``;
- ``exponential``: ``base * gamma ** t`` (``gamma`` per step, e.g. 0.999);
- ``linear``: from ``base`` to ``final`` over ``total_steps`` (then ``final``);
- ``cosine``: half a cosine from ``base`` to ``final`` over ``total_steps``;

each multiplied by ``min(1, (t + 1) / warmup_steps)`` when ``warmup_steps`` > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from servelab.errors import ConfigError

__all__ = ["UPDATERS", "LearningRateConfig", "UpdaterConfig", "lr_factor", "make_optimizer",
           "make_scheduler"]

UpdaterType = Literal["sgd", "nesterov", "adam", "adamax", "adadelta", "adagrad", "rmsprop"]
LRType = Literal["fixed", "step", "exponential", "linear", "cosine"]


class LearningRateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: LRType = "fixed"
    base: float = Field(0.01, gt=0)
    gamma: float = Field(0.1, gt=0, description="step: factor per step_size; exponential: factor per step")
    step_size: int = Field(1000, gt=0)
    final: float = Field(0.0, ge=0, description="linear/cosine: the rate reached at total_steps")
    total_steps: int | None = Field(None, gt=0, description="linear/cosine; the job fills in train_steps")
    warmup_steps: int = Field(0, ge=0)


class UpdaterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: UpdaterType = "sgd"
    momentum: float = Field(0.0, ge=0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    rho: float = Field(0.9, gt=0, lt=1, description="adadelta: decay of the running averages")
    learning_rate: LearningRateConfig = LearningRateConfig()


def _sgd(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    if cfg.nesterov and cfg.momentum <= 0:
        raise ConfigError("updater: nesterov needs momentum > 0")
    return torch.optim.SGD(groups, lr=cfg.learning_rate.base, momentum=cfg.momentum, nesterov=cfg.nesterov)


def _nesterov(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    """SINGA's NesterovUpdater: momentum SGD with the look-ahead gradient."""
    if cfg.momentum <= 0:
        raise ConfigError("updater: type nesterov needs momentum > 0 (e.g. momentum: 0.9)")
    return torch.optim.SGD(groups, lr=cfg.learning_rate.base, momentum=cfg.momentum, nesterov=True)


def _adamax(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    return torch.optim.Adamax(groups, lr=cfg.learning_rate.base, betas=cfg.betas, eps=cfg.eps)


def _adadelta(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    """AdaDelta (Zeiler 2012); ``learning_rate.base`` scales its step (1.0 is the paper's rule)."""
    return torch.optim.Adadelta(groups, lr=cfg.learning_rate.base, rho=cfg.rho, eps=cfg.eps)


def _adam(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.learning_rate.base, betas=cfg.betas, eps=cfg.eps)


def _adagrad(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(groups, lr=cfg.learning_rate.base, eps=cfg.eps)


def _rmsprop(groups: list[dict[str, Any]], cfg: UpdaterConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(groups, lr=cfg.learning_rate.base, momentum=cfg.momentum, eps=cfg.eps)


UPDATERS: dict[UpdaterType, Callable[[list[dict[str, Any]], UpdaterConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd, "nesterov": _nesterov, "adam": _adam, "adamax": _adamax, "adadelta": _adadelta,
    "adagrad": _adagrad, "rmsprop": _rmsprop,
}


def make_optimizer(params: Iterable[Any], updater_cfg: UpdaterConfig) -> torch.optim.Optimizer:
    """A torch optimizer for ``params``: parameters, or groups from :meth:`Net.param_groups`
    (dicts with ``params``, ``lr_scale``, ``wd_scale``), whose rates are scaled per group."""
    items = list(params)
    if not items:
        raise ConfigError("updater: the net has no trainable parameters")
    raw: list[dict[str, Any]] = items if isinstance(items[0], dict) else [{"params": items}]
    base, wd = updater_cfg.learning_rate.base, updater_cfg.weight_decay
    groups = []
    for g in raw:
        rest = {k: v for k, v in g.items() if k not in ("lr_scale", "wd_scale")}
        groups.append({**rest, "lr": base * g.get("lr_scale", 1.0), "weight_decay": wd * g.get("wd_scale", 1.0)})
    return UPDATERS[updater_cfg.type](groups, updater_cfg)


def lr_factor(cfg: LearningRateConfig, step: int) -> float:
    """The multiplier of ``base`` at ``step`` (0-based), as the module docstring defines it."""
    if cfg.type == "fixed":
        f = 1.0
    elif cfg.type == "step":
        f = cfg.gamma ** (step // cfg.step_size)
    elif cfg.type == "exponential":
        f = cfg.gamma ** step
    else:
        if cfg.total_steps is None:
            raise ConfigError(f"updater.learning_rate: type {cfg.type} needs total_steps")
        frac = min(step, cfg.total_steps) / cfg.total_steps
        floor = cfg.final / cfg.base
        f = 1.0 - (1.0 - floor) * frac if cfg.type == "linear" else floor + (1.0 - floor) * 0.5 * (
            1.0 + math.cos(math.pi * frac))
    if cfg.warmup_steps:
        f *= min(1.0, (step + 1) / cfg.warmup_steps)
    return f


def make_scheduler(optimizer: torch.optim.Optimizer,
                   lr_cfg: LearningRateConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """A LambdaLR stepping the schedule once per training step; its state_dict holds only numbers
    (the factor is a plain function), so checkpoints load with ``weights_only=True``."""
    if lr_cfg.type in ("linear", "cosine") and lr_cfg.total_steps is None:
        raise ConfigError(f"updater.learning_rate: type {lr_cfg.type} needs total_steps")

    def factor(step: int) -> float:
        return lr_factor(lr_cfg, step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
