#!/usr/bin/env bash
# scripts/quickstart-bench.sh — first quick-start command: installs what is
# missing, builds synk (Release) and runs the MNIST-style benchmark (an MLP
# on Fashion-MNIST, 10 epochs, one rank per core). Results: see bench/results/.
#
# Arguments, if any, replace the default synk-mnist arguments, e.g.
#   scripts/quickstart-bench.sh --model cnn --epochs 2 --json cnn.json
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/install-deps.sh
SYNK_BUILD_TYPE=Release scripts/build.sh -DSYNK_BUILD_BENCH=ON
build_dir=${SYNK_BUILD_DIR:-build}
if (($# == 0)); then
  set -- --model mlp --epochs 10
fi
exec "$build_dir/bin/synk-mnist" "$@"
