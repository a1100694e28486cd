#!/usr/bin/env bash
# Set up .venv for cutalign on a fresh machine, idempotently.
# The CPU torch wheel is installed first when no torch is present: an open torch range
# would otherwise pull a multi-GB CUDA build. Set CUTALIGN_PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${CUTALIGN_PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
stamp="$VENV/.cutalign-installed"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip
if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing the CPU torch wheel (torch==${CUTALIGN_TORCH:-2.13.0})"
  # PyTorch's CPU index first (on PyPI, Linux torch wheels are CUDA builds); where that index is
  # unreachable, --retries 0 makes pip fall back at once to the configured indexes and local wheels.
  "$VPY" -m pip install -q --retries 0 --extra-index-url https://download.pytorch.org/whl/cpu \
    "torch==${CUTALIGN_TORCH:-2.13.0}"
fi
echo "[bootstrap] installing cutalign and its dependencies"
"$VPY" -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
