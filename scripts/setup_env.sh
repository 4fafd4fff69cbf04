#!/usr/bin/env bash
# Create ./.venv and install arcloss with the extras named in $1 (comma-separated, e.g. "test,docs").
# Sourced by scripts/test.sh and scripts/benchmark.sh. Idempotent: a second run installs nothing new.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
py="${PYTHON:-python3}"
[[ -x "$root/.venv/bin/python" ]] || "$py" -m venv "$root/.venv"
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q "torch>=2.4"                       # a CUDA build, for a machine with a GPU
  else
    # CPU machine: never let pip pick the multi-GB CUDA build. First a CPU wheel pip can already see (a local
    # wheel cache), else PyTorch's CPU wheel index alone (it also serves torch's dependencies).
    pip install -q "torch==2.13.0+cpu" 2>/dev/null \
      || pip install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
spec="$root"
[[ -n "$extras" ]] && spec="$root[$extras]"
pip install -q -e "$spec"
