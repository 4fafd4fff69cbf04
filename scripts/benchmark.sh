#!/usr/bin/env bash
# The main job: installs what it needs into ./.venv, then trains and evaluates plain softmax against ArcFace on
# face verification (held-out identities), prints a verdict and writes the figures. Runs on CUDA when a GPU is
# present (the default then also trains longer schedules). Extra arguments go to `python -m benchmarks.face`
# (--help lists them). Data: ../shared/data/lfw-deepfunneled when present, else the embedded synthetic identities.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh "bench"
python -m benchmarks.face "$@"
