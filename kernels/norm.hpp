// kernels/norm.hpp — the normalisation formulas (layer norm, batch norm and
// the running-variance update) and average pooling's window, written once
// for the CPU kernels (src/exec/cpu/kernels_norm.cpp) and the CUDA kernels
// (kernels/norm.cu). The statistics themselves (sums over a row or a
// channel) are each backend's loops; what is done with them is here.
//
// Only <math.h>, <cstdint> and plain functions (SYNK_HD from elementwise.hpp).
#pragma once

#include <math.h>

#include <cstdint>

#include "elementwise.hpp"  // SYNK_HD

namespace synk::norm {

// 1 / sqrt(var + eps): the scale of x - mean.
SYNK_HD inline float rstd(float var, float eps) { return 1.f / sqrtf(var + eps); }

// Per-channel (or per-row) affine form of a normalisation: y = x * scale +
// shift, so the elementwise pass is one multiply-add.
struct Affine {
  float scale, shift;
};
SYNK_HD inline Affine affine(float mean, float rs, float gamma, float beta) {
  const float sc = rs * gamma;
  return {sc, beta - mean * sc};
}

// dx of a normalisation y = xhat * gamma + beta, xhat = (x - mean) * rs, over
// m values: with gy = dy * gamma, mean_gy = sum(gy) / m and mean_gyx =
// sum(gy * xhat) / m, dx = rs * (gy - mean_gy - xhat * mean_gyx) when the
// statistics are x's own, and rs * gy when they are constants.
SYNK_HD inline float grad_x(float gy, float xhat, float rs, float mean_gy, float mean_gyx) {
  return rs * (gy - mean_gy - xhat * mean_gyx);
}

// grad_x's mean_gy and mean_gyx from a channel's gradient sums over m
// values (BatchNormGradSums: sum of dy, and of dy * xhat, gamma's gradient).
SYNK_HD inline void grad_means(float sum_dy, float sum_dyxhat, float gamma, int64_t m, float& mean_gy,
                               float& mean_gyx) {
  const float inv = static_cast<float>(1.0 / static_cast<double>(m));
  mean_gy = sum_dy * inv * gamma;
  mean_gyx = sum_dyxhat * inv * gamma;
}

// PyTorch's running variance: the batch's unbiased variance (biased * m /
// (m - 1) over m values per channel) blended in with `momentum`.
SYNK_HD inline float running_var(float running, float biased_var, float momentum, int64_t m) {
  const float unbiased = biased_var * static_cast<float>(static_cast<double>(m) / static_cast<double>(m - 1));
  return running * (1.f - momentum) + unbiased * momentum;
}

// The first and one-past-last input index of output position o of a pooling
// window (size k, stride s, padding p) clipped to [0, n): the padding adds
// nothing to an average, but the divisor stays k * k (count_include_pad).
SYNK_HD inline void window(int64_t o, int64_t k, int64_t s, int64_t p, int64_t n, int64_t& lo, int64_t& hi) {
  const int64_t a = o * s - p;
  lo = a > 0 ? a : 0;
  hi = a + k < n ? a + k : n;
}

}  // namespace synk::norm
