"""Checkpoints a restarted job resumes from: tensors and plain containers only, never pickled objects.

A checkpoint is one ``torch.save`` of a dict: ``format``, ``step``, ``job_name``, ``model``
(state_dict), ``optimizer`` and ``scheduler`` (their state_dicts: numbers, lists and tensors),
``rng`` (torch's CPU and CUDA generator states) and ``extra`` (JSON-like). It is loaded with
``torch.load(weights_only=True)``, which refuses anything but tensors and primitive containers,
so a checkpoint file cannot run code. Files are written to a temporary name and renamed, so a
crash mid-save leaves the previous checkpoint intact; the newest ``keep`` are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from servelab.errors import ConfigError

__all__ = ["CHECKPOINT_FORMAT", "latest_checkpoint", "load_checkpoint", "restore_rng", "rng_state",
           "save_checkpoint"]

CHECKPOINT_FORMAT = 1
_NAME_RE = re.compile(r"^step-(\d{8,})\.pt$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, *, step: int, job_name: str, model: dict[str, Any],
                    optimizer: dict[str, Any], scheduler: dict[str, Any], extra: dict[str, Any] | None = None,
                    keep: int = 2) -> Path:
    """Write ``directory/step-NNNNNNNN.pt`` atomically and prune all but the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "step": step, "job_name": job_name, "model": model,
                "optimizer": optimizer, "scheduler": scheduler, "rng": rng_state(), "extra": extra or {}}, tmp)
    os.replace(tmp, path)
    for old in _checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = _checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a file that needs more is refused, with why."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed globals, RuntimeError for corrupt files
        raise ConfigError(f"checkpoint {path} cannot be loaded safely (weights_only=True): {e}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint {path} is not a servelab checkpoint (format {CHECKPOINT_FORMAT})")
    return state
