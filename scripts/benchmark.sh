#!/usr/bin/env bash
# The main job: installs what it needs into ./.venv, then trains and evaluates ArcFace against plain softmax
# on face verification (held-out identities). Extra arguments go to benchmarks/face_verification.py.
# Data: ../shared/data/lfw-deepfunneled when present, else the embedded synthetic identities (no download).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh "bench"
python benchmarks/face_verification.py "$@"
