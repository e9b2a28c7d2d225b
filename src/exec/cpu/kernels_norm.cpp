// exec/cpu/kernels_norm.cpp — layer norm, batch norm and average pooling on
// the CPU; the formulas are kernels/norm.hpp's, shared with the CUDA kernels.
//
// Statistics are two-pass (the mean, then the squares of x - mean), which
// stays exact where the one-pass sum of squares would cancel; each pass is
// a short contiguous loop with eight partial sums, so it vectorises without
// -ffast-math. Layer norm rows (the last axis) stay in cache between the
// passes. Batch norm walks each channel's [N][spatial] rows; channel sums
// are added in double across rows, so large batches stay accurate. With no
// spatial dims ([N, C], BatchNorm1d) a channel's values are strided: there
// the loops run over blocks of channels instead, contiguous in C.
#include <algorithm>
#include <cmath>

#include "exec/cpu/kernels.hpp"
#include "norm.hpp"  // kernels/

namespace synk::cpu {

namespace {

// sum(x[i] - c) and sum((x[i] - c)^2) of n contiguous values.
inline float sum_shift(const float* __restrict x, int64_t n, float c) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += x[i + k] - c;
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += x[i] - c;
  return s;
}
inline float sum_sq_shift(const float* __restrict x, int64_t n, float c) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const float d = x[i + k] - c;
      acc[k] += d * d;
    }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += (x[i] - c) * (x[i] - c);
  return s;
}
// sum(dy) and sum(dy * (x - c)), as two loops: GCC vectorises the pair of
// accumulator arrays of one fused loop poorly (2.7x slower here).
inline float sum_prod_shift(const float* __restrict x, const float* __restrict dy, int64_t n, float c) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += dy[i + k] * (x[i + k] - c);
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += dy[i] * (x[i] - c);
  return s;
}
inline void sum_dy(const float* x, const float* dy, int64_t n, float c, float& sdy, float& sdyx) {
  sdy = sum_shift(dy, n, 0.f);
  sdyx = sum_prod_shift(x, dy, n, c);
}

// Mean and 1/sqrt(var + eps) of one row.
inline void row_stats(const float* x, int64_t d, float eps, float& mean, float& rs) {
  const float inv = 1.f / static_cast<float>(d);
  mean = sum_shift(x, d, 0.f) * inv;
  rs = norm::rstd(sum_sq_shift(x, d, mean) * inv, eps);
}

// Channels per block in the [N, C] (no spatial dims) loops: their per-channel
// values live on the stack.
constexpr int64_t kChanBlock = 256;

}  // namespace

void layer_norm(const AxisGeom& g, const float* x, const float* gamma, const float* beta, float eps, float* y) {
  const int64_t d = g.n;
  if (d == 0) return;
  for (int64_t r = 0; r < g.outer; ++r) {
    const float* __restrict xr = x + r * d;
    float* __restrict yr = y + r * d;
    float mean, rs;
    row_stats(xr, d, eps, mean, rs);
    if (gamma) {
      for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mean) * rs * gamma[j] + beta[j];
    } else {
      for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mean) * rs;
    }
  }
}

void layer_norm_grad(const AxisGeom& g, const float* x, const float* gamma, const float* dy, float eps, float* dx) {
  const int64_t d = g.n;
  if (d == 0) return;
  const float inv = 1.f / static_cast<float>(d);
  for (int64_t r = 0; r < g.outer; ++r) {
    const float* __restrict xr = x + r * d;
    const float* __restrict gr = dy + r * d;
    float* __restrict q = dx + r * d;
    float mean, rs;
    row_stats(xr, d, eps, mean, rs);
    // Two loops, as sum_dy (one fused loop vectorises poorly).
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8)
      for (int k = 0; k < 8; ++k) a[k] += gr[j + k] * gamma[j + k];
    for (int64_t i = 0; i + 8 <= d; i += 8)
      for (int k = 0; k < 8; ++k) b[k] += gr[i + k] * gamma[i + k] * (xr[i + k] - mean);
    float sg = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    float sgx = ((b[0] + b[4]) + (b[1] + b[5])) + ((b[2] + b[6]) + (b[3] + b[7]));
    for (; j < d; ++j) {
      sg += gr[j] * gamma[j];
      sgx += gr[j] * gamma[j] * (xr[j] - mean);
    }
    sgx *= rs;
    const float mg = sg * inv, mgx = sgx * inv;
    for (j = 0; j < d; ++j) q[j] = norm::grad_x(gr[j] * gamma[j], (xr[j] - mean) * rs, rs, mg, mgx);
  }
}

void batch_norm_var(const AxisGeom& g, const float* x, const float* mean, float* var) {
  const int64_t N = g.outer, C = g.n, S = g.inner;
  const double m = static_cast<double>(N * S);
  if (S == 1) {
    for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
      const int64_t cb = std::min(kChanBlock, C - c0);
      double acc[kChanBlock] = {};
      for (int64_t n = 0; n < N; ++n) {
        const float* __restrict r = x + n * C + c0;
        for (int64_t c = 0; c < cb; ++c) {
          const float dlt = r[c] - mean[c0 + c];
          acc[c] += static_cast<double>(dlt * dlt);
        }
      }
      for (int64_t c = 0; c < cb; ++c) var[c0 + c] = static_cast<float>(acc[c] / m);
    }
    return;
  }
  for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
    const int64_t cb = std::min(kChanBlock, C - c0);
    double acc[kChanBlock] = {};
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < cb; ++c) acc[c] += sum_sq_shift(x + (n * C + c0 + c) * S, S, mean[c0 + c]);
    for (int64_t c = 0; c < cb; ++c) var[c0 + c] = static_cast<float>(acc[c] / m);
  }
}

void batch_norm(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                const float* beta, float eps, float* y, bool relu) {
  const int64_t N = g.outer, C = g.n, S = g.inner;
  auto aff = [&](int64_t c) {
    const float rs = norm::rstd(var[c], eps);
    return gamma ? norm::affine(mean[c], rs, gamma[c], beta[c]) : norm::affine(mean[c], rs, 1.f, 0.f);
  };
  // The ReLU op's own formula (elementwise.hpp: NaN becomes 0).
  const ew::Relu rl;
  auto act = [relu, rl](float v) { return relu ? rl(v) : v; };
  if (S == 1) {
    for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
      const int64_t cb = std::min(kChanBlock, C - c0);
      float sc[kChanBlock], sh[kChanBlock];
      for (int64_t c = 0; c < cb; ++c) {
        const norm::Affine a = aff(c0 + c);
        sc[c] = a.scale;
        sh[c] = a.shift;
      }
      for (int64_t n = 0; n < N; ++n) {
        const float* __restrict r = x + n * C + c0;
        float* __restrict q = y + n * C + c0;
        for (int64_t c = 0; c < cb; ++c) q[c] = act(r[c] * sc[c] + sh[c]);
      }
    }
    return;
  }
  for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
    const int64_t cb = std::min(kChanBlock, C - c0);
    norm::Affine af[kChanBlock];
    for (int64_t c = 0; c < cb; ++c) af[c] = aff(c0 + c);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < cb; ++c) {
        const float* __restrict r = x + (n * C + c0 + c) * S;
        float* __restrict q = y + (n * C + c0 + c) * S;
        const float sc = af[c].scale, sh = af[c].shift;
        if (relu) {
          for (int64_t i = 0; i < S; ++i) q[i] = rl(r[i] * sc + sh);
        } else {
          for (int64_t i = 0; i < S; ++i) q[i] = r[i] * sc + sh;
        }
      }
  }
}

// Per channel of [c0, c0 + cb), added into a and b: the sum of dy and of
// dy * (x - mean) over every image (batch norm's gradient sums).
static void block_sums(int64_t N, int64_t C, int64_t S, int64_t c0, int64_t cb, const float* x, const float* mean,
                       const float* dy, double* a, double* b) {
  if (S == 1) {
    for (int64_t n = 0; n < N; ++n) {
      const float* __restrict r = x + n * C + c0;
      const float* __restrict gr = dy + n * C + c0;
      for (int64_t c = 0; c < cb; ++c) {
        a[c] += static_cast<double>(gr[c]);
        b[c] += static_cast<double>(gr[c] * (r[c] - mean[c0 + c]));
      }
    }
    return;
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < cb; ++c) {
      const int64_t o = (n * C + c0 + c) * S;
      float sdy, sdyx;
      sum_dy(x + o, dy + o, S, mean[c0 + c], sdy, sdyx);
      a[c] += sdy;
      b[c] += sdyx;
    }
}

// dx of the channels [c0, c0 + cb) of every image from their per-channel
// rstd rs, mean(gy) mg and mean(gy * xhat) mgx (the formula: norm::grad_x).
static void grad_x_block(int64_t N, int64_t C, int64_t S, int64_t c0, int64_t cb, const float* x, const float* mean,
                  const float* gamma, const float* dy, const float* rs, const float* mg, const float* mgx, float* dx) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < cb; ++c) {
      const int64_t o = (n * C + c0 + c) * S;
      const float* __restrict r = x + o;
      const float* __restrict gr = dy + o;
      float* __restrict q = dx + o;
      const float mu = mean[c0 + c], gm = gamma[c0 + c], k = rs[c], u = mg[c], v = mgx[c];
      for (int64_t i = 0; i < S; ++i) q[i] = norm::grad_x(gr[i] * gm, (r[i] - mu) * k, k, u, v);
    }
}

void batch_norm_grad(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                     const float* dy, float eps, bool training, float* dx, const float* sums) {
  if (training && sums) {
    // The statistics' terms from the sums: one pass, over x, dy and dx.
    const int64_t N = g.outer, C = g.n, S = g.inner;
    for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
      const int64_t cb = std::min(kChanBlock, C - c0);
      float rs[kChanBlock], mg[kChanBlock], mgx[kChanBlock];
      for (int64_t c = 0; c < cb; ++c) {
        rs[c] = norm::rstd(var[c0 + c], eps);
        norm::grad_means(sums[c0 + c], sums[C + c0 + c], gamma[c0 + c], N * S, mg[c], mgx[c]);
      }
      grad_x_block(N, C, S, c0, cb, x, mean, gamma, dy, rs, mg, mgx, dx);
    }
    return;
  }
  const int64_t N = g.outer, C = g.n, S = g.inner;
  const double m = static_cast<double>(N * S);
  // Per channel: k = gamma * rs multiplies dy; in training the batch
  // statistics' path subtracts mean(gy) and xhat * mean(gy * xhat).
  for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
    const int64_t cb = std::min(kChanBlock, C - c0);
    double a[kChanBlock] = {}, b[kChanBlock] = {};
    if (training) block_sums(N, C, S, c0, cb, x, mean, dy, a, b);
    float rs[kChanBlock], mg[kChanBlock], mgx[kChanBlock];
    for (int64_t c = 0; c < cb; ++c) {
      rs[c] = norm::rstd(var[c0 + c], eps);
      mg[c] = training ? static_cast<float>(a[c] / m) * gamma[c0 + c] : 0.f;
      mgx[c] = training ? static_cast<float>(b[c] / m) * gamma[c0 + c] * rs[c] : 0.f;
    }
    if (S > 1) {
      grad_x_block(N, C, S, c0, cb, x, mean, gamma, dy, rs, mg, mgx, dx);
      continue;
    }
    // [N, C]: the channels of a row are contiguous, so the loop runs along them.
    for (int64_t n = 0; n < N; ++n) {
      const float* __restrict r = x + n * C + c0;
      const float* __restrict gr = dy + n * C + c0;
      float* __restrict q = dx + n * C + c0;
      for (int64_t c = 0; c < cb; ++c)
        q[c] = norm::grad_x(gr[c] * gamma[c0 + c], (r[c] - mean[c0 + c]) * rs[c], rs[c], mg[c], mgx[c]);
    }
  }
}

void batch_norm_grad_gamma(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                           float eps, float* out) {
  const int64_t N = g.outer, C = g.n, S = g.inner;
  for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
    const int64_t cb = std::min(kChanBlock, C - c0);
    double b[kChanBlock] = {};
    if (S == 1) {
      for (int64_t n = 0; n < N; ++n) {
        const float* __restrict r = x + n * C + c0;
        const float* __restrict gr = dy + n * C + c0;
        for (int64_t c = 0; c < cb; ++c) b[c] += static_cast<double>(gr[c] * (r[c] - mean[c0 + c]));
      }
    } else {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cb; ++c) {
          const int64_t o = (n * C + c0 + c) * S;
          b[c] += sum_prod_shift(x + o, dy + o, S, mean[c0 + c]);
        }
    }
    for (int64_t c = 0; c < cb; ++c) out[c0 + c] = static_cast<float>(b[c]) * norm::rstd(var[c0 + c], eps);
  }
}

void batch_norm_grad_sums(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                          float eps, float* out) {
  const int64_t N = g.outer, C = g.n, S = g.inner;
  for (int64_t c0 = 0; c0 < C; c0 += kChanBlock) {
    const int64_t cb = std::min(kChanBlock, C - c0);
    double a[kChanBlock] = {}, b[kChanBlock] = {};
    block_sums(N, C, S, c0, cb, x, mean, dy, a, b);
    for (int64_t c = 0; c < cb; ++c) {
      out[c0 + c] = static_cast<float>(a[c]);
      out[C + c0 + c] = static_cast<float>(b[c]) * norm::rstd(var[c0 + c], eps);
    }
  }
}

void batch_norm_running_var(const AxisGeom& g, const float* running, const float* var, float momentum, float* out) {
  const int64_t m = g.outer * g.inner;
  for (int64_t c = 0; c < g.n; ++c) out[c] = norm::running_var(running[c], var[c], momentum, m);
}

void avg_pool2d(const PoolGeom& g, const float* x, float* y) {
  const int64_t planes = g.n * g.c;
  const float inv = 1.f / static_cast<float>(g.kh * g.kw);
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * g.h * g.w;
    float* yp = y + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      int64_t ha, hb;
      norm::window(oh, g.kh, g.sh, g.ph, g.h, ha, hb);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        int64_t wa, wb;
        norm::window(ow, g.kw, g.sw, g.pw, g.w, wa, wb);
        float s = 0.f;
        for (int64_t ih = ha; ih < hb; ++ih)
          for (int64_t iw = wa; iw < wb; ++iw) s += xp[ih * g.w + iw];
        yp[oh * g.ow + ow] = s * inv;
      }
    }
  }
}

void avg_pool2d_grad(const PoolGeom& g, const float* dy, float* dx) {
  const int64_t planes = g.n * g.c;
  const float inv = 1.f / static_cast<float>(g.kh * g.kw);
  std::fill(dx, dx + planes * g.h * g.w, 0.f);
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dp = dx + pl * g.h * g.w;
    const float* gp = dy + pl * g.oh * g.ow;
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      int64_t ha, hb;
      norm::window(oh, g.kh, g.sh, g.ph, g.h, ha, hb);
      for (int64_t ow = 0; ow < g.ow; ++ow) {
        int64_t wa, wb;
        norm::window(ow, g.kw, g.sw, g.pw, g.w, wa, wb);
        const float v = gp[oh * g.ow + ow] * inv;
        for (int64_t ih = ha; ih < hb; ++ih)
          for (int64_t iw = wa; iw < wb; ++iw) dp[ih * g.w + iw] += v;
      }
    }
  }
}

}  // namespace synk::cpu
