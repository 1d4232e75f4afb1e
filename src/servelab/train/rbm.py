"""Restricted Boltzmann machines trained by contrastive divergence (SINGA's RBMVis/RBMHid and CDWorker).

Layer types (registered on import; :mod:`servelab.train.net` imports this module):

- ``rbm``: the RBM's parameters (``hidden``: an ``nn.Linear`` from visible to hidden units, so
  ``hidden.weight`` is W and ``hidden.bias`` the hidden bias, plus ``visible_bias``); its output
  is ``p(h = 1 | v) = sigmoid(v W^T + c)``, the features a stacked net or an encoder uses. Inputs
  are flattened from axis 1 (an image of [1, 8, 8] is 64 visible units).
- ``contrastive_divergence`` (loss; ``srclayers: [visible, rbm]``): CD-k (Hinton 2002). In the
  train phase it runs k steps of block Gibbs sampling from the data (no gradient) and returns
  ``mean F(v_data) - mean F(v_k)``, F the free energy; its gradient is the CD-k estimate
  ``<v h>_model - <v h>_data`` (and the bias terms), so every updater and every distributed
  framework trains an RBM unchanged. In the test phase it returns the reconstruction error.
- ``reconstruction_error`` (metric; ``srclayers: [visible, rbm]``): mean squared difference
  between the data and its mean-field reconstruction ``p(v | p(h | v))``, what SINGA's RBM
  example logs; ``metrics.jsonl`` carries it under the layer's name.
- ``rbm_decode`` (``rbm: NAME``): ``p(v | h)`` with the named RBM's transposed weights and visible
  bias (tied): the decoder half of an auto-encoder unrolled from stacked RBMs.

A job's ``pretrain`` list (:class:`PretrainStage`) trains ``rbm`` layers greedily, bottom up, by
CD-k before the net is fine-tuned by back-propagation: Hinton and Salakhutdinov's deep
auto-encoder (Science 2006), which SINGA ships as its RBM/auto-encoder example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from servelab.errors import ConfigError
from servelab.train.layers import Layer, LayerOptions, LayerRole, register_layer

__all__ = ["RBM", "ContrastiveDivergence", "PretrainStage", "RBMDecode", "ReconstructionError", "cd_loss",
           "pretrain"]


@register_layer("rbm")
class RBM(Layer):
    """The parameters of one RBM; the output is the hidden units' probabilities given the input."""

    class Options(LayerOptions):
        num_hidden: int = Field(gt=0)
        visible: Literal["binary", "gaussian"] = Field(
            "binary", description="binary: inputs in [0, 1] read as probabilities; gaussian: unit-variance reals")
        init_std: float = Field(0.01, gt=0, description="weights drawn N(0, init_std^2), as Hinton's guide advises")

    options: Options

    def setup(self, inputs: list[torch.Tensor]) -> None:
        x = inputs[0]
        if x.dim() < 2 or not x.is_floating_point():
            raise ConfigError(f"layer {self.name!r} (rbm) needs float inputs of shape (batch, ...), got "
                              f"{tuple(x.shape)} {x.dtype}")
        visible = x[0].numel()
        self.hidden = nn.Linear(visible, self.options.num_hidden)
        with torch.no_grad():
            self.hidden.weight.normal_(0.0, self.options.init_std)
            self.hidden.bias.zero_()
        self.visible_bias = nn.Parameter(torch.zeros(visible))

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(v.flatten(1), self.hidden.weight, self.hidden.bias))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v = 1 | h)`` for binary units, ``E[v | h]`` for Gaussian ones (flat: (batch, visible))."""
        pre = F.linear(h, self.hidden.weight.t(), self.visible_bias)
        return torch.sigmoid(pre) if self.options.visible == "binary" else pre

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) per sample: ``-v.b - sum softplus(c + v W^T)`` (binary; Gaussian: ``|v - b|^2 / 2 - ...``)."""
        v = v.flatten(1)
        hidden_term = F.softplus(F.linear(v, self.hidden.weight, self.hidden.bias)).sum(1)
        if self.options.visible == "binary":
            return -(v @ self.visible_bias) - hidden_term
        return 0.5 * (v - self.visible_bias).pow(2).sum(1) - hidden_term

    def gibbs(self, v: torch.Tensor, k: int) -> torch.Tensor:
        """k steps of block Gibbs sampling from ``v``; the last visible state is the mean (less noise)."""
        with torch.no_grad():
            vk = v.flatten(1)
            for i in range(k):
                h = torch.bernoulli(self.hidden_probs(vk))
                mean = self.visible_mean(h)
                last = i == k - 1
                if last:
                    vk = mean
                elif self.options.visible == "binary":
                    vk = torch.bernoulli(mean)
                else:
                    vk = mean + torch.randn_like(mean)
        return vk

    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        flat = v.flatten(1)
        return F.mse_loss(self.visible_mean(self.hidden_probs(flat)), flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden_probs(x)


def cd_loss(rbm: RBM, v: torch.Tensor, k: int) -> torch.Tensor:
    """The CD-k surrogate: its gradient is the CD-k estimate of the negative log-likelihood's."""
    vk = rbm.gibbs(v, k)
    return rbm.free_energy(v).mean() - rbm.free_energy(vk).mean()


class _BoundToRBM(Layer):
    """A layer that reads an ``rbm`` layer's parameters (named by its second source or ``rbm:``)."""

    def _rbm_name(self) -> str:
        return self.srclayers[1].partition(":")[0]

    def bind(self, by_name: dict[str, Layer]) -> None:
        target = by_name.get(self._rbm_name())
        if not isinstance(target, RBM):
            got = "nothing" if target is None else f"a {target.type} layer"
            raise ConfigError(f"layer {self.name!r} ({self.type}) must read an rbm layer: "
                              f"{self._rbm_name()!r} is {got}")
        object.__setattr__(self, "_rbm", target)  # a reference, not a submodule: its parameters stay the RBM's

    @property
    def rbm(self) -> RBM:
        return cast(RBM, self.__dict__["_rbm"])


@register_layer("contrastive_divergence", "rbm_cd")
class ContrastiveDivergence(_BoundToRBM):
    """CD-k training loss of the RBM in ``srclayers[1]`` on the visible data in ``srclayers[0]``."""

    role: ClassVar[LayerRole] = "loss"
    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = 2

    class Options(LayerOptions):
        cd_k: int = Field(1, ge=1, description="Gibbs steps per update (CD-k)")
        loss_weight: float = 1.0

    options: Options

    def forward(self, v: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training:  # a deterministic figure for the test phase
            return self.rbm.reconstruction_error(v)
        return cd_loss(self.rbm, v, self.options.cd_k)


@register_layer("reconstruction_error")
class ReconstructionError(_BoundToRBM):
    """Mean squared error of the RBM's mean-field reconstruction of its input (a metric)."""

    role: ClassVar[LayerRole] = "metric"
    min_sources: ClassVar[int] = 2
    max_sources: ClassVar[int | None] = 2

    def forward(self, v: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.rbm.reconstruction_error(v)


@register_layer("rbm_decode")
class RBMDecode(_BoundToRBM):
    """``p(v | h)`` through the named RBM's weights, transposed, and its visible bias (tied weights)."""

    class Options(LayerOptions):
        rbm: str = Field(description="the rbm layer whose weights decode")

    options: Options

    def _rbm_name(self) -> str:
        return self.options.rbm

    def setup(self, inputs: list[torch.Tensor]) -> None:
        if not hasattr(self.rbm, "hidden"):
            raise ConfigError(f"layer {self.name!r} (rbm_decode) runs before rbm layer {self._rbm_name()!r} is built; "
                              "put the decoder after the encoder in srclayers order")
        width = inputs[0].flatten(1).shape[1]
        if width != self.rbm.options.num_hidden:
            raise ConfigError(f"layer {self.name!r} (rbm_decode) gets {width} features but rbm "
                              f"{self._rbm_name()!r} has {self.rbm.options.num_hidden} hidden units")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.rbm.visible_mean(h.flatten(1))


class PretrainStage(BaseModel):
    """One greedy stage: train ``layer`` (an ``rbm``) by CD-k on what reaches it, before fine-tuning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str
    steps: int = Field(ge=1)
    cd_k: int = Field(1, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)


def pretrain(net: Any, job: Any, *, device: torch.device, emit: Callable[[dict[str, Any]], None]) -> None:
    """Run the job's ``pretrain`` stages in order (SGD with momentum on each RBM's own parameters).

    Each stage feeds the RBM the output of the (already pretrained) layers below it, computed in
    the test phase without gradient, and logs ``{"phase": "pretrain", "layer", "step",
    "reconstruction_error"}`` every ``disp_freq`` steps and at its first and last step.
    """
    from servelab.train.data import make_data

    for stage_index, stage in enumerate(job.pretrain):
        rbm = net.layer(stage.layer)
        if not isinstance(rbm, RBM):
            raise ConfigError(f"pretrain: layer {stage.layer!r} is a {rbm.type} layer; only rbm layers are pretrained")
        below = net.inference_module(rbm.srclayers[0])
        opt = torch.optim.SGD(list(rbm.parameters()), lr=stage.learning_rate, momentum=stage.momentum)
        batches = make_data(job, "train", start_batch=stage_index * stage.steps)
        was_training = net.training
        net.eval()
        try:
            for step in range(1, stage.steps + 1):
                batch = {k: v.to(device) for k, v in next(batches).items()}
                with torch.no_grad():
                    v = below(*[batch[n] for n in below.input_names])
                opt.zero_grad(set_to_none=True)
                cd_loss(rbm, v, stage.cd_k).backward()
                opt.step()
                if step == 1 or step % job.disp_freq == 0 or step == stage.steps:
                    with torch.no_grad():
                        err = float(rbm.reconstruction_error(v))
                    emit({"phase": "pretrain", "layer": stage.layer, "step": step, "reconstruction_error": err})
        finally:
            net.train(was_training)
