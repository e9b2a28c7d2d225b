// kernels/attention.cu — scaled dot-product attention on the GPU; the
// formulas are kernels/attention.hpp's, shared with the CPU kernel.
//
// Straightforward rather than fast: one thread per query row (forward, dq)
// or per key row (dk, dv), each recomputing the scores it needs from q and
// k in global memory, with no shared memory. A query row's softmax takes
// three passes over the keys (the max, the sum of the weights, then what
// uses the probabilities), so nothing of size L x S is stored. The key-row
// kernel recomputes each query's statistics (max, sum and D = sum_j p_j
// dp_j) for itself: O(L S (E + Ev)) per thread, which is fine for the short
// sequences of a small ViT; long sequences want a tiled kernel.
#include "attention.hpp"
#include "launch.cuh"
#include "ops.cuh"

namespace synk::kernels {
namespace {

// p_ij, the softmax weight of key row kj for query row qi, given the query
// row's max score and sum of weights.
__device__ float prob(const AttnGeom& g, const float* qi, const float* kj, float zmax, float sum) {
  return attn::weight(g.scale * attn::dot(qi, kj, g.e), zmax) / sum;
}

// The statistics of query row i of head (bi, hi): the max score zmax and
// the sum of the weights sum; with dy, also D = sum_j p_j dp_j (dp_j = do_i
// . v_j).
struct RowStats {
  float zmax, sum, d;
};
__device__ RowStats row_stats(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy,
                              int64_t bi, int64_t hi, int64_t i) {
  const float* qi = q + g.at(bi, hi, i, g.l, g.e);
  const int64_t rk = g.stride(g.e), rv = g.stride(g.ev);
  const float* kb = k + g.at(bi, hi, 0, g.s, g.e);
  RowStats r{-INFINITY, 0.f, 0.f};
  for (int64_t j = 0; j < g.s; ++j) r.zmax = fmaxf(r.zmax, g.scale * attn::dot(qi, kb + j * rk, g.e));
  for (int64_t j = 0; j < g.s; ++j) r.sum += attn::weight(g.scale * attn::dot(qi, kb + j * rk, g.e), r.zmax);
  if (dy) {
    const float* doi = dy + g.at(bi, hi, i, g.l, g.ev);
    const float* vb = v + g.at(bi, hi, 0, g.s, g.ev);
    for (int64_t j = 0; j < g.s; ++j) {
      const float p = prob(g, qi, kb + j * rk, r.zmax, r.sum);
      r.d += p * attn::dot(doi, vb + j * rv, g.ev);
    }
  }
  return r;
}

// One thread per (batch, head, query row): o_i = sum_j p_j v_j.
__global__ void attention_kernel(AttnGeom g, const float* q, const float* k, const float* v, float* o) {
  SYNK_GRID_LOOP(t, g.b * g.h * g.l) {
    const int64_t i = t % g.l, bh = t / g.l, hi = bh % g.h, bi = bh / g.h;
    const RowStats st = row_stats(g, q, k, v, nullptr, bi, hi, i);
    const float* qi = q + g.at(bi, hi, i, g.l, g.e);
    const float* kb = k + g.at(bi, hi, 0, g.s, g.e);
    const float* vb = v + g.at(bi, hi, 0, g.s, g.ev);
    float* oi = o + g.at(bi, hi, i, g.l, g.ev);
    const int64_t rk = g.stride(g.e), rv = g.stride(g.ev);
    for (int64_t c = 0; c < g.ev; ++c) oi[c] = 0.f;
    for (int64_t j = 0; j < g.s; ++j) {
      const float p = prob(g, qi, kb + j * rk, st.zmax, st.sum);
      for (int64_t c = 0; c < g.ev; ++c) oi[c] += p * vb[j * rv + c];
    }
  }
}

// One thread per query row: dq_i = scale * sum_j dz_ij k_j.
__global__ void attention_grad_q_kernel(AttnGeom g, const float* q, const float* k, const float* v,
                                        const float* dy, float* dq) {
  SYNK_GRID_LOOP(t, g.b * g.h * g.l) {
    const int64_t i = t % g.l, bh = t / g.l, hi = bh % g.h, bi = bh / g.h;
    const RowStats st = row_stats(g, q, k, v, dy, bi, hi, i);
    const float* qi = q + g.at(bi, hi, i, g.l, g.e);
    const float* doi = dy + g.at(bi, hi, i, g.l, g.ev);
    const float* kb = k + g.at(bi, hi, 0, g.s, g.e);
    const float* vb = v + g.at(bi, hi, 0, g.s, g.ev);
    float* dqi = dq + g.at(bi, hi, i, g.l, g.e);
    const int64_t rk = g.stride(g.e), rv = g.stride(g.ev);
    for (int64_t c = 0; c < g.e; ++c) dqi[c] = 0.f;
    for (int64_t j = 0; j < g.s; ++j) {
      const float p = prob(g, qi, kb + j * rk, st.zmax, st.sum);
      const float dz = attn::dscore(p, attn::dot(doi, vb + j * rv, g.ev), st.d) * g.scale;
      for (int64_t c = 0; c < g.e; ++c) dqi[c] += dz * kb[j * rk + c];
    }
  }
}

// One thread per key row: dk_j = scale * sum_i dz_ij q_i, dv_j = sum_i p_ij
// do_i (either may be null).
__global__ void attention_grad_kv_kernel(AttnGeom g, const float* q, const float* k, const float* v,
                                         const float* dy, float* dk, float* dv) {
  SYNK_GRID_LOOP(t, g.b * g.h * g.s) {
    const int64_t j = t % g.s, bh = t / g.s, hi = bh % g.h, bi = bh / g.h;
    const float* kj = k + g.at(bi, hi, j, g.s, g.e);
    const float* vj = v + g.at(bi, hi, j, g.s, g.ev);
    float* dkj = dk ? dk + g.at(bi, hi, j, g.s, g.e) : nullptr;
    float* dvj = dv ? dv + g.at(bi, hi, j, g.s, g.ev) : nullptr;
    if (dkj)
      for (int64_t c = 0; c < g.e; ++c) dkj[c] = 0.f;
    if (dvj)
      for (int64_t c = 0; c < g.ev; ++c) dvj[c] = 0.f;
    for (int64_t i = 0; i < g.l; ++i) {
      const RowStats st = row_stats(g, q, k, v, dkj ? dy : nullptr, bi, hi, i);
      const float* qi = q + g.at(bi, hi, i, g.l, g.e);
      const float* doi = dy + g.at(bi, hi, i, g.l, g.ev);
      const float p = prob(g, qi, kj, st.zmax, st.sum);
      if (dvj)
        for (int64_t c = 0; c < g.ev; ++c) dvj[c] += p * doi[c];
      if (dkj) {
        const float dz = attn::dscore(p, attn::dot(doi, vj, g.ev), st.d) * g.scale;
        for (int64_t c = 0; c < g.e; ++c) dkj[c] += dz * qi[c];
      }
    }
  }
}

}  // namespace

void attention(const AttnGeom& g, const float* q, const float* k, const float* v, float* o, cudaStream_t stream) {
  const int64_t rows = g.b * g.h * g.l;
  if (rows <= 0 || g.ev <= 0) return;
  SYNK_LAUNCH(attention_kernel, grid_for(rows), kThreads, 0, stream)(g, q, k, v, o);
}

void attention_grad(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy, float* dq,
                    float* dk, float* dv, cudaStream_t stream) {
  if (g.b * g.h <= 0) return;
  if (dq && g.l > 0) SYNK_LAUNCH(attention_grad_q_kernel, grid_for(g.b * g.h * g.l), kThreads, 0, stream)(g, q, k, v, dy, dq);
  if ((dk || dv) && g.s > 0)
    SYNK_LAUNCH(attention_grad_kv_kernel, grid_for(g.b * g.h * g.s), kThreads, 0, stream)(g, q, k, v, dy, dk, dv);
}

}  // namespace synk::kernels
