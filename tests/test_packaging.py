"""The extras in pyproject.toml say what each part needs, and scripts/setup.sh installs the one
package that cannot be an extra (onnx2torch, without its torchvision) at the version the torch
runtime is written for."""

from __future__ import annotations

import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from servelab.runtimes.torch_rt import ONNX2TORCH_VERSION

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_s3_is_another_name_for_aws_and_scipy_is_for_tests_only() -> None:
    assert EXTRAS["s3"] == ["servelab[aws]"]
    assert not any("scipy" in req for req in EXTRAS["plot"])
    assert any(req.startswith("scipy") for req in EXTRAS["test"])


def test_onnx2torch_is_in_no_extra_since_its_torchvision_would_pull_a_cuda_torch() -> None:
    assert not any("onnx2torch" in req for reqs in EXTRAS.values() for req in reqs)


def test_setup_sh_installs_the_onnx2torch_the_runtime_is_written_for() -> None:
    script = (ROOT / "scripts" / "setup.sh").read_text()
    line = next(x for x in script.splitlines() if x.strip().startswith("onnx2torch=$("))
    command = line.strip().removeprefix("onnx2torch=$(").removesuffix(")")
    got = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == ONNX2TORCH_VERSION
    assert '--no-deps "onnx2torch==${onnx2torch}"' in script


def test_the_installed_onnx2torch_is_the_pinned_one() -> None:
    try:
        installed = version("onnx2torch")
    except PackageNotFoundError:
        pytest.skip("onnx2torch is not installed (bash scripts/setup.sh torch installs it)")
    assert installed == ONNX2TORCH_VERSION
