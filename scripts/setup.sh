#!/usr/bin/env bash
# Create .venv and install servelab with the extras named in $1 (default: test).
# torch is installed first and pinned to the CPU build, so nothing later pulls a multi-GB CUDA
# build; onnx2torch goes in without its torchvision dependency (servelab does not need it).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q)
if [[ "$extras" == *test* || "$extras" == *torch* || "$extras" == *demo* ]]; then
  .venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0" || "${pip[@]}" torch
  "${pip[@]}" --no-deps "onnx2torch>=1.5.15"
fi
"${pip[@]}" -e ".[${extras}]"
.venv/bin/python -c "import servelab"
