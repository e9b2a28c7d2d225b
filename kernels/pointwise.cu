// kernels/pointwise.cu — elementwise kernels of the graph executor:
// broadcasting binary ops, unary math, casts, strided copies (transpose,
// broadcast), fused bias/ReLU epilogues, the dropout mask and fill.
//
// Each mirrors its CPU reference in src/exec/cpu/kernels_elementwise.cpp
// (same formulas, same integer and cast conventions) so results compare
// within float tolerance, and the dropout mask compares bit for bit.
#include "dropout_bits.hpp"
#include "launch.cuh"
#include "ops.cuh"

namespace synk::kernels {
namespace {

// Offsets of output element i in operands a and b.
__device__ inline void strided_offsets(const Strided& g, int64_t i, int64_t& oa, int64_t& ob) {
  if (g.nd == 1) {
    oa = i * g.sa[0];
    ob = i * g.sb[0];
    return;
  }
  oa = 0;
  ob = 0;
  for (int d = g.nd - 1; d >= 0; --d) {
    const int64_t c = i % g.dim[d];
    i /= g.dim[d];
    oa += c * g.sa[d];
    ob += c * g.sb[d];
  }
}

__device__ inline float bin_f32(BinOp op, float x, float y) {
  switch (op) {
    case BinOp::Add: return x + y;
    case BinOp::Sub: return x - y;
    case BinOp::Mul: return x * y;
    case BinOp::Div: return x / y;
    case BinOp::Equal: return x == y ? 1.f : 0.f;
    case BinOp::ReluGrad: return x > 0.f ? y : 0.f;
  }
  return 0.f;
}

__device__ inline int32_t bin_i32(BinOp op, int32_t x, int32_t y) {
  const uint32_t ux = static_cast<uint32_t>(x), uy = static_cast<uint32_t>(y);
  switch (op) {
    case BinOp::Add: return static_cast<int32_t>(ux + uy);
    case BinOp::Sub: return static_cast<int32_t>(ux - uy);
    case BinOp::Mul: return static_cast<int32_t>(ux * uy);
    case BinOp::Div:
      if (y == 0) return 0;
      if (y == -1) return static_cast<int32_t>(0u - ux);
      return x / y;
    case BinOp::Equal: return x == y ? 1 : 0;
    case BinOp::ReluGrad: return x > 0 ? y : 0;
  }
  return 0;
}

__global__ void binary_f32_kernel(BinOp op, Strided g, const float* a, const float* b, float* o) {
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oa, ob;
    strided_offsets(g, i, oa, ob);
    o[i] = bin_f32(op, a[oa], b[ob]);
  }
}

__global__ void binary_i32_kernel(BinOp op, Strided g, const int32_t* a, const int32_t* b, int32_t* o) {
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oa, ob;
    strided_offsets(g, i, oa, ob);
    o[i] = bin_i32(op, a[oa], b[ob]);
  }
}

__global__ void equal_f32_kernel(Strided g, const float* a, const float* b, int32_t* o) {
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oa, ob;
    strided_offsets(g, i, oa, ob);
    o[i] = a[oa] == b[ob] ? 1 : 0;
  }
}

__device__ inline float un_f32(UnOp op, float x, float p) {
  switch (op) {
    case UnOp::Neg: return -x;
    case UnOp::Relu: return x > 0.f ? x : 0.f;
    case UnOp::Tanh: return tanhf(x);
    case UnOp::Sigmoid: return 1.f / (1.f + expf(-x));
    case UnOp::Exp: return expf(x);
    case UnOp::Log: return logf(x);
    case UnOp::Sqrt: return sqrtf(x);
    case UnOp::Square: return x * x;
    case UnOp::Pow:
      // The CPU's special cases, so e.g. pow(x, 2) is exact as there.
      if (p == 2.f) return x * x;
      if (p == 1.f) return x;
      if (p == 0.5f) return sqrtf(x);
      if (p == -1.f) return 1.f / x;
      return powf(x, p);
  }
  return 0.f;
}

__global__ void unary_f32_kernel(UnOp op, int64_t n, const float* x, float* y, float p) {
  SYNK_GRID_LOOP(i, n) y[i] = un_f32(op, x[i], p);
}

__global__ void neg_i32_kernel(int64_t n, const int32_t* x, int32_t* y) {
  SYNK_GRID_LOOP(i, n) y[i] = static_cast<int32_t>(0u - static_cast<uint32_t>(x[i]));
}

__global__ void cast_f32_i32_kernel(int64_t n, const float* x, int32_t* y) {
  constexpr float lo = -2147483648.f, hi = 2147483520.f;  // largest float below 2^31
  SYNK_GRID_LOOP(i, n) {
    float v = x[i];
    v = v != v ? 0.f : v;
    v = v < lo ? lo : (v > hi ? hi : v);
    y[i] = static_cast<int32_t>(v);
  }
}

__global__ void cast_i32_f32_kernel(int64_t n, const int32_t* x, float* y) {
  SYNK_GRID_LOOP(i, n) y[i] = static_cast<float>(x[i]);
}

__global__ void strided_copy_kernel(Strided g, const uint32_t* x, uint32_t* y, bool scaled, float scale) {
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oa, ob;
    strided_offsets(g, i, oa, ob);
    if (scaled) {
      y[i] = __float_as_uint(__uint_as_float(x[oa]) * scale);
    } else {
      y[i] = x[oa];
    }
  }
}

__global__ void bias_relu_cols_kernel(int64_t n, int64_t cols, const float* bias, bool relu, float* y) {
  SYNK_GRID_LOOP(i, n) {
    float v = y[i];
    if (bias) v += bias[i % cols];
    y[i] = relu ? (v > 0.f ? v : 0.f) : v;
  }
}

__global__ void bias_relu_rows_kernel(int64_t n, int64_t cols, const float* bias, int64_t nb, bool relu, float* y) {
  SYNK_GRID_LOOP(i, n) {
    float v = y[i];
    if (bias) v += bias[(i / cols) % nb];
    y[i] = relu ? (v > 0.f ? v : 0.f) : v;
  }
}

// The CPU's dropout_mask, element for element (kernels/dropout_bits.hpp); the
// call counter lives on the device.
__global__ void dropout_kernel(int64_t n, uint32_t thr, float scale, uint64_t key_base,
                               const unsigned long long* counter, float* y) {
  const uint64_t key = dropout::call_key(key_base, static_cast<uint64_t>(*counter));
  SYNK_GRID_LOOP(i, n) {
    const uint64_t base = static_cast<uint64_t>(i) & ~uint64_t{0xffffffffu};
    y[i] = dropout::element_hash(static_cast<uint32_t>(i), dropout::block_key(key, base)) >= thr ? scale : 0.f;
  }
}

__global__ void fill_kernel(int64_t n, float value, float* y) {
  SYNK_GRID_LOOP(i, n) y[i] = value;
}

// Rounded multiply then rounded add, as the CPU form computes it (no fused
// multiply-add), so weighted gradients match the CPU path.
__global__ void scale_add_kernel(int64_t n, float w, const float* x, float* y, bool add) {
  SYNK_GRID_LOOP(i, n) {
    const float wx = __fmul_rn(w, x[i]);
    y[i] = add ? __fadd_rn(y[i], wx) : wx;
  }
}

}  // namespace

void binary_f32(BinOp op, const Strided& g, const float* a, const float* b, float* o, cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(binary_f32_kernel, grid_for(g.numel), kThreads, 0, stream)(op, g, a, b, o);
}

void binary_i32(BinOp op, const Strided& g, const int32_t* a, const int32_t* b, int32_t* o,
                cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(binary_i32_kernel, grid_for(g.numel), kThreads, 0, stream)(op, g, a, b, o);
}

void equal_f32(const Strided& g, const float* a, const float* b, int32_t* o, cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(equal_f32_kernel, grid_for(g.numel), kThreads, 0, stream)(g, a, b, o);
}

void unary_f32(UnOp op, int64_t n, const float* x, float* y, float p, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(unary_f32_kernel, grid_for(n), kThreads, 0, stream)(op, n, x, y, p);
}

void neg_i32(int64_t n, const int32_t* x, int32_t* y, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(neg_i32_kernel, grid_for(n), kThreads, 0, stream)(n, x, y);
}

void cast_f32_i32(int64_t n, const float* x, int32_t* y, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(cast_f32_i32_kernel, grid_for(n), kThreads, 0, stream)(n, x, y);
}

void cast_i32_f32(int64_t n, const int32_t* x, float* y, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(cast_i32_f32_kernel, grid_for(n), kThreads, 0, stream)(n, x, y);
}

void strided_copy(const Strided& g, const uint32_t* x, uint32_t* y, bool scaled, float scale,
                  cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(strided_copy_kernel, grid_for(g.numel), kThreads, 0, stream)(g, x, y, scaled, scale);
}

void bias_relu_cols(int64_t rows, int64_t cols, const float* bias, bool relu, float* y, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n <= 0 || (!bias && !relu)) return;
  SYNK_LAUNCH(bias_relu_cols_kernel, grid_for(n), kThreads, 0, stream)(n, cols, bias, relu, y);
}

void bias_relu_rows(int64_t rows, int64_t cols, const float* bias, int64_t nb, bool relu, float* y,
                    cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n <= 0 || (!bias && !relu) || (bias && nb <= 0)) return;
  SYNK_LAUNCH(bias_relu_rows_kernel, grid_for(n), kThreads, 0, stream)(n, cols, bias, nb, relu, y);
}

void dropout_mask(int64_t n, uint32_t thr, float scale, uint64_t key_base, const unsigned long long* counter,
                  float* y, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(dropout_kernel, grid_for(n), kThreads, 0, stream)(n, thr, scale, key_base, counter, y);
}

void fill(int64_t n, float value, float* y, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(fill_kernel, grid_for(n), kThreads, 0, stream)(n, value, y);
}

void scale_add(int64_t n, float w, const float* x, float* y, bool add, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(scale_add_kernel, grid_for(n), kThreads, 0, stream)(n, w, x, y, add);
}

}  // namespace synk::kernels
