#!/usr/bin/env bash
# scripts/fuzz.sh — builds the libFuzzer targets in fuzz/ with clang
# (ASan+UBSan, build-fuzz/) and fuzzes each for a while from the seed corpus
# in fuzz/corpus/<target>/:
#
#   scripts/fuzz.sh                 # 60 s per target (what CI runs)
#   scripts/fuzz.sh 600             # the longer run: 10 minutes per target
#   scripts/fuzz.sh 600 fuzz_idx    # one target
#
# New inputs found go to build-fuzz/corpus/<target>/ (not the repository);
# a crash, sanitizer report or contract violation is saved under
# build-fuzz/artifacts/<target>/ and makes the script exit non-zero, after
# all targets ran. Reproduce one with:
#   build-fuzz/bin/<target> build-fuzz/artifacts/<target>/crash-...
# Environment: SYNK_JOBS (build jobs, default 2), SYNK_FUZZ_CXX (clang++).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(fuzz_deserialize fuzz_idx fuzz_checkpoint)
build_dir=build-fuzz
cxx=${SYNK_FUZZ_CXX:-clang++}

# clang and its libFuzzer runtime are Debian packages outside
# scripts/install-deps.sh's list (the normal build needs neither); install
# them the same way, only when missing.
need=()
for p in clang libclang-rt-dev; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || need+=("$p")
done
if [[ $cxx == clang++ ]] && ((${#need[@]})); then
  echo "fuzz.sh: installing ${need[*]}"
  sudo=()
  ((EUID == 0)) || sudo=(sudo)
  apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0
       --no-install-recommends)
  "${apt[@]}" install "${need[@]}" || { "${apt[@]}" update && "${apt[@]}" install "${need[@]}"; }
fi

echo "=== fuzz.sh: build ($build_dir, $cxx)"
# Static libsynk: the targets are self-contained and instrumented throughout.
SYNK_BUILD_DIR=$build_dir SYNK_BUILD_TYPE=RelWithDebInfo scripts/build.sh \
  -DCMAKE_CXX_COMPILER="$cxx" -DSYNK_BUILD_FUZZERS=ON -DBUILD_SHARED_LIBS=OFF \
  -DSYNK_WITH_CUDA=OFF -DSYNK_WITH_MPI=OFF -DSYNK_BUILD_TESTS=OFF -DSYNK_BUILD_BENCH=OFF -DSYNK_BUILD_EXAMPLES=OFF

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
for t in "${targets[@]}"; do
  seeds=fuzz/corpus/$t
  [[ $t == fuzz_* ]] && seeds=fuzz/corpus/${t#fuzz_}
  work=$build_dir/corpus/$t
  artifacts=$build_dir/artifacts/$t
  log=$build_dir/logs/$t.log
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  echo "=== fuzz.sh: $t for ${seconds} s (seeds: $seeds, log: $log)"
  # The first corpus folder receives new inputs; the seeds are only read.
  # -timeout: an input taking 10 s is a hang; -rss_limit_mb: one using
  # 2 GiB is an unbounded allocation — both count as failures.
  set +e
  "$build_dir/bin/$t" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if ((rc != 0)); then
    echo "=== fuzz.sh: $t FAILED (exit $rc); end of its log:"
    tail -n 60 "$log"
    ls -l "$artifacts"
    failed+=("$t")
  else
    echo "=== fuzz.sh: $t: no crash ($(find "$work" -type f | wc -l) inputs in $work)"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: failed: ${failed[*]} (reproducers under $build_dir/artifacts/)" >&2
  exit 1
fi
