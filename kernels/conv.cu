// kernels/conv.cu — the data-movement half of convolution (im2col, col2im,
// channel packing; the GEMMs are cuBLAS calls in src/exec/cuda) and max-pool
// forward and backward.
//
// One thread per output element throughout. col2im and the pool gradient
// gather (each input element sums what reaches it, in the CPU's order)
// instead of scattering with atomics, so results are deterministic and need
// no zeroing pass.
#include "launch.cuh"
#include "ops.cuh"

namespace synk::kernels {
namespace {

__global__ void im2col_kernel(ConvGeom g, int64_t count, const float* x, float* col, int64_t stride_i,
                              int64_t stride_k) {
  const int64_t P = g.oh * g.ow, KK = g.kh * g.kw, K = g.c * KK;
  SYNK_GRID_LOOP(idx, count * K * P) {
    const int64_t p = idx % P;
    const int64_t t = idx / P;
    const int64_t k = t % K;
    const int64_t img = t / K;
    const int64_t c = k / KK, r = k % KK;
    const int64_t ih = (p / g.ow) * g.sh - g.ph + r / g.kw;
    const int64_t iw = (p % g.ow) * g.sw - g.pw + r % g.kw;
    float v = 0.f;
    if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) v = x[((img * g.c + c) * g.h + ih) * g.w + iw];
    col[img * stride_i + k * stride_k + p] = v;
  }
}

__global__ void col2im_kernel(ConvGeom g, int64_t count, const float* col, float* dx) {
  const int64_t P = g.oh * g.ow, K = g.c * g.kh * g.kw;
  SYNK_GRID_LOOP(idx, count * g.c * g.h * g.w) {
    const int64_t iw = idx % g.w;
    int64_t t = idx / g.w;
    const int64_t ih = t % g.h;
    t /= g.h;
    const int64_t c = t % g.c;
    const int64_t img = t / g.c;
    const float* ci = col + img * K * P;
    float acc = 0.f;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t th = ih + g.ph - i;
      if (th < 0 || th % g.sh != 0) continue;
      const int64_t oh = th / g.sh;
      if (oh >= g.oh) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t tw = iw + g.pw - j;
        if (tw < 0 || tw % g.sw != 0) continue;
        const int64_t ow = tw / g.sw;
        if (ow >= g.ow) continue;
        acc += ci[((c * g.kh + i) * g.kw + j) * P + oh * g.ow + ow];
      }
    }
    dx[idx] = acc;
  }
}

__global__ void pack_kernel(int64_t count, int64_t o, int64_t p, const float* x, float* y) {
  SYNK_GRID_LOOP(idx, count * o * p) {
    const int64_t q = idx % p;
    const int64_t t = idx / p;
    const int64_t img = t % count;
    const int64_t ch = t / count;
    y[idx] = x[(img * o + ch) * p + q];
  }
}

__global__ void max_pool_kernel(PoolGeom g, const float* x, float* y) {
  SYNK_GRID_LOOP(idx, g.n * g.c * g.oh * g.ow) {
    const int64_t ow = idx % g.ow;
    const int64_t t = idx / g.ow;
    const int64_t oh = t % g.oh;
    const int64_t pl = t / g.oh;
    const float* xp = x + pl * g.h * g.w;
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    const int64_t ha = h0 > 0 ? h0 : 0, hb = h0 + g.kh < g.h ? h0 + g.kh : g.h;
    const int64_t wa = w0 > 0 ? w0 : 0, wb = w0 + g.kw < g.w ? w0 + g.kw : g.w;
    float m = -__int_as_float(0x7f800000);
    for (int64_t ih = ha; ih < hb; ++ih)
      for (int64_t iw = wa; iw < wb; ++iw) m = xp[ih * g.w + iw] > m ? xp[ih * g.w + iw] : m;
    y[idx] = m;
  }
}

__global__ void max_pool_grad_kernel(PoolGeom g, const float* x, const float* dy, float* dx) {
  SYNK_GRID_LOOP(idx, g.n * g.c * g.h * g.w) {
    const int64_t iw = idx % g.w;
    const int64_t t = idx / g.w;
    const int64_t ih = t % g.h;
    const int64_t pl = t / g.h;
    const float* xp = x + pl * g.h * g.w;
    const float* gp = dy + pl * g.oh * g.ow;
    const int64_t me = ih * g.w + iw;
    // Windows that contain (ih, iw): oh*sh - ph <= ih < oh*sh - ph + kh.
    const int64_t th = ih + g.ph - g.kh + 1, tw = iw + g.pw - g.kw + 1;
    const int64_t oh_lo = th <= 0 ? 0 : (th + g.sh - 1) / g.sh;
    const int64_t ow_lo = tw <= 0 ? 0 : (tw + g.sw - 1) / g.sw;
    const int64_t oh_hi = (ih + g.ph) / g.sh < g.oh - 1 ? (ih + g.ph) / g.sh : g.oh - 1;
    const int64_t ow_hi = (iw + g.pw) / g.sw < g.ow - 1 ? (iw + g.pw) / g.sw : g.ow - 1;
    float acc = 0.f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      const int64_t h0 = oh * g.sh - g.ph;
      const int64_t ha = h0 > 0 ? h0 : 0, hb = h0 + g.kh < g.h ? h0 + g.kh : g.h;
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t w0 = ow * g.sw - g.pw;
        const int64_t wa = w0 > 0 ? w0 : 0, wb = w0 + g.kw < g.w ? w0 + g.kw : g.w;
        // The window's first maximum in row-major order, as on the CPU.
        int64_t best = ha * g.w + wa;
        float bv = xp[best];
        for (int64_t h2 = ha; h2 < hb; ++h2)
          for (int64_t w2 = wa; w2 < wb; ++w2)
            if (xp[h2 * g.w + w2] > bv) {
              bv = xp[h2 * g.w + w2];
              best = h2 * g.w + w2;
            }
        if (best == me) acc += gp[oh * g.ow + ow];
      }
    }
    dx[idx] = acc;
  }
}

}  // namespace

void im2col(const ConvGeom& g, int64_t count, const float* x, float* col, int64_t stride_i, int64_t stride_k,
            cudaStream_t stream) {
  const int64_t n = count * g.c * g.kh * g.kw * g.oh * g.ow;
  if (n <= 0) return;
  SYNK_LAUNCH(im2col_kernel, grid_for(n), kThreads, 0, stream)(g, count, x, col, stride_i, stride_k);
}

void col2im(const ConvGeom& g, int64_t count, const float* col, float* dx, cudaStream_t stream) {
  const int64_t n = count * g.c * g.h * g.w;
  if (n <= 0) return;
  SYNK_LAUNCH(col2im_kernel, grid_for(n), kThreads, 0, stream)(g, count, col, dx);
}

void pack_channels(int64_t count, int64_t o, int64_t p, const float* x, float* y, cudaStream_t stream) {
  const int64_t n = count * o * p;
  if (n <= 0) return;
  SYNK_LAUNCH(pack_kernel, grid_for(n), kThreads, 0, stream)(count, o, p, x, y);
}

void max_pool2d(const PoolGeom& g, const float* x, float* y, cudaStream_t stream) {
  const int64_t n = g.n * g.c * g.oh * g.ow;
  if (n <= 0) return;
  SYNK_LAUNCH(max_pool_kernel, grid_for(n), kThreads, 0, stream)(g, x, y);
}

void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx, cudaStream_t stream) {
  const int64_t n = g.n * g.c * g.h * g.w;
  if (n <= 0) return;
  // With no output window the loops are empty and dx is all zeros.
  SYNK_LAUNCH(max_pool_grad_kernel, grid_for(n), kThreads, 0, stream)(g, x, dy, dx);
}

}  // namespace synk::kernels
