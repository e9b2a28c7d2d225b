// src/runtime/sort.cpp — Runtime::argsort / sort: a parallel merge sort of
// one Data column over every rank, built on map() and shared arrays.
//
// Each row becomes one 64-bit key: the value's bits made order-preserving as
// an unsigned number (f32: NaNs made one quiet NaN, sorting last; -0.0 made
// 0.0, which `<` finds equal) in the high half, the row index in the low
// half. Keys are unique, and ordering them is exactly a stable sort by value.
// Round 0: each rank sorts one contiguous chunk of keys (std::sort). Then
// pairs of sorted runs are merged, each merge cut into as many pieces as
// there are ranks by merge path (a binary search per cut), ping-ponging
// between two shared buffers, until one run is left.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/core.hpp"

namespace synk {

namespace {

struct KeyJob {
  DataRef src, dst;
  int64_t column, cols, lo, hi;
};

struct MergeJob {
  DataRef src, dst;
  int64_t a_lo, a_hi, b_hi;  // runs [a_lo, a_hi) and [a_hi, b_hi) of src
  int64_t k0, k1;            // this piece: merged positions [k0, k1) (relative to a_lo)
};

uint64_t* keys(JobContext& ctx, const DataRef& d) {
  return reinterpret_cast<uint64_t*>(ctx.rows<int32_t>(d).data());
}

uint32_t order_bits(float v) {
  if (std::isnan(v)) v = std::numeric_limits<float>::quiet_NaN();
  if (v == 0.f) v = 0.f;
  const uint32_t u = std::bit_cast<uint32_t>(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

void make_keys(JobContext& ctx, const KeyJob& j) {
  uint64_t* out = keys(ctx, j.dst);
  if (j.src.dtype == DType::f32) {
    const float* x = ctx.rows<float>(j.src).data();
    for (int64_t r = j.lo; r < j.hi; ++r)
      out[r] = (uint64_t{order_bits(x[r * j.cols + j.column])} << 32) | static_cast<uint64_t>(r);
  } else {
    const int32_t* x = ctx.rows<int32_t>(j.src).data();
    for (int64_t r = j.lo; r < j.hi; ++r)
      out[r] = (uint64_t{static_cast<uint32_t>(x[r * j.cols + j.column]) ^ 0x80000000u} << 32) |
               static_cast<uint64_t>(r);
  }
  std::sort(out + j.lo, out + j.hi);
}

// How many of the first k merged keys come from a (keys are unique).
int64_t split(const uint64_t* a, int64_t m, const uint64_t* b, int64_t n, int64_t k) {
  int64_t lo = std::max<int64_t>(0, k - n), hi = std::min(k, m);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] < b[k - mid - 1]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

void merge_piece(JobContext& ctx, const MergeJob& j) {
  const uint64_t* s = keys(ctx, j.src);
  uint64_t* d = keys(ctx, j.dst);
  const uint64_t* a = s + j.a_lo;
  const uint64_t* b = s + j.a_hi;
  const int64_t m = j.a_hi - j.a_lo, n = j.b_hi - j.a_hi;
  const int64_t i0 = split(a, m, b, n, j.k0), i1 = split(a, m, b, n, j.k1);
  std::merge(a + i0, a + i1, b + (j.k0 - i0), b + (j.k1 - i1), d + j.a_lo + j.k0);
}

}  // namespace

std::vector<int64_t> Runtime::argsort(const Data& d, int64_t column) {
  checked("argsort");
  if (!d.valid()) throw ArgumentError("Runtime::argsort: empty Data");
  if (!detail::owns_data(*impl_, *d.impl())) detail::refuse_data(*impl_, *d.impl(), "Runtime::argsort");
  const Shape& s = d.shape();
  if (s.size() != 1 && s.size() != 2)
    throw ShapeError("Runtime::argsort: the Data must be [rows] or [rows, cols], got " + to_string(s));
  const int64_t n = s[0], cols = s.size() == 2 ? s[1] : 1;
  if (column < 0 || column >= cols)
    throw ArgumentError("Runtime::argsort: column " + std::to_string(column) + " out of range [0, " +
                        std::to_string(cols) + ")");
  if (n >= (int64_t{1} << 32)) throw ArgumentError("Runtime::argsort: at most 2^32 - 1 rows");
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (n == 0) return out;
  // On this node only, with several nodes: the jobs fill this node's shared
  // arrays (every node sorts the same data to the same order).
  const int ranks = local_size();
  struct Here {
    detail::RuntimeCore& c;
    explicit Here(detail::RuntimeCore& c) : c(c) { c.jobs_here = true; }
    ~Here() { c.jobs_here = false; }
  } here(*impl_);
  Data A = data(DType::i32, {2 * n}), B = data(DType::i32, {2 * n});
  // Round 0: sorted chunks, one per rank.
  const int64_t chunks = std::min<int64_t>(ranks, std::max<int64_t>(1, n / 1024));
  std::vector<KeyJob> kj;
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
    kj.push_back({d.ref(), A.ref(), column, cols, lo, hi});
    runs.emplace_back(lo, hi);
  }
  map(&make_keys, kj);
  Data* src = &A;
  Data* dst = &B;
  while (runs.size() > 1) {
    std::vector<MergeJob> mj;
    std::vector<std::pair<int64_t, int64_t>> next;
    const size_t pairs = runs.size() / 2;
    const int64_t pieces = std::max<int64_t>(1, (ranks + static_cast<int64_t>(pairs) - 1) / static_cast<int64_t>(pairs));
    for (size_t p = 0; p + 1 < runs.size(); p += 2) {
      const int64_t a_lo = runs[p].first, a_hi = runs[p].second, b_hi = runs[p + 1].second;
      const int64_t len = b_hi - a_lo;
      for (int64_t q = 0; q < pieces; ++q)
        mj.push_back({src->ref(), dst->ref(), a_lo, a_hi, b_hi, len * q / pieces, len * (q + 1) / pieces});
      next.emplace_back(a_lo, b_hi);
    }
    if (runs.size() % 2) {  // the odd run out: copied as a merge with an empty one
      const auto [lo, hi] = runs.back();
      mj.push_back({src->ref(), dst->ref(), lo, hi, hi, 0, hi - lo});
      next.push_back(runs.back());
    }
    map(&merge_piece, mj);
    runs = std::move(next);
    std::swap(src, dst);
  }
  const uint64_t* k = static_cast<const uint64_t*>(src->raw());
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<int64_t>(k[i] & 0xffffffffu);
  return out;
}

Array Runtime::sort(const Data& d, int64_t column) {
  std::vector<int64_t> idx = argsort(d, column);
  const int64_t cols = d.shape().size() == 2 ? d.shape()[1] : 1;
  Array out(d.dtype(), {static_cast<int64_t>(idx.size())});
  const int32_t* src = static_cast<const int32_t*>(d.raw());  // f32 and i32 are both 4 bytes
  int32_t* o = static_cast<int32_t*>(out.raw());
  for (size_t i = 0; i < idx.size(); ++i) o[i] = src[idx[i] * cols + column];
  return out;
}

}  // namespace synk
