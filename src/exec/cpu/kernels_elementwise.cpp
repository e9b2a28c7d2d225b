// exec/cpu/kernels_elementwise.cpp — elementwise CPU kernels: broadcasting
// binary ops, unary math, casts, strided copies and the dropout mask.
//
// Broadcasting is planned once (plan::make_broadcast collapses dims so the
// common cases — same shape, [N,C]+[C], tensor+scalar, [N,C,H,W]+[C,1,1] —
// become one or two loops whose innermost loop is a plain vectorisable one).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "exec/cpu/kernels.hpp"
#include "dropout_bits.hpp"  // kernels/
#include "elementwise.hpp"    // kernels/
#include "synk/error.hpp"

namespace synk::cpu {

// ---- binary -------------------------------------------------------------------------

namespace {

template <class T, class O, class F>
inline void bin_inner(int64_t n, int64_t sa, int64_t sb, const T* __restrict a,
                      const T* __restrict b, O* __restrict o, F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const T bv = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const T av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = f(av, b[i]);
  } else if (sa == 0 && sb == 0) {
    const O v = f(*a, *b);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = f(a[i * sa], b[i * sb]);
  }
}

template <class T, class O, class F>
void bin_rec(const Strided& s, int d, const T* a, const T* b, O* o, F f) {
  const int64_t n = s.dim[d];
  if (d == s.nd - 1) {
    bin_inner(n, s.sa[d], s.sb[d], a, b, o, f);
    return;
  }
  for (int64_t i = 0; i < n; ++i) bin_rec(s, d + 1, a + i * s.sa[d], b + i * s.sb[d], o + i * s.so[d], f);
}

template <class T, class O, class F>
void bin_loop(const Strided& s, const T* a, const T* b, O* o, F f) {
  if (s.numel == 0) return;
  if (s.nd == 1) return bin_inner(s.dim[0], s.sa[0], s.sb[0], a, b, o, f);  // the common case, one loop
  bin_rec(s, 0, a, b, o, f);
}

// GELU's formulas run in kernels_gelu.cpp's loops (built with contraction
// on, unlike this file): a GELU op with broadcast operands reaches them one
// innermost run at a time.
bool is_gelu_grad(BinOp op) { return op == BinOp::GeluGrad || op == BinOp::GeluTanhGrad; }

void gelu_grad_rec(BinOp op, const Strided& s, int d, const float* a, const float* b, float* o) {
  const int64_t n = s.dim[d];
  if (d == s.nd - 1) {
    const int64_t sa = s.sa[d], sb = s.sb[d];
    if ((sa == 0 || sa == 1) && (sb == 0 || sb == 1)) return gelu_grad_loop(op, n, a, sa, b, sb, o);
    for (int64_t i = 0; i < n; ++i) gelu_grad_loop(op, 1, a + i * sa, 0, b + i * sb, 0, o + i);
    return;
  }
  for (int64_t i = 0; i < n; ++i) gelu_grad_rec(op, s, d + 1, a + i * s.sa[d], b + i * s.sb[d], o + i * s.so[d]);
}

}  // namespace

// The formulas are kernels/elementwise.hpp's (shared with the fused
// interpreter and the CUDA kernels); each op gets its own loop instance.

void binary_f32(BinOp op, const Strided& s, const float* a, const float* b, float* o) {
  if (is_gelu_grad(op)) {
    if (s.numel > 0) gelu_grad_rec(op, s, 0, a, b, o);
    return;
  }
  ew::visit_binary(op, [&](auto f) { bin_loop(s, a, b, o, f); });
}

void binary_i32(BinOp op, const Strided& s, const int32_t* a, const int32_t* b, int32_t* o) {
  ew::visit_binary(op, [&](auto f) {
    if constexpr (ew::has_i32<decltype(f)>) bin_loop(s, a, b, o, f);
  });
}

void compare_f32(BinOp op, const Strided& s, const float* a, const float* b, int32_t* o) {
  ew::visit_compare(op, [&](auto f) {
    bin_loop(s, a, b, o, [f](float x, float y) { return static_cast<int32_t>(f(x, y)); });
  });
}

// ---- where (ternary) ------------------------------------------------------------

namespace {

// s0, s1, s2: the strides of the condition, a and b.
template <class T>
inline void where_inner(int64_t n, int64_t s0, int64_t s1, int64_t s2, const int32_t* __restrict c,
                        const T* __restrict a, const T* __restrict b, T* __restrict o) {
  const ew::Where f;
  if (s0 == 1 && s1 == 1 && s2 == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(c[i], a[i], b[i]);
  } else if (s0 == 1 && s1 == 1 && s2 == 0) {  // where(mask, x, constant)
    const T bv = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = f(c[i], a[i], bv);
  } else if (s0 == 1 && s1 == 0 && s2 == 1) {  // where(mask, constant, x)
    const T av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = f(c[i], av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = f(c[i * s0], a[i * s1], b[i * s2]);
  }
}

template <class T>
void where_rec(const Strided& s, int d, const int32_t* c, const T* a, const T* b, T* o) {
  const int64_t n = s.dim[d];
  if (d == s.nd - 1) {
    where_inner(n, s.sa[d], s.sb[d], s.sc[d], c, a, b, o);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    where_rec(s, d + 1, c + i * s.sa[d], a + i * s.sb[d], b + i * s.sc[d], o + i * s.so[d]);
}

template <class T>
void where_loop(const Strided& s, const int32_t* c, const T* a, const T* b, T* o) {
  if (s.numel == 0) return;
  where_rec(s, 0, c, a, b, o);
}

}  // namespace

void where_f32(const Strided& s, const int32_t* c, const float* a, const float* b, float* o) {
  where_loop(s, c, a, b, o);
}

void where_i32(const Strided& s, const int32_t* c, const int32_t* a, const int32_t* b, int32_t* o) {
  where_loop(s, c, a, b, o);
}

// ---- unary -------------------------------------------------------------------

void unary_f32(UnOp op, int64_t n, const float* __restrict x, float* __restrict y, float p, float q) {
  if (op == UnOp::Gelu || op == UnOp::GeluTanh) return gelu_loop(op, n, x, y);
  ew::visit_unary(op, p, q, [&](auto f) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  });
}

void neg_i32(int64_t n, const int32_t* __restrict x, int32_t* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = ew::Neg{}(x[i]);
}

void cast_f32_i32(int64_t n, const float* __restrict x, int32_t* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = ew::cast_f32_i32(x[i]);
}

void cast_i32_f32(int64_t n, const int32_t* __restrict x, float* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i]);
}

// ---- strided copy -------------------------------------------------------------------

namespace {

void copy_rec(const Strided& s, int d, const uint32_t* x, uint32_t* y) {
  const int64_t n = s.dim[d];
  const int64_t st = s.sa[d];
  if (d == s.nd - 1) {
    if (st == 1) {
      std::memcpy(y, x, static_cast<size_t>(n) * sizeof(uint32_t));
    } else if (st == 0) {
      std::fill(y, y + n, *x);
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i * st];
    }
    return;
  }
  // A 2-D transpose-like inner block: tile it so both sides stay in cache.
  if (d == s.nd - 2 && s.sa[d + 1] != 1 && s.sa[d + 1] != 0 && st == 1) {
    const int64_t m = s.dim[d + 1], sm = s.sa[d + 1], so = s.so[d];
    constexpr int64_t T = 32;
    for (int64_t i0 = 0; i0 < n; i0 += T) {
      const int64_t i1 = std::min(n, i0 + T);
      for (int64_t j0 = 0; j0 < m; j0 += T) {
        const int64_t j1 = std::min(m, j0 + T);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) y[i * so + j] = x[i + j * sm];
      }
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) copy_rec(s, d + 1, x + i * st, y + i * s.so[d]);
}

}  // namespace

void strided_copy(const Strided& s, const uint32_t* x, uint32_t* y) {
  if (s.numel == 0) return;
  copy_rec(s, 0, x, y);
}

// ---- dropout ----------------------------------------------------------------------

uint64_t dropout_key(uint64_t seed, int rank, int64_t stream, uint64_t call) {
  return dropout::call_key(dropout::key_base(seed, rank, stream), call);
}

namespace {

// i0: the first element's index within its 2^32 block; kb: the block's keys.
[[gnu::always_inline]] inline void dropout_body(uint32_t i0, int64_t m, uint64_t kb, uint32_t thr, float scale,
                                                float* __restrict y) {
  for (int64_t i = 0; i < m; ++i) y[i] = dropout::element_hash(i0 + static_cast<uint32_t>(i), kb) >= thr ? scale : 0.f;
}

void dropout_block_base(uint32_t i0, int64_t m, uint64_t kb, uint32_t thr, float scale, float* y) {
  dropout_body(i0, m, kb, thr, scale, y);
}

// The hash is 32-bit integer multiplies, which baseline x86-64 (SSE2) cannot
// vectorise; an AVX2 clone, picked at run time, does 8 lanes. Integer
// arithmetic only, so both give the same bits.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
[[gnu::target("avx2")]] void dropout_block_avx2(uint32_t i0, int64_t m, uint64_t kb, uint32_t thr, float scale,
                                                 float* y) {
  dropout_body(i0, m, kb, thr, scale, y);
}
using DropoutBlockFn = void (*)(uint32_t, int64_t, uint64_t, uint32_t, float, float*);
DropoutBlockFn dropout_block_fn() {
  static const DropoutBlockFn fn = cpu_isa() != Isa::base ? &dropout_block_avx2 : &dropout_block_base;
  return fn;
}
#else
auto dropout_block_fn() { return &dropout_block_base; }
#endif

}  // namespace

void dropout_range(uint64_t key, float p, int64_t start, int64_t count, float* y) {
  if (!(p > 0.f)) {
    std::fill(y, y + count, 1.f);
    return;
  }
  if (p >= 1.f) {
    std::fill(y, y + count, 0.f);
    return;
  }
  const dropout::Params dp = dropout::params(p);
  // The element index is split over 2^32 blocks, each with its own keys.
  constexpr int64_t kBlock = int64_t{1} << 32;
  int64_t i = start;
  const int64_t end = start + count;
  while (i < end) {
    const int64_t base = i / kBlock * kBlock;
    const int64_t m = std::min(end, base + kBlock) - i;
    dropout_block_fn()(static_cast<uint32_t>(i - base), m, dropout::block_key(key, static_cast<uint64_t>(base)), dp.thr,
                       dp.scale, y + (i - start));
    i += m;
  }
}

void dropout_mask(int64_t n, float p, uint64_t key, float* y) { dropout_range(key, p, 0, n, y); }

}  // namespace synk::cpu
