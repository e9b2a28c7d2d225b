// bench/kernels/alternatives.hpp — what synk-kernels times synk's kernels
// against: the CUDA toolkit's own libraries (CUB device-wide and segmented
// reductions, Thrust) and row-wise kernels built from CUB's warp and block
// primitives. Host-callable; the device code is in alternatives.cu.
//
// The CUB calls are two-phase, as CUB's: with temp == nullptr they only set
// temp_bytes. Nothing here synchronises except thrust_sum (Thrust returns
// the sum to the host) or checks errors: the caller checks
// cudaGetLastError() / the returned status.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace synk_bench {

// y[0] = sum of x[0, n), float accumulation.
cudaError_t cub_sum(void* temp, size_t& temp_bytes, const float* x, float* y, int64_t n, cudaStream_t s);
// y[0] = sum of x[0, n), double accumulation (as synk's reduce kernel).
cudaError_t cub_sum_double(void* temp, size_t& temp_bytes, const float* x, double* y, int64_t n, cudaStream_t s);
// The sum, returned to the host (thrust::reduce on stream s; allocates its
// temporary storage and synchronises in every call).
float thrust_sum(const float* x, int64_t n, cudaStream_t s);

// y[c] = sum over r of x[r * cols + c] (a bias gradient), one segment per
// column read through a strided iterator.
cudaError_t cub_column_sums(void* temp, size_t& temp_bytes, const float* x, float* y, int64_t rows, int64_t cols,
                            cudaStream_t s);

// Per row of x [rows, cols]: the first largest element, as
// cub::KeyValuePair<int, float> {column, value} in `pairs`
// (argmax_pair_bytes() each).
size_t argmax_pair_bytes();
cudaError_t cub_row_argmax(void* temp, size_t& temp_bytes, const float* x, void* pairs, int64_t rows, int64_t cols,
                           cudaStream_t s);
// The columns of `pairs` into idx (for checking; not timed).
void argmax_pairs_to_index(const void* pairs, int32_t* idx, int64_t rows, cudaStream_t s);

// Softmax over each row of x [rows, cols]: one warp per row
// (cub::WarpReduce) or one 256-thread block per row (cub::BlockReduce).
void warp_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t s);
void block_softmax(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t s);

// loss[r] = logsumexp(x[r, :]) - x[r, labels[r]] (labels in range), one warp
// or one block per row as above.
void warp_xent(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols, cudaStream_t s);
void block_xent(const float* x, const int32_t* labels, float* loss, int64_t rows, int64_t cols, cudaStream_t s);

}  // namespace synk_bench
