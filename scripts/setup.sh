#!/usr/bin/env bash
# Create .venv and install servelab with the extras named in $1 (default: test).
# torch is installed first and pinned to the CPU build, so nothing later pulls a multi-GB CUDA
# build. onnx2torch (the torch runtime's converter) goes in last and without its dependencies:
# it declares torchvision, which servelab does not need and which would drag in a CUDA torch
# (pyproject.toml, the `torch` extra, says why). Installing it last keeps pip's resolver from
# printing a dependency "ERROR" about torchvision during the servelab install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q)
needs_torch=0
if [[ "$extras" == *test* || "$extras" == *torch* || "$extras" == *demo* || "$extras" == *bench* ]]; then
  needs_torch=1
  .venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0" || "${pip[@]}" torch
fi
"${pip[@]}" -e ".[${extras}]"
if [[ $needs_torch == 1 ]]; then
  onnx2torch=$(sed -n 's/^ONNX2TORCH_VERSION = "\(.*\)"$/\1/p' src/servelab/runtimes/torch_rt.py)
  "${pip[@]}" --no-deps "onnx2torch==${onnx2torch}"
  echo "installed onnx2torch ${onnx2torch} without torchvision (not needed by servelab); \`pip check\` will say torchvision is missing, which is expected"
fi
.venv/bin/python -c "import servelab"
