#!/usr/bin/env bash
# The test command: installs what it needs into ./.venv, lints, builds the docs strictly, runs the tests.
# Fails when any step fails or when no test ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh "test,docs"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
log="$(mktemp)"
set +e
python -m pytest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if ! grep -Eq '[0-9]+ passed' "$log"; then
  echo "scripts/test.sh: no test passed (pytest exit $status)" >&2
  exit 1
fi
exit "$status"
