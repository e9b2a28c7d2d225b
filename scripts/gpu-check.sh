#!/usr/bin/env bash
# scripts/gpu-check.sh — the whole GPU verification of synk as one command.
#
#   scripts/gpu-check.sh pack              # here, no GPU needed: a relocatable sm_90 build,
#                                          # its libraries and Fashion-MNIST in .gpu-kit/ (<= 50 MiB)
#   scripts/gpu-check.sh run               # on the GPU machine, in the repo root with .gpu-kit/
#   scripts/gpu-check.sh run --dry-run     # anywhere: print every step, run the CPU-side ones
#   scripts/gpu-check.sh run --build DIR   # a GPU CI runner: a CUDA build tree instead of a kit
#   scripts/gpu-check.sh record [DIR]      # file a run's summaries under bench/results/gpu/
#
# pack: configures and builds a Release build with CUDA for one architecture
# (90: H100/H200) in its own build folder (~/.cache/synk-gpu-pack-build),
# with the install RPATH ($ORIGIN/../lib, as DT_RPATH so it also covers the
# libraries' own dependencies), then collects the programs (synk_tests,
# synk-mnist, synk-collectives, synk-dispatch and synk-kernels where built)
# and every library they need that is neither CUDA's (cudart, cuBLAS, NCCL:
# found on the GPU machine) nor glibc's into one xz-compressed payload, plus
# Fashion-MNIST, the PyTorch GPU peer, this script, a CPU reference run of
# synk-mnist and a manifest. The kit must stay under 50 MiB (it travels with
# the repository, 64 MiB in all, to the GPU machine); pack fails otherwise.
#
# run: unpacks the payload into a scratch folder, finds the CUDA libraries
# (/usr/local/cuda, then the Python packages: libnccl.so.2 comes from
# nvidia-nccl-cu13 there) and runs every step with its own time limit,
# going on after a failure, all inside one wall-clock budget (default 400 s,
# unpacking and summaries included), the most telling steps first:
#   unpack, env, ldd, help    what the machine (driver, CUDA runtime, cuBLAS, NCCL, gVisor or
#                             not) and the binaries are; help: only the programs the run uses
#   fork-cuda                 one synk::fork with a CUDA rank (synk-mnist, 2000 images)
#   gtest-core                GpuOps, GpuGrad, GpuSession, GpuGraphReplay, GpuTraining,
#                             GpuRankMemory, GpuNccl, GpuRuntime, GpuRecovery: one process per test
#   mnist-mlp, mnist-cnn      synk-mnist --device cuda, accuracy beside the CPU's
#   mnist-resnet, mnist-vit   synk-mnist --device cuda, one epoch of each modern model
#   memcheck                  compute-sanitizer memcheck on the op-vs-CPU and gradient tests
#                             ("unavailable" where the sandbox does not let it attach)
#   gtest-more                the other Gpu* tests (but the fault matrix)
#   collectives-*             synk-collectives: NCCL (one rank per GPU), 2 and 4 host-staged ranks
#   dispatch, kernels         synk-dispatch --device cuda, synk-kernels --quick
#   torch-peer                bench/peers/torch_mnist_gpu.py (eager and CUDA graphs)
#   torch-peer-resnet/-vit    the same peer, resnet and vit, one epoch eager
#   mnist-mlp-hs2             synk-mnist with 2 host-staged CUDA ranks on one GPU
#   mnist-mlp-nccl1-*         one NCCL rank with gradient buckets during backward, and without
#   gtest-faults              the GPU fault matrix (48 cases, 3 CUDA ranks each): only with --faults
# What comes back is at most 5 files in $OUT (default ./gpu-out), each
# rewritten (atomically) after every step, so a run killed at any moment
# leaves what finished and names the steps not reached: summary.json (state,
# verdict, one line per step), tests.json (every GPU test with its status
# and skip/failure text), bench.json (every benchmark's JSON), logs.tar.gz
# (the logs, at most 12 MiB: the least useful dropped first, never a
# failure's), plus kit.json (the kit's manifest).
#
# run --strict (the CI workflow): exit status 1 unless every step passed and
# every skipped GPU test skipped for an accepted reason (needs more GPUs
# than present; see SKIP_OK below). A test that skips because the build
# has no CUDA, or because no device was usable, fails the run.
set -uo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
MIB=$((1024 * 1024))
KIT_LIMIT=$((${SYNK_GPU_KIT_MIB:-50} * MIB))  # the kit; the repository and the kit travel to the GPU machine in 64 MiB
TRAVEL_LIMIT=$((64 * MIB))
LOGS_CAP=$((12 * MIB))      # logs.tar.gz; each file that comes back holds at most 16 MiB
TICK=${SYNK_GPU_TICK:-15}   # seconds between two rewrites of the results inside a long step
# The programs the run uses (the only ones `ldd` and `--help` check).
PROGRAMS=(synk_tests synk-mnist synk-collectives synk-dispatch synk-kernels)
GPU_FILTER='Gpu*:*/Gpu*'
CORE_SUITES=(GpuOps GpuGrad GpuSession GpuGraphReplay GpuTraining GpuRankMemory GpuNccl GpuRuntime GpuRecovery)
FAULT_SUITES=(GpuFaultMatrix)
MEMCHECK_FILTER='*/GpuOps.*:GpuOps.*:GpuGrad.*'
# One small GPU test run under compute-sanitizer first, and what the
# sanitizer says where it cannot attach (gVisor: "Device not supported").
SANITIZER_PROBE_TEST='GpuDeviceBuffer.MoveTransfersOwnership'
SANITIZER_REFUSED='device not supported|not supported on this (device|platform)|unable to (attach|initiali[sz]e)|failed to (attach|initiali[sz]e)|could not (attach|initiali[sz]e)'
# Skip reasons a Gpu* test may give on a GPU machine without failing --strict.
SKIP_OK=${SYNK_GPU_SKIP_OK:-'needs [0-9]+ GPUs|this driver lets a forked child use CUDA'}

# One line about python3's PyTorch: "2.11.0 cuda 13.0 device NVIDIA H200", or why not.
TORCH_PROBE='
import torch
if not torch.cuda.is_available():
    print(torch.__version__, "sees no GPU")
else:
    print(torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
'

die() { echo "gpu-check: $*" >&2; exit 2; }
note() { echo "gpu-check: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { sed -n '2,9p' "$self" | sed 's/^# \{0,1\}//'; }

# ---- libraries: which ones travel --------------------------------------------------

# glibc's own libraries and the kernel's vDSO: always on the target.
is_libc() {
  case "$1" in
    linux-vdso.so.*|ld-linux*.so.*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*| \
    libutil.so.*|libresolv.so.*|libanl.so.*) return 0 ;;
  esac
  return 1
}
# CUDA's libraries: the toolkit (or the Python packages) on the GPU machine has them.
is_cuda() {
  case "$1" in
    libcuda.so.*|libcudart.so.*|libcublas.so.*|libcublasLt.so.*|libnccl.so.*|libnvrtc*.so.*|libnvJitLink.so.*| \
    libcurand.so.*|libcufft.so.*|libcusparse.so.*|libcusolver.so.*|libnvToolsExt.so.*) return 0 ;;
  esac
  return 1
}

# "soname path" for every library `ldd` resolves for $1 ("soname not-found" when missing).
deps_of() {
  ldd "$1" 2>/dev/null | awk '
    $2 == "=>" && $3 == "not" { print $1, "not-found"; next }
    $2 == "=>" && $3 ~ /^\// { print $1, $3; next }
    $1 ~ /^\// { n = split($1, p, "/"); print p[n], $1 }'
}

# ---- pack -------------------------------------------------------------------------------

pack_main() {
  local repo kit build data jobs=2 arch=90 epochs=3 cpu_ref=1 do_build=1
  repo=$(cd "$here/.." && pwd)
  kit=$repo/.gpu-kit
  build=${SYNK_GPU_BUILD_DIR:-$HOME/.cache/synk-gpu-pack-build}
  data=${SYNK_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  while [ $# -gt 0 ]; do
    case "$1" in
      --kit) kit=$2; shift ;;
      --build-dir) build=$2; shift ;;
      --data) data=$2; shift ;;
      --jobs) jobs=$2; shift ;;
      --arch) arch=$2; shift ;;
      --epochs) epochs=$2; shift ;;
      --no-cpu-ref) cpu_ref=0 ;;
      --no-build) do_build=0 ;;
      -h|--help) cat <<EOF
usage: scripts/gpu-check.sh pack [--kit DIR] [--build-dir DIR] [--data DIR] [--jobs N] [--arch A]
                                 [--epochs N] [--no-cpu-ref] [--no-build]
  --kit DIR        where the kit goes (default: <repo>/.gpu-kit, git-ignored)
  --build-dir DIR  the build folder (default: \$SYNK_GPU_BUILD_DIR or ~/.cache/synk-gpu-pack-build)
  --data DIR       Fashion-MNIST IDX .gz files (default: \$SYNK_MNIST_DIR or /usr/share/datasets/fashion-mnist)
  --jobs N         parallel build jobs (default 2)
  --arch A         CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)
  --epochs N       epochs of the mnist steps; the CPU reference is trained for as many (default 3)
  --no-cpu-ref     skip the CPU reference run of synk-mnist (then no accuracy comparison)
  --no-build       package the build folder as it is
EOF
        return 0 ;;
      *) die "pack: unknown argument $1 (see pack --help)" ;;
    esac
    shift
  done
  local t0; t0=$(now)
  command -v xz >/dev/null || die "pack: xz is needed"
  [ -d "$data" ] || die "pack: --data $data: no such folder (Fashion-MNIST IDX files)"

  # 1. The build: CUDA on, one architecture, install RPATH in the build tree.
  # Without MPI: the GPU machine has one node and no OpenMPI to bring along.
  if [ "$do_build" = 1 ]; then
    note "configuring $build (Release, CUDA on, sm_$arch, no MPI)"
    mkdir -p "$(dirname "$build")"  # ~/.cache may not exist on a fresh machine
    cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSYNK_WITH_CUDA=ON -DSYNK_WITH_MPI=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DSYNK_BUILD_EXAMPLES=OFF \
      -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
      "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags" \
      "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--disable-new-dtags" >"$build.configure.log" 2>&1 ||
      { tail -30 "$build.configure.log" >&2; die "pack: configure failed (log: $build.configure.log)"; }
    local targets=() p
    local known; known=$(cmake --build "$build" --target help 2>/dev/null)
    for p in "${PROGRAMS[@]}"; do
      grep -qE "^$p(:| )" <<<"$known" && targets+=("$p")
    done
    note "building ${targets[*]} with -j$jobs (log: $build.build.log)"
    cmake --build "$build" -j "$jobs" --target "${targets[@]}" >"$build.build.log" 2>&1 ||
      { tail -40 "$build.build.log" >&2; die "pack: build failed (log: $build.build.log)"; }
  fi
  grep -q '#define SYNK_HAVE_CUDA 1' "$build/include/synk/config.hpp" 2>/dev/null ||
    die "pack: $build has no CUDA (SYNK_HAVE_CUDA is not 1 in include/synk/config.hpp)"
  local have_nccl=0
  grep -q '#define SYNK_HAVE_NCCL 1' "$build/include/synk/config.hpp" && have_nccl=1

  # 2. Stage bin/ and lib/: stripped programs, libsynk, every library they
  # need that is neither glibc's nor CUDA's.
  local stage; stage=$(mktemp -d "${TMPDIR:-/tmp}/synk-gpu-pack.XXXXXX")
  trap 'rm -rf "$stage"' RETURN
  mkdir -p "$stage/bin" "$stage/lib"
  local p packed=()
  for p in "${PROGRAMS[@]}"; do
    if [ -x "$build/bin/$p" ]; then
      readelf -d "$build/bin/$p" | grep -q 'RPATH.*\$ORIGIN/\.\./lib' ||
        die "pack: $build/bin/$p has no DT_RPATH \$ORIGIN/../lib: configure $build with this script (or delete it)"
      strip --strip-unneeded -o "$stage/bin/$p" "$build/bin/$p"
      packed+=("$p")
    else
      note "$p not built here: left out"
    fi
  done
  [ -x "$stage/bin/synk_tests" ] && [ -x "$stage/bin/synk-mnist" ] || die "pack: synk_tests or synk-mnist missing in $build/bin"
  local soname path missing=0
  while read -r soname path; do
    is_libc "$soname" && continue
    is_cuda "$soname" && continue
    case "$path" in /usr/local/cuda*) continue ;; esac
    if [ "$path" = not-found ]; then note "needed library $soname not found"; missing=1; continue; fi
    [ -e "$stage/lib/$soname" ] && continue
    strip --strip-unneeded -o "$stage/lib/$soname" "$(readlink -f "$path")" 2>/dev/null ||
      cp "$(readlink -f "$path")" "$stage/lib/$soname"
  done < <(for p in "$stage"/bin/*; do deps_of "$build/bin/$(basename "$p")"; done | sort -u)
  [ "$missing" = 0 ] || die "pack: libraries missing (above)"
  [ -e "$stage/lib/libsynk.so.0" ] || die "pack: libsynk.so.0 was not among the programs' libraries"

  # 3. The kit: payload, data, peers, scripts, CPU reference, manifest.
  rm -rf "$kit"
  mkdir -p "$kit/data" "$kit/peers" "$kit/scripts/gpu" "$kit/ref"
  note "compressing the payload (xz -9)"
  tar -C "$stage" -cf - bin lib | xz -9 -T"$jobs" >"$kit/payload.tar.xz" || die "pack: xz failed"
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$data/$f.gz" ]; then cp "$data/$f.gz" "$kit/data/"
    elif [ -f "$data/$f" ]; then gzip -9 -c "$data/$f" >"$kit/data/$f.gz"
    else die "pack: $data has no $f(.gz)"; fi
  done
  cp "$repo"/bench/peers/torch_mnist_gpu.py "$repo"/bench/peers/torch_mnist.py "$kit/peers/"
  cp "$self" "$kit/scripts/gpu-check.sh"
  cp "$here"/gpu/*.py "$kit/scripts/gpu/"
  "$stage/bin/synk_tests" --gtest_list_tests --gtest_filter="$GPU_FILTER" >"$kit/gpu-tests.txt" 2>&1 ||
    die "pack: synk_tests --gtest_list_tests failed: $(tail -3 "$kit/gpu-tests.txt")"
  local m
  if [ "$cpu_ref" = 1 ]; then
    for m in mlp cnn; do
      note "CPU reference: synk-mnist --model $m --epochs $epochs (the accuracy the GPU runs are compared with)"
      "$stage/bin/synk-mnist" --device cpu --model "$m" --epochs "$epochs" --seed 1 --data "$kit/data" \
        --json "$kit/ref/mnist-cpu-$m.json" >"$kit/ref/mnist-cpu-$m.log" 2>&1 ||
        { note "CPU reference $m failed: $(tail -2 "$kit/ref/mnist-cpu-$m.log")"; rm -f "$kit/ref/mnist-cpu-$m.json"; }
    done
  fi
  local commit dirty nvcc_v glibc_req
  glibc_req=$(for f in "$stage"/bin/* "$stage"/lib/*; do objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*'; done |
    sort -uV | tail -1)
  commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)
  nvcc_v=$(grep -m1 'CMAKE_CUDA_COMPILER_VERSION' "$build"/CMakeFiles/*/CMakeCUDACompiler.cmake 2>/dev/null | grep -o '"[^"]*"' | tr -d '"')
  {
    printf '{\n  "packed": "%s",\n  "commit": "%s",\n  "dirty_files": %s,\n' "$(date -u +%FT%TZ)" "$commit" "${dirty:-0}"
    printf '  "glibc_required": "%s",\n' "$glibc_req"
    printf '  "cuda_architectures": "%s",\n  "nvcc": "%s",\n  "nccl": %s,\n  "epochs": %s,\n' "$arch" "$nvcc_v" \
      "$([ "$have_nccl" = 1 ] && echo true || echo false)" "$epochs"
    printf '  "programs": [%s],\n' "$(printf '"%s",' "${packed[@]}" | sed 's/,$//')"
    printf '  "libraries": [%s],\n' "$(cd "$stage/lib" && printf '"%s",' * | sed 's/,$//')"
    printf '  "unpacked_bytes": %s,\n' "$(du -sb "$stage" | cut -f1)"
    printf '  "files": {\n'
    (cd "$kit" && find . -type f ! -name kit.json | sed 's|^\./||' | sort | while read -r f; do
      printf '    "%s": %s,\n' "$f" "$(stat -c %s "$f")"; done) | sed '$ s/,$//'
    printf '  }\n}\n'
  } >"$kit/kit.json"
  local repo_git; repo_git=$(git -C "$repo" rev-parse --git-dir 2>/dev/null || true)
  if [ -n "$repo_git" ] && [ "$kit" = "$repo/.gpu-kit" ] && ! git -C "$repo" check-ignore -q "$kit"; then
    note "warning: $kit is not git-ignored (add /.gpu-kit/ to .gitignore)"
  fi
  local size; size=$(du -sb "$kit" | cut -f1)
  mib() { awk -v s="$1" 'BEGIN{printf "%.1f", s/1048576}'; }
  echo "gpu-check: packed $kit: $size bytes ($(mib "$size") MiB of at most $((KIT_LIMIT / MIB)))," \
       "programs: ${packed[*]}, in $(elapsed "$t0") s"
  (cd "$kit" && du -b payload.tar.xz data/* ref/*.json 2>/dev/null | awk '{printf "  %10d  %s\n", $1, $2}')
  [ "$size" -le "$KIT_LIMIT" ] ||
    die "pack: the kit is $size bytes ($(mib "$size") MiB), over its $((KIT_LIMIT / MIB)) MiB: it travels with the" \
        "repository to the GPU machine in $((TRAVEL_LIMIT / MIB)) MiB in all. Leave something out (--no-cpu-ref, fewer programs)"
  # What travels: the repository's tracked files, and the kit.
  local tree=0
  if [ -n "$repo_git" ]; then
    tree=$(git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 stat -c %s 2>/dev/null) | awk '{ t += $1 } END { print t + 0 }')
    echo "gpu-check: the repository's tracked files: $tree bytes ($(mib "$tree") MiB); with the kit: $(mib $((tree + size))) MiB" \
         "of the $((TRAVEL_LIMIT / MIB)) MiB that can travel"
    [ $((tree + size)) -le "$TRAVEL_LIMIT" ] ||
      note "warning: the repository and the kit are $((tree + size)) bytes, over the $((TRAVEL_LIMIT / MIB)) MiB that can travel"
  fi
}

# ---- run: steps -------------------------------------------------------------------------

# The result files in $outdir, rewritten from what $work holds (summarize.py,
# each file replaced in one rename): after every step, so that a run killed
# at any moment, SIGKILL included, leaves what finished and marks the steps
# not reached. publish STATE [logs]: with `logs`, logs.tar.gz too.
publish() {
  local state=$1 with_logs=${2:-} args=()
  [ -n "$summarize" ] || return 0
  [ "$with_logs" = logs ] && args+=(--logs-cap "$LOGS_CAP")
  [ "$state" = finished ] || args+=(--quiet)
  python3 "$summarize" --work "$work" --out "$outdir" --skip-ok "$SKIP_OK" --state "$state" \
    --mode "$([ "$dry" = 1 ] && echo dry-run || echo gpu)" --budget "$budget" --epochs "${epochs:-0}" \
    --started "$t_start" "${args[@]}" 2>>"$work/publish.err"
}

# One step: NAME LIMIT_S KIND -- command...   KIND: gpu (skipped by --dry-run) or cpu.
# Its output goes to $logs/NAME.log; a line goes to $work/steps.tsv:
# name, status (ok, fail, timeout, skip, unavailable, dry-run), exit code, seconds, limit, note.
# While planning (planning=1), only its name goes to $work/plan.tsv.
# A step's body may explain itself in $SYNK_STEP_NOTE (a file); exit 78 means
# "the machine cannot do this" (status unavailable: not synk's failure).
step() {
  local name=$1 limit=$2 kind=$3; shift 4
  local lim; lim=$(awk -v l="$limit" -v s="$scale" 'BEGIN { printf "%d", l * s + 0.5 }')
  if [ "$planning" = 1 ]; then
    printf '%s\t%s\t%s\n' "$name" "$kind" "$lim" >>"$work/plan.tsv"
    return 0
  fi
  local log=$logs/$name.log
  local t; printf -v t '%(%s)T' -1
  local left=$(( deadline - t - reserve ))
  if [ "$kind" = gpu ] && [ "$dry" = 1 ]; then
    printf '[dry-run] %-25s limit %4ss: %s\n' "$name" "$lim" "$*"
    printf '%s\tdry-run\t\t0\t%s\t%s\n' "$name" "$lim" "GPU step, not run" >>"$work/steps.tsv"
    return 0
  fi
  [ "$lim" -gt "$left" ] && lim=$left
  if [ "$lim" -lt 5 ]; then
    printf '==> %-25s not run: the %ss budget is spent\n' "$name" "$budget"
    printf '%s\tskip\t\t0\t0\t%s\n' "$name" "budget spent" >>"$work/steps.tsv"
    publish running
    return 0
  fi
  printf '==> %-25s limit %4ss: %s\n' "$name" "$lim" "$*"
  local t0; t0=$(now)
  local note_file=$work/notes/$name
  { echo "# $*"; echo "# limit ${lim}s, started $(date -u +%FT%TZ)"; } >"$log"
  printf '%s\t%s\t%s\n' "$name" "$t" "$lim" >"$work/current"
  publish running
  # The command in the background, so that the summaries are rewritten every
  # $TICK s while it runs (a long step's tests as they finish).
  SYNK_STEP_NOTE=$note_file timeout -k 5 "$lim" "$@" >>"$log" 2>&1 </dev/null &
  step_pid=$!
  local last=$t
  while kill -0 "$step_pid" 2>/dev/null; do
    sleep 0.2
    printf -v t '%(%s)T' -1
    if [ $(( t - last )) -ge "$TICK" ] && kill -0 "$step_pid" 2>/dev/null; then publish running logs; last=$t; fi
  done
  wait "$step_pid"
  local rc=$? secs status=ok note=""
  step_pid=""
  secs=$(elapsed "$t0")
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    77) status=skip ;;
    78) status=unavailable ;;
    *) status=fail ;;
  esac
  [ -f "$note_file" ] && note=$(head -c 300 "$note_file" | tr '\t\n' '  ' | sed 's/ *$//')
  echo "# exit $rc after ${secs}s" >>"$log"
  printf '    %-25s %-11s exit %3s  %6ss%s\n' "$name" "$status" "$rc" "$secs" "${note:+  ($note)}"
  [ "$status" != ok ] && tail -n 5 "$log" | sed 's/^/      | /'
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "$lim" "$note" >>"$work/steps.tsv"
  rm -f "$work/current"
  publish running logs
  return 0
}

# A step that was not possible here (missing tool, program not built).
skip_step() {
  if [ "$planning" = 1 ]; then printf '%s\tskip\t0\n' "$1" >>"$work/plan.tsv"; return 0; fi
  printf '==> %-25s skipped: %s\n' "$1" "$2"
  printf '%s\tskip\t\t0\t0\t%s\n' "$1" "$2" >>"$work/steps.tsv"
}

# SIGTERM, SIGINT, SIGHUP: stop the step running, mark it interrupted, write
# the results as they are. (SIGKILL leaves the summary of the last step.)
on_signal() {
  trap - TERM INT HUP
  echo "gpu-check: interrupted; writing what finished to $outdir" >&2
  if [ -n "${step_pid:-}" ]; then
    kill -TERM "$step_pid" 2>/dev/null
    local name t0 lim now_s
    IFS=$'\t' read -r name t0 lim <"$work/current" 2>/dev/null
    printf -v now_s '%(%s)T' -1
    [ -n "$name" ] && printf '%s\tinterrupted\t\t%s\t%s\t%s\n' "$name" "$((now_s - t0))" "$lim" "signal" >>"$work/steps.tsv"
    rm -f "$work/current"
  fi
  publish interrupted logs
  [ "$keep" = 1 ] || rm -rf "$work"
  exit 143
}

# _env: what the machine is. Writes $res/gpus.csv and $res/versions.txt.
env_step() {
  echo "## uname"; uname -a
  echo "## os"; grep -h PRETTY_NAME /etc/os-release 2>/dev/null
  echo "## cpus"; nproc; grep -m1 'model name' /proc/cpuinfo
  echo "## memory"; grep -E 'MemTotal|MemAvailable' /proc/meminfo
  echo "## LD_LIBRARY_PATH used for synk's programs"; echo "$SYNK_LD"
  echo "## nvidia-smi"
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi
    timeout 20 nvidia-smi --query-gpu=index,name,driver_version,memory.total,pci.bus_id,compute_cap --format=csv,noheader \
      >"$res/gpus.csv" 2>/dev/null ||
      timeout 20 nvidia-smi --query-gpu=index,name,driver_version,memory.total,pci.bus_id --format=csv,noheader >"$res/gpus.csv"
    timeout 20 nvidia-smi topo -m 2>/dev/null
  else
    echo "nvidia-smi: not found"
  fi
  echo "## dmesg (first lines: gVisor says so there)"; timeout 5 dmesg 2>&1 | head -5
  echo "## versions"
  {
    # driver, cuda driver api, cudart, cublas, nccl (what synk's programs load), sandbox
    LD_LIBRARY_PATH=$SYNK_LD timeout 30 python3 "$here/gpu/probe.py" "$bindir/synk-mnist" "$libdir"/libsynk.so.* 2>&1 ||
      echo "probe: scripts/gpu/probe.py failed"
    echo "nvcc: $( (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | grep -o 'release [0-9.]*' | head -1)"
    echo "compute-sanitizer: $("$sanitizer" --version 2>/dev/null | grep -io 'version [0-9.]*' | head -1)"
    echo "ctest: $(ctest --version 2>/dev/null | head -1)"
    echo "python3: $(python3 --version 2>&1)"
    echo "torch: $(timeout 30 python3 -c "$TORCH_PROBE" 2>&1 | tail -1)"
    echo "glibc: $(ldd --version 2>/dev/null | head -1)"
    echo "cuda libraries: $cuda_dirs"
    echo "nccl folder: ${nccl_lib:-none beside the CUDA libraries}"
  } | tee "$res/versions.txt"
  echo "## kit"; cat "$kit/kit.json" 2>/dev/null
  return 0
}

# The programs the run uses, as found in $bindir.
used_programs() {
  local p
  for p in "${PROGRAMS[@]}"; do [ -x "$bindir/$p" ] && [ -f "$bindir/$p" ] && echo "$bindir/$p"; done
}

# _ldd: every program the run uses (and libsynk) finds each library it
# loads, its libraries' own included, in the payload, the CUDA libraries or
# glibc, and nothing is missing. (The other payload libraries have no RPATH
# of their own: they are found through the programs' DT_RPATH, which covers them.)
ldd_step() {
  local bad=0 f soname path
  local allowed=("$bindir" "$libdir")
  local d; for d in ${SYNK_LD//:/ }; do allowed+=("$d" "$(readlink -f "$d")"); done
  for f in $(used_programs) "$libdir"/libsynk.so*; do
    [ -f "$f" ] || continue
    echo "## $f"
    LD_LIBRARY_PATH=$SYNK_LD ldd "$f" | sed 's/^/  /'
    while read -r soname path; do
      if [ "$path" = not-found ]; then echo "NOT FOUND: $soname (needed by $(basename "$f"))"; bad=1; continue; fi
      is_libc "$soname" && continue
      local ok=0 a rp; rp=$(readlink -f "$path")
      for a in "${allowed[@]}"; do case "$path/" in "$a"/*) ok=1 ;; esac; case "$rp" in "$a"/*) ok=1 ;; esac; done
      is_cuda "$soname" && case "$rp" in /usr/local/cuda*) ok=1 ;; esac
      [ "$ok" = 1 ] || [ -z "$kit" ] || { echo "OUTSIDE THE PAYLOAD: $soname => $path (needed by $(basename "$f"))"; bad=1; }
    done < <(LD_LIBRARY_PATH=$SYNK_LD deps_of "$f")
  done
  if [ "$bad" = 0 ] && [ -n "$kit" ]; then
    echo "ldd: every library of every packed binary is in the payload, the CUDA libraries or glibc"
  elif [ "$bad" = 0 ]; then
    echo "ldd: no library missing (a build tree: system libraries allowed)"
  fi
  return "$bad"
}

# _help: --help of every program the run uses (not the build tree's other
# programs: examples, test helpers) and the Gpu* test list.
help_step() {
  local p rc=0
  for p in $(used_programs); do
    case "$(basename "$p")" in synk_tests) continue ;; esac
    echo "## $(basename "$p") --help"
    timeout 20 "$p" --help || { echo "exit $?"; rc=1; }
  done
  echo "## synk_tests --gtest_list_tests --gtest_filter='$GPU_FILTER'"
  "$bindir/synk_tests" --gtest_list_tests --gtest_filter="$GPU_FILTER" || rc=1
  return $rc
}

# Gpu* test names, one per line, from synk_tests --gtest_list_tests.
list_gpu_tests() {
  "$bindir/synk_tests" --gtest_list_tests --gtest_filter="$GPU_FILTER" | awk '
    /^[^ ]/ { suite = ($1 ~ /\.$/) ? $1 : ""; next }
    /^  [^ ]/ && suite != "" { print suite $1 }'
}

# The tests of one group, in the order they run (stdin: every Gpu* test):
#   core    CORE_SUITES, in that order (what tells most about synk on a GPU)
#   faults  the GPU fault matrix (3 CUDA ranks per case; last, with --faults)
#   more    every other Gpu* test
suite_re() { printf '^([^/]*/)?(%s)\\.' "$(IFS='|'; echo "$*")"; }
select_tests() {
  local all s; all=$(cat)
  case $1 in
    core) for s in "${CORE_SUITES[@]}"; do grep -E "$(suite_re "$s")" <<<"$all"; done ;;
    faults) grep -E "$(suite_re "${FAULT_SUITES[@]}")" <<<"$all" ;;
    more) grep -vE "$(suite_re "${CORE_SUITES[@]}" "${FAULT_SUITES[@]}")" <<<"$all" ;;
  esac
  return 0
}

# _gtest STEP JOBS PER GROUP...: the groups' tests, each in its own process,
# JOBS at a time, each with its own limit. logs/gtest/_list-STEP.txt lists
# them; per test: logs/gtest/<name>.log and a line in _results.tsv.
gtest_step() {
  local stepname=$1 jobs=$2 per=$3; shift 3
  local dir=$logs/gtest all g
  mkdir -p "$dir"
  all=$(list_gpu_tests) || { echo "synk_tests --gtest_list_tests failed"; return 1; }
  local list=$dir/_list-$stepname.txt
  for g in "$@"; do select_tests "$g" <<<"$all"; done >"$list"
  echo "$(wc -l <"$list") Gpu* tests ($*), $jobs at a time, ${per}s each at most"
  tr '\n' '\0' <"$list" | xargs -0 -P "$jobs" -n 1 bash "$self" _gtest_one "$bindir/synk_tests" "$dir" "$per"
  local n fail
  n=$(grep -cFxf "$list" <(cut -f1 "$dir/_results.tsv" 2>/dev/null) || true)
  fail=$(awk -F'\t' 'NR == FNR { want[$0] = 1; next } ($1 in want) && $2 != 0' "$list" "$dir/_results.tsv" 2>/dev/null | wc -l)
  echo "$n tests ran, $fail with a non-zero exit"
  [ "$fail" = 0 ]
}

gtest_one() {
  local bin=$1 dir=$2 per=$3 name=$4
  local safe; safe=$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_')
  local t0; t0=$(now)
  timeout -k 5 "$per" "$bin" --gtest_filter="$name" --gtest_color=no >"$dir/$safe.log" 2>&1 </dev/null
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(elapsed "$t0")" >>"$dir/_results.tsv"
  return 0
}

# _memcheck SHARDS: compute-sanitizer memcheck over the op-vs-CPU and gradient
# tests, split into SHARDS processes (gtest sharding) that run at once. First
# one small GPU test under it: where the sandbox does not let the sanitizer
# attach (gVisor: "Device not supported", then error 999), the step says so
# and exits 78 (unavailable: the machine's limit, not a failure of synk).
memcheck_step() {
  local shards=$1 i pids=() rc=0
  local probe=$logs/sanitizer-probe.log
  timeout -k 5 60 "$sanitizer" --tool memcheck --leak-check no --error-exitcode 86 \
    "$bindir/synk_tests" --gtest_filter="$SANITIZER_PROBE_TEST" --gtest_color=no >"$probe" 2>&1 </dev/null
  local prc=$?
  echo "probe ($SANITIZER_PROBE_TEST under compute-sanitizer): exit $prc"
  local refused
  refused=$(grep -m1 -iE "$SANITIZER_REFUSED" "$probe" | sed -E 's/^=+ *(Error: *)?//')
  if [ -n "$refused" ] || { [ "$prc" != 0 ] && ! grep -q '^\[ RUN' "$probe"; }; then
    refused=${refused:-$(grep -m1 -v '^$' "$probe" || echo "exit $prc, no test ran")}
    echo "compute-sanitizer cannot run here: $refused"
    tail -20 "$probe"
    [ -n "${SYNK_STEP_NOTE:-}" ] && mkdir -p "$(dirname "$SYNK_STEP_NOTE")" &&
      echo "compute-sanitizer cannot attach here: $refused" >"$SYNK_STEP_NOTE"
    return 78
  fi
  for ((i = 0; i < shards; i++)); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i \
      "$sanitizer" --tool memcheck --leak-check no --error-exitcode 86 --print-limit 200 \
      "$bindir/synk_tests" --gtest_filter="$MEMCHECK_FILTER" --gtest_color=no >"$logs/memcheck-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; local r=$?
    echo "shard $i: exit $r; $(grep -m1 'ERROR SUMMARY' "$logs/memcheck-$i.log")"
    [ $r = 0 ] || rc=1
  done
  return $rc
}

# _unpack KIT DEST: the payload (bin/, lib/) into DEST.
unpack_step() {
  local kit=$1 dest=$2
  echo "unpacking $kit/payload.tar.xz ($(stat -c %s "$kit/payload.tar.xz") bytes) into $dest"
  if command -v xz >/dev/null; then
    xz -dc "$kit/payload.tar.xz" | tar -C "$dest" -xf - || return 1
  else  # a bare machine may lack xz; Python's lzma does the same
    echo "no xz: Python's tarfile unpacks it"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$kit/payload.tar.xz" "$dest" ||
      return 1
  fi
  du -sb "$dest/bin" "$dest/lib"
}

# The folders that hold CUDA's libraries (CUDA_DIRS) and the one that holds
# libnccl.so.2 (NCCL_LIB), if outside them.
find_cuda_libs() {
  cuda_dirs=""
  local d seen=""
  for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
    [ -d "$d" ] || continue
    case " $seen " in *" $(readlink -f "$d") "*) continue ;; esac
    seen="$seen $(readlink -f "$d")"
    cuda_dirs=${cuda_dirs:+$cuda_dirs:}$d
  done
  nccl_lib=""
  local soname
  # Whatever the programs still miss (NCCL, at least, on the GPU machine)
  # comes from the Python packages (nvidia-nccl-cu13, nvidia-cublas, ...).
  local need; need=$(for f in $(used_programs) "$libdir"/libsynk.so*; do
      [ -f "$f" ] && LD_LIBRARY_PATH=$cuda_dirs deps_of "$f"; done | awk '$2 == "not-found" { print $1 }' | sort -u)
  [ -z "$need" ] && return 0
  local site=""
  if command -v python3 >/dev/null; then
    site=$(python3 -c 'import sys, os; print("\n".join(p for p in sys.path if p and os.path.isdir(p)))' 2>/dev/null)
    # The NCCL wheel's own folder first: nvidia.nccl (nvidia-nccl-cu13).
    local nd; nd=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$nd" ] && [ -d "$nd" ] && site="$nd"$'\n'"$site"
  fi
  for soname in $need; do
    local hit=""
    while read -r d; do
      [ -n "$d" ] || continue
      hit=$(find "$d" -maxdepth 5 -name "$soname" \( -type f -o -type l \) 2>/dev/null | head -1)
      [ -n "$hit" ] && break
    done <<<"$site"
    if [ -n "$hit" ]; then
      d=$(dirname "$hit")
      case ":$nccl_lib:" in *":$d:"*) ;; *) nccl_lib=${nccl_lib:+$nccl_lib:}$d ;; esac
      note "$soname from $d"
    else
      note "$soname: not in the CUDA toolkit nor in python3's packages"
    fi
  done
}

# Every step after the unpacking, in the order of what each tells (the most
# first), so that a window cut short has the most telling results. Called
# twice: planning=1 only lists them (plan.tsv: what a cut-off run did not reach).
run_steps() {
  local S="env LD_LIBRARY_PATH=$SYNK_LD" B=$bindir m
  step env 45 cpu -- bash "$self" _env
  step ldd 20 cpu -- bash "$self" _ldd
  step help 20 cpu -- bash "$self" _help

  if [ "$dry" = 1 ]; then
    # The CPU side of the programs, from wherever the kit is.
    # The GPU tests' runner itself, here with every test skipping.
    local groups=(core more); [ "$faults" = 1 ] && groups+=(faults)
    step gtest-nogpu 120 cpu -- bash "$self" _gtest gtest-nogpu "$jobs" 60 "${groups[@]}"
    step mnist-cpu-smoke 60 cpu -- $S "$B/synk-mnist" --device cpu --model mlp --epochs 1 --train-limit 2000 \
      --data "$data" --json "$res/mnist-cpu-smoke.json"
    step collectives-cpu 30 cpu -- $S "$B/synk-collectives" --device cpu --workers 2 --op all_reduce \
      --max-bytes 65536 --json "$res/collectives-cpu.json"
    step dispatch-cpu 30 cpu -- $S "$B/synk-dispatch" --device cpu --workers 2 --iters 200 --json "$res/dispatch-cpu.json"
    step peer-syntax 30 cpu -- python3 -m py_compile "$peers/torch_mnist_gpu.py" "$peers/torch_mnist.py"
  fi

  # The GPU steps, most telling first.
  # One synk::fork with a CUDA rank (--deterministic asks for the runtime
  # even with one worker): does forking a CUDA rank work in this sandbox?
  step fork-cuda 30 gpu -- $S "$B/synk-mnist" --device cuda --workers 1 --deterministic --model mlp --epochs 1 \
    --train-limit 2000 --seed 1 --data "$data" --json "$res/fork-cuda.json"
  step gtest-core 150 gpu -- bash "$self" _gtest gtest-core "$jobs" 60 core
  step mnist-mlp 30 gpu -- $S "$B/synk-mnist" --device cuda --model mlp --epochs "$epochs" --seed 1 \
    --data "$data" --json "$res/mnist-cuda-mlp.json"
  step mnist-cnn 45 gpu -- $S "$B/synk-mnist" --device cuda --model cnn --epochs "$epochs" --seed 1 \
    --data "$data" --json "$res/mnist-cuda-cnn.json"
  # The modern models (batch norm, residual blocks; attention, layer norm,
  # GELU, AdamW with a schedule): one epoch each.
  step mnist-resnet 45 gpu -- $S "$B/synk-mnist" --device cuda --model resnet --epochs 1 --seed 1 \
    --data "$data" --json "$res/mnist-cuda-resnet.json"
  step mnist-vit 45 gpu -- $S "$B/synk-mnist" --device cuda --model vit --epochs 1 --seed 1 \
    --data "$data" --json "$res/mnist-cuda-vit.json"
  if [ -n "$sanitizer" ] || [ "$dry" = 1 ] || [ "$planning" = 1 ]; then
    step memcheck 90 gpu -- bash "$self" _memcheck 3
  else
    skip_step memcheck "compute-sanitizer not found"
  fi
  step gtest-more 60 gpu -- bash "$self" _gtest gtest-more "$jobs" 60 more
  local nccl_ranks=$(( ngpu > 0 ? ngpu : 1 ))
  step collectives-nccl 20 gpu -- $S "$B/synk-collectives" --device cuda --backend nccl --workers "$nccl_ranks" \
    --op all_reduce --max-bytes 268435456 --json "$res/collectives-nccl$nccl_ranks.json"
  step collectives-hs2 20 gpu -- $S "$B/synk-collectives" --device cuda --backend host-staged --workers 2 \
    --op all_reduce --max-bytes 67108864 --json "$res/collectives-hs2.json"
  step collectives-hs4 25 gpu -- $S "$B/synk-collectives" --device cuda --backend host-staged --workers 4 \
    --op all_reduce --max-bytes 67108864 --json "$res/collectives-hs4.json"
  step dispatch 15 gpu -- $S "$B/synk-dispatch" --device cuda --workers 1 --iters 2000 --json "$res/dispatch-cuda.json"
  if [ "$planning" = 1 ] || [ -x "$B/synk-kernels" ]; then
    step kernels 30 gpu -- $S "$B/synk-kernels" --quick --json "$res/kernels.json"
  else
    skip_step kernels "synk-kernels not built"
  fi
  # PyTorch with a device (the env step asked): else the peer is skipped.
  if [ "$planning" = 0 ] && [ "$dry" = 0 ] && ! grep -q '^torch: [0-9].* cuda [0-9]' "$res/versions.txt" 2>/dev/null; then
    local why="python3 has no PyTorch that sees a GPU ($(grep '^torch:' "$res/versions.txt" 2>/dev/null))"
    skip_step torch-peer "$why"
    skip_step torch-peer-resnet "$why"
    skip_step torch-peer-vit "$why"
  else
    step torch-peer 90 gpu -- env PYTHONUNBUFFERED=1 python3 "$peers/torch_mnist_gpu.py" --model both --mode both \
      --epochs "$epochs" --seed 1 --data "$data" --json "$res/torch-gpu.json"
    step torch-peer-resnet 60 gpu -- env PYTHONUNBUFFERED=1 python3 "$peers/torch_mnist_gpu.py" --model resnet \
      --mode eager --epochs 1 --seed 1 --data "$data" --json "$res/torch-gpu-resnet.json"
    step torch-peer-vit 60 gpu -- env PYTHONUNBUFFERED=1 python3 "$peers/torch_mnist_gpu.py" --model vit \
      --mode eager --epochs 1 --seed 1 --data "$data" --json "$res/torch-gpu-vit.json"
  fi
  step mnist-mlp-hs2 25 gpu -- $S "$B/synk-mnist" --device cuda --workers 2 --host-staged --model mlp --epochs 1 \
    --seed 1 --data "$data" --json "$res/mnist-cuda-mlp-hs2.json"
  # One runtime rank on NCCL (--nccl):
  # gradient buckets all-reduced on NCCL's stream during backward (the
  # call in segments), then the same run with one all-reduce after
  # backward. The trace (in logs.tar.gz) shows where the buckets ran.
  step mnist-mlp-nccl1-buckets 30 gpu -- $S "$B/synk-mnist" --device cuda --nccl --workers 1 --model mlp --epochs 1 \
    --seed 1 --data "$data" --trace "$logs/trace-cuda-mlp-nccl1.json" --json "$res/mnist-cuda-mlp-nccl1-buckets.json"
  step mnist-mlp-nccl1-nobuckets 30 gpu -- $S "$B/synk-mnist" --device cuda --nccl --workers 1 --model mlp --epochs 1 \
    --seed 1 --data "$data" --trace "$logs/trace-cuda-mlp-nccl1-nobuckets.json" --bucket-bytes 0 \
    --json "$res/mnist-cuda-mlp-nccl1-nobuckets.json"
  if [ "$ngpu" -ge 2 ]; then
    step mnist-mlp-nccl 30 gpu -- $S "$B/synk-mnist" --device cuda --workers "$ngpu" --model mlp --epochs 1 \
      --seed 1 --data "$data" --json "$res/mnist-cuda-mlp-nccl$ngpu.json"
  fi
  # A build tree has no CPU reference of its own: train it here (CI), after
  # the GPU steps (the summary compares accuracies whenever both are there).
  if [ -z "$kit" ] && [ "$dry" = 0 ]; then
    for m in mlp cnn; do
      step "mnist-cpu-$m" 120 cpu -- $S "$B/synk-mnist" --device cpu --model "$m" --epochs "$epochs" --seed 1 \
        --data "$data" --json "$res/mnist-cpu-$m.json"
    done
  fi
  # The GPU fault matrix (3 CUDA ranks per case, 5 s timeouts that a first
  # context creation can exceed): last, and only when asked for.
  if [ "$faults" = 1 ]; then
    step gtest-faults 240 gpu -- bash "$self" _gtest gtest-faults "$jobs" 60 faults
  else
    skip_step gtest-faults "not asked for (--faults)"
  fi
}

run_main() {
  local build="" data_arg="" jobs_arg="" data peers ref=""
  outdir=${OUT:-$PWD/gpu-out} keep=0 epochs="" faults=0 planning=0 step_pid=""
  dry=0 strict=0 budget=${SYNK_GPU_BUDGET:-400} scale=${SYNK_GPU_SCALE:-1} reserve=10
  kit=${SYNK_GPU_KIT:-}
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) dry=1 ;;
      --strict) strict=1 ;;
      --faults) faults=1 ;;
      --kit) kit=$2; shift ;;
      --build) build=$2; shift ;;
      --out) outdir=$2; shift ;;
      --data) data_arg=$2; shift ;;
      --budget) budget=$2; shift ;;
      --scale) scale=$2; shift ;;
      --epochs) epochs=$2; shift ;;
      --jobs) jobs_arg=$2; shift ;;
      --keep) keep=1 ;;
      -h|--help) cat <<EOF
usage: scripts/gpu-check.sh run [--dry-run] [--strict] [--faults] [--kit DIR | --build DIR] [--out DIR]
                                [--data DIR] [--budget S] [--scale F] [--epochs N] [--jobs N] [--keep]
  --dry-run    print every step; run only the CPU-side ones (ldd, --help, CPU smoke runs); no GPU needed
  --strict     exit 1 unless every step passed and every skipped GPU test gave an accepted reason (CI)
  --faults     also run the GPU fault matrix (48 cases, 3 CUDA ranks each), last
  --kit DIR    the packed kit (default: \$SYNK_GPU_KIT, the kit this script sits in, or ./.gpu-kit)
  --build DIR  use a CUDA build tree (DIR/bin) instead of a kit (a GPU CI runner)
  --out DIR    where the (at most 5) result files go (default: \$OUT, else ./gpu-out); rewritten
               after every step, so a run cut off at any moment leaves what finished
  --data DIR   Fashion-MNIST (default: the kit's, else /usr/share/datasets/fashion-mnist)
  --budget S   wall-clock seconds for everything, unpacking and summaries included (default 400);
               each step's limit is cut to fit
  --scale F    multiply every step's own limit by F (a slower machine, a CI runner)
  --epochs N   epochs of the mnist and PyTorch runs (default: the kit's, else 3)
  --jobs N     GPU tests run at once, each in its own process (default 4)
  --keep       keep the scratch folder
EOF
        return 0 ;;
      *) die "run: unknown argument $1 (see run --help)" ;;
    esac
    shift
  done
  printf -v t_start '%(%s)T' -1
  deadline=$((t_start + budget))
  export PATH=$PATH:/usr/local/cuda/bin:/usr/local/nvidia/bin
  ulimit -c 0 2>/dev/null

  # The scratch folder and the result folder; old results go first, so that
  # what $outdir holds is always this run's.
  work=$(mktemp -d "${TMPDIR:-/tmp}/synk-gpu-run.XXXXXX")
  logs=$work/logs; res=$work/results
  mkdir -p "$logs" "$res" "$work/notes" "$outdir" || die "run: cannot make $outdir"
  outdir=$(cd "$outdir" && pwd)
  rm -f "$outdir"/{summary,tests,bench,kit}.json "$outdir"/logs.tar.gz "$outdir"/.*.tmp[0-9]*
  : >"$work/steps.tsv"
  summarize=""
  if command -v python3 >/dev/null && [ -f "$here/gpu/summarize.py" ]; then
    summarize=$here/gpu/summarize.py
  else
    note "python3 or $here/gpu/summarize.py missing: summary.json is the bare step table, written at the end"
  fi
  trap on_signal TERM INT HUP

  # Where the programs, data and peers are.
  if [ -n "$build" ]; then
    build=$(cd "$build" && pwd) || die "run: --build $build: no such folder"
    bindir=$build/bin; libdir=$build/lib; kit=""
    grep -q '#define SYNK_HAVE_CUDA 1' "$build/include/synk/config.hpp" 2>/dev/null ||
      { [ "$dry" = 1 ] && note "warning: $build has no CUDA" || die "run: $build is not a CUDA build (SYNK_HAVE_CUDA is not 1)"; }
    data=${data_arg:-${SYNK_MNIST_DIR:-/usr/share/datasets/fashion-mnist}}
    peers=$(cd "$here/.." && pwd)/bench/peers
  else
    if [ -z "$kit" ]; then
      if [ -f "$here/../payload.tar.xz" ]; then kit=$(cd "$here/.." && pwd)
      elif [ -f "$PWD/.gpu-kit/payload.tar.xz" ]; then kit=$PWD/.gpu-kit
      else kit=$(cd "$here/.." && pwd)/.gpu-kit; fi
    fi
    [ -f "$kit/payload.tar.xz" ] || die "run: no kit at $kit (run scripts/gpu-check.sh pack first, or pass --kit/--build)"
    kit=$(cd "$kit" && pwd)
    cp "$kit/kit.json" "$outdir/kit.json" 2>/dev/null
    bindir=$work/bin; libdir=$work/lib
    data=${data_arg:-$kit/data}
    peers=$kit/peers; ref=$kit/ref
    [ -z "$epochs" ] && epochs=$(grep -o '"epochs": *[0-9]*' "$kit/kit.json" 2>/dev/null | grep -o '[0-9]*$')
  fi
  epochs=${epochs:-3}
  jobs=${jobs_arg:-4}
  [ -n "$ref" ] && [ -d "$ref" ] && cp "$ref"/*.json "$res/" 2>/dev/null
  ngpu=0
  if [ "$dry" = 0 ] && command -v nvidia-smi >/dev/null; then
    ngpu=$(timeout 20 nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  fi

  # The plan: every step, so that the first summary (now) and every later
  # one name the steps not reached yet.
  : >"$work/plan.tsv"
  SYNK_LD="" sanitizer="" cuda_dirs="" nccl_lib=""
  planning=1
  [ -n "$kit" ] && step unpack 120 cpu --
  run_steps
  planning=0
  publish running

  if [ -n "$kit" ]; then
    step unpack 120 cpu -- bash "$self" _unpack "$kit" "$work"
    [ -x "$bindir/synk-mnist" ] || { publish finished logs; die "run: could not unpack $kit/payload.tar.xz (log: $outdir/logs.tar.gz)"; }
  fi

  sanitizer=$(command -v compute-sanitizer || true)
  for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -z "$sanitizer" ] && [ -x "$s" ] && sanitizer=$s
  done
  find_cuda_libs
  # Only synk's programs get this path: the payload's libstdc++ must not
  # reach python3/PyTorch, so the payload itself is found through RPATH.
  SYNK_LD=$cuda_dirs${nccl_lib:+:$nccl_lib}
  export SYNK_LD bindir libdir logs res kit sanitizer cuda_dirs nccl_lib here
  # The payload's libstdc++ needs the packing machine's glibc (2.36, Debian
  # 12): where the GPU machine's glibc is older, its own libstdc++ serves.
  if [ -n "$kit" ] && ! LD_LIBRARY_PATH=$SYNK_LD "$bindir/synk-mnist" --help >/dev/null 2>"$work/probe.err" &&
     grep -q 'GLIBC' "$work/probe.err"; then
    mkdir -p "$work/lib-unused"
    mv "$libdir"/libstdc++.so.6 "$libdir"/libgcc_s.so.1 "$work/lib-unused/" 2>/dev/null
    note "the payload's libstdc++ does not load here ($(head -1 "$work/probe.err")): using the system's"
  fi
  local mode=GPU; [ "$dry" = 1 ] && mode="dry run (no GPU step runs)"
  echo "gpu-check: $mode; programs $bindir; data $data; epochs $epochs; GPUs $ngpu; budget ${budget}s; out $outdir"
  echo "gpu-check: CUDA libraries: ${cuda_dirs:-none}; extra (NCCL): ${nccl_lib:-none}; compute-sanitizer: ${sanitizer:-none}"

  run_steps

  # The last results: the summary printed, logs.tar.gz (at most LOGS_CAP).
  trap - TERM INT HUP
  local verdict=0
  if [ -n "$summarize" ]; then
    publish finished logs || verdict=$?
  else
    awk -F'\t' 'BEGIN { print "[" } { printf "%s{\"step\": \"%s\", \"status\": \"%s\", \"exit\": \"%s\", \"seconds\": %s}\n",
      (NR > 1 ? "," : ""), $1, $2, $3, $4 } END { print "]" }' "$work/steps.tsv" >"$outdir/summary.json"
    awk -F'\t' '$2 == "fail" || $2 == "timeout" { bad = 1 } END { exit !bad }' "$work/steps.tsv" && verdict=1
    cp "$work/steps.tsv" "$logs/steps.tsv"
    cp -r "$res" "$logs/results"
    tar -C "$work" -czf "$outdir/logs.tar.gz" logs
  fi
  [ -s "$work/publish.err" ] && { note "the summaries' own errors:"; head -20 "$work/publish.err" >&2; }
  local t_end; printf -v t_end '%(%s)T' -1
  echo "gpu-check: results in $outdir: $(cd "$outdir" && ls | tr '\n' ' ')($(du -sh "$outdir" | cut -f1)); wall $(( t_end - t_start ))s"
  if [ "$keep" = 1 ]; then echo "gpu-check: scratch folder kept: $work"; else rm -rf "$work"; fi
  if [ "$strict" = 1 ]; then return "$verdict"; fi
  return 0
}

# ---- record -----------------------------------------------------------------------------

record_main() {
  local from=${1:-${OUT:-gpu-out}} repo
  repo=$(cd "$here/.." && pwd)
  [ -f "$from/summary.json" ] || die "record: no summary.json in $from"
  local dest
  dest=$(python3 - "$from/summary.json" <<'EOF'
import json, re, sys
s = json.load(open(sys.argv[1]))
env = s.get("environment", {})
gpu = (env.get("gpus") or [{}])[0]
slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.get("name", "unknown-gpu")).strip("-").lower()
print(f"{s.get('date', 'undated')[:10]}_{slug}_driver-{gpu.get('driver', 'unknown')}")
EOF
  ) || die "record: could not read $from/summary.json"
  local d=$repo/bench/results/gpu/$dest
  mkdir -p "$d"
  cp "$from"/*.json "$d/"
  echo "gpu-check: recorded $(cd "$from" && ls -- *.json | tr '\n' ' ')in $d (logs.tar.gz left out: attach it to the issue)"
}

# ---- main -------------------------------------------------------------------------------

case "${1:-}" in
  pack) shift; pack_main "$@" ;;
  run) shift; run_main "$@" ;;
  record) shift; record_main "$@" ;;
  # Internal: the bodies of steps, run under `timeout` in their own process.
  _env) env_step ;;
  _ldd) ldd_step ;;
  _help) export LD_LIBRARY_PATH=$SYNK_LD; help_step ;;
  _gtest) shift; export LD_LIBRARY_PATH=$SYNK_LD; gtest_step "$@" ;;
  _unpack) shift; unpack_step "$@" ;;
  _gtest_one) shift; gtest_one "$@" ;;
  _memcheck) shift; export LD_LIBRARY_PATH=$SYNK_LD; memcheck_step "$@" ;;
  -h|--help|help|"") usage ;;
  *) die "unknown command $1 (pack, run, record; --help)" ;;
esac
