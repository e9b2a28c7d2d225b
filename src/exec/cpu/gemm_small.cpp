// exec/cpu/gemm_small.cpp — C = A B (+ C) for many rows against a small B,
// the products of a transformer's dense layers over tokens ([N*T, 64] x
// [64, 64], [N*T, 128] x [128, 64], ...).
//
// OpenBLAS packs A into panels for every call and, with beta 0, zeroes C in
// a pass of its own; with k and n of 64-128 those copies are a large part of
// the work. Here B (at most kMaxB floats) stays in L1/L2 as it is (or
// transposed once into scratch), and a register tile of R rows x NV vectors
// of C accumulates over k from A's rows read in place: each loaded vector of
// B feeds R multiply-adds. AVX-512 and AVX2 clones (cpu_isa()); results may
// differ from OpenBLAS's in the last bits (another summation order), as
// OpenBLAS's own kernels differ between CPUs.
#include <cstring>
#include <vector>

#include "exec/cpu/kernels.hpp"
#include "exec/cpu/lanes.hpp"

namespace synk::cpu {

namespace {

using lanes::kLanes;
using lanes::load;
using lanes::store;
using lanes::vf;

// C[r, cb + 16 v] = bias[cb + 16 v] + sum_kk A[r, kk] B[kk, cb + 16 v] for
// r < R, v < NV (bias null: 0).
template <int R, int NV>
[[gnu::always_inline]] inline void tile(int64_t k, const float* a, int64_t lda, const float* b, int64_t n,
                                        float* c, const float* bias) {
  vf acc[R][NV];
  for (int v = 0; v < NV; ++v) acc[0][v] = bias ? load(bias + v * kLanes) : vf{};
  for (int r = 1; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = acc[0][v];
  for (int64_t kk = 0; kk < k; ++kk) {
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(b + kk * n + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const float x = a[r * lda + kk];
      for (int v = 0; v < NV; ++v) acc[r][v] += x * bv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store(c + r * n + v * kLanes, acc[r][v]);
}

// Rows [r0, r0 + R) of C, every column, in chunks of at most 4 vectors.
template <int R>
[[gnu::always_inline]] inline void row_block(int64_t k, int64_t n, const float* a, const float* b, float* c,
                                             const float* bias) {
  int64_t cb = 0;
  auto at = [&](int64_t off) { return bias ? bias + off : nullptr; };
  for (; cb + 4 * kLanes <= n; cb += 4 * kLanes) tile<R, 4>(k, a, k, b + cb, n, c + cb, at(cb));
  switch ((n - cb) / kLanes) {
    case 3: tile<R, 3>(k, a, k, b + cb, n, c + cb, at(cb)); break;
    case 2: tile<R, 2>(k, a, k, b + cb, n, c + cb, at(cb)); break;
    case 1: tile<R, 1>(k, a, k, b + cb, n, c + cb, at(cb)); break;
    default: break;
  }
}

// ep: GELU's gradient applied to each block of rows just made (in L1),
// by the GeluGrad op's own loop.
[[gnu::always_inline]] inline void body(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                                        const float* bias, const GeluGradEpilogue* ep) {
  int64_t r = 0;
  for (; r + 6 <= m; r += 6) {
    row_block<6>(k, n, a + r * k, b, c + r * n, bias);
    if (ep) gelu_grad_loop(ep->op, 6 * n, ep->x + r * n, 1, c + r * n, 1, c + r * n);
  }
  for (; r < m; ++r) {
    row_block<1>(k, n, a + r * k, b, c + r * n, bias);
    if (ep) gelu_grad_loop(ep->op, n, ep->x + r * n, 1, c + r * n, 1, c + r * n);
  }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SYNK_GEMM_SMALL_CLONES 1
[[gnu::target("avx512f")]] void body_avx512(int64_t m, int64_t n, int64_t k, const float* a, const float* b,
                                            float* c, const float* bias, const GeluGradEpilogue* ep) {
  body(m, n, k, a, b, c, bias, ep);
}
[[gnu::target("avx2,fma")]] void body_avx2(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                                           const float* bias, const GeluGradEpilogue* ep) {
  body(m, n, k, a, b, c, bias, ep);
}
#endif

}  // namespace

bool gemm_small(bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, const float* bias,
                float* c, const GeluGradEpilogue* ep) {
#ifdef SYNK_GEMM_SMALL_CLONES
  const Isa isa = cpu_isa();
  if (isa == Isa::base || n % kLanes != 0 || n == 0 || k == 0 || n * k > kGemmSmallMaxB || m < 64) return false;
  std::vector<float> bt;
  if (tb) {  // B is [n, k]: its transpose, once
    bt.resize(static_cast<size_t>(n * k));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t kk = 0; kk < k; ++kk) bt[static_cast<size_t>(kk * n + j)] = b[j * k + kk];
    b = bt.data();
  }
  if (isa == Isa::avx512) body_avx512(m, n, k, a, b, c, bias, ep);
  else body_avx2(m, n, k, a, b, c, bias, ep);
  return true;
#else
  return false;
#endif
}

}  // namespace synk::cpu
