// exec/cuda/handles.hpp — RAII owners of the cuBLAS and CUDA graph handles
// the graph executor uses (cuBLAS handle with its workspace, instantiated
// CUDA graph) and the row-major GEMM wrappers over cuBLAS. The device
// scope and the stream are the device layer's (cuda/stream.hpp).
//
// Private to src/exec/cuda; includes the CUDA headers, so only files built
// with SYNK_HAVE_CUDA include it. Constructors throw BackendError naming the
// failed call; destructors never throw.
#pragma once

#include <cstdint>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/device.hpp"

namespace synk::cuda {

// Throws BackendError for a failed cuBLAS call (call text, file:line,
// device, cuBLAS status name and text).
[[noreturn]] void throw_cublas_error(int status, const char* call, const char* file, int line);

#define SYNK_CUBLAS_CHECK(call)                                                         \
  do {                                                                                  \
    const int synk_cublas_status_ = static_cast<int>(call);                             \
    if (synk_cublas_status_ != 0)                                                       \
      ::synk::cuda::throw_cublas_error(synk_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// A cuBLAS handle bound to one stream, with a fixed user workspace so that
// GEMMs can be captured into CUDA graphs (cuBLAS then allocates nothing
// during capture). FP32 by default; tf32 = true enables TF32 tensor cores.
class Blas {
 public:
  Blas(cudaStream_t stream, bool tf32);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t get() const { return h_; }

  // Row-major C[m,n] = op(A) op(B) + beta C with leading dimensions in
  // elements (op(A) is [m,k], op(B) is [k,n]); k == 0 gives beta * C.
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float beta, float* c, int64_t ldc) const;
  // `count` independent products with element strides between operands
  // (a stride of 0 reuses one operand for every product). beta = 0.
  void gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float* c, int64_t ldc,
                    int64_t stride_c, int64_t count) const;

 private:
  cublasHandle_t h_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer workspace_;
};

// An instantiated CUDA graph; empty until set.
class GraphExec {
 public:
  GraphExec() = default;
  ~GraphExec() { reset(); }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  GraphExec(GraphExec&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  GraphExec& operator=(GraphExec&& o) noexcept {
    if (this != &o) {
      reset();
      e_ = o.e_;
      o.e_ = nullptr;
    }
    return *this;
  }
  bool empty() const { return e_ == nullptr; }
  cudaGraphExec_t get() const { return e_; }
  void reset() noexcept;
  void set(cudaGraphExec_t e) noexcept {
    reset();
    e_ = e;
  }

 private:
  cudaGraphExec_t e_ = nullptr;
};

// Captures everything `enqueue` puts on `stream` into a graph and
// instantiates it. If enqueue throws, the capture is ended and discarded
// before the exception goes on.
template <class F>
GraphExec capture(cudaStream_t stream, F&& enqueue);

// ---- implementation of capture ----------------------------------------------------------
void begin_capture(cudaStream_t stream);
GraphExec end_capture(cudaStream_t stream);
void abort_capture(cudaStream_t stream) noexcept;

template <class F>
GraphExec capture(cudaStream_t stream, F&& enqueue) {
  begin_capture(stream);
  try {
    enqueue();
  } catch (...) {
    abort_capture(stream);
    throw;
  }
  return end_capture(stream);
}

}  // namespace synk::cuda
