// exec/cpu/kernels_gelu.cpp — GELU's loops (both forms, and their
// gradients): the only CPU code that evaluates GELU's formulas, for the
// op's own kernel and for a GELU inside a fused elementwise group alike.
//
// The formulas (kernels/elementwise.hpp) are tens of multiply-adds per
// element (polynomials, exp), and a ViT applies them to every hidden unit,
// so this file is built with contraction on: the AVX2+FMA and AVX-512 clones
// evaluate each a * b + c as one FMA (about 1.5x the speed, one rounding
// fewer). Contraction is decided once, when this file is compiled, so the
// op's kernel and the fused interpreter (which calls gelu_loop for its GELU
// instructions) give the same bits on one CPU; a CPU with another clone
// (SYNK_CPU_ISA) may differ from it in the last bits, as gemm_small does.
// The other elementwise loops keep one rounding per operation
// (kernels_elementwise.cpp is built with -ffp-contract=off).
#include "elementwise.hpp"  // kernels/
#include "exec/cpu/kernels.hpp"

namespace synk::cpu {

namespace {

// The output may be an operand's very array (the planner lets an
// elementwise op take over an operand's block; gemm_small's epilogue
// updates a product's rows in place): element i is read before it is
// written, so no __restrict here.
template <class F>
[[gnu::always_inline]] inline void unary_body(int64_t n, const float* x, float* y, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
template <class F>
[[gnu::always_inline]] inline void binary_body(int64_t n, const float* x, int64_t sx, const float* g, int64_t sg,
                                               float* o, F f) {
  if (sx == 1 && sg == 1) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], g[i]);
  } else if (sx == 1) {
    const float gv = *g;
    for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], gv);
  } else if (sg == 1) {
    const float xv = *x;
    for (int64_t i = 0; i < n; ++i) o[i] = f(xv, g[i]);
  } else {
    const float v = f(*x, *g);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  }
}

[[gnu::always_inline]] inline void gelu_body(UnOp op, int64_t n, const float* x, float* y) {
  if (op == UnOp::Gelu) unary_body(n, x, y, ew::Gelu{});
  else unary_body(n, x, y, ew::GeluTanh{});
}
[[gnu::always_inline]] inline void gelu_grad_body(BinOp op, int64_t n, const float* x, int64_t sx, const float* g,
                                                  int64_t sg, float* o) {
  if (op == BinOp::GeluGrad) binary_body(n, x, sx, g, sg, o, ew::GeluGrad{});
  else binary_body(n, x, sx, g, sg, o, ew::GeluTanhGrad{});
}

void gelu_base(UnOp op, int64_t n, const float* x, float* y) { gelu_body(op, n, x, y); }
void gelu_grad_base(BinOp op, int64_t n, const float* x, int64_t sx, const float* g, int64_t sg, float* o) {
  gelu_grad_body(op, n, x, sx, g, sg, o);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SYNK_GELU_CLONES 1
[[gnu::target("avx2,fma")]] void gelu_avx2(UnOp op, int64_t n, const float* x, float* y) { gelu_body(op, n, x, y); }
[[gnu::target("avx2,fma")]] void gelu_grad_avx2(BinOp op, int64_t n, const float* x, int64_t sx, const float* g,
                                                int64_t sg, float* o) {
  gelu_grad_body(op, n, x, sx, g, sg, o);
}
[[gnu::target("avx512f")]] void gelu_avx512(UnOp op, int64_t n, const float* x, float* y) { gelu_body(op, n, x, y); }
[[gnu::target("avx512f")]] void gelu_grad_avx512(BinOp op, int64_t n, const float* x, int64_t sx, const float* g,
                                                 int64_t sg, float* o) {
  gelu_grad_body(op, n, x, sx, g, sg, o);
}
#endif

}  // namespace

void gelu_loop(UnOp op, int64_t n, const float* x, float* y) {
#ifdef SYNK_GELU_CLONES
  switch (cpu_isa()) {
    case Isa::avx512: return gelu_avx512(op, n, x, y);
    case Isa::avx2: return gelu_avx2(op, n, x, y);
    case Isa::base: break;
  }
#endif
  gelu_base(op, n, x, y);
}

// sx, sg: 0 (one value for every element) or 1.
void gelu_grad_loop(BinOp op, int64_t n, const float* x, int64_t sx, const float* g, int64_t sg, float* o) {
#ifdef SYNK_GELU_CLONES
  switch (cpu_isa()) {
    case Isa::avx512: return gelu_grad_avx512(op, n, x, sx, g, sg, o);
    case Isa::avx2: return gelu_grad_avx2(op, n, x, sx, g, sg, o);
    case Isa::base: break;
  }
#endif
  gelu_grad_base(op, n, x, sx, g, sg, o);
}

}  // namespace synk::cpu
