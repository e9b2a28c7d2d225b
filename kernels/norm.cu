// kernels/norm.cu — layer norm, batch norm and average pooling on the GPU;
// the formulas are kernels/norm.hpp's, shared with the CPU kernels.
//
// Statistics run one block per row (layer norm) or per channel (batch norm),
// threads striding over its values, then a shared-memory tree; two passes
// (the mean, then the squares of x - mean) as on the CPU, and batch norm's
// channel sums accumulate in double (a channel holds N * H * W values). The
// block that computed a row's or a channel's statistics then writes its
// outputs, so no statistics go through memory between kernels. The
// elementwise batch-norm forward and average pooling use one thread per
// output element; the pooling gradient gathers (each input element sums the
// windows that contain it), so it needs no atomics and no zeroing.
#include "launch.cuh"
#include "norm.hpp"
#include "ops.cuh"

namespace synk::kernels {
namespace {

constexpr int kNormThreads = 256;

// Sum of v over the block (blockDim.x a power of two <= kNormThreads);
// every thread gets it. buf is the caller's __shared__ array.
template <class T>
__device__ T block_sum(T v, T* buf) {
  const int tid = threadIdx.x;
  buf[tid] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) buf[tid] += buf[tid + s];
    __syncthreads();
  }
  const T r = buf[0];
  __syncthreads();  // buf is reused by the next sum
  return r;
}

// Mean and 1/sqrt(var + eps) of row xr (d values), on every thread.
__device__ void row_stats(const float* xr, int64_t d, float eps, float* buf, float& mean, float& rs) {
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += xr[j];
  mean = block_sum(s, buf) / static_cast<float>(d);
  float q = 0.f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) q += (xr[j] - mean) * (xr[j] - mean);
  rs = norm::rstd(block_sum(q, buf) / static_cast<float>(d), eps);
}

__global__ void layer_norm_kernel(AxisGeom g, const float* x, const float* gamma, const float* beta, float eps,
                                  float* y) {
  __shared__ float buf[kNormThreads];
  const int64_t d = g.n;
  for (int64_t r = blockIdx.x; r < g.outer; r += gridDim.x) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float mean, rs;
    row_stats(xr, d, eps, buf, mean, rs);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float xh = (xr[j] - mean) * rs;
      yr[j] = gamma ? xh * gamma[j] + beta[j] : xh;
    }
  }
}

__global__ void layer_norm_grad_kernel(AxisGeom g, const float* x, const float* gamma, const float* dy, float eps,
                                       float* dx) {
  __shared__ float buf[kNormThreads];
  const int64_t d = g.n;
  for (int64_t r = blockIdx.x; r < g.outer; r += gridDim.x) {
    const float* xr = x + r * d;
    const float* gr = dy + r * d;
    float* q = dx + r * d;
    float mean, rs;
    row_stats(xr, d, eps, buf, mean, rs);
    float a = 0.f, b = 0.f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float gy = gr[j] * gamma[j];
      a += gy;
      b += gy * ((xr[j] - mean) * rs);
    }
    const float mg = block_sum(a, buf) / static_cast<float>(d);
    const float mgx = block_sum(b, buf) / static_cast<float>(d);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      q[j] = norm::grad_x(gr[j] * gamma[j], (xr[j] - mean) * rs, rs, mg, mgx);
  }
}

// Offset of value i (of N * S) of channel c in x [N, C, S].
__device__ inline int64_t chan_offset(const AxisGeom& g, int64_t c, int64_t i) {
  return ((i / g.inner) * g.n + c) * g.inner + i % g.inner;
}

__global__ void batch_norm_var_kernel(AxisGeom g, const float* x, const float* mean, float* var) {
  __shared__ double buf[kNormThreads];
  const int64_t m = g.outer * g.inner;
  for (int64_t c = blockIdx.x; c < g.n; c += gridDim.x) {
    double q = 0;
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      const float dl = x[chan_offset(g, c, i)] - mean[c];
      q += static_cast<double>(dl * dl);
    }
    q = block_sum(q, buf);
    if (threadIdx.x == 0) var[c] = static_cast<float>(q / static_cast<double>(m));
  }
}

__global__ void batch_norm_kernel(AxisGeom g, const float* x, const float* mean, const float* var,
                                  const float* gamma, const float* beta, float eps, float* y) {
  SYNK_GRID_LOOP(i, g.outer * g.n * g.inner) {
    const int64_t c = (i / g.inner) % g.n;
    const float rs = norm::rstd(var[c], eps);
    const norm::Affine a = gamma ? norm::affine(mean[c], rs, gamma[c], beta[c]) : norm::affine(mean[c], rs, 1.f, 0.f);
    y[i] = x[i] * a.scale + a.shift;
  }
}

__global__ void batch_norm_grad_kernel(AxisGeom g, const float* x, const float* mean, const float* var,
                                       const float* gamma, const float* dy, float eps, bool training, float* dx,
                                       const float* sums) {
  __shared__ double buf[kNormThreads];
  const int64_t m = g.outer * g.inner;
  for (int64_t c = blockIdx.x; c < g.n; c += gridDim.x) {
    const float mu = mean[c], rs = norm::rstd(var[c], eps), gm = gamma[c];
    float mg = 0.f, mgx = 0.f;
    if (training && sums) {
      norm::grad_means(sums[c], sums[g.n + c], gm, m, mg, mgx);
    } else if (training) {
      double a = 0, b = 0;
      for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
        const int64_t o = chan_offset(g, c, i);
        a += static_cast<double>(dy[o]);
        b += static_cast<double>(dy[o] * (x[o] - mu));
      }
      a = block_sum(a, buf);
      b = block_sum(b, buf);
      mg = static_cast<float>(a / static_cast<double>(m)) * gm;
      mgx = static_cast<float>(b / static_cast<double>(m)) * gm * rs;
    }
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      const int64_t o = chan_offset(g, c, i);
      dx[o] = norm::grad_x(dy[o] * gm, (x[o] - mu) * rs, rs, mg, mgx);
    }
  }
}

__global__ void batch_norm_grad_gamma_kernel(AxisGeom g, const float* x, const float* mean, const float* var,
                                             const float* dy, float eps, float* out) {
  __shared__ double buf[kNormThreads];
  const int64_t m = g.outer * g.inner;
  for (int64_t c = blockIdx.x; c < g.n; c += gridDim.x) {
    double b = 0;
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      const int64_t o = chan_offset(g, c, i);
      b += static_cast<double>(dy[o] * (x[o] - mean[c]));
    }
    b = block_sum(b, buf);
    if (threadIdx.x == 0) out[c] = static_cast<float>(b) * norm::rstd(var[c], eps);
  }
}

__global__ void batch_norm_grad_sums_kernel(AxisGeom g, const float* x, const float* mean, const float* var,
                                            const float* dy, float eps, float* out) {
  __shared__ double buf[kNormThreads];
  const int64_t m = g.outer * g.inner;
  for (int64_t c = blockIdx.x; c < g.n; c += gridDim.x) {
    double a = 0, b = 0;
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      const int64_t o = chan_offset(g, c, i);
      a += static_cast<double>(dy[o]);
      b += static_cast<double>(dy[o] * (x[o] - mean[c]));
    }
    a = block_sum(a, buf);
    b = block_sum(b, buf);
    if (threadIdx.x == 0) {
      out[c] = static_cast<float>(a);
      out[g.n + c] = static_cast<float>(b) * norm::rstd(var[c], eps);
    }
  }
}

__global__ void running_var_kernel(AxisGeom g, const float* running, const float* var, float momentum, float* out) {
  SYNK_GRID_LOOP(c, g.n) out[c] = norm::running_var(running[c], var[c], momentum, g.outer * g.inner);
}

__global__ void avg_pool_kernel(PoolGeom g, const float* x, float* y) {
  const float inv = 1.f / static_cast<float>(g.kh * g.kw);
  SYNK_GRID_LOOP(idx, g.n * g.c * g.oh * g.ow) {
    const int64_t ow = idx % g.ow;
    const int64_t t = idx / g.ow;
    const int64_t oh = t % g.oh;
    const float* xp = x + (t / g.oh) * g.h * g.w;
    int64_t ha, hb, wa, wb;
    norm::window(oh, g.kh, g.sh, g.ph, g.h, ha, hb);
    norm::window(ow, g.kw, g.sw, g.pw, g.w, wa, wb);
    float s = 0.f;
    for (int64_t ih = ha; ih < hb; ++ih)
      for (int64_t iw = wa; iw < wb; ++iw) s += xp[ih * g.w + iw];
    y[idx] = s * inv;
  }
}

__global__ void avg_pool_grad_kernel(PoolGeom g, const float* dy, float* dx) {
  const float inv = 1.f / static_cast<float>(g.kh * g.kw);
  SYNK_GRID_LOOP(idx, g.n * g.c * g.h * g.w) {
    const int64_t iw = idx % g.w;
    const int64_t t = idx / g.w;
    const int64_t ih = t % g.h;
    const float* gp = dy + (t / g.h) * g.oh * g.ow;
    // Windows that contain (ih, iw): oh*sh - ph <= ih < oh*sh - ph + kh.
    const int64_t th = ih + g.ph - g.kh + 1, tw = iw + g.pw - g.kw + 1;
    const int64_t oh_lo = th <= 0 ? 0 : (th + g.sh - 1) / g.sh;
    const int64_t ow_lo = tw <= 0 ? 0 : (tw + g.sw - 1) / g.sw;
    const int64_t oh_hi = (ih + g.ph) / g.sh < g.oh - 1 ? (ih + g.ph) / g.sh : g.oh - 1;
    const int64_t ow_hi = (iw + g.pw) / g.sw < g.ow - 1 ? (iw + g.pw) / g.sw : g.ow - 1;
    float s = 0.f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) s += gp[oh * g.ow + ow];
    dx[idx] = s * inv;
  }
}

// Threads for a block reducing n values: a power of two in [32, kNormThreads].
int threads_for(int64_t n) {
  int t = 32;
  while (t < kNormThreads && t < n) t *= 2;
  return t;
}
int blocks_for(int64_t rows) { return static_cast<int>(rows < (int64_t{1} << 20) ? rows : (int64_t{1} << 20)); }

}  // namespace

void layer_norm(const AxisGeom& g, const float* x, const float* gamma, const float* beta, float eps, float* y,
                cudaStream_t stream) {
  if (g.outer <= 0 || g.n <= 0) return;
  SYNK_LAUNCH(layer_norm_kernel, blocks_for(g.outer), threads_for(g.n), 0, stream)(g, x, gamma, beta, eps, y);
}

void layer_norm_grad(const AxisGeom& g, const float* x, const float* gamma, const float* dy, float eps, float* dx,
                     cudaStream_t stream) {
  if (g.outer <= 0 || g.n <= 0) return;
  SYNK_LAUNCH(layer_norm_grad_kernel, blocks_for(g.outer), threads_for(g.n), 0, stream)(g, x, gamma, dy, eps, dx);
}

void batch_norm_var(const AxisGeom& g, const float* x, const float* mean, float* var, cudaStream_t stream) {
  if (g.n <= 0) return;
  SYNK_LAUNCH(batch_norm_var_kernel, blocks_for(g.n), threads_for(g.outer * g.inner), 0, stream)(g, x, mean, var);
}

void batch_norm(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                const float* beta, float eps, float* y, cudaStream_t stream) {
  const int64_t n = g.outer * g.n * g.inner;
  if (n <= 0) return;
  SYNK_LAUNCH(batch_norm_kernel, grid_for(n), kThreads, 0, stream)(g, x, mean, var, gamma, beta, eps, y);
}

void batch_norm_grad(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                     const float* dy, float eps, bool training, float* dx, cudaStream_t stream,
                     const float* sums) {
  if (g.n <= 0 || g.outer * g.inner <= 0) return;
  SYNK_LAUNCH(batch_norm_grad_kernel, blocks_for(g.n), threads_for(g.outer * g.inner), 0, stream)(
      g, x, mean, var, gamma, dy, eps, training, dx, sums);
}

void batch_norm_grad_sums(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                          float eps, float* out, cudaStream_t stream) {
  if (g.n <= 0) return;
  SYNK_LAUNCH(batch_norm_grad_sums_kernel, blocks_for(g.n), threads_for(g.outer * g.inner), 0, stream)(
      g, x, mean, var, dy, eps, out);
}

void batch_norm_grad_gamma(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                           float eps, float* out, cudaStream_t stream) {
  if (g.n <= 0) return;
  SYNK_LAUNCH(batch_norm_grad_gamma_kernel, blocks_for(g.n), threads_for(g.outer * g.inner), 0, stream)(
      g, x, mean, var, dy, eps, out);
}

void batch_norm_running_var(const AxisGeom& g, const float* running, const float* var, float momentum, float* out,
                            cudaStream_t stream) {
  if (g.n <= 0) return;
  SYNK_LAUNCH(running_var_kernel, grid_for(g.n), kThreads, 0, stream)(g, running, var, momentum, out);
}

void avg_pool2d(const PoolGeom& g, const float* x, float* y, cudaStream_t stream) {
  const int64_t n = g.n * g.c * g.oh * g.ow;
  if (n <= 0) return;
  SYNK_LAUNCH(avg_pool_kernel, grid_for(n), kThreads, 0, stream)(g, x, y);
}

void avg_pool2d_grad(const PoolGeom& g, const float* dy, float* dx, cudaStream_t stream) {
  const int64_t n = g.n * g.c * g.h * g.w;
  if (n <= 0) return;
  SYNK_LAUNCH(avg_pool_grad_kernel, grid_for(n), kThreads, 0, stream)(g, dy, dx);
}

}  // namespace synk::kernels
