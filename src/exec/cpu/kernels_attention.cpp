// exec/cpu/kernels_attention.cpp — scaled dot-product attention, one
// (batch, head) at a time.
//
// A ViT's heads are small (17 tokens of 16 features): as batched matmuls
// each product is a BLAS call of a few thousand multiply-adds, and the
// scores go through memory three times (q k^T, the scaled softmax, its
// product with v), besides the transposes that split the heads. Here the
// head's keys and values are transposed once into scratch (feature-major, so
// a query's scores are multiply-adds across keys, the vector direction), and
// each query row's scores stay in a row of scratch from q . k to its output;
// the backward recomputes them the same way and gives q's, k's and v's
// gradients in the same pass. The formulas are kernels/attention.hpp's.
//
// Loops are plain and vectorised by the compiler, with AVX-512 and AVX2
// clones chosen at run time (cpu_isa()), as the direct convolutions are.
#include <algorithm>
#include <cstring>

#include "attention.hpp"  // kernels/
#include "exec/cpu/kernels.hpp"
#include "exec/cpu/lanes.hpp"

namespace synk::cpu {

namespace {

// Vectors of kLanes floats (one AVX-512 register, two AVX2 ones).
constexpr int64_t kLanes = AttnGeom::kLanes;

// dst[c * lp + i] = src[i * stride + c] for i < l, c < w: a head's [l, w]
// rows feature-major. The padding columns [l, lp) are not written: the
// callers zero them once per call.
[[gnu::always_inline]] inline void transpose_rows(int64_t l, int64_t lp, int64_t w, const float* __restrict src,
                                                  int64_t stride, float* __restrict dst) {
  for (int64_t i = 0; i < l; ++i)
    for (int64_t c = 0; c < w; ++c) dst[c * lp + i] = src[i * stride + c];
}

// kLanes floats as one GCC vector (exec/cpu/lanes.hpp).
static_assert(kLanes == lanes::kLanes, "the attention rows are padded to whole vectors");
using vlanes = lanes::vf;
using lanes::load;
using lanes::store;

// out[r * ro + c] = sum_t a[r * ar + t * at] * src[t * rs + c] for r < R,
// c < w, t < n: R output rows, each a combination of n source rows. Every
// product of a head is one of these (the coefficients read row- or
// column-wise through ar and at), R rows at a time so that R independent
// accumulator chains hide the multiply-add latency.
template <int R>
[[gnu::always_inline]] inline void combine_rows(int64_t n, int64_t w, const float* a, int64_t ar, int64_t at,
                                                const float* src, int64_t rs, float* out, int64_t ro) {
  int64_t cb = 0;
  for (; cb + kLanes <= w; cb += kLanes) {
    vlanes acc[R];
    for (int r = 0; r < R; ++r) acc[r] = vlanes{};
    for (int64_t t = 0; t < n; ++t) {
      const vlanes x = load(src + t * rs + cb);
      for (int r = 0; r < R; ++r) acc[r] += a[r * ar + t * at] * x;
    }
    for (int r = 0; r < R; ++r) store(out + r * ro + cb, acc[r]);
  }
  for (int64_t c = cb; c < w; ++c)
    for (int r = 0; r < R; ++r) {
      float acc = 0.f;
      for (int64_t t = 0; t < n; ++t) acc += a[r * ar + t * at] * src[t * rs + c];
      out[r * ro + c] = acc;
    }
}

// combine_rows over m output rows, four at a time.
[[gnu::always_inline]] inline void combine(int64_t m, int64_t n, int64_t w, const float* a, int64_t ar, int64_t at,
                                           const float* src, int64_t rs, float* out, int64_t ro) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) combine_rows<4>(n, w, a + r * ar, ar, at, src, rs, out + r * ro, ro);
  for (; r < m; ++r) combine_rows<1>(n, w, a + r * ar, ar, at, src, rs, out + r * ro, ro);
}

// The scores of a head are kept transposed, zt [s, lp] (key j's scores of
// every query in row j), so that a query's softmax over the keys is a
// vertical reduction across rows: each vector of zt holds kLanes queries,
// and max, exp and sum run on whole vectors with no horizontal steps. The
// queries are padded to lp (a multiple of kLanes) with zero rows of q, whose
// scores are finite and never read back.

// zt = softmax over each column (query) of scale * zt, in place.
[[gnu::always_inline]] inline void softmax_columns(int64_t s, int64_t lp, float scale, float* zt) {
  for (int64_t ib = 0; ib < lp; ib += kLanes) {
    vlanes m = load(zt + ib) * scale;
    for (int64_t j = 0; j < s; ++j) {
      const vlanes z = load(zt + j * lp + ib) * scale;
      store(zt + j * lp + ib, z);
      m = z > m ? z : m;
    }
    float mf[kLanes];
    store(mf, m);
    vlanes sum = {};
    for (int64_t j = 0; j < s; ++j) {
      float* __restrict r = zt + j * lp + ib;
      for (int64_t u = 0; u < kLanes; ++u) r[u] = attn::weight(r[u], mf[u]);
      sum += load(r);
    }
    const vlanes inv = 1.f / sum;
    for (int64_t j = 0; j < s; ++j) store(zt + j * lp + ib, load(zt + j * lp + ib) * inv);
  }
}

// zt [s, lp] = softmax(scale * q k^T)^T of one head, with qt its queries
// feature-major (e x lp, zero past l).
[[gnu::always_inline]] inline void head_probs(const AttnGeom& g, int64_t lp, const float* qt, const float* kb,
                                              int64_t rk, float* zt) {
  combine(g.s, g.e, lp, kb, rk, 1, qt, lp, zt, lp);  // z^T = k q^T
  softmax_columns(g.s, lp, g.scale, zt);
}

[[gnu::always_inline]] inline void forward_body(const AttnGeom& g, const float* q, const float* k, const float* v,
                                                float* o, float* work) {
  const int64_t lp = g.queries_padded();
  float* qt = work;
  float* zt = work + (g.e + g.ev) * lp;
  const int64_t rq = g.stride(g.e), rv = g.stride(g.ev);
  std::fill(qt, qt + g.e * lp, 0.f);
  for (int64_t bi = 0; bi < g.b; ++bi)
    for (int64_t hi = 0; hi < g.h; ++hi) {
      transpose_rows(g.l, lp, g.e, q + g.at(bi, hi, 0, g.l, g.e), rq, qt);
      head_probs(g, lp, qt, k + g.at(bi, hi, 0, g.s, g.e), rq, zt);
      // o = P v (P's rows are zt's columns)
      combine(g.l, g.s, g.ev, zt, 1, lp, v + g.at(bi, hi, 0, g.s, g.ev), rv, o + g.at(bi, hi, 0, g.l, g.ev), rv);
    }
}

// Any of dq, dk, dv may be null (not wanted).
[[gnu::always_inline]] inline void backward_body(const AttnGeom& g, const float* q, const float* k, const float* v,
                                                 const float* dy, float* dq, float* dk, float* dv, float* work) {
  const int64_t lp = g.queries_padded();
  float* qt = work;
  float* dot = work + g.e * lp;
  float* zt = dot + g.ev * lp;
  float* dzt = zt + g.s * lp;
  const int64_t rq = g.stride(g.e), rv = g.stride(g.ev);
  std::fill(qt, qt + (g.e + g.ev) * lp, 0.f);  // qt and dot
  for (int64_t bi = 0; bi < g.b; ++bi)
    for (int64_t hi = 0; hi < g.h; ++hi) {
      const float* qb = q + g.at(bi, hi, 0, g.l, g.e);
      const float* kb = k + g.at(bi, hi, 0, g.s, g.e);
      const float* vb = v + g.at(bi, hi, 0, g.s, g.ev);
      const float* dob = dy + g.at(bi, hi, 0, g.l, g.ev);
      transpose_rows(g.l, lp, g.e, qb, rq, qt);
      head_probs(g, lp, qt, kb, rq, zt);
      if (dv) combine(g.s, g.l, g.ev, zt, lp, 1, dob, rv, dv + g.at(bi, hi, 0, g.s, g.ev), rv);  // P^T do
      if (!dq && !dk) continue;
      transpose_rows(g.l, lp, g.ev, dob, rv, dot);
      combine(g.s, g.ev, lp, vb, rv, 1, dot, lp, dzt, lp);  // dP^T = v do^T
      for (int64_t ib = 0; ib < lp; ib += kLanes) {
        vlanes d = {};  // D_i = sum_j P_ij dP_ij per query
        for (int64_t j = 0; j < g.s; ++j) d += load(zt + j * lp + ib) * load(dzt + j * lp + ib);
        float df[kLanes];
        store(df, d);
        for (int64_t j = 0; j < g.s; ++j) {
          const float* __restrict pr = zt + j * lp + ib;
          float* __restrict r = dzt + j * lp + ib;
          for (int64_t u = 0; u < kLanes; ++u) r[u] = attn::dscore(pr[u], r[u], df[u]) * g.scale;
        }
      }
      if (dq) combine(g.l, g.s, g.e, dzt, 1, lp, kb, rq, dq + g.at(bi, hi, 0, g.l, g.e), rq);  // dZ k
      if (dk) combine(g.s, g.l, g.e, dzt, lp, 1, qb, rq, dk + g.at(bi, hi, 0, g.s, g.e), rq);  // dZ^T q
    }
}

void forward_base(const AttnGeom& g, const float* q, const float* k, const float* v, float* o, float* w) {
  forward_body(g, q, k, v, o, w);
}
void backward_base(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy, float* dq,
                   float* dk, float* dv, float* w) {
  backward_body(g, q, k, v, dy, dq, dk, dv, w);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SYNK_ATTN_CLONES 1
[[gnu::target("avx2,fma")]] void forward_avx2(const AttnGeom& g, const float* q, const float* k, const float* v,
                                              float* o, float* w) {
  forward_body(g, q, k, v, o, w);
}
[[gnu::target("avx2,fma")]] void backward_avx2(const AttnGeom& g, const float* q, const float* k, const float* v,
                                               const float* dy, float* dq, float* dk, float* dv, float* w) {
  backward_body(g, q, k, v, dy, dq, dk, dv, w);
}
[[gnu::target("avx512f")]] void forward_avx512(const AttnGeom& g, const float* q, const float* k, const float* v,
                                               float* o, float* w) {
  forward_body(g, q, k, v, o, w);
}
[[gnu::target("avx512f")]] void backward_avx512(const AttnGeom& g, const float* q, const float* k, const float* v,
                                                const float* dy, float* dq, float* dk, float* dv, float* w) {
  backward_body(g, q, k, v, dy, dq, dk, dv, w);
}
#endif

}  // namespace

void attention(const AttnGeom& g, const float* q, const float* k, const float* v, float* o, float* work) {
  if (g.b == 0 || g.h == 0 || g.l == 0 || g.ev == 0) return;
#ifdef SYNK_ATTN_CLONES
  if (cpu_isa() == Isa::avx512) return forward_avx512(g, q, k, v, o, work);
  if (cpu_isa() == Isa::avx2) return forward_avx2(g, q, k, v, o, work);
#endif
  forward_base(g, q, k, v, o, work);
}

void attention_grad(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy, float* dq,
                    float* dk, float* dv, float* work) {
  if (g.b == 0 || g.h == 0) return;
#ifdef SYNK_ATTN_CLONES
  if (cpu_isa() == Isa::avx512) return backward_avx512(g, q, k, v, dy, dq, dk, dv, work);
  if (cpu_isa() == Isa::avx2) return backward_avx2(g, q, k, v, dy, dq, dk, dv, work);
#endif
  backward_base(g, q, k, v, dy, dq, dk, dv, work);
}

}  // namespace synk::cpu
