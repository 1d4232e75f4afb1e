#!/usr/bin/env bash
# CI: `pip install servelab[EXTRA]`, then the documented command, in a fresh venv, for the serve
# and torch extras (docs/runtimes.md). Catches an extra that lost a dependency, or a runtime that
# needs a package no extra installs. Uses the same pins as scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/servelab-extras-XXXXXX")
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
onnx2torch=$(sed -n 's/^ONNX2TORCH_VERSION = "\(.*\)"$/\1/p' src/servelab/runtimes/torch_rt.py)

check() {  # check NAME PIP-ARGS... -- COMMAND...: fresh venv, install, run the command from $work
  local name=$1; shift
  local args=()
  while [[ $1 != -- ]]; do args+=("$1"); shift; done; shift
  python3 -m venv "$work/$name"
  "$work/$name/bin/python" -m pip install -q "${args[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  (cd "$work" && PATH="$work/$name/bin:$PATH" "$@") || { echo "extras check '$name' FAILED: $*"; exit 1; }
  echo "extras check '$name': ok"
}

check serve "$root[serve]" -- bash -c \
  'servelab models build tiny-mlp --out m && servelab models bench m/tiny-mlp.onnx --repeats 3'
check torch "torch==2.13.0" -- true  # the CPU build first, as setup.sh does
"$work/torch/bin/python" -m pip install -q "$root[torch]" 2>&1 | grep -v "^WARNING: Location" || true
"$work/torch/bin/python" -m pip install -q --no-deps "onnx2torch==${onnx2torch}"
(cd "$work" && PATH="$work/torch/bin:$PATH" bash -c \
  'servelab models build tiny-mlp --out m && servelab models bench m/tiny-mlp.onnx --runtime torch --repeats 3') \
  || { echo "extras check 'torch' FAILED"; exit 1; }
echo "extras check 'torch' runtime: ok"
