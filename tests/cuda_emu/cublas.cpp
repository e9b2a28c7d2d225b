// tests/cuda_emu/cublas.cpp — the emulated cuBLAS: handles, and SGEMM,
// strided-batched SGEMM and SGEMV on OpenBLAS (cblas, column-major as
// cuBLAS), queued in stream order through synk_emu::enqueue so a capture
// records them. Arguments are checked as cuBLAS checks them (sizes,
// transposes and every leading dimension: CUBLAS_STATUS_INVALID_VALUE);
// an operand outside device-accessible memory, which would fault on a GPU,
// is refused with CUBLAS_STATUS_EXECUTION_FAILED and a line on stderr.
// The math mode is recorded but computation is always full FP32.
#include "emu.hpp"

#include <cblas.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  int device = 0;
};

namespace {

bool valid_op(cublasOperation_t t) { return t == CUBLAS_OP_N || t == CUBLAS_OP_T || t == CUBLAS_OP_C; }

// Real matrices: conjugate transpose is transpose.
CBLAS_TRANSPOSE cblas_op(cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

// The bytes a column-major rows x cols matrix with leading dimension ld spans.
size_t extent(int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return 0;
  return (static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + static_cast<size_t>(rows)) * sizeof(float);
}

// A vector of n elements at stride inc.
size_t vec_extent(int n, int inc) {
  if (n == 0) return 0;
  return (static_cast<size_t>(n - 1) * static_cast<size_t>(std::abs(inc)) + 1) * sizeof(float);
}

bool operand_ok(const char* fn, const char* name, const float* p, size_t bytes) {
  if (bytes == 0 || synk_emu::device_accessible(p, bytes)) return true;
  std::fprintf(stderr,
               "synk cuda emulation: %s: operand %s (%p, %zu bytes) is not device memory or registered host memory; "
               "a GPU would fault\n",
               fn, name, static_cast<const void*>(p), bytes);
  return false;
}

// alpha/beta: read now in host pointer mode, when the work runs in device
// pointer mode (both as cuBLAS).
struct Scalar {
  const float* p;
  float v;
  float get() const { return p ? *p : v; }
};

Scalar scalar(cublasHandle_t h, const float* p) {
  return h->pointer_mode == CUBLAS_POINTER_MODE_HOST ? Scalar{nullptr, *p} : Scalar{p, 0.f};
}

cublasStatus_t queue(cublasHandle_t h, std::function<void()> fn, const char* what) {
  const cudaError_t e = synk_emu::enqueue(h->stream, std::move(fn), what);
  if (e == cudaSuccess) return CUBLAS_STATUS_SUCCESS;
  (void)cudaGetLastError();  // cuBLAS reports its own status, not the runtime's last error
  return CUBLAS_STATUS_EXECUTION_FAILED;
}

// C = beta * C where alpha * A B adds nothing: beta = 0 writes zeros
// without reading C (NaN there does not survive), as BLAS defines it.
void scale(float* c, int m, int n, int ldc, float beta) {
  for (int j = 0; j < n; ++j) {
    float* col = c + static_cast<size_t>(j) * static_cast<size_t>(ldc);
    if (beta == 0.f)
      std::fill(col, col + m, 0.f);
    else if (beta != 1.f)
      for (int i = 0; i < m; ++i) col[i] *= beta;
  }
}

void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (alpha == 0.f || k == 0) {
    scale(c, m, n, ldc, beta);
    return;
  }
  if (beta == 0.f) scale(c, m, n, ldc, 0.f);  // C's old contents must not be read
  cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// cuBLAS's argument checks for gemm: sizes, transposes, leading dimensions.
bool gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc) {
  if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0) return false;
  if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k)) return false;
  if (ldb < std::max(1, tb == CUBLAS_OP_N ? k : n)) return false;
  return ldc >= std::max(1, m);
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {  // e.g. in a child forked after CUDA was initialised
    (void)cudaGetLastError();
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  auto* h = new cublasContext;
  h->device = device;
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;  // queued work holds copies of what it needs
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t stream) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = stream;
  // As cuBLAS does: a new stream resets the workspace to the library's own.
  h->workspace = nullptr;
  h->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void* workspace, size_t bytes) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  // cuBLAS wants 256-byte alignment; the memory must be the device's.
  if (bytes > 0 && (!workspace || reinterpret_cast<uintptr_t>(workspace) % 256 != 0 ||
                    !synk_emu::device_accessible(workspace, bytes)))
    return CUBLAS_STATUS_INVALID_VALUE;
  h->workspace = workspace;
  h->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  h->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float* alpha, const float* a, int lda, const float* b, int ldb, const float* beta,
                              float* c, int ldc) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  if (!operand_ok("cublasSgemm", "A", a, extent(na ? m : k, na ? k : m, lda)) ||
      !operand_ok("cublasSgemm", "B", b, extent(nb ? k : n, nb ? n : k, ldb)) ||
      !operand_ok("cublasSgemm", "C", c, extent(m, n, ldc)))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  const Scalar al = scalar(h, alpha), be = scalar(h, beta);
  return queue(h, [=] { gemm(ta, tb, m, n, k, al.get(), a, lda, b, ldb, be.get(), c, ldc); }, "cublasSgemm");
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* a, int lda, long long stride_a,
                                         const float* b, int ldb, long long stride_b, const float* beta, float* c,
                                         int ldc, long long stride_c, int count) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || count < 0 || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || count == 0) return CUBLAS_STATUS_SUCCESS;
  const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  const size_t ea = extent(na ? m : k, na ? k : m, lda), eb = extent(nb ? k : n, nb ? n : k, ldb),
               ec = extent(m, n, ldc);
  for (int i = 0; i < count; ++i)
    if (!operand_ok("cublasSgemmStridedBatched", "A", a + i * stride_a, ea) ||
        !operand_ok("cublasSgemmStridedBatched", "B", b + i * stride_b, eb) ||
        !operand_ok("cublasSgemmStridedBatched", "C", c + i * stride_c, ec))
      return CUBLAS_STATUS_EXECUTION_FAILED;
  const Scalar al = scalar(h, alpha), be = scalar(h, beta);
  return queue(
      h,
      [=] {
        const float av = al.get(), bv = be.get();
        for (int i = 0; i < count; ++i)
          gemm(ta, tb, m, n, k, av, a + i * stride_a, lda, b + i * stride_b, ldb, bv, c + i * stride_c, ldc);
      },
      "cublasSgemmStridedBatched");
}

cublasStatus_t cublasSgemv_v2(cublasHandle_t h, cublasOperation_t trans, int m, int n, const float* alpha,
                              const float* a, int lda, const float* x, int incx, const float* beta, float* y,
                              int incy) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(trans) || m < 0 || n < 0 || lda < std::max(1, m) || incx == 0 || incy == 0 || !alpha || !beta)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const int lx = trans == CUBLAS_OP_N ? n : m, ly = trans == CUBLAS_OP_N ? m : n;
  if (!operand_ok("cublasSgemv", "A", a, extent(m, n, lda)) ||
      !operand_ok("cublasSgemv", "x", x, vec_extent(lx, incx)) ||
      !operand_ok("cublasSgemv", "y", y, vec_extent(ly, incy)))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  const Scalar al = scalar(h, alpha), be = scalar(h, beta);
  return queue(
      h,
      [=] {
        const float av = al.get(), bv = be.get();
        // Negative increments walk the vector from its end, as in BLAS.
        float* y0 = incy > 0 ? y : y + static_cast<ptrdiff_t>(ly - 1) * -incy;
        if (bv != 1.f)
          for (int i = 0; i < ly; ++i) {
            float& yi = y0[static_cast<ptrdiff_t>(i) * incy];
            yi = bv == 0.f ? 0.f : yi * bv;
          }
        if (av != 0.f) cblas_sgemv(CblasColMajor, cblas_op(trans), m, n, av, a, lda, x, incx, 1.f, y, incy);
      },
      "cublasSgemv");
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "an error was detected when checking the current licensing";
  }
  return "unknown error";
}

}  // extern "C"
