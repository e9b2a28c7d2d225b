// kernels/shape.hpp — the index rules of the shape ops (slice, its
// gradient, concat, embedding), written once for the CPU kernels
// (src/exec/cpu/kernels_shape.cpp) and the CUDA kernels (kernels/shape.cu):
// where an element of a slice lies in the whole tensor, which indices an
// embedding accepts, and how a kernel reports the first bad one.
//
// Only <cstdint> and SYNK_HD functions (see elementwise.hpp).
#pragma once

#include <cstdint>

#include "elementwise.hpp"  // SYNK_HD
#include "kernel_types.hpp"

namespace synk::shape {

// Element i of the part [outer, end - begin, inner] of g: its index in the
// whole tensor [outer, n, inner].
SYNK_HD inline int64_t part_to_whole(const plan::SliceGeom& g, int64_t i) {
  const int64_t w = g.width();
  const int64_t o = i / w, r = i - o * w;
  return (o * g.n + g.begin) * g.inner + r;
}

// Element j of the whole tensor: its index in the part, or -1 where the
// part does not cover it (SliceGrad writes zero there).
SYNK_HD inline int64_t whole_to_part(const plan::SliceGeom& g, int64_t j) {
  const int64_t row = g.n * g.inner;
  const int64_t o = j / row, r = j - o * row;
  const int64_t lo = g.begin * g.inner, hi = g.end * g.inner;
  return r >= lo && r < hi ? o * g.width() + (r - lo) : -1;
}

// An embedding index the table [v, D] has a row for.
SYNK_HD inline bool index_ok(int32_t idx, int64_t v) { return idx >= 0 && static_cast<int64_t>(idx) < v; }

// The first bad index of a step, as one word the kernels lower with
// atomicMin: the position (saturated to 32 bits) above the index's bits,
// so the smallest word is the first position and carries its index.
// kNoBadIndex: none.
inline constexpr unsigned long long kNoBadIndex = ~0ull;
SYNK_HD inline unsigned long long bad_index_word(int64_t pos, int32_t idx) {
  const unsigned long long p = pos < 0xffffffffll ? static_cast<unsigned long long>(pos) : 0xfffffffeull;
  return (p << 32) | static_cast<uint32_t>(idx);
}
inline int64_t bad_index_pos(unsigned long long w) { return static_cast<int64_t>(w >> 32); }
inline int32_t bad_index_value(unsigned long long w) { return static_cast<int32_t>(static_cast<uint32_t>(w)); }

}  // namespace synk::shape
