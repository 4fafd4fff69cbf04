#!/usr/bin/env bash
# The test command: installs what it needs into ./.venv, lints, type-checks, builds the docs strictly (any warning fails),
# builds and checks the sdist and wheel, checks that the sdist's tests collect, runs the tests.
# Fails when any step fails or when no test ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh "test,docs"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== ruff"
ruff check src tests benchmarks
ruff format --check src tests benchmarks

echo "== pyright (basic) on src/"
pyright

echo "== docs: mkdocs build --strict"
set +e
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$tmp/site" >"$tmp/mkdocs.log" 2>&1
docs_status=$?
set -e
grep -v '^INFO' "$tmp/mkdocs.log" || true
if [[ $docs_status -ne 0 ]] || grep -q 'WARNING' "$tmp/mkdocs.log"; then
  echo "scripts/test.sh: mkdocs build --strict failed or warned" >&2
  exit 1
fi

echo "== packaging: python -m build, twine check, the sdist's tests collect"
python -m build --sdist --wheel --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
twine check --strict "$tmp"/dist/*
tar -xzf "$tmp"/dist/*.tar.gz -C "$tmp"
sdist_dir="$(find "$tmp" -maxdepth 1 -type d -name 'arcloss-*' | head -n 1)"
collected="$(cd "$sdist_dir" && PYTHONPATH="$sdist_dir/src" python -m pytest --collect-only -q -p no:cacheprovider 2>&1 | tail -n 1)"
echo "sdist: $collected"
[[ "$collected" =~ ^[0-9]+\ tests?\ collected ]] || { echo "scripts/test.sh: the sdist's tests do not collect" >&2; exit 1; }

echo "== pytest"
log="$tmp/pytest.log"
set +e
python -m pytest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if ! grep -Eq '[0-9]+ passed' "$log"; then
  echo "scripts/test.sh: no test passed (pytest exit $status)" >&2
  exit 1
fi
exit "$status"
