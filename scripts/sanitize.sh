#!/usr/bin/env bash
# scripts/sanitize.sh — builds the CPU test suite with sanitizers and runs it
# (CI runs this after the normal tests, see .ci/run):
#
#   scripts/sanitize.sh             # both: ASan+UBSan (build-asan), TSan (build-tsan)
#   scripts/sanitize.sh asan        # one of them
#   scripts/sanitize.sh tsan -R Comm   # extra arguments go to ctest
#
# CPU only (no CUDA, benchmarks or examples: they add build time, not
# coverage of our code), -O1 -g so reports have line numbers and the run
# stays fast. Any sanitizer report fails the test that caused it: UBSan is
# built with -fno-sanitize-recover=all and every *SAN_OPTIONS has
# halt_on_error=1. Both runs always happen; the exit status is non-zero if
# either failed. Environment: SYNK_JOBS (default 2).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${SYNK_JOBS:-2}

kinds=(asan tsan)
if (($# > 0)) && [[ $1 == asan || $1 == tsan ]]; then
  kinds=("$1")
  shift
fi

# OpenBLAS is not instrumented; one thread keeps its pool (which TSan cannot
# see into) out of the picture. synk runs sgemm single-threaded anyway.
export OPENBLAS_NUM_THREADS=1
# handle_segv=0: the fault tests crash workers on purpose (raise(SIGSEGV))
# and check the master reports "signal 11"; with the sanitizer's handler the
# worker would instead print a report and exit with code 1. A real segfault
# still kills the process and fails its test, only without the sanitizer's
# stack trace (ASan reports bad accesses to instrumented memory before they
# can fault anyway).
export ASAN_OPTIONS=${ASAN_OPTIONS:-handle_segv=0:halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# handle_segv=0: as for ASan above.
# die_after_fork is left at TSan's default (1): the multi-process tests fork
# workers, and a child of a multi-threaded process that starts threads
# itself is a real hazard (locks held by threads that no longer exist), so
# TSan ending it is a finding, not noise. TSan only sees the threads of one
# process: data shared between processes through shared memory is invisible
# to it (the fault and stress tests cover that side); see scripts/tsan.supp.
export TSAN_OPTIONS=${TSAN_OPTIONS:-handle_segv=0:halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/tsan.supp}

run_one() {
  local kind=$1
  shift
  local sanitize build_dir=build-$kind
  case $kind in
    asan) sanitize=address ;;  # with UBSan, see CMakeLists.txt
    tsan) sanitize=thread ;;
  esac
  # Without MPI: the sanitizers would report OpenMPI's own leaks and races, and
  # this covers the single-node build (the `mpi` tests run in the Release stage).
  echo "=== sanitize.sh: $kind: build ($build_dir)"
  SYNK_BUILD_DIR=$build_dir SYNK_BUILD_TYPE=RelWithDebInfo scripts/build.sh \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DSYNK_SANITIZE=$sanitize \
    -DSYNK_WITH_CUDA=OFF -DSYNK_WITH_MPI=OFF -DSYNK_BUILD_TESTS=ON -DSYNK_BUILD_BENCH=OFF -DSYNK_BUILD_EXAMPLES=OFF ||
    return 1
  echo "=== sanitize.sh: $kind: tests"
  (cd "$build_dir" &&
    ctest --output-on-failure --parallel "$jobs" --label-exclude gpu --no-tests=error "$@")
}

failed=()
for kind in "${kinds[@]}"; do
  start=$SECONDS
  if run_one "$kind" "$@"; then
    echo "=== sanitize.sh: $kind: passed ($((SECONDS - start)) s)"
  else
    echo "=== sanitize.sh: $kind: FAILED ($((SECONDS - start)) s)"
    failed+=("$kind")
  fi
done
if ((${#failed[@]})); then
  echo "sanitize.sh: failed: ${failed[*]}" >&2
  exit 1
fi
