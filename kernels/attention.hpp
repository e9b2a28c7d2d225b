// kernels/attention.hpp — the formulas of scaled dot-product attention,
// written once for the CPU kernel (src/exec/cpu/kernels_attention.cpp) and
// the CUDA kernels (kernels/attention.cu). Each backend runs its own loops
// over a head's rows (the CPU vectorises across keys; the GPU gives a thread
// one row); what is computed from a row's scores is here.
//
// With scores z_j = scale * q . k_j over the keys j, p = softmax(z) and o =
// sum_j p_j v_j. Backward, with dp_j = do . v_j and D = sum_j p_j dp_j:
// dz_j = p_j (dp_j - D), dq = scale * sum_j dz_j k_j, dk_j += scale * dz_j q,
// dv_j += p_j do. The exponential is exp_poly (elementwise.hpp): the same
// bits on both backends, and it vectorises.
//
// Only plain functions (SYNK_HD from elementwise.hpp).
#pragma once

#include <cstdint>

#include "elementwise.hpp"

namespace synk::attn {

// p_j's numerator: e^(z_j - max_j z_j) (the shift keeps it in range).
SYNK_HD_INLINE float weight(float z, float zmax) { return ew::exp_poly(z - zmax); }

// dz_j (before the scale that dq and dk share): p_j (dp_j - D).
SYNK_HD_INLINE float dscore(float p, float dp, float d) { return p * (dp - d); }

// q . k over e values, with both rows `stride`-free (contiguous).
SYNK_HD_INLINE float dot(const float* a, const float* b, int64_t e) {
  float s = 0.f;
  for (int64_t c = 0; c < e; ++c) s += a[c] * b[c];
  return s;
}

}  // namespace synk::attn
