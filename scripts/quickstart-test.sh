#!/usr/bin/env bash
# scripts/quickstart-test.sh — second quick-start command (and what CI runs):
# installs what is missing, builds synk with its tests and runs the whole
# suite. Tests labelled `gpu` run too when nvidia-smi lists a GPU; without
# one they are left out (they would only skip).
#
# Environment: as scripts/build.sh (SYNK_BUILD_DIR, SYNK_BUILD_TYPE,
# SYNK_JOBS); extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/install-deps.sh
scripts/build.sh -DSYNK_BUILD_TESTS=ON "$@"

build_dir=${SYNK_BUILD_DIR:-build}
jobs=${SYNK_JOBS:-2}
cd "$build_dir"
# ctest prints its "N% tests passed, M tests failed out of K" summary; with
# set -e a failure ends the script with ctest's exit status.
ctest --output-on-failure --parallel "$jobs" --label-exclude gpu --no-tests=error

if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "quickstart-test: GPU found, running the tests labelled gpu"
  ctest --output-on-failure --label-regex gpu
else
  echo "quickstart-test: no GPU (nvidia-smi lists none): tests labelled gpu not run"
fi
