"""Request bodies, built before the run so the issuing loop only sends bytes.

Request ``i`` gets ``payloads[i % len(payloads)]``. A model's payload is an Open Inference
Protocol request body, ``{"inputs": [tensor, ...]}`` with each tensor in the ``b64`` raw-bytes
form — exactly what the platform's built-in model handler takes as its Lambda event and what
``/v2/models/{name}/infer`` takes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servelab.errors import ConfigError
from servelab.tensors import TensorSpec, encode_tensor

Payloads = Sequence[bytes]
DEFAULT_PAYLOAD: tuple[bytes, ...] = (b"{}",)


def inference_request(specs: Sequence[TensorSpec], batch: int = 1, *,
                      rng: np.random.Generator | None = None) -> bytes:
    """One OIP request body with random tensors that fit ``specs`` (batch on the first axis)."""
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    rng = rng or np.random.default_rng(0)
    tensors = [encode_tensor(s.name, s.random(batch, rng=rng), binary=True) for s in specs]
    return json.dumps({"inputs": tensors}, separators=(",", ":")).encode()


def from_model(path: str | os.PathLike, batch: int = 1, *, count: int = 1, seed: int = 0) -> list[bytes]:
    """``count`` distinct request bodies for the ONNX model at ``path`` (seeded, reproducible)."""
    from servelab.models.onnx_info import inspect_model  # imports onnx: keep the CLI's --help fast

    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    specs = inspect_model(path).inputs
    rng = np.random.default_rng(seed)
    return [inference_request(specs, batch, rng=rng) for _ in range(count)]


def from_files(paths: Sequence[str | os.PathLike]) -> list[bytes]:
    """Raw bodies from files (a directory means every file in it, sorted by name)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"payload file {p} does not exist")
    if not files:
        raise ConfigError(f"no payload files found in {[str(p) for p in paths]}")
    return [f.read_bytes() for f in files]


def from_json(obj: Any) -> list[bytes]:
    """One fixed body: ``obj`` serialised as JSON."""
    return [json.dumps(obj, separators=(",", ":")).encode()]
