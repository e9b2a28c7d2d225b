// exec/cpu/kernels_fused.cpp — the interpreter of fused elementwise groups
// (see EwProgram in exec/plan/fused.hpp; the planner decides what is fused).
//
// Why chunks: a chain of k elementwise ops run op by op streams k results
// through memory; here every intermediate lives in a 2 KB chunk register
// that stays in L1, and only the group's inputs and outputs touch memory.
// The per-chunk dispatch costs a few branches per op and 512 elements.
#include <algorithm>
#include <cstring>

#include "elementwise.hpp"
#include "exec/cpu/kernels.hpp"

namespace synk::cpu {

namespace {

constexpr int64_t kChunk = 512;  // multiple of every SIMD width; divides 2^32 (dropout blocks)

// One operand of an op over one chunk: a vector (register or input memory)
// or a broadcast scalar.
struct Opnd {
  const float* p;
  bool scalar;
};

template <class F>
inline void bin(int64_t m, Opnd a, Opnd b, float* __restrict o, F f) {
  const float* __restrict x = a.p;
  const float* __restrict y = b.p;
  if (!a.scalar && !b.scalar) {
    for (int64_t i = 0; i < m; ++i) o[i] = f(x[i], y[i]);
  } else if (!a.scalar) {
    const float bv = *y;
    for (int64_t i = 0; i < m; ++i) o[i] = f(x[i], bv);
  } else if (!b.scalar) {
    const float av = *x;
    for (int64_t i = 0; i < m; ++i) o[i] = f(av, y[i]);
  } else {
    const float v = f(*x, *y);
    for (int64_t i = 0; i < m; ++i) o[i] = v;
  }
}

template <class F>
inline void un(int64_t m, Opnd a, float* __restrict o, F f) {
  const float* __restrict x = a.p;
  if (!a.scalar) {
    for (int64_t i = 0; i < m; ++i) o[i] = f(x[i]);
  } else {
    const float v = f(*x);
    for (int64_t i = 0; i < m; ++i) o[i] = v;
  }
}

// The formulas of binary_f32 / unary_f32: kernels/elementwise.hpp's, one
// loop instance per op.
// GELU's go to its own loops (kernels_gelu.cpp), as the op's kernel does, so
// that a fused GELU gives the same bits.
void run_instr(const EwInstr& ins, int64_t m, Opnd a, Opnd b, float* o) {
  if (ins.op == EwOp::Unary && (ins.uop == UnOp::Gelu || ins.uop == UnOp::GeluTanh)) {
    if (!a.scalar) return gelu_loop(ins.uop, m, a.p, o);
    gelu_loop(ins.uop, 1, a.p, o);
    std::fill(o + 1, o + m, o[0]);
    return;
  }
  if (ins.op == EwOp::Binary && (ins.bop == BinOp::GeluGrad || ins.bop == BinOp::GeluTanhGrad))
    return gelu_grad_loop(ins.bop, m, a.p, a.scalar ? 0 : 1, b.p, b.scalar ? 0 : 1, o);
  switch (ins.op) {
    case EwOp::Binary: ew::visit_binary(ins.bop, [&](auto f) { bin(m, a, b, o, f); }); break;
    case EwOp::Unary: ew::visit_unary(ins.uop, ins.f, ins.f2, [&](auto f) { un(m, a, o, f); }); break;
    case EwOp::Dropout: break;  // handled by the caller (needs the position)
  }
}

[[gnu::always_inline]] inline void interpret(const EwProgram& p, const float* const* in, float* const* out,
                                             const uint64_t* keys) {
  alignas(64) float regs[kEwMaxRegs][kChunk];
  const size_t ncode = p.code.size(), nout = p.outputs.size();
  for (int64_t c0 = 0; c0 < p.n; c0 += kChunk) {
    const int64_t m = std::min(kChunk, p.n - c0);
    for (size_t k = 0; k < ncode; ++k) {
      const EwInstr& ins = p.code[k];
      float* o = regs[ins.dst];
      if (ins.op == EwOp::Dropout) {
        dropout_range(keys[ins.key], ins.f, c0, m, o);
        continue;
      }
      auto opnd = [&](const EwArg& a) -> Opnd {
        switch (a.kind) {
          case EwArg::Reg: return {regs[a.index], false};
          case EwArg::Full: return {in[a.index] + c0, false};
          case EwArg::Scalar: return {in[a.index], true};
          case EwArg::None: break;
        }
        return {nullptr, true};
      };
      run_instr(ins, m, opnd(ins.a), opnd(ins.b), o);
    }
    // Stores last: an output may overwrite a full-size input of this chunk.
    for (size_t j = 0; j < nout; ++j)
      std::memcpy(out[j] + c0, regs[p.out_reg[j]], static_cast<size_t>(m) * sizeof(float));
  }
}

// Nesterov momentum as optim::nesterov writes it (6 ops per parameter):
// s = g*lr; v2 = v*mu - s; p2 = p + (v2*mu - s). One pass with everything
// in SIMD registers. Outputs may be the very arrays v and p (in-place
// updates); explicit vectors, loaded before they are stored, make that safe
// where the compiler's own vectoriser would fall back to scalar code.
typedef float F4 __attribute__((vector_size(16)));
typedef float F8 __attribute__((vector_size(32)));
template <int W> struct Vec;
template <> struct Vec<4> { using T = F4; };
template <> struct Vec<8> { using T = F8; };

template <int W>
[[gnu::always_inline]] inline void nesterov_loop(int64_t n, const float* g, const float* v, const float* p, float lr,
                                                 float mu, float mu2, float* v_out, float* p_out) {
  using V = typename Vec<W>::T;
  static_assert(sizeof(V) == W * sizeof(float));
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    V gv, vv, pv;
    std::memcpy(&gv, g + i, sizeof(V));
    std::memcpy(&vv, v + i, sizeof(V));
    std::memcpy(&pv, p + i, sizeof(V));
    const V st = gv * lr;
    const V v2 = vv * mu - st;
    const V p2 = pv + (v2 * mu2 - st);
    std::memcpy(v_out + i, &v2, sizeof(V));
    std::memcpy(p_out + i, &p2, sizeof(V));
  }
  for (; i < n; ++i) {
    const float st = g[i] * lr;
    const float v2 = v[i] * mu - st;
    const float p2 = p[i] + (v2 * mu2 - st);
    v_out[i] = v2;
    p_out[i] = p2;
  }
}

using NesterovArgs = EwProgram::NesterovSlots;

void nesterov_base(const NesterovArgs& a, int64_t n, const float* const* in, float* const* out) {
  nesterov_loop<4>(n, in[a.g], in[a.v], in[a.p], *in[a.lr], *in[a.mu], *in[a.mu2], out[a.v_out], out[a.p_out]);
}
void interpret_base(const EwProgram& p, const float* const* in, float* const* out, const uint64_t* keys) {
  interpret(p, in, out, keys);
}

// AVX2 clones (no FMA: the same roundings as the SSE2 code), picked at run
// time. GELU's instructions call kernels_gelu.cpp's loops, which pick their
// own clone (with FMA) as the GELU op's kernel does.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SYNK_HAVE_AVX2_CLONES 1
[[gnu::target("avx2")]] void nesterov_avx2(const NesterovArgs& a, int64_t n, const float* const* in, float* const* out) {
  nesterov_loop<8>(n, in[a.g], in[a.v], in[a.p], *in[a.lr], *in[a.mu], *in[a.mu2], out[a.v_out], out[a.p_out]);
}
[[gnu::target("avx2")]] void interpret_avx2(const EwProgram& p, const float* const* in, float* const* out,
                                            const uint64_t* keys) {
  interpret(p, in, out, keys);
}
// Results are the same either way (no FMA in these clones; GELU's loops
// give the op's bits on a given CPU); the AVX2 one
// runs where cpu_isa() says AVX2 or wider.
bool have_avx2() { return cpu_isa() != Isa::base; }
#endif

}  // namespace

void fused_elementwise(const EwProgram& p, const float* const* in, float* const* out, const uint64_t* keys) {
#ifdef SYNK_HAVE_AVX2_CLONES
  const bool avx2 = have_avx2();
#else
  const bool avx2 = false;
#endif
  if (p.pattern == EwProgram::Nesterov) {
#ifdef SYNK_HAVE_AVX2_CLONES
    if (avx2) return nesterov_avx2(p.nesterov, p.n, in, out);
#endif
    return nesterov_base(p.nesterov, p.n, in, out);
  }
#ifdef SYNK_HAVE_AVX2_CLONES
  if (avx2) return interpret_avx2(p, in, out, keys);
#endif
  interpret_base(p, in, out, keys);
}

}  // namespace synk::cpu
