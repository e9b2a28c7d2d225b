#!/usr/bin/env bash
# scripts/emu-test.sh — the GPU tests without a GPU: builds synk against the
# CUDA emulation for tests (SYNK_CUDA_EMU=ON; tests/cuda_emu, docs/testing.md)
# in its own folder and runs every test labelled `gpu` or `emu` there, then
# counts them: executed, skipped (each skip says why only a real GPU can run
# it) and failed. CI's fourth stage (.ci/run).
#
# Environment: SYNK_EMU_BUILD_DIR (default build-emu), SYNK_JOBS (default 2),
# SYNK_EMU_DEVICES (emulated GPUs, default 4 here), SYNK_EMU_SEED (the thread
# order inside blocks); extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${SYNK_JOBS:-2}
build_dir=${SYNK_EMU_BUILD_DIR:-build-emu}

scripts/install-deps.sh
# Release: the emulation runs every kernel thread on the CPU; -O2 keeps whole
# training epochs in the stage's time. With MPI: CUDA ranks healing across
# nodes (emu.mpi_heal_*) run here; the rest of the mpi label runs in the
# Release stage.
SYNK_BUILD_DIR=$build_dir SYNK_BUILD_TYPE=Release scripts/build.sh \
  -DSYNK_CUDA_EMU=ON -DSYNK_WITH_MPI=ON -DSYNK_BUILD_TESTS=ON -DSYNK_BUILD_EXAMPLES=OFF "$@"

cd "$build_dir"
# Four emulated GPUs: the tests of 3 NCCL ranks (one GPU each) run too.
export SYNK_EMU_DEVICES=${SYNK_EMU_DEVICES:-4}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
ctest --output-on-failure --parallel "$jobs" --label-regex '^(gpu|emu)$' --no-tests=error 2>&1 | tee "$log" ||
  rc=$?
total=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#' "$log" || true)
skipped=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#.*\*\*\*Skipped' "$log" || true)
failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#.*(\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run)' "$log" || true)
echo "emu-test: $total tests labelled gpu or emu: $((total - skipped - failed)) passed, $skipped skipped, $failed failed"
exit "$rc"
