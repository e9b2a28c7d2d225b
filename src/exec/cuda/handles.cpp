// exec/cuda/handles.cpp — the cuBLAS handle, GEMM wrappers and CUDA graph
// capture of exec/cuda/handles.hpp. Built only with CUDA (host compiler;
// CUDA headers come from the CUDA::cudart / CUDA::cublas targets).
#include "synk/config.hpp"

#if SYNK_HAVE_CUDA

#include "exec/cuda/handles.hpp"

#include <algorithm>
#include <climits>

namespace synk::cuda {

namespace {

// cuBLAS takes int dimensions; refuse rather than truncate.
int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw BackendError(std::string("cuBLAS: ") + what + " = " + std::to_string(v) + " is outside the int range");
  return static_cast<int>(v);
}

// 32 MiB: what cuBLAS recommends for Hopper; plenty for SGEMM on Ampere.
constexpr size_t kBlasWorkspace = size_t{32} << 20;

}  // namespace

void throw_cublas_error(int status, const char* call, const char* file, int line) {
  const auto st = static_cast<cublasStatus_t>(status);
  throw_call_error("cuBLAS", call, file, line, cublasGetStatusName(st), cublasGetStatusString(st));
}

Blas::Blas(cudaStream_t stream, bool tf32) : stream_(stream), workspace_(kBlasWorkspace) {
  SYNK_CUBLAS_CHECK(cublasCreate(&h_));
  try {
    // SetStream resets the workspace to cuBLAS's own pool: set ours after.
    SYNK_CUBLAS_CHECK(cublasSetStream(h_, stream));
    SYNK_CUBLAS_CHECK(cublasSetWorkspace(h_, workspace_.data(), workspace_.bytes()));
    SYNK_CUBLAS_CHECK(cublasSetMathMode(h_, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    SYNK_CUBLAS_CHECK(cublasSetPointerMode(h_, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    (void)cublasDestroy(h_);
    throw;
  }
}

Blas::~Blas() {
  if (h_) (void)cublasDestroy(h_);
}

void Blas::gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) const {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 1.f) return;
    if (beta != 0.f) throw BackendError("cuBLAS: gemm with k = 0 and beta other than 0 or 1");
    SYNK_CUDA_CHECK(cudaMemset2DAsync(c, static_cast<size_t>(ldc) * sizeof(float), 0,
                                      static_cast<size_t>(n) * sizeof(float), static_cast<size_t>(m), stream_));
    return;
  }
  // Row-major C = A B is column-major C^T = B^T A^T: swap the operands.
  const float alpha = 1.f;
  SYNK_CUBLAS_CHECK(cublasSgemm(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                as_int(n, "n"), as_int(m, "m"), as_int(k, "k"), &alpha, b,
                                as_int(std::max<int64_t>(ldb, 1), "ldb"), a, as_int(std::max<int64_t>(lda, 1), "lda"),
                                &beta, c, as_int(std::max<int64_t>(ldc, 1), "ldc")));
}

void Blas::gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                        int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float* c, int64_t ldc,
                        int64_t stride_c, int64_t count) const {
  if (m == 0 || n == 0 || count == 0) return;
  if (k == 0) {
    // Every product is zero; the outputs are `count` blocks of m rows.
    for (int64_t i = 0; i < count; ++i)
      SYNK_CUDA_CHECK(cudaMemset2DAsync(c + i * stride_c, static_cast<size_t>(ldc) * sizeof(float), 0,
                                        static_cast<size_t>(n) * sizeof(float), static_cast<size_t>(m), stream_));
    return;
  }
  const float alpha = 1.f, beta = 0.f;
  SYNK_CUBLAS_CHECK(cublasSgemmStridedBatched(
      h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, as_int(n, "n"), as_int(m, "m"),
      as_int(k, "k"), &alpha, b, as_int(std::max<int64_t>(ldb, 1), "ldb"), static_cast<long long>(stride_b), a,
      as_int(std::max<int64_t>(lda, 1), "lda"), static_cast<long long>(stride_a), &beta, c,
      as_int(std::max<int64_t>(ldc, 1), "ldc"), static_cast<long long>(stride_c), as_int(count, "batch count")));
}

void GraphExec::reset() noexcept {
  if (e_) {
    (void)cudaGraphExecDestroy(e_);
    e_ = nullptr;
  }
}

void begin_capture(cudaStream_t stream) {
  SYNK_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
}

GraphExec end_capture(cudaStream_t stream) {
  cudaGraph_t graph = nullptr;
  SYNK_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0ULL);
  (void)cudaGraphDestroy(graph);
  SYNK_CUDA_CHECK(st);
  GraphExec out;
  out.set(exec);
  return out;
}

void abort_capture(cudaStream_t stream) noexcept {
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
}

}  // namespace synk::cuda

#endif  // SYNK_HAVE_CUDA
