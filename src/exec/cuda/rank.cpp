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
#include "exec/cuda/device.hpp"
#endif

namespace synk::exec {

namespace {

class CudaExecutor final : public SessionExecutor<CudaSession, CudaFunction> {
 public:
  CudaExecutor(const Graph& g, const ExecutorOptions& o)
      : SessionExecutor("CUDA executor", g, CudaSessionOptions{.seed = o.seed, .rank = o.rank, .device = o.ordinal}) {}

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
  bool on_device() const override { return true; }
  CUstream_st* stream() const override { return s_.stream(); }
  bool pin_host(const void* p, size_t bytes) override {
#if SYNK_HAVE_CUDA
    return cuda::register_host(const_cast<void*>(p), bytes);
#else
    return false;
#endif
  }
  void unpin_host(const void* p) noexcept override {
#if SYNK_HAVE_CUDA
    cuda::unregister_host(const_cast<void*>(p));
#endif
  }
  float* scratch_floats(size_t n) override {
#if SYNK_HAVE_CUDA
    if (scratch_.bytes() < n * sizeof(float)) {
      scratch_ = cuda::DeviceBuffer();  // free first: the old and new buffers need not fit together
      scratch_ = cuda::DeviceBuffer(std::max<size_t>(n, 1) * sizeof(float));
    }
    return static_cast<float*>(scratch_.data());
#else
    throw BackendError("CUDA executor: synk was built without CUDA");
#endif
  }

 private:
#if SYNK_HAVE_CUDA
  cuda::DeviceBuffer scratch_;  // a member of the derived class: freed before the session
#endif
};

}  // namespace

std::unique_ptr<Executor> make_cuda_executor(const Graph& g, const ExecutorOptions& opts) {
  return std::make_unique<CudaExecutor>(g, opts);
}

}  // namespace synk::exec
