// kernels/shape.cu — the shape ops' kernels: slice, its gradient, concat's
// parts, and the embedding gather and scatter-add.
//
// The index rules are kernels/shape.hpp's, the CPU kernels' own
// (src/exec/cpu/kernels_shape.cpp). Slices move 4-byte elements (f32 or
// i32 alike), one thread per element of what is written. The embedding
// kernels never read outside the table: a bad index makes its output row
// NaN (the gradient skips it) and lowers the step's bad-index word
// (shape::bad_index_word), which the session reads after the call. The
// gradient adds rows with atomics, so repeated indices may sum in any order.
#include "launch.cuh"
#include "ops.cuh"
#include "shape.hpp"

namespace synk::kernels {
namespace {

__global__ void slice_copy_kernel(SliceGeom g, int64_t total, const uint32_t* x, uint32_t* y) {
  SYNK_GRID_LOOP(i, total) y[i] = x[shape::part_to_whole(g, i)];
}

__global__ void slice_place_kernel(SliceGeom g, int64_t total, const uint32_t* x, uint32_t* y) {
  SYNK_GRID_LOOP(i, total) y[shape::part_to_whole(g, i)] = x[i];
}

// Every element of the whole tensor: the part's value, or zero.
__global__ void slice_grad_kernel(SliceGeom g, int64_t total, const uint32_t* x, uint32_t* y) {
  SYNK_GRID_LOOP(j, total) {
    const int64_t p = shape::whole_to_part(g, j);
    y[j] = p >= 0 ? x[p] : 0u;
  }
}

// One thread per output element; with d == 0 one per index, so that a bad
// index is still reported.
__global__ void embedding_kernel(int64_t rows, int64_t d, int64_t v, const float* table, const int32_t* idx,
                                 float* y, unsigned long long* bad) {
  const int64_t dd = d > 0 ? d : 1;
  SYNK_GRID_LOOP(i, rows * dd) {
    const int64_t r = i / dd, j = i - r * dd;
    const int32_t id = idx[r];
    if (!shape::index_ok(id, v)) {
      if (j == 0) atomicMin(bad, shape::bad_index_word(r, id));
      if (j < d) y[i] = __int_as_float(0x7fc00000);
      continue;
    }
    if (j < d) y[i] = table[static_cast<int64_t>(id) * d + j];
  }
}

// dt must be zero: each element of g is added into its index's row.
__global__ void embedding_grad_kernel(int64_t rows, int64_t d, int64_t v, const float* g, const int32_t* idx,
                                      float* dt, unsigned long long* bad) {
  const int64_t dd = d > 0 ? d : 1;
  SYNK_GRID_LOOP(i, rows * dd) {
    const int64_t r = i / dd, j = i - r * dd;
    const int32_t id = idx[r];
    if (!shape::index_ok(id, v)) {
      if (j == 0) atomicMin(bad, shape::bad_index_word(r, id));
      continue;
    }
    if (j < d) atomicAdd(dt + static_cast<int64_t>(id) * d + j, g[i]);
  }
}

}  // namespace

void slice_copy(const SliceGeom& g, const uint32_t* x, uint32_t* y, cudaStream_t stream) {
  const int64_t total = g.outer * g.width();
  if (total <= 0) return;
  SYNK_LAUNCH(slice_copy_kernel, grid_for(total), kThreads, 0, stream)(g, total, x, y);
}

void slice_place(const SliceGeom& g, const uint32_t* x, uint32_t* y, bool zero_rest, cudaStream_t stream) {
  const int64_t total = zero_rest ? g.outer * g.n * g.inner : g.outer * g.width();
  if (total <= 0) return;
  if (zero_rest) SYNK_LAUNCH(slice_grad_kernel, grid_for(total), kThreads, 0, stream)(g, total, x, y);
  else SYNK_LAUNCH(slice_place_kernel, grid_for(total), kThreads, 0, stream)(g, total, x, y);
}

void embedding(int64_t rows, int64_t d, int64_t v, const float* table, const int32_t* idx, float* y,
               unsigned long long* bad, cudaStream_t stream) {
  const int64_t total = rows * (d > 0 ? d : 1);
  if (total <= 0) return;
  SYNK_LAUNCH(embedding_kernel, grid_for(total), kThreads, 0, stream)(rows, d, v, table, idx, y, bad);
}

void embedding_grad_add(int64_t rows, int64_t d, int64_t v, const float* g, const int32_t* idx, float* dt,
                        unsigned long long* bad, cudaStream_t stream) {
  const int64_t total = rows * (d > 0 ? d : 1);
  if (total <= 0) return;
  SYNK_LAUNCH(embedding_grad_kernel, grid_for(total), kThreads, 0, stream)(rows, d, v, g, idx, dt, bad);
}

}  // namespace synk::kernels
