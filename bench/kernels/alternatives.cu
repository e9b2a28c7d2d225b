// bench/kernels/alternatives.cu — the CUB / Thrust side of synk-kernels
// (alternatives.hpp): library reductions called as their documentation
// shows, and row-wise softmax / cross-entropy kernels whose reductions are
// CUB's warp and block primitives.
#include "alternatives.hpp"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_segmented_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>
#include <thrust/execution_policy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/reduce.h>

namespace synk_bench {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;

struct ToDouble {
  __host__ __device__ double operator()(float v) const { return static_cast<double>(v); }
};
struct PlusDouble {
  __host__ __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxF {
  __host__ __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// i -> i * step: segment offsets.
struct Times {
  int64_t step;
  __host__ __device__ int64_t operator()(int64_t i) const { return i * step; }
};

// Column-major walk over a row-major [rows, cols] matrix: element i is
// row i % rows of column i / rows.
struct ColumnMajorRead {
  const float* x;
  int64_t rows, cols;
  __host__ __device__ float operator()(int64_t i) const { return x[(i % rows) * cols + i / rows]; }
};

using Counting = thrust::counting_iterator<int64_t>;

// ---- row kernels -----------------------------------------------------------------------

using WarpReduce = cub::WarpReduce<float>;
using BlockReduce = cub::BlockReduce<float, kBlock>;

// The row's maximum and sum of exp(x - max), over one warp, every lane
// holding both at the end.
__device__ void warp_row_stats(const float* r, int64_t cols, WarpReduce::TempStorage& tmp, float& m, float& s) {
  const int lane = threadIdx.x % kWarp;
  float v = -INFINITY;
  for (int64_t k = lane; k < cols; k += kWarp) v = fmaxf(v, r[k]);
  m = __shfl_sync(0xffffffffu, WarpReduce(tmp).Reduce(v, MaxF{}), 0);
  __syncwarp();
  float e = 0.f;
  for (int64_t k = lane; k < cols; k += kWarp) e += expf(r[k] - m);
  s = __shfl_sync(0xffffffffu, WarpReduce(tmp).Sum(e), 0);
  __syncwarp();
}

__global__ void warp_softmax_kernel(const float* x, float* y, int64_t rows, int64_t cols) {
  __shared__ WarpReduce::TempStorage tmp[kBlock / kWarp];
  const int w = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t row = int64_t(blockIdx.x) * (kBlock / kWarp) + w; row < rows;
       row += int64_t(gridDim.x) * (kBlock / kWarp)) {
    const float* r = x + row * cols;
    float m, s;
    warp_row_stats(r, cols, tmp[w], m, s);
    const float inv = 1.f / s;
    for (int64_t k = lane; k < cols; k += kWarp) y[row * cols + k] = expf(r[k] - m) * inv;
  }
}

__global__ void warp_xent_kernel(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols) {
  __shared__ WarpReduce::TempStorage tmp[kBlock / kWarp];
  const int w = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t row = int64_t(blockIdx.x) * (kBlock / kWarp) + w; row < rows;
       row += int64_t(gridDim.x) * (kBlock / kWarp)) {
    const float* r = x + row * cols;
    float m, s;
    warp_row_stats(r, cols, tmp[w], m, s);
    if (lane == 0) loss[row] = m + logf(s) - r[labels[row]];
  }
}

// As warp_row_stats, over one block.
__device__ void block_row_stats(const float* r, int64_t cols, BlockReduce::TempStorage& tmp, float& m, float& s) {
  __shared__ float bm, bs;
  float v = -INFINITY;
  for (int64_t k = threadIdx.x; k < cols; k += kBlock) v = fmaxf(v, r[k]);
  const float mm = BlockReduce(tmp).Reduce(v, MaxF{});
  if (threadIdx.x == 0) bm = mm;
  __syncthreads();
  m = bm;
  float e = 0.f;
  for (int64_t k = threadIdx.x; k < cols; k += kBlock) e += expf(r[k] - m);
  const float ss = BlockReduce(tmp).Sum(e);
  if (threadIdx.x == 0) bs = ss;
  __syncthreads();
  s = bs;
}

__global__ void block_softmax_kernel(const float* x, float* y, int64_t rows, int64_t cols) {
  __shared__ BlockReduce::TempStorage tmp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* r = x + row * cols;
    float m, s;
    block_row_stats(r, cols, tmp, m, s);
    const float inv = 1.f / s;
    for (int64_t k = threadIdx.x; k < cols; k += kBlock) y[row * cols + k] = expf(r[k] - m) * inv;
    __syncthreads();  // tmp and the broadcast words are reused by the next row
  }
}

__global__ void block_xent_kernel(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols) {
  __shared__ BlockReduce::TempStorage tmp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* r = x + row * cols;
    float m, s;
    block_row_stats(r, cols, tmp, m, s);
    if (threadIdx.x == 0) loss[row] = m + logf(s) - r[labels[row]];
    __syncthreads();
  }
}

__global__ void pairs_to_index_kernel(const cub::KeyValuePair<int, float>* p, int32_t* idx, int64_t rows) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows; i += int64_t(gridDim.x) * blockDim.x)
    idx[i] = p[i].key;
}

int grid(int64_t units, int per_block) {
  const int64_t b = (units + per_block - 1) / per_block;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

}  // namespace

cudaError_t cub_sum(void* temp, size_t& temp_bytes, const float* x, float* y, int64_t n, cudaStream_t s) {
  return cub::DeviceReduce::Sum(temp, temp_bytes, x, y, n, s);
}

cudaError_t cub_sum_double(void* temp, size_t& temp_bytes, const float* x, double* y, int64_t n, cudaStream_t s) {
  return cub::DeviceReduce::TransformReduce(temp, temp_bytes, x, y, n, PlusDouble{}, ToDouble{}, 0.0, s);
}

float thrust_sum(const float* x, int64_t n, cudaStream_t s) {
  return thrust::reduce(thrust::cuda::par.on(s), x, x + n, 0.f);
}

cudaError_t cub_column_sums(void* temp, size_t& temp_bytes, const float* x, float* y, int64_t rows, int64_t cols,
                            cudaStream_t s) {
  auto in = thrust::make_transform_iterator(Counting(0), ColumnMajorRead{x, rows, cols});
  auto begin = thrust::make_transform_iterator(Counting(0), Times{rows});
  return cub::DeviceSegmentedReduce::Sum(temp, temp_bytes, in, y, cols, begin, begin + 1, s);
}

size_t argmax_pair_bytes() { return sizeof(cub::KeyValuePair<int, float>); }

cudaError_t cub_row_argmax(void* temp, size_t& temp_bytes, const float* x, void* pairs, int64_t rows, int64_t cols,
                           cudaStream_t s) {
  auto begin = thrust::make_transform_iterator(Counting(0), Times{cols});
  return cub::DeviceSegmentedReduce::ArgMax(temp, temp_bytes, x, static_cast<cub::KeyValuePair<int, float>*>(pairs),
                                            rows, begin, begin + 1, s);
}

void argmax_pairs_to_index(const void* pairs, int32_t* idx, int64_t rows, cudaStream_t s) {
  if (rows <= 0) return;
  pairs_to_index_kernel<<<grid(rows, kBlock), kBlock, 0, s>>>(
      static_cast<const cub::KeyValuePair<int, float>*>(pairs), idx, rows);
}

void warp_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  warp_softmax_kernel<<<grid(rows, kBlock / kWarp), kBlock, 0, s>>>(x, y, rows, cols);
}

void block_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  block_softmax_kernel<<<grid(rows, 1), kBlock, 0, s>>>(x, y, rows, cols);
}

void warp_xent(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  warp_xent_kernel<<<grid(rows, kBlock / kWarp), kBlock, 0, s>>>(x, labels, loss, rows, cols);
}

void block_xent(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  block_xent_kernel<<<grid(rows, 1), kBlock, 0, s>>>(x, labels, loss, rows, cols);
}

}  // namespace synk_bench
