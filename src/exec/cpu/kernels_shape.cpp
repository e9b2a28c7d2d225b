// exec/cpu/kernels_shape.cpp — slice, its gradient, concat's parts and the
// embedding gather / scatter-add on the CPU.
//
// The slice kernels move rows of `width` contiguous 4-byte elements (the
// part of one outer index), so each is a memcpy per outer index; the index
// rules are kernels/shape.hpp's, shared with the CUDA kernels. The
// embedding gradient adds rows in index order, so it is the same bit for
// bit on every call whatever the repeated indices.
#include <algorithm>
#include <cstring>

#include "exec/cpu/kernels.hpp"
#include "shape.hpp"  // kernels/

namespace synk::cpu {

void slice_copy(const SliceGeom& g, const uint32_t* x, uint32_t* y) {
  const int64_t w = g.width();
  if (w == 0) return;
  for (int64_t o = 0; o < g.outer; ++o)
    std::memcpy(y + o * w, x + shape::part_to_whole(g, o * w), static_cast<size_t>(w) * sizeof(uint32_t));
}

void slice_place(const SliceGeom& g, const uint32_t* x, uint32_t* y, bool zero_rest) {
  const int64_t w = g.width(), row = g.n * g.inner, lo = g.begin * g.inner, hi = g.end * g.inner;
  for (int64_t o = 0; o < g.outer; ++o) {
    uint32_t* r = y + o * row;
    if (zero_rest) {
      std::fill(r, r + lo, 0u);
      std::fill(r + hi, r + row, 0u);
    }
    if (w > 0) std::memcpy(r + lo, x + o * w, static_cast<size_t>(w) * sizeof(uint32_t));
  }
}

namespace {

int64_t first_bad(int64_t rows, int64_t v, const int32_t* idx) {
  for (int64_t r = 0; r < rows; ++r)
    if (!shape::index_ok(idx[r], v)) return r;
  return -1;
}

}  // namespace

int64_t embedding(int64_t rows, int64_t d, int64_t v, const float* table, const int32_t* idx, float* y) {
  if (const int64_t bad = first_bad(rows, v, idx); bad >= 0) return bad;
  if (d == 0) return -1;
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(y + r * d, table + static_cast<int64_t>(idx[r]) * d, static_cast<size_t>(d) * sizeof(float));
  return -1;
}

int64_t embedding_grad(int64_t rows, int64_t d, int64_t v, const float* g, const int32_t* idx, float* dt) {
  if (const int64_t bad = first_bad(rows, v, idx); bad >= 0) return bad;
  std::fill(dt, dt + v * d, 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict q = dt + static_cast<int64_t>(idx[r]) * d;
    const float* __restrict s = g + r * d;
    for (int64_t j = 0; j < d; ++j) q[j] += s[j];
  }
  return -1;
}

}  // namespace synk::cpu
