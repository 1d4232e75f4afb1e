"""Shared fixtures. Tests run against real parts on loopback; nothing here is a mock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.models.tiny import TINY_BUILDERS


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ONNX models (noop, tiny-mlp, tiny-cnn), built once per test session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build(root / f"{name}.onnx", 0) for name, build in TINY_BUILDERS.items()}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SERVELAB_HOME, so nothing touches the user's ~/.servelab."""
    home = tmp_path / "servelab-home"
    monkeypatch.setenv("SERVELAB_HOME", str(home))
    return home


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread (2 shared cores: timings and parallel tests stay sane)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
