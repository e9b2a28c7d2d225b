// kernels/kernel_types.hpp — the plain-data types a compiled plan hands to
// the kernels: the geometry of each kind of step (the elementwise op kinds,
// BinOp and UnOp, live with their formulas in elementwise.hpp). The planner
// (src/exec/plan/plan.hpp) fills them once per batch size from resolved
// shapes; the CPU kernels (src/exec/cpu/kernels.hpp) and the CUDA kernels
// (kernels/ops.cuh) both take them as they are, so both backends compute
// from one description. They are the planner's (namespace synk::plan); they
// live here, beside the kernels, so that kernels/ includes nothing private
// of src/.
//
// Only <cstdint> and plain structs here: nvcc compiles this header into the
// kernel files, and the structs are passed to kernels by value.
#pragma once

#include <algorithm>
#include <cstdint>

#include "elementwise.hpp"  // BinOp, UnOp

namespace synk::plan {

// Dims after collapsing (adjacent dims that iterate alike are merged), so
// real graphs rarely need more than 3 or 4. The op constructors
// (src/graph/ops.cpp) refuse a graph that needs more when it is built
// (broadcast_dims and friends in exec/plan/geometry.hpp).
inline constexpr int kMaxDims = 8;

// An output-contiguous iteration over `nd` dims with per-operand strides in
// elements (stride 0 = broadcast along that dim).
struct Strided {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  int64_t sa[kMaxDims] = {};  // operand a (or the single input; where's condition)
  int64_t sb[kMaxDims] = {};  // operand b
  int64_t sc[kMaxDims] = {};  // operand c (where's third operand; 0 otherwise)
  int64_t so[kMaxDims] = {};  // output (contiguous)
  int64_t numel = 0;
};

// Elementwise op kinds, BinOp and UnOp, are declared with their formulas in
// kernels/elementwise.hpp.

// What a graph reduction (Op::Sum, Op::Mean, Op::Max) computes over its axes.
// Not a collective's combine rule: that is synk::ReduceOp.
enum class ReduceKind : uint8_t { Sum, Mean, Max };

// Reduction geometry, two views of one iteration. The CPU kernels walk the
// input's dims collapsed into alternating kept/reduced runs (dim, red, sx,
// so); the CUDA kernels split the same runs into the kept dims, whose order
// gives the contiguous output index, and the reduced dims (kdim/kstride,
// rdim/rstride).
struct Reduce {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  bool red[kMaxDims] = {};
  int64_t sx[kMaxDims] = {};  // input strides
  int64_t so[kMaxDims] = {};  // output strides (0 on reduced dims)
  int64_t in_numel = 0, out_numel = 0;
  int nk = 0, nr = 0;
  int64_t kdim[kMaxDims] = {}, kstride[kMaxDims] = {};
  int64_t rdim[kMaxDims] = {}, rstride[kMaxDims] = {};
  int64_t r_count = 0;  // elements reduced into each output (0 exactly when a reduced dim is empty)
};

// [outer, n, inner] views for ops along one axis.
struct AxisGeom {
  int64_t outer = 1, n = 1, inner = 1;
};

struct ConvGeom {
  int64_t n, c, h, w;      // input
  int64_t o, kh, kw;       // filters
  int64_t sh, sw, ph, pw;  // stride, padding
  int64_t oh, ow;          // output
  int64_t k() const { return c * kh * kw; }
  int64_t p() const { return oh * ow; }
  // 1x1 / stride 1 / no padding: the input is its own column matrix.
  bool identity_cols() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  // The CPU's direct (im2col-free) kernels take its forward pass and weight
  // gradient (src/exec/cpu/conv_direct.cpp): stride 1 or 2 (the same on both
  // axes; stride 2 splits the padded input into its four phases, each a
  // stride-1 problem), padding inside the kernel, 2 to 64 taps (a 1x1
  // kernel is a plain GEMM, strided or not: its loop over channels alone is
  // too short for the direct tiles, measured slower), and at least 4 channels
  // in and out (fewer fill too little of a register block; im2col + sgemm
  // wins).
  bool direct() const {
    return sh == sw && (sh == 1 || sh == 2) && ph < kh && pw < kw && kh * kw > 1 && kh * kw <= 64 && c >= 4 &&
           o >= 4 && oh == (h + 2 * ph - kh) / sh + 1 && ow == (w + 2 * pw - kw) / sw + 1;
  }
  // The input gradient by the direct kernels: stride 1 (a forward pass of the
  // output gradient padded by k-1-p); stride 2 takes im2col + sgemm.
  bool direct_gi() const { return direct() && sh == 1; }
  // The direct weight gradient runs over the output grid at the width of a
  // (phase) plane, discarding its extra columns, in vectors, per image: on
  // planes of fewer than 100 outputs (7x7: 4 vectors, a quarter of them
  // discarded) that loop is too short and im2col + sgemm is faster
  // (measured: 14x14 and 28x28 faster, 7x7 slower).
  bool direct_gw() const { return direct() && oh * ow >= 100; }
  // Their tiling bounds: q (the output grid) in tiles of at most kDirectTile
  // floats, blocks of at most kDirectOb output channels; the weight
  // gradient's grid in vectors of at most kDirectVec floats, its rows in
  // blocks of at most kDirectGwOb.
  static constexpr int64_t kDirectTile = 64, kDirectOb = 8, kDirectVec = 16, kDirectGwOb = 4;
  // A (phase) plane's width and height: the padded extent over the stride,
  // rounded up; a channel's planes take s*s of them.
  static int64_t direct_wq(int64_t w, int64_t pw, int64_t s) { return (w + 2 * pw + s - 1) / s; }
  int64_t direct_plane(int64_t hh, int64_t ww, int64_t pph, int64_t ppw, int64_t s) const {
    return s * s * direct_wq(hh, pph, s) * direct_wq(ww, ppw, s);
  }
  // Floats of workspace the CPU conv kernels need.
  int64_t workspace() const {
    if (direct()) {
      // Forward (cin = c) and input gradient (cin = o, padding k-1-p): packed
      // weights, the padded input with its slack, a block's outputs.
      auto fwd = [&](int64_t cin, int64_t cout, int64_t hh, int64_t ww, int64_t pph, int64_t ppw, int64_t s) {
        const int64_t wq = direct_wq(ww, ppw, s), q = ((hh + 2 * pph - kh) / s + 1) * wq;
        // cout + kDirectOb: cout rounded up to any block size up to kDirectOb.
        return (cout + kDirectOb) * cin * kh * kw + cin * direct_plane(hh, ww, pph, ppw, s) +
               direct_slack(kh, kw, wq) + kDirectOb * up(q, kDirectTile);
      };
      const int64_t grad_in = direct_gi() ? fwd(o, c, oh, ow, kh - 1 - ph, kw - 1 - pw, 1) : k() * p();
      // Weight gradient: a chunk of images' padded input (with slack) and
      // output gradient on the grid.
      const int64_t grad_w = direct_gw() ? direct_gw_images() * direct_gw_image_floats() +
                                               direct_slack(kh, kw, direct_wq(w, pw, sw))
                                         : k() * p();
      return std::max({fwd(c, o, h, w, ph, pw, sh), grad_in, grad_w});
    }
    return identity_cols() ? 0 : k() * p();
  }
  // The weight gradient's output grid per image (rows of at most kDirectVec
  // floats' multiple) and its floats per image: padded input, output gradient.
  int64_t direct_gw_grid() const { return up(oh * direct_wq(w, pw, sw), kDirectVec); }
  int64_t direct_gw_image_floats() const {
    return c * direct_plane(h, w, ph, pw, sh) + up(o, kDirectGwOb) * direct_gw_grid();
  }
  // Images whose weight gradient the direct kernel sums in one pass: about
  // 1 MiB of padded input and output gradient (in L2), at least one.
  int64_t direct_gw_images() const {
    return std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{256} << 10) / std::max<int64_t>(direct_gw_image_floats(), 1)));
  }
  // Floats past the padded planes that tiles of discarded outputs read.
  static int64_t direct_slack(int64_t kh, int64_t kw, int64_t wp) { return kh * wp + kw + kDirectTile; }
  static int64_t up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
};

// One axis of a tensor viewed as [outer, n, inner], and the range
// [begin, end) of it: Slice reads it out of x ([outer, n, inner]) into y
// ([outer, end - begin, inner]); SliceGrad and each Concat operand write a
// part of that shape into it. Elements are 4 bytes (f32 or i32).
struct SliceGeom {
  int64_t outer = 1, n = 0, inner = 1, begin = 0, end = 0;
  SYNK_HD int64_t width() const { return (end - begin) * inner; }  // elements per outer index of the part
};

// Batched matrix product C[i] = op(A[ia]) op(B[ib]) over the products'
// batch dims (collapsed like a broadcast), strides in elements: 0 in sa/sb
// where an operand is broadcast, 0 in sc where the output sums that dim
// away (a broadcast operand's gradient). op(A) is [m, k], op(B) [k, n].
// fold: the whole batch as one GEMM, 1 = rows stacked (A's matrices one
// [count*m, k] matrix against one shared B: C is [count*m, n]), 2 = inner
// dims stacked (C[m, n] = sum_i A_i^T B_i with A_i [k, m] and B_i [k, n]
// contiguous: A^T over k' = count*k), 0 = one product each.
struct BatchGeom {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  int64_t sa[kMaxDims] = {}, sb[kMaxDims] = {}, sc[kMaxDims] = {};
  int64_t count = 1;      // products
  int64_t out_count = 1;  // output matrices
  int64_t m = 0, n = 0, k = 0;
  bool ta = false, tb = false;
  int fold = 0;
  // Some dim is summed (an sc of 0): the output is zeroed, then every
  // product added in; with an empty summed dim it stays zero.
  bool sums = false;
  bool summed() const { return sums; }
  int64_t lda() const { return ta ? m : k; }
  int64_t ldb() const { return tb ? k : n; }
  // The operands' offsets moved on to the next product over the first
  // `dims` batch dims: an odometer over idx (the last dim fastest), offsets
  // kept incrementally. Both executors walk their products with it.
  void advance(int dims, int64_t* idx, int64_t& oa, int64_t& ob, int64_t& oc) const {
    for (int d = dims - 1; d >= 0; --d) {
      if (++idx[d] < dim[d]) {
        oa += sa[d];
        ob += sb[d];
        oc += sc[d];
        return;
      }
      idx[d] = 0;
      oa -= sa[d] * (dim[d] - 1);
      ob -= sb[d] * (dim[d] - 1);
      oc -= sc[d] * (dim[d] - 1);
    }
  }
};

// Scaled dot-product attention (Op::Attention): `b` batches of `h` heads,
// each q [l, e], k [s, e], v [s, ev] -> o [l, ev]. Heads first ([..., L, E],
// h = 1 with every leading dim in b): one head's rows are contiguous;
// tokens first ([N, L, H, E]): a token's heads are side by side, so one
// head's rows are h * width apart. at() is where row t of head (bi, hi)
// starts in a tensor of `len` rows of `width` per head; stride() is the step
// from one row of a head to the next.
struct AttnGeom {
  int64_t b = 0, h = 1, l = 0, s = 0, e = 0, ev = 0;
  bool tokens_first = false;
  float scale = 1.f;
  SYNK_HD int64_t at(int64_t bi, int64_t hi, int64_t t, int64_t len, int64_t width) const {
    return tokens_first ? ((bi * len + t) * h + hi) * width : ((bi * h + hi) * len + t) * width;
  }
  SYNK_HD int64_t stride(int64_t width) const { return tokens_first ? h * width : width; }
  // The CPU kernel's scratch: q and the output's gradient of one head
  // transposed and two [s, queries] score matrices, over the queries padded
  // to a multiple of kLanes.
  static constexpr int64_t kLanes = 16;
  int64_t queries_padded() const { return (l + kLanes - 1) / kLanes * kLanes; }
  int64_t workspace() const { return (e + ev + 2 * s) * queries_padded(); }
};

struct PoolGeom {
  int64_t n, c, h, w;
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t oh, ow;
};

}  // namespace synk::plan
