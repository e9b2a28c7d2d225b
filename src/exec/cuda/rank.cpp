// src/exec/cuda/rank.cpp — the CUDA backend as a rank's Executor: a
// CudaSession on the rank's GPU; variables and, on request, outputs in
// device memory.
#include <algorithm>
#include <cstring>

#include "exec/session_executor.hpp"
#include "synk/config.hpp"
#include "synk/cuda_session.hpp"
#include "synk/error.hpp"
#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/device.hpp"
#include "cuda/timeline.hpp"
#include "ops.cuh"
#endif

namespace synk::exec {

namespace {

class CudaExecutor final : public SessionExecutor<CudaSession, CudaFunction> {
 public:
  CudaExecutor(const Graph& g, const ExecutorOptions& o)
      : SessionExecutor("CUDA executor", g, CudaSessionOptions{.seed = o.seed, .rank = o.rank, .device = o.ordinal, .rank_sum = o.rank_sum}) {}

  void read_variable(int32_t id, void* dst, size_t nb) override {
    if (!nb) return;
    const Node& n = s_.graph().node(id);
    Array a = s_.get(n.name);
    if (a.nbytes() != nb) throw BackendError("CUDA executor: variable '" + n.name + "' size mismatch");
    std::memcpy(dst, a.raw(), nb);
  }
  void write_variable(int32_t id, const void* src, size_t nb) override {
    if (!nb) return;
    const Node& n = s_.graph().node(id);
    s_.set(n.name, ArrayView{n.dtype, n.shape, src});
  }
  CUstream_st* stream() const override { return s_.stream(); }
  bool pin_host(const void* p, size_t bytes) override {
#if SYNK_HAVE_CUDA
    return cuda::register_host(const_cast<void*>(p), bytes);
#else
    (void)p;
    (void)bytes;
    return false;
#endif
  }
  void unpin_host(const void* p) noexcept override {
#if SYNK_HAVE_CUDA
    cuda::unregister_host(const_cast<void*>(p));
#else
    (void)p;
#endif
  }

#if SYNK_HAVE_CUDA
  void* scratch(Scratch use, size_t bytes) override {
    cuda::DeviceBuffer& b = scratch_[static_cast<size_t>(use)];
    if (b.bytes() < bytes || !b.data()) {
      b = cuda::DeviceBuffer();  // free first: the old and new buffers need not fit together
      b = cuda::DeviceBuffer(std::max<size_t>(bytes, sizeof(float)));
    }
    return b.data();
  }
  // On the compute stream, then waited for: the host's buffer may go as
  // soon as this returns, and a variable read must see every step before it.
  void copy_in(void* dst, const void* host_src, size_t nb) override {
    if (!nb) return;
    SYNK_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, nb, cudaMemcpyHostToDevice, s_.stream()));
    SYNK_CUDA_CHECK(cudaStreamSynchronize(s_.stream()));
  }
  void copy_out(void* host_dst, const void* src, size_t nb) override {
    if (!nb) return;
    SYNK_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, nb, cudaMemcpyDeviceToHost, s_.stream()));
    SYNK_CUDA_CHECK(cudaStreamSynchronize(s_.stream()));
  }
  void scale_add(float* y, const float* x, size_t n, float w, bool add) override {
    kernels::scale_add(static_cast<int64_t>(n), w, x, y, add, s_.stream());
    SYNK_CUDA_CHECK(cudaGetLastError());
  }
  void zero(void* p, size_t nb) override {
    if (nb) SYNK_CUDA_CHECK(cudaMemsetAsync(p, 0, nb, s_.stream()));
  }
  // One kernel per chunk: the same roundings, in the same order, as the CPU.
  void weighted_sum(float* y, const float* x, size_t n, std::span<const float> w) override {
    zero(y, n * sizeof(float));
    for (size_t c = 0; c < w.size(); ++c) scale_add(y, x + c * n, n, w[c], true);
  }
  cuda::GpuMarks* gpu_marks() override {
    if (!timeline_) timeline_ = std::make_unique<cuda::StreamTimeline>();
    return timeline_.get();
  }
#else
  [[noreturn]] static void no_cuda() { throw BackendError("CUDA executor: synk was built without CUDA"); }
  void* scratch(Scratch, size_t) override { no_cuda(); }
  void copy_in(void*, const void*, size_t) override { no_cuda(); }
  void copy_out(void*, const void*, size_t) override { no_cuda(); }
  void scale_add(float*, const float*, size_t, float, bool) override { no_cuda(); }
  void zero(void*, size_t) override { no_cuda(); }
  void weighted_sum(float*, const float*, size_t, std::span<const float>) override { no_cuda(); }
#endif

 private:
#if SYNK_HAVE_CUDA
  cuda::DeviceBuffer scratch_[4];  // members of the derived class: freed before the session
  std::unique_ptr<cuda::StreamTimeline> timeline_;  // the timeline's GPU tracks (gpu_marks)
#endif
};

}  // namespace

std::unique_ptr<Executor> make_cuda_executor(const Graph& g, const ExecutorOptions& opts) {
  return std::make_unique<CudaExecutor>(g, opts);
}

}  // namespace synk::exec
