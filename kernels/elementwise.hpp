// kernels/elementwise.hpp — every elementwise formula of the graph executor,
// written once: the op kinds (BinOp, UnOp) and what each computes on one
// element, including Pow's special cases. The CPU kernels
// (src/exec/cpu/kernels_elementwise.cpp), the fused CPU interpreter
// (src/exec/cpu/kernels_fused.cpp) and the CUDA kernels (kernels/pointwise.cu)
// all take their formulas from here, so the backends agree bit for bit
// wherever their math libraries do.
//
// A formula is a functor with an SYNK_HD call operator (host and device
// under nvcc; plain C++ on the host and in the CUDA emulation). The loops
// that apply them get the functor's type through visit_binary /
// visit_unary, one instantiation per op, so a CPU loop is a plain
// vectorisable loop over one formula and never switches per element:
//
//   ew::visit_unary(op, p, [&](auto f) { for (i...) y[i] = f(x[i]); });
//
// A new elementwise op: its enum value below, its functor, its case in the
// visitor; then the graph op and the planner's mapping (docs/architecture.md,
// "A new elementwise op").
//
// Only <cstdint>, <math.h> and plain structs: nvcc compiles this into the
// kernels and the functors are passed to kernels by value.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define SYNK_HD __host__ __device__
#else
#define SYNK_HD
#endif

namespace synk::plan {

// Elementwise op kinds (Op::Add... and Op::Neg... of the graph). kCount
// last: the tests go through every kind up to it.
enum class BinOp : uint8_t { Add, Sub, Mul, Div, Equal, ReluGrad, kCount };
enum class UnOp : uint8_t { Neg, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square, Pow, kCount };

}  // namespace synk::plan

namespace synk::ew {

using plan::BinOp;
using plan::UnOp;

// ---- binary: f32, and i32 with wrapping arithmetic (through uint32, so
// overflow is defined) ------------------------------------------------------------

struct Add {
  SYNK_HD float operator()(float x, float y) const { return x + y; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const {
    return static_cast<int32_t>(static_cast<uint32_t>(x) + static_cast<uint32_t>(y));
  }
};
struct Sub {
  SYNK_HD float operator()(float x, float y) const { return x - y; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const {
    return static_cast<int32_t>(static_cast<uint32_t>(x) - static_cast<uint32_t>(y));
  }
};
struct Mul {
  SYNK_HD float operator()(float x, float y) const { return x * y; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const {
    return static_cast<int32_t>(static_cast<uint32_t>(x) * static_cast<uint32_t>(y));
  }
};
struct Div {
  SYNK_HD float operator()(float x, float y) const { return x / y; }
  // Truncating; x/0 = 0 and INT_MIN/-1 = INT_MIN rather than a trap.
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const {
    if (y == 0) return 0;
    if (y == -1) return static_cast<int32_t>(0u - static_cast<uint32_t>(x));
    return x / y;
  }
};
// 1 where equal, else 0, in the operands' type (f32 operands with an i32
// result: convert, 1.f -> 1).
struct Equal {
  SYNK_HD float operator()(float x, float y) const { return x == y ? 1.f : 0.f; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const { return x == y ? 1 : 0; }
};
// (y, g) -> g where the forward output y > 0.
struct ReluGrad {
  SYNK_HD float operator()(float y, float g) const { return y > 0.f ? g : 0.f; }
  SYNK_HD int32_t operator()(int32_t y, int32_t g) const { return y > 0 ? g : 0; }
};

// Calls f(formula) with the functor of `op`; returns what f returns. Host
// code only (the CUDA launchers pick the kernel instance with it).
template <class F>
inline decltype(auto) visit_binary(BinOp op, F&& f) {
  switch (op) {
    case BinOp::Add: return f(Add{});
    case BinOp::Sub: return f(Sub{});
    case BinOp::Mul: return f(Mul{});
    case BinOp::Div: return f(Div{});
    case BinOp::Equal: return f(Equal{});
    case BinOp::ReluGrad: return f(ReluGrad{});
    case BinOp::kCount: break;
  }
  return f(Add{});  // not reached: every BinOp has its case
}

// ---- unary, f32 (p: Pow's exponent, unused by the others) ------------------------
// Math functions are the C library's float ones (the device's under nvcc).

struct Neg {
  SYNK_HD float operator()(float x) const { return -x; }
  // i32: wrapping, so -INT_MIN = INT_MIN.
  SYNK_HD int32_t operator()(int32_t x) const { return static_cast<int32_t>(0u - static_cast<uint32_t>(x)); }
};
struct Relu {
  SYNK_HD float operator()(float x) const { return x > 0.f ? x : 0.f; }
};
struct Tanh {
  SYNK_HD float operator()(float x) const { return tanhf(x); }
};
struct Sigmoid {
  SYNK_HD float operator()(float x) const { return 1.f / (1.f + expf(-x)); }
};
struct Exp {
  SYNK_HD float operator()(float x) const { return expf(x); }
};
struct Log {
  SYNK_HD float operator()(float x) const { return logf(x); }
};
struct Sqrt {
  SYNK_HD float operator()(float x) const { return sqrtf(x); }
};
struct Square {
  SYNK_HD float operator()(float x) const { return x * x; }
};

// x^p. Exponents with an exact shorter form take it (pow(x, 2) is x*x
// exactly, pow(x, 0.5) is the correctly rounded sqrt), the rest powf.
// visit_unary picks the case once per call, so a loop runs one form.
enum class PowCase : uint8_t { Square, Identity, Sqrt, Recip, General };
SYNK_HD inline PowCase pow_case(float p) {
  if (p == 2.f) return PowCase::Square;
  if (p == 1.f) return PowCase::Identity;
  if (p == 0.5f) return PowCase::Sqrt;
  if (p == -1.f) return PowCase::Recip;
  return PowCase::General;
}
template <PowCase C>
struct Pow {
  float p;
  SYNK_HD float operator()(float x) const {
    if constexpr (C == PowCase::Square) return x * x;
    else if constexpr (C == PowCase::Identity) return x;
    else if constexpr (C == PowCase::Sqrt) return sqrtf(x);
    else if constexpr (C == PowCase::Recip) return 1.f / x;
    else return powf(x, p);
  }
};

// Calls f(formula) with the functor of `op` (Pow's for exponent p).
template <class F>
inline decltype(auto) visit_unary(UnOp op, float p, F&& f) {
  switch (op) {
    case UnOp::Neg: return f(Neg{});
    case UnOp::Relu: return f(Relu{});
    case UnOp::Tanh: return f(Tanh{});
    case UnOp::Sigmoid: return f(Sigmoid{});
    case UnOp::Exp: return f(Exp{});
    case UnOp::Log: return f(Log{});
    case UnOp::Sqrt: return f(Sqrt{});
    case UnOp::Square: return f(Square{});
    case UnOp::Pow:
      switch (pow_case(p)) {
        case PowCase::Square: return f(Pow<PowCase::Square>{p});
        case PowCase::Identity: return f(Pow<PowCase::Identity>{p});
        case PowCase::Sqrt: return f(Pow<PowCase::Sqrt>{p});
        case PowCase::Recip: return f(Pow<PowCase::Recip>{p});
        case PowCase::General: break;
      }
      return f(Pow<PowCase::General>{p});
    case UnOp::kCount: break;
  }
  return f(Neg{});  // not reached: every UnOp has its case
}

// ---- casts ----------------------------------------------------------------------

// f32 -> i32 truncating toward zero; NaN becomes 0 and out-of-range values
// saturate, where a plain conversion would be undefined.
SYNK_HD inline int32_t cast_f32_i32(float v) {
  constexpr float lo = -2147483648.f, hi = 2147483520.f;  // largest float below 2^31
  v = v != v ? 0.f : v;
  v = v < lo ? lo : (v > hi ? hi : v);
  return static_cast<int32_t>(v);
}

}  // namespace synk::ew
