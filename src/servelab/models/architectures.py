"""The study's models as plain torch modules, written out by hand.

Why by hand: torchvision has no build for this machine's CPU-only torch, and the zoo must build
every model from code without downloading anything. The definitions follow torchvision's
``mobilenet_v2`` and ``vgg16`` (layer order, channel rounding, initialisation) so parameter
counts match the reference: MobileNetV2 3,504,872 and VGG16 138,357,544 at full size. ALBERT is
``transformers.AlbertForSequenceClassification`` wrapped to return only its logits.

This module imports torch at import time; import it only inside functions (see ``zoo``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------------------- MobileNetV2

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper, table 2.
MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never dropping more than 10%.

    The same rule as the reference implementation; it decides the width-multiplied channel counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with a skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_ch * expand_ratio)
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier; ``MobileNetV2()`` is the 1000-class ImageNet model."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in MOBILENETV2_SETTINGS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(ConvBNReLU6(in_ch, last_ch, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------- VGG

# VGG configuration "D" (16 weight layers): numbers are 3x3 conv widths, "M" is a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """VGG without batch norm. ``VGG()`` is VGG16: 13 convs, then 25088-4096-4096-1000.

    ``width_div`` divides every conv width and ``hidden`` sets the classifier width, so the tiny
    variant runs the same layers (and exports to the same ONNX operators) at a fraction of the cost.
    """

    def __init__(
        self,
        config: Sequence[int | str] = VGG16_CONFIG,
        num_classes: int = 1000,
        width_div: int = 1,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_ch = int(v) // width_div
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------- ALBERT


class AlbertClassifier(nn.Module):
    """``AlbertForSequenceClassification`` that takes (input_ids, attention_mask) and returns logits.

    The wrapper exists so the exported graph has exactly two inputs and one output named
    ``logits``; token_type_ids are left out (single-sequence classification: all zeros, folded
    into the graph). User weights load into ``hf_model``, so their keys are the Hugging Face ones
    (``albert.embeddings.word_embeddings.weight``, ``classifier.weight``, ...).
    """

    def __init__(self, **config: int | float | str) -> None:
        super().__init__()
        from transformers import AlbertConfig, AlbertForSequenceClassification

        # "eager" attention: a plain MatMul/Softmax graph that does not depend on which attention
        # kernel this transformers version picks by default.
        settings: dict[str, Any] = {**config, "attn_implementation": "eager"}
        cfg = AlbertConfig(**settings)
        self.hf_model = AlbertForSequenceClassification(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hf_model(input_ids=input_ids, attention_mask=attention_mask).logits


def calibrate_batchnorm(module: nn.Module, *inputs: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of one forward pass over ``inputs``.

    Why: with freshly initialised statistics (mean 0, variance 1) BatchNorm is the identity in
    eval mode, and MobileNetV2's fan-out initialisation then shrinks activations ~1e9-fold by the
    logits. A trained network's statistics normalise each layer; calibrating on one seeded batch
    does the same, so the seeded model computes on realistic magnitudes (and a test comparing two
    runtimes' outputs compares numbers that are not all ~0). Parameters are left untouched.
    One thread makes the reductions, and so the file's bytes, the same on every machine.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    threads = torch.get_num_threads()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
        torch.set_num_threads(1)
        module.train()
        with torch.no_grad():
            module(*inputs)
    finally:
        torch.set_num_threads(threads)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        module.eval()


def state_dict_owner(module: nn.Module) -> nn.Module:
    """The module whose ``state_dict`` a user's weights file must match."""
    return module.hf_model if isinstance(module, AlbertClassifier) else module


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mobilenetv2": MobileNetV2,
    "vgg": VGG,
    "albert": AlbertClassifier,
}
