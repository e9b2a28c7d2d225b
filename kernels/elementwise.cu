// kernels/elementwise.cu — elementwise CUDA kernels (fill, axpy).
//
// Grid-stride loops with a capped grid: one launch shape serves every n,
// and 64-bit indices keep arrays over 2^31 elements correct.
#include "elementwise.cuh"

#include <algorithm>

namespace synk::kernels {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, 65535));
}

__global__ void fill_kernel(float* y, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = value;
}

__global__ void axpy_kernel(int64_t n, float a, const float* x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a * x[i] + y[i];
}

}  // namespace

void fill(float* y, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, n, value);
}

void axpy(int64_t n, float a, const float* x, float* y, cudaStream_t stream) {
  if (n <= 0) return;
  axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, a, x, y);
}

}  // namespace synk::kernels
