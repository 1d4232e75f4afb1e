"""Mixed-precision training: a job's ``precision`` (``fp32``, ``bf16``, ``fp16``).

- ``bf16``: the forward pass (and the loss) runs under ``torch.autocast`` in bfloat16, on CPU or
  GPU; parameters, gradients and the updater stay float32. bfloat16 has float32's exponent range,
  so no loss scaling is needed.
- ``fp16``: float16 autocast with a ``GradScaler`` (the loss is scaled before backward so small
  gradients do not underflow; steps whose gradients overflowed are skipped and the scale lowered).
  GPU only: on CPU use ``bf16``.

Evaluation and the ONNX export use the float32 parameters, so what is served does not depend on
the training precision.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

from servelab.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast for the forward pass, scaled backward and step for fp16; plain float32 for fp32."""

    def __init__(self, precision: Precision, device: torch.device, optimizer: torch.optim.Optimizer) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("precision fp16 (with loss scaling) runs on device: cuda; on CPU use precision: bf16")
        self.precision = precision
        self.device_type = device.type
        self.dtype = _DTYPES.get(precision)
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self) -> None:
        """Bring the gradients back to their true size (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)

    def step(self) -> None:
        if self.scaler is None:
            self.optimizer.step()
            return
        self.scaler.step(self.optimizer)  # skipped when the gradients hold inf/nan
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
