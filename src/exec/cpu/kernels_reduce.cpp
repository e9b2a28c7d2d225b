// exec/cpu/kernels_reduce.cpp — reductions, argmax, softmax and softmax
// cross-entropy on the CPU.
//
// A reduction's dims are collapsed into alternating kept/reduced runs (by
// plan::make_reduce), so
// "sum over all", "sum over the leading axis" (bias gradients) and "sum over
// the last axis" each become one or two tight loops; the general case is the
// same recursion with more levels.
#include <algorithm>
#include <cmath>
#include <limits>

#include "exec/cpu/kernels.hpp"
#include "synk/error.hpp"

namespace synk::cpu {

namespace {

struct SumF {
  using T = float;
  static float init() { return 0.f; }
  static float comb(float a, float b) { return a + b; }
  // Eight partial sums per block (vectorises without -ffast-math), blocks
  // added in double: long sums stay accurate at no real cost.
  static float block(const float* __restrict x, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += x[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; ++i) s += x[i];
    return s;
  }
  static float contig(const float* __restrict x, int64_t n) {
    constexpr int64_t kBlock = 1024;
    if (n <= kBlock) return block(x, n);
    double s = 0;
    for (int64_t i = 0; i < n; i += kBlock) s += block(x + i, std::min(kBlock, n - i));
    return static_cast<float>(s);
  }
};

struct MaxF {
  using T = float;
  static float init() { return -std::numeric_limits<float>::infinity(); }
  static float comb(float a, float b) { return b > a ? b : a; }
  static float contig(const float* __restrict x, int64_t n) {
    float acc[8];
    for (float& a : acc) a = init();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
    float m = init();
    for (float a : acc) m = comb(m, a);
    for (; i < n; ++i) m = comb(m, x[i]);
    return m;
  }
};

struct SumI {
  using T = int32_t;
  static int32_t init() { return 0; }
  static int32_t comb(int32_t a, int32_t b) { return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b)); }
  static int32_t contig(const int32_t* x, int64_t n) {
    uint32_t s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<uint32_t>(x[i]);
    return static_cast<int32_t>(s);
  }
};

struct MaxI {
  using T = int32_t;
  static int32_t init() { return std::numeric_limits<int32_t>::min(); }
  static int32_t comb(int32_t a, int32_t b) { return b > a ? b : a; }
  static int32_t contig(const int32_t* x, int64_t n) {
    int32_t m = init();
    for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
  }
};

template <class R>
void red_rec(const Reduce& r, int d, const typename R::T* x, typename R::T* y) {
  using T = typename R::T;
  const int64_t n = r.dim[d];
  if (d == r.nd - 1) {
    if (r.red[d]) {
      *y = R::comb(*y, R::contig(x, n));
    } else {
      T* __restrict yy = y;
      const T* __restrict xx = x;
      for (int64_t i = 0; i < n; ++i) yy[i] = R::comb(yy[i], xx[i]);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) red_rec<R>(r, d + 1, x + i * r.sx[d], y + i * r.so[d]);
}

template <class R>
void reduce_run(const Reduce& r, const typename R::T* x, typename R::T* y) {
  std::fill(y, y + r.out_numel, R::init());
  if (r.in_numel == 0) return;
  red_rec<R>(r, 0, x, y);
}

}  // namespace

void reduce_f32(ReduceKind op, const Reduce& r, const float* x, float* y) {
  if (op == ReduceKind::Max) {
    reduce_run<MaxF>(r, x, y);
    return;
  }
  reduce_run<SumF>(r, x, y);
  if (op == ReduceKind::Mean && r.out_numel > 0) {
    if (r.in_numel == 0) {
      std::fill(y, y + r.out_numel, std::numeric_limits<float>::quiet_NaN());
    } else {
      const float inv = static_cast<float>(static_cast<double>(r.out_numel) / static_cast<double>(r.in_numel));
      for (int64_t i = 0; i < r.out_numel; ++i) y[i] *= inv;
    }
  }
}

void reduce_i32(ReduceKind op, const Reduce& r, const int32_t* x, int32_t* y) {
  if (op == ReduceKind::Max) {
    reduce_run<MaxI>(r, x, y);
    return;
  }
  reduce_run<SumI>(r, x, y);
  if (op == ReduceKind::Mean && r.out_numel > 0) {
    const int64_t count = r.in_numel / r.out_numel;
    for (int64_t i = 0; i < r.out_numel; ++i) y[i] = count == 0 ? 0 : static_cast<int32_t>(y[i] / count);
  }
}

template <class T>
void argmax(const AxisGeom& g, const T* x, int32_t* y) {
  const int64_t rows = g.outer * g.inner;
  if (g.n == 0) {
    std::fill(y, y + rows, 0);
    return;
  }
  if (g.inner == 1) {
    for (int64_t o = 0; o < g.outer; ++o) {
      const T* r = x + o * g.n;
      int64_t best = 0;
      T bv = r[0];
      for (int64_t k = 1; k < g.n; ++k)
        if (r[k] > bv) { bv = r[k]; best = k; }
      y[o] = static_cast<int32_t>(best);
    }
    return;
  }
  for (int64_t o = 0; o < g.outer; ++o) {
    const T* base = x + o * g.n * g.inner;
    int32_t* yo = y + o * g.inner;
    std::fill(yo, yo + g.inner, 0);
    for (int64_t k = 1; k < g.n; ++k) {
      const T* row = base + k * g.inner;
      for (int64_t j = 0; j < g.inner; ++j)
        if (row[j] > base[yo[j] * g.inner + j]) yo[j] = static_cast<int32_t>(k);
    }
  }
}
template void argmax<float>(const AxisGeom&, const float*, int32_t*);
template void argmax<int32_t>(const AxisGeom&, const int32_t*, int32_t*);

void softmax(const AxisGeom& g, const float* x, float* y, bool log) {
  if (g.n == 0) return;
  if (g.inner == 1) {
    for (int64_t o = 0; o < g.outer; ++o) {
      const float* __restrict r = x + o * g.n;
      float* __restrict q = y + o * g.n;
      const float m = MaxF::contig(r, g.n);
      float s = 0.f;
      if (log) {
        for (int64_t k = 0; k < g.n; ++k) s += std::exp(r[k] - m);
        const float lse = m + std::log(s);
        for (int64_t k = 0; k < g.n; ++k) q[k] = r[k] - lse;
      } else {
        for (int64_t k = 0; k < g.n; ++k) {
          q[k] = std::exp(r[k] - m);
          s += q[k];
        }
        const float inv = 1.f / s;
        for (int64_t k = 0; k < g.n; ++k) q[k] *= inv;
      }
    }
    return;
  }
  for (int64_t o = 0; o < g.outer; ++o) {
    for (int64_t j = 0; j < g.inner; ++j) {
      const float* r = x + o * g.n * g.inner + j;
      float* q = y + o * g.n * g.inner + j;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < g.n; ++k) m = std::max(m, r[k * g.inner]);
      float s = 0.f;
      for (int64_t k = 0; k < g.n; ++k) s += std::exp(r[k * g.inner] - m);
      if (log) {
        const float lse = m + std::log(s);
        for (int64_t k = 0; k < g.n; ++k) q[k * g.inner] = r[k * g.inner] - lse;
      } else {
        const float inv = 1.f / s;
        for (int64_t k = 0; k < g.n; ++k) q[k * g.inner] = std::exp(r[k * g.inner] - m) * inv;
      }
    }
  }
}

int64_t softmax_xent(int64_t n, int64_t c, const float* logits, const int32_t* labels, float* loss) {
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= c) return i;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = logits + i * c;
    const float m = MaxF::contig(r, c);
    float s = 0.f;
    for (int64_t k = 0; k < c; ++k) s += std::exp(r[k] - m);
    loss[i] = m + std::log(s) - r[labels[i]];
  }
  return -1;
}

int64_t softmax_xent_grad(int64_t n, int64_t c, const float* logits, const int32_t* labels,
                          const float* g, float* dx) {
  for (int64_t i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= c) return i;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = logits + i * c;
    float* q = dx + i * c;
    const float m = MaxF::contig(r, c);
    float s = 0.f;
    for (int64_t k = 0; k < c; ++k) {
      q[k] = std::exp(r[k] - m);
      s += q[k];
    }
    const float scale = g[i] / s;
    for (int64_t k = 0; k < c; ++k) q[k] *= scale;
    q[labels[i]] -= g[i];
  }
  return -1;
}

}  // namespace synk::cpu
