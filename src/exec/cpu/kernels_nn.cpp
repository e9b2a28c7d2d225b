// exec/cpu/kernels_nn.cpp — matmul, convolution and max-pooling on the CPU.
//
// Matmul goes straight to cblas_sgemm with transpose flags (no materialised
// transposes). Stride-1 convolutions run the direct kernels of
// conv_direct.cpp; the others are im2col + sgemm per image: with NCHW layout,
// W[O,K] x col[K,P] lands directly in the image's [O,OH*OW] output block, so
// no output permutation is needed, and one image's column matrix stays in
// cache. The gradients reuse the same column layout (col2im for the input).
#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <limits>

#include <cblas.h>

#include "exec/cpu/kernels.hpp"
#include "synk/error.hpp"

namespace synk::cpu {

namespace {

blasint bi(int64_t v) {
  if (v > INT_MAX) throw BackendError("CPU executor: matrix dimension " + std::to_string(v) + " exceeds the BLAS int range");
  return static_cast<blasint>(v);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i) {
      float* r = c + i * ldc;
      if (beta == 0.f) std::fill(r, r + n, 0.f);
      else for (int64_t j = 0; j < n; ++j) r[j] *= beta;
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              bi(m), bi(n), bi(k), 1.f, a, bi(std::max<int64_t>(lda, 1)), b,
              bi(std::max<int64_t>(ldb, 1)), beta, c, bi(std::max<int64_t>(ldc, 1)));
}

// The rows copied here are short (often 8-24 floats): plain loops beat
// memcpy/memset calls, so keep GCC from turning them back into such calls.
#if defined(__GNUC__) && !defined(__clang__)
#define SYNK_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define SYNK_NO_LIBCALLS
#endif

// A row of n (= FW when FW > 0) floats. A compile-time width turns the
// short rows of typical convs into a few vector moves without loop control.
template <int FW>
SYNK_NO_LIBCALLS inline void copy_row(float* __restrict d, const float* __restrict s, int64_t n) {
  if constexpr (FW > 0) {
    for (int i = 0; i < FW; ++i) d[i] = s[i];
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
  }
}
template <int FW>
inline void add_row(float* __restrict d, const float* __restrict s, int64_t n) {
  if constexpr (FW > 0) {
    for (int i = 0; i < FW; ++i) d[i] += s[i];
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  }
}

// Output rows oh whose input row ih = oh*sh - ph + kh is inside the image.
inline void valid_rows(const ConvGeom& g, int64_t kh, int64_t& lo, int64_t& hi) {
  const int64_t t = g.ph - kh;
  lo = t <= 0 ? 0 : (t + g.sh - 1) / g.sh;
  hi = g.h + t <= 0 ? 0 : (g.h + t - 1) / g.sh + 1;
  lo = std::min(lo, g.oh);
  hi = std::clamp(hi, lo, g.oh);
}
// Output columns ow whose input column ow*sw + kw - pw is inside the image.
inline void valid_cols(const ConvGeom& g, int64_t kw, int64_t& lo, int64_t& hi) {
  const int64_t iw0 = kw - g.pw;
  lo = iw0 >= 0 ? 0 : (-iw0 + g.sw - 1) / g.sw;
  hi = g.w - iw0 <= 0 ? 0 : (g.w - iw0 - 1) / g.sw + 1;
  lo = std::min(lo, g.ow);
  hi = std::clamp(hi, lo, g.ow);
}

// Column matrix of one image: row (c, kh, kw), column (oh, ow).
template <int FW>
SYNK_NO_LIBCALLS void im2col_t(const ConvGeom& g, const float* x, float* col) {
  const int64_t P = g.p(), OW = g.ow, sw = g.sw;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t kh = 0; kh < g.kh; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_rows(g, kh, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        float* __restrict dst = col + ((c * g.kh + kh) * g.kw + kw) * P;
        const int64_t iw0 = kw - g.pw;
        int64_t lo, hi;
        valid_cols(g, kw, lo, hi);
        for (int64_t i = 0; i < oh_lo * OW; ++i) dst[i] = 0.f;
        for (int64_t i = oh_hi * OW; i < P; ++i) dst[i] = 0.f;
        const float* src = x + (c * g.h + oh_lo * g.sh - g.ph + kh) * g.w + iw0;
        const int64_t step = g.sh * g.w;
        if (sw == 1 && lo == 0 && hi == OW) {
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh, src += step) copy_row<FW>(dst + oh * OW, src, OW);
          continue;
        }
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh, src += step) {
          float* __restrict d = dst + oh * OW;
          for (int64_t ow = 0; ow < lo; ++ow) d[ow] = 0.f;
          for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * sw];
          for (int64_t ow = hi; ow < OW; ++ow) d[ow] = 0.f;
        }
      }
    }
  }
}

// Adds a column matrix back into one image (dx must be zeroed first).
template <int FW>
void col2im_t(const ConvGeom& g, const float* col, float* dx) {
  const int64_t P = g.p(), OW = g.ow, sw = g.sw;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t kh = 0; kh < g.kh; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_rows(g, kh, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        const float* src = col + ((c * g.kh + kh) * g.kw + kw) * P;
        const int64_t iw0 = kw - g.pw;
        int64_t lo, hi;
        valid_cols(g, kw, lo, hi);
        float* d = dx + (c * g.h + oh_lo * g.sh - g.ph + kh) * g.w + iw0;
        const int64_t step = g.sh * g.w;
        if (sw == 1 && lo == 0 && hi == OW) {
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh, d += step) add_row<FW>(d, src + oh * OW, OW);
          continue;
        }
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh, d += step) {
          const float* __restrict s = src + oh * OW;
          for (int64_t ow = lo; ow < hi; ++ow) d[ow * sw] += s[ow];
        }
      }
    }
  }
}

#define SYNK_ROW_WIDTHS(X) X(4) X(8) X(12) X(14) X(16) X(24) X(28) X(32)

void im2col(const ConvGeom& g, const float* x, float* col) {
  switch (g.ow) {
#define SYNK_CASE(w) case w: im2col_t<w>(g, x, col); return;
    SYNK_ROW_WIDTHS(SYNK_CASE)
#undef SYNK_CASE
    default: im2col_t<0>(g, x, col);
  }
}

void col2im(const ConvGeom& g, const float* col, float* dx) {
  switch (g.ow) {
#define SYNK_CASE(w) case w: col2im_t<w>(g, col, dx); return;
    SYNK_ROW_WIDTHS(SYNK_CASE)
#undef SYNK_CASE
    default: col2im_t<0>(g, col, dx);
  }
}

}  // namespace

void matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
            float* c, float beta) {
  gemm(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

void batch_matmul_bias(const BatchGeom& g, const float* a, const float* b, const float* bias, bool relu, float* c) {
  if (g.fold != 1 || g.m == 0 || g.n == 0) {
    batch_matmul(g, a, b, c);
    bias_relu_cols(g.out_count * g.m, g.n, bias, relu, c);
    return;
  }
  // gemm_small starts its accumulators at the bias. For OpenBLAS the bias
  // is written into the rows first and the GEMM adds onto it (beta 1): with
  // beta 0 it zeroes C in a pass of its own, and the bias would be one more
  // pass over the output.
  const int64_t rows = g.count * g.m;
  if (!gemm_small(g.tb, rows, g.n, g.k, a, b, bias, c)) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * g.n, bias, static_cast<size_t>(g.n) * sizeof(float));
    gemm(false, g.tb, rows, g.n, g.k, a, g.k, b, g.ldb(), 1.f, c, g.n);
  }
  if (relu)
    for (int64_t i = 0; i < rows * g.n; ++i) c[i] = c[i] > 0.f ? c[i] : 0.f;
}

void batch_matmul(const BatchGeom& g, const float* a, const float* b, float* c, const GeluGradEpilogue* ep) {
  if (g.m == 0 || g.n == 0) return;
  if (g.fold == 1) {  // rows stacked: [count*m, k] x op(B)
    if (gemm_small(g.tb, g.count * g.m, g.n, g.k, a, b, nullptr, c, ep)) return;
    gemm(false, g.tb, g.count * g.m, g.n, g.k, a, g.k, b, g.ldb(), 0.f, c, g.n);
  } else if (g.fold == 2) {  // inner dims stacked: [count*k, m]^T x [count*k, n]
    gemm(true, false, g.m, g.n, g.count * g.k, a, g.m, b, g.n, 0.f, c, g.n);
  } else {
    const bool sum = g.summed();
    if (sum) std::fill(c, c + g.out_count * g.m * g.n, 0.f);
    // An odometer over the collapsed batch dims (BatchGeom::advance).
    int64_t idx[kMaxDims] = {};
    int64_t oa = 0, ob = 0, oc = 0;
    for (int64_t i = 0; i < g.count; ++i) {
      gemm(g.ta, g.tb, g.m, g.n, g.k, a + oa, g.lda(), b + ob, g.ldb(), sum ? 1.f : 0.f, c + oc, g.n);
      g.advance(g.nd, idx, oa, ob, oc);
    }
  }
  if (ep) gelu_grad_loop(ep->op, g.out_count * g.m * g.n, ep->x, 1, c, 1, c);
}

void bias_relu_rows(int64_t rows, int64_t cols, const float* bias, int64_t nb, bool relu, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict q = y + r * cols;
    const float b = bias ? bias[r % nb] : 0.f;
    if (relu) {
      for (int64_t j = 0; j < cols; ++j) {
        const float v = q[j] + b;
        q[j] = v > 0.f ? v : 0.f;
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) q[j] += b;
    }
  }
}

void bias_relu_cols(int64_t rows, int64_t cols, const float* bias, bool relu, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict q = y + r * cols;
    const float* __restrict b = bias;
    if (relu) {
      for (int64_t j = 0; j < cols; ++j) {
        const float v = q[j] + b[j];
        q[j] = v > 0.f ? v : 0.f;
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) q[j] += b[j];
    }
  }
}

void conv2d(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
            const float* bias, bool relu) {
  if (g.direct()) return conv2d_direct(g, x, w, y, work, bias, relu);
  const int64_t K = g.k(), P = g.p(), img = g.c * g.h * g.w;
  for (int64_t n = 0; n < g.n; ++n) {
    const float* xn = x + n * img;
    const float* col = xn;
    if (!g.identity_cols()) {
      im2col(g, xn, work);
      col = work;
    }
    float* yn = y + n * g.o * P;
    gemm(false, false, g.o, P, K, w, K, col, P, 0.f, yn, P);
    // While this image's output is still in cache.
    if (bias || relu) bias_relu_rows(g.o, P, bias, g.o, relu, yn);
  }
}

void conv2d_grad_input(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work) {
  if (g.direct_gi()) return conv2d_grad_input_direct(g, dy, w, dx, work);
  const int64_t K = g.k(), P = g.p(), img = g.c * g.h * g.w;
  for (int64_t n = 0; n < g.n; ++n) {
    float* dxn = dx + n * img;
    const float* dyn = dy + n * g.o * P;
    if (g.identity_cols()) {
      gemm(true, false, K, P, g.o, w, K, dyn, P, 0.f, dxn, P);
      continue;
    }
    gemm(true, false, K, P, g.o, w, K, dyn, P, 0.f, work, P);
    std::fill(dxn, dxn + img, 0.f);
    col2im(g, work, dxn);
  }
}

void conv2d_grad_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work) {
  if (g.direct_gw()) return conv2d_grad_weight_direct(g, x, dy, dw, work);
  const int64_t K = g.k(), P = g.p(), img = g.c * g.h * g.w;
  if (g.n == 0 || P == 0) {
    std::fill(dw, dw + g.o * K, 0.f);
    return;
  }
  for (int64_t n = 0; n < g.n; ++n) {
    const float* xn = x + n * img;
    const float* col = xn;
    if (!g.identity_cols()) {
      im2col(g, xn, work);
      col = work;
    }
    gemm(false, true, g.o, K, P, dy + n * g.o * P, P, col, P, n == 0 ? 0.f : 1.f, dw, K);
  }
}

// ---- max pooling ---------------------------------------------------------------------

namespace {

bool is_2x2(const PoolGeom& g) {
  return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

}  // namespace

void max_pool2d(const PoolGeom& g, const float* x, float* y) {
  const int64_t planes = g.n * g.c;
  const float ninf = -std::numeric_limits<float>::infinity();
  if (is_2x2(g)) {
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float* xp = x + pl * g.h * g.w;
      float* yp = y + pl * g.oh * g.ow;
      for (int64_t oh = 0; oh < g.oh; ++oh) {
        const float* __restrict r0 = xp + 2 * oh * g.w;
        const float* __restrict r1 = r0 + g.w;
        float* __restrict q = yp + oh * g.ow;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          const float a = std::max(r0[2 * ow], r0[2 * ow + 1]);
          const float b = std::max(r1[2 * ow], r1[2 * ow + 1]);
          q[ow] = std::max(a, b);
        }
      }
    }
    return;
  }
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * g.h * g.w;
    float* yp = y + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const int64_t h0 = oh * g.sh - g.ph;
      const int64_t ha = std::max<int64_t>(h0, 0), hb = std::min(h0 + g.kh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const int64_t w0 = ow * g.sw - g.pw;
        const int64_t wa = std::max<int64_t>(w0, 0), wb = std::min(w0 + g.kw, g.w);
        float m = ninf;
        for (int64_t ih = ha; ih < hb; ++ih)
          for (int64_t iw = wa; iw < wb; ++iw) m = xp[ih * g.w + iw] > m ? xp[ih * g.w + iw] : m;
        yp[oh * g.ow + ow] = m;
      }
    }
  }
}

void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx) {
  const int64_t planes = g.n * g.c;
  if (is_2x2(g)) {
    // Windows tile the plane without overlap: every covered element is
    // written once, branch-free (data-dependent branches mispredict half
    // the time here); only an odd last row/column needs zeroing.
    if (g.h != 2 * g.oh || g.w != 2 * g.ow) std::fill(dx, dx + planes * g.h * g.w, 0.f);
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float* xp = x + pl * g.h * g.w;
      float* dp = dx + pl * g.h * g.w;
      const float* gp = dy + pl * g.oh * g.ow;
      for (int64_t oh = 0; oh < g.oh; ++oh) {
        const float* __restrict x0 = xp + 2 * oh * g.w;
        const float* __restrict x1 = x0 + g.w;
        float* __restrict d0 = dp + 2 * oh * g.w;
        float* __restrict d1 = d0 + g.w;
        const float* __restrict gr = gp + oh * g.ow;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
          const float a = x0[2 * ow], b = x0[2 * ow + 1], c = x1[2 * ow], d = x1[2 * ow + 1];
          const float m = std::max(std::max(a, b), std::max(c, d));
          const float gv = gr[ow];
          // The first maximum in window order takes the gradient. Bit masks
          // rather than bools: GCC turns bool chains back into branches.
          const uint32_t gb = std::bit_cast<uint32_t>(gv);
          const uint32_t ea = 0u - static_cast<uint32_t>(a == m);
          const uint32_t eb = ~ea & (0u - static_cast<uint32_t>(b == m));
          const uint32_t ec = ~(ea | eb) & (0u - static_cast<uint32_t>(c == m));
          const uint32_t ed = ~(ea | eb | ec);
          d0[2 * ow] = std::bit_cast<float>(gb & ea);
          d0[2 * ow + 1] = std::bit_cast<float>(gb & eb);
          d1[2 * ow] = std::bit_cast<float>(gb & ec);
          d1[2 * ow + 1] = std::bit_cast<float>(gb & ed);
        }
      }
    }
    return;
  }
  std::fill(dx, dx + planes * g.h * g.w, 0.f);
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * g.h * g.w;
    float* dp = dx + pl * g.h * g.w;
    const float* gp = dy + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const int64_t h0 = oh * g.sh - g.ph;
      const int64_t ha = std::max<int64_t>(h0, 0), hb = std::min(h0 + g.kh, g.h);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        const int64_t w0 = ow * g.sw - g.pw;
        const int64_t wa = std::max<int64_t>(w0, 0), wb = std::min(w0 + g.kw, g.w);
        if (ha >= hb || wa >= wb) continue;  // window entirely in the padding
        int64_t best = ha * g.w + wa;
        float bv = xp[best];
        for (int64_t ih = ha; ih < hb; ++ih)
          for (int64_t iw = wa; iw < wb; ++iw)
            if (xp[ih * g.w + iw] > bv) { bv = xp[ih * g.w + iw]; best = ih * g.w + iw; }
        dp[best] += gp[oh * g.ow + ow];
      }
    }
  }
}

}  // namespace synk::cpu
