#!/usr/bin/env bash
# scripts/build.sh — configures and builds synk in one build folder.
#
#   scripts/build.sh                          # build/, Release, CUDA if found
#   scripts/build.sh -DSYNK_WITH_CUDA=OFF     # extra arguments go to cmake
#   SYNK_BUILD_DIR=build-asan SYNK_BUILD_TYPE=Debug \
#     scripts/build.sh -DSYNK_SANITIZE=address
#
# Environment: SYNK_BUILD_DIR (default build), SYNK_BUILD_TYPE (Release),
# SYNK_JOBS (parallel jobs, default 2: CI machines have two cores and the
# CUDA and OpenBLAS compiles are memory-hungry).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SYNK_BUILD_DIR:-build}
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
build_type=${SYNK_BUILD_TYPE:-Release}
jobs=${SYNK_JOBS:-2}

generator=()
# A folder configured before keeps its generator; a new one gets Ninja.
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
  generator=(-G Ninja)
fi

cmake -S "$root" -B "$build_dir" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE="$build_type" "$@"
cmake --build "$build_dir" --parallel "$jobs"
