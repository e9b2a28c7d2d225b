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
// visit_unary / visit_compare, one instantiation per op, so a CPU loop is a
// plain vectorisable loop over one formula and never switches per element:
//
//   ew::visit_unary(op, p, [&](auto f) { for (i...) y[i] = f(x[i]); });
//
// A new elementwise op: its enum value below, its functor, its case in the
// visitor; then the graph op and the planner's mapping (docs/architecture.md,
// "A new elementwise op").
//
// Only <cstdint>, <cstring>, <math.h>, <type_traits> and plain structs: nvcc compiles
// this into the kernels and the functors are passed to kernels by value.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define SYNK_HD __host__ __device__
#else
#define SYNK_HD
#endif
// For the larger formulas (GELU's): inlined whatever the compiler's budget,
// since a loop that keeps a call does not vectorise.
#if defined(__CUDACC__)
#define SYNK_HD_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SYNK_HD_INLINE [[gnu::always_inline]] inline
#else
#define SYNK_HD_INLINE inline
#endif

namespace synk::plan {

// Elementwise op kinds (Op::Add... and Op::Neg... of the graph). kCount
// last: the tests go through every kind up to it.
// Comparisons (Equal, Greater, Less) give i32 0/1 whatever their operands'
// dtype; the *Grad and *Mask kinds are the f32 gradient helpers of the ops
// they name.
enum class BinOp : uint8_t {
  Add, Sub, Mul, Div, Equal, ReluGrad,
  Maximum, Minimum, Greater, Less,
  GeluGrad, GeluTanhGrad, AbsGrad, MaximumGradMask,
  kCount
};
enum class UnOp : uint8_t {
  Neg, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square, Pow,
  Gelu, GeluTanh, Abs, Sin, Cos, Clip, ClipMask,
  kCount
};


}  // namespace synk::plan

namespace synk::ew {

using plan::BinOp;
using plan::UnOp;

// The comparisons: an f32 operand pair gives an i32 result.
inline constexpr bool is_compare(BinOp op) {
  return op == BinOp::Equal || op == BinOp::Greater || op == BinOp::Less;
}

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
// NaN wins, as PyTorch's maximum/minimum: a NaN x is kept; a NaN y is
// picked because the comparison with it is false.
struct Maximum {
  SYNK_HD float operator()(float x, float y) const { return (x != x || x > y) ? x : y; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const { return x > y ? x : y; }
};
struct Minimum {
  SYNK_HD float operator()(float x, float y) const { return (x != x || x < y) ? x : y; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const { return x < y ? x : y; }
};
struct Greater {
  SYNK_HD float operator()(float x, float y) const { return x > y ? 1.f : 0.f; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const { return x > y ? 1 : 0; }
};
struct Less {
  SYNK_HD float operator()(float x, float y) const { return x < y ? 1.f : 0.f; }
  SYNK_HD int32_t operator()(int32_t x, int32_t y) const { return x < y ? 1 : 0; }
};

// ---- f32-only binary kinds (the gradient helpers): no i32 form, so an i32
// loop over them is not instantiated (has_i32 below) and the planner refuses
// them for i32 operands.

// ---- GELU ----------------------------------------------------------------------
// Its formulas need exp and erf, and a loop calling libm's expf/erff/tanhf
// runs one call per element (tanhf and erff about 10 ns each here), while a
// ViT's MLP applies GELU to every hidden unit. So GELU is written in plain
// float arithmetic and bit operations, which the CPU loops vectorise, with
// an error of a few ulp (up to about 20 in the lower tail, where PyTorch's
// 1 + erf loses more to cancellation; tests/test_ops_pointwise.cpp checks
// it against double). The same code runs on the GPU.

// GELU's constants: 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi) and the cubic
// coefficient of the tanh form.
inline constexpr float kGeluSqrt1_2 = 0.70710678118654752440f;
inline constexpr float kGeluInvSqrt2Pi = 0.39894228040143267794f;
inline constexpr float kGeluSqrt2_Pi = 0.79788456080286535588f;
inline constexpr float kGeluKappa = 0.044715f;

SYNK_HD_INLINE float float_from_bits(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
#endif
}
SYNK_HD_INLINE int32_t bits_of_float(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t i;
  memcpy(&i, &f, sizeof i);
  return i;
#endif
}
// c ? a : b by masking bits. GCC (under its default -ftrapping-math) keeps a
// float select whose operands it can move into the branches as a branch, and
// a loop with a branch does not vectorise; a select of bits always does.
SYNK_HD_INLINE float select_bits(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return float_from_bits((bits_of_float(a) & m) | (bits_of_float(b) & ~m));
}

// e^x: x = k ln2 + r with |r| <= ln2/2 (ln2 split in two so k ln2 is exact),
// e^r by its Taylor polynomial of degree 7 (truncation below 1e-8), times
// 2^k applied as two halves so that k = 128 and subnormal results come out
// right. Under 2 ulp; -inf -> 0, +inf -> inf, NaN -> NaN.
SYNK_HD_INLINE float exp_poly(float x) {
  float xc = select_bits(x != x, 0.f, x);     // no NaN into the integer conversion
  xc = select_bits(xc < -104.f, -104.f, xc);  // e^-104 rounds to 0,
  xc = select_bits(xc > 89.f, 89.f, xc);      // e^89 to inf
  const float shifter = 12582912.f;           // 1.5 * 2^23: adding it rounds to an integer
  const float kf = (xc * 1.44269504088896341f + shifter) - shifter;
  const float r = (xc - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t k = static_cast<int32_t>(kf);
  const int32_t k1 = k / 2, k2 = k - k1;  // each in [-75, 64]: 2^k1, 2^k2 normal
  const float y = p * float_from_bits((k1 + 127) << 23) * float_from_bits((k2 + 127) << 23);
  return select_bits(x != x, x, y);
}

// Phi(x), the standard normal CDF, 0.5 (1 + erf(x / sqrt 2)), with a small
// relative error in both tails (1 + erf(x) would lose the lower tail to
// cancellation), and e^(-x^2 / 2) with it (GELU's gradient needs both; one
// exp serves). With z = |x| / sqrt 2 and t = 1 / (1 + z/2) in (0, 1], the
// upper tail is 0.5 erfc(z) = 0.5 t e^(-z^2) H(t), H a polynomial: one
// formula for every z, so a vector of mixed inputs computes one branch,
// not two. Coefficients: interpolation at 11 Chebyshev points of t in
// [0, 1], in 40-digit arithmetic, of H(t) = erfc(z) e^(z^2) / t (smooth,
// from 1/(2 sqrt pi) at z = inf to 1 at z = 0): relative error 2.8e-8,
// 1.3e-7 evaluated in float.
SYNK_HD_INLINE float normal_cdf(float x, float& e_half_sq) {
  const float z = fabsf(x) * kGeluSqrt1_2;
  const float t = 1.f / (1.f + 0.5f * z);
  float h = 4.535133764e-02f;
  h = h * t + -2.455800325e-01f;
  h = h * t + 5.168995261e-01f;
  h = h * t + -4.824747741e-01f;
  h = h * t + 1.518851817e-01f;
  h = h * t + -6.795827299e-02f;
  h = h * t + 9.582719952e-02f;
  h = h * t + 1.749486029e-01f;
  h = h * t + 2.469135672e-01f;
  h = h * t + 2.820928693e-01f;
  h = h * t + 2.820948064e-01f;
  const float e = exp_poly(-(z * z));
  e_half_sq = e;
  const float q = 0.5f * t * h * e;  // 0.5 erfc(z)
  return select_bits(x < 0.f, q, 1.f - q);
}

// Beyond |x| = 20 GELU's derivative is 0 or 1 to float precision; the
// gradients clamp x there so that x^2 overflowing to infinity never meets a
// zero (NaN stays NaN).
SYNK_HD_INLINE float gelu_grad_x(float x) {
  return select_bits(x > 20.f, 20.f, select_bits(x < -20.f, -20.f, x));
}

// (x, g) -> g * d/dx gelu(x), erf form: Phi(x) + x phi(x).
struct GeluGrad {
  SYNK_HD_INLINE float operator()(float x, float g) const {
    const float xc = gelu_grad_x(x);
    float e;  // e^(-x^2 / 2)
    const float cdf = normal_cdf(xc, e);
    return g * (cdf + xc * (kGeluInvSqrt2Pi * e));
  }
};
// (x, g) -> g * d/dx of the tanh form: with s = sigmoid(2u) = 0.5 (1 +
// tanh(u)), s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 kappa x^2) (PyTorch's
// left + right derivative). 1 - s is taken as e s, exact where s is near 1.
struct GeluTanhGrad {
  SYNK_HD_INLINE float operator()(float x, float g) const {
    const float xc = gelu_grad_x(x);
    const float x2 = xc * xc;
    const float e = exp_poly(-2.f * kGeluSqrt2_Pi * (xc + kGeluKappa * x2 * xc));
    const float s = 1.f / (1.f + e);
    const float oms = select_bits(s > 0.f, e * s, 1.f);  // e = inf: s = 0, 1 - s = 1
    return g * (s + 2.f * xc * s * oms * kGeluSqrt2_Pi * (1.f + 3.f * kGeluKappa * x2));
  }
};
// (x, g) -> g * sign(x), sign(0) = 0: PyTorch's abs backward, branch-free.
struct AbsGrad {
  SYNK_HD float operator()(float x, float g) const {
    return g * (static_cast<float>(x > 0.f) - static_cast<float>(x < 0.f));
  }
};
// (x, y) -> the share of maximum(x, y)'s gradient that goes to x, as
// PyTorch splits it: 1/2 on a tie, 0 where x < y, else 1 (a NaN operand
// passes the whole gradient to both). x's share of minimum(x, y) is this
// with the operands swapped.
struct MaximumGradMask {
  SYNK_HD float operator()(float x, float y) const { return x == y ? 0.5f : (x < y ? 0.f : 1.f); }
};

// Whether formula F has an i32 form.
template <class F>
inline constexpr bool has_i32 = std::is_same_v<decltype(F{}(int32_t{}, int32_t{})), int32_t>;

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
    case BinOp::Maximum: return f(Maximum{});
    case BinOp::Minimum: return f(Minimum{});
    case BinOp::Greater: return f(Greater{});
    case BinOp::Less: return f(Less{});
    case BinOp::GeluGrad: return f(GeluGrad{});
    case BinOp::GeluTanhGrad: return f(GeluTanhGrad{});
    case BinOp::AbsGrad: return f(AbsGrad{});
    case BinOp::MaximumGradMask: return f(MaximumGradMask{});
    case BinOp::kCount: break;
  }
  return f(Add{});  // not reached: every BinOp has its case
}

// visit_binary over the comparisons only (is_compare), for the kernels that
// turn f32 operands into an i32 result; another op visits Equal.
template <class F>
inline decltype(auto) visit_compare(BinOp op, F&& f) {
  switch (op) {
    case BinOp::Greater: return f(Greater{});
    case BinOp::Less: return f(Less{});
    default: break;
  }
  return f(Equal{});
}

// Whether `op` has an i32 form (the executors refuse the others for i32).
inline bool binary_has_i32(BinOp op) {
  return visit_binary(op, [](auto f) { return has_i32<decltype(f)>; });
}

// ---- ternary ----------------------------------------------------------------------
// where(c, a, b): c is i32, nonzero = true; a and b f32 or i32. The one
// ternary formula: it selects, so an infinite or NaN value in the branch not
// taken never leaks into the result (as an arithmetic blend would).
struct Where {
  template <class T>
  SYNK_HD T operator()(int32_t c, T a, T b) const { return c != 0 ? a : b; }
};

// ---- unary, f32 (p, q: the op's scalar attributes, Pow's exponent p and
// Clip's bounds [p, q]; unused by the others) -------------------------------------
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

// GELU, PyTorch's default (erf) form: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
struct Gelu {
  SYNK_HD_INLINE float operator()(float x) const {
    float e;
    return x * normal_cdf(x, e);
  }
};
// PyTorch's approximate='tanh': 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x +
// kappa x^3), computed as x / (1 + e^(-2u)) (1 + tanh(u) = 2 sigmoid(2u)):
// exactly the same function, without tanh's cancellation for x < 0.
struct GeluTanh {
  SYNK_HD_INLINE float operator()(float x) const {
    const float u = kGeluSqrt2_Pi * (x + kGeluKappa * x * x * x);
    return x / (1.f + exp_poly(-2.f * u));
  }
};
struct Abs {
  SYNK_HD float operator()(float x) const { return fabsf(x); }
};
struct Sin {
  SYNK_HD float operator()(float x) const { return sinf(x); }
};
struct Cos {
  SYNK_HD float operator()(float x) const { return cosf(x); }
};
// PyTorch's clamp to [lo, hi] (lo <= hi, checked when the graph is built);
// NaN stays NaN.
struct Clip {
  float lo, hi;
  SYNK_HD float operator()(float x) const { return x < lo ? lo : (x > hi ? hi : x); }
};
// 1 where lo <= x <= hi, else 0 (NaN: 0): where clip's gradient passes.
struct ClipMask {
  float lo, hi;
  SYNK_HD float operator()(float x) const { return (x >= lo && x <= hi) ? 1.f : 0.f; }
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

// Calls f(formula) with the functor of `op` (Pow's for exponent p, Clip's
// and ClipMask's for bounds [p, q]).
template <class F>
inline decltype(auto) visit_unary(UnOp op, float p, float q, F&& f) {
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
    case UnOp::Gelu: return f(Gelu{});
    case UnOp::GeluTanh: return f(GeluTanh{});
    case UnOp::Abs: return f(Abs{});
    case UnOp::Sin: return f(Sin{});
    case UnOp::Cos: return f(Cos{});
    case UnOp::Clip: return f(Clip{p, q});
    case UnOp::ClipMask: return f(ClipMask{p, q});
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
