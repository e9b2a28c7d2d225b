// kernels/pointwise.cu — elementwise kernels of the graph executor:
// broadcasting binary ops, where, unary math, casts, strided copies (transpose,
// broadcast), fused bias/ReLU epilogues, the dropout mask and fill.
//
// The elementwise formulas and the cast are kernels/elementwise.hpp's, the
// very code the CPU kernels run (src/exec/cpu/kernels_elementwise.cpp); the
// dropout mask is kernels/dropout_bits.hpp's hash, bit for bit as on the CPU.
#include "dropout_bits.hpp"
#include "elementwise.hpp"
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

// ... and in operands a, b and c (where).
__device__ inline void strided_offsets3(const Strided& g, int64_t i, int64_t& oa, int64_t& ob, int64_t& oc) {
  oa = 0;
  ob = 0;
  oc = 0;
  for (int d = g.nd - 1; d >= 0; --d) {
    const int64_t k = i % g.dim[d];
    i /= g.dim[d];
    oa += k * g.sa[d];
    ob += k * g.sb[d];
    oc += k * g.sc[d];
  }
}

// One kernel instance per formula (kernels/elementwise.hpp): F is the op's
// functor, picked on the host by ew::visit_binary / visit_unary; T the
// operands' type, O the result's. One template parameter per kernel (see
// SYNK_LAUNCH).
template <class T, class O, class F>
struct Elementwise {
  using In = T;
  using Out = O;
  F f;
};

template <class E>
__global__ void binary_kernel(Strided g, const typename E::In* a, const typename E::In* b, typename E::Out* o, E e) {
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oa, ob;
    strided_offsets(g, i, oa, ob);
    o[i] = static_cast<typename E::Out>(e.f(a[oa], b[ob]));
  }
}

// where: kernels/elementwise.hpp's Where over the condition (a) and the
// operands (b, c) of type T.
template <class T>
__global__ void where_kernel(Strided g, const int32_t* c, const T* a, const T* b, T* o) {
  const ew::Where f;
  SYNK_GRID_LOOP(i, g.numel) {
    int64_t oc, oa, ob;
    strided_offsets3(g, i, oc, oa, ob);
    o[i] = f(c[oc], a[oa], b[ob]);
  }
}

template <class E>
__global__ void unary_kernel(int64_t n, const typename E::In* x, typename E::Out* y, E e) {
  SYNK_GRID_LOOP(i, n) y[i] = e.f(x[i]);
}

__global__ void cast_f32_i32_kernel(int64_t n, const float* x, int32_t* y) {
  SYNK_GRID_LOOP(i, n) y[i] = ew::cast_f32_i32(x[i]);
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

template <class T, class O, class F>
void launch_binary(const Strided& g, const T* a, const T* b, O* o, F f, cudaStream_t stream) {
  if (g.numel <= 0) return;
  using E = Elementwise<T, O, F>;
  SYNK_LAUNCH(binary_kernel<E>, grid_for(g.numel), kThreads, 0, stream)(g, a, b, o, E{f});
}

template <class T, class F>
void launch_unary(int64_t n, const T* x, T* y, F f, cudaStream_t stream) {
  if (n <= 0) return;
  using E = Elementwise<T, T, F>;
  SYNK_LAUNCH(unary_kernel<E>, grid_for(n), kThreads, 0, stream)(n, x, y, E{f});
}

}  // namespace

void binary_f32(BinOp op, const Strided& g, const float* a, const float* b, float* o, cudaStream_t stream) {
  ew::visit_binary(op, [&](auto f) { launch_binary(g, a, b, o, f, stream); });
}

void binary_i32(BinOp op, const Strided& g, const int32_t* a, const int32_t* b, int32_t* o,
                cudaStream_t stream) {
  ew::visit_binary(op, [&](auto f) {
    if constexpr (ew::has_i32<decltype(f)>) launch_binary(g, a, b, o, f, stream);
  });
}

void compare_f32(BinOp op, const Strided& g, const float* a, const float* b, int32_t* o, cudaStream_t stream) {
  ew::visit_compare(op, [&](auto f) { launch_binary(g, a, b, o, f, stream); });
}

void where_f32(const Strided& g, const int32_t* c, const float* a, const float* b, float* o, cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(where_kernel<float>, grid_for(g.numel), kThreads, 0, stream)(g, c, a, b, o);
}

void where_i32(const Strided& g, const int32_t* c, const int32_t* a, const int32_t* b, int32_t* o,
               cudaStream_t stream) {
  if (g.numel <= 0) return;
  SYNK_LAUNCH(where_kernel<int32_t>, grid_for(g.numel), kThreads, 0, stream)(g, c, a, b, o);
}

void unary_f32(UnOp op, int64_t n, const float* x, float* y, float p, float q, cudaStream_t stream) {
  ew::visit_unary(op, p, q, [&](auto f) { launch_unary(n, x, y, f, stream); });
}

void neg_i32(int64_t n, const int32_t* x, int32_t* y, cudaStream_t stream) {
  launch_unary(n, x, y, ew::Neg{}, stream);
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
