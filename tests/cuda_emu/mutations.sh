#!/usr/bin/env bash
# tests/cuda_emu/mutations.sh — issue 24's evidence that the emulation catches what
# it must: each mutation of synk's GPU code applied, built in build-emu, the
# tests that should catch it run, the mutation reverted (git checkout of src/
# and kernels/: run it on a clean tree). Results: bench/results/emu_mutations_*.md.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! git diff --quiet -- src kernels; then echo "mutations.sh: src/ or kernels/ has changes; run it on a clean tree" >&2; exit 2; fi
export SYNK_EMU_DEVICES=4
run() {  # name, test regex
  cmake --build build-emu --target synk synk_tests synk_cuda_emu_kernel_tests > /tmp/mut-build.log 2>&1 || { echo "$1: BUILD FAILED"; tail -5 /tmp/mut-build.log; }
  (cd build-emu && ctest -R "$2" --timeout 120 > /tmp/mut-$1.log 2>&1)
  echo "$1: $(grep -E 'tests passed' /tmp/mut-$1.log)"
  grep -E '\*\*\*(Failed|Timeout|Exception)' /tmp/mut-$1.log | sed 's/.*Test *#[0-9]*: //' | head -5
  git checkout -- src kernels
}
# 1. the NCCL overlap path's stream wait removed
python3 - <<'P'
p='src/cuda/side_stream.cpp'; s=open(p).read()
a='  SYNK_CUDA_CHECK(cudaStreamWaitEvent(stream_, ev(ready_), 0));\n'
assert a in s; open(p,'w').write(s.replace(a,'',1))
P
run wait_event 'GpuRuntime|GpuNccl'
# 2. the reduction kernel's first __syncthreads() removed
python3 - <<'P'
p='kernels/reduce.cu'; s=open(p).read()
a='    buf[tid] = acc;\n    __syncthreads();\n'
assert a in s; open(p,'w').write(s.replace(a,'    buf[tid] = acc;\n',1))
P
run syncthreads 'GpuKernelsRandom|GpuOps|EmuKernels'
# 3. a wrong leading dimension in the gemm (ldb passed as lda)
python3 - <<'P'
p='src/exec/cuda/handles.cpp'; s=open(p).read()
a='as_int(std::max<int64_t>(ldb, 1), "ldb"), a,'
assert a in s; open(p,'w').write(s.replace(a,'as_int(std::max<int64_t>(lda, 1), "ldb"), a,',1))
P
run leading_dim 'GpuOps|GpuSession|GpuGrad|GpuTraining'
# 4. no synchronisation before the host reads a variable copied out
python3 - <<'P'
p='src/exec/cuda/rank.cpp'; s=open(p).read()
a='    SYNK_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, nb, cudaMemcpyDeviceToHost, s_.stream()));\n    SYNK_CUDA_CHECK(cudaStreamSynchronize(s_.stream()));\n'
assert a in s; open(p,'w').write(s.replace(a,'    SYNK_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, nb, cudaMemcpyDeviceToHost, s_.stream()));\n',1))
P
run missing_sync 'GpuRuntime|GpuTraining|GpuRankMemory|GpuRecovery'
# 5. the segment recapture defect back (capture into the live set)
python3 - <<'P'
p='src/exec/cuda/session.cpp'; s=open(p).read()
a='        cp.segs = std::move(fresh);\n'
assert a in s
s=s.replace('        std::vector<cuda::GraphExec> fresh;\n', '        std::vector<cuda::GraphExec>& fresh = cp.segs;\n        fresh.clear();\n', 1)
s=s.replace(a, '', 1)
open(p,'w').write(s)
P
run recapture 'GpuGraphReplay|GpuSession'
git checkout -- src kernels
cmake --build build-emu > /dev/null 2>&1
echo mutations done
