// exec/cpu/conv_direct.cpp — stride-1 convolutions without im2col.
//
// im2col + sgemm copies every input value kh*kw times into a column matrix
// that OpenBLAS then copies again into its packed panels; with the few
// channels of small networks (16-64) those copies cost as much as the
// arithmetic. Here the input is copied once, into a zero-padded image, and
// each kernel tap becomes a contiguous shifted view of it:
//
//   with Wp = W + 2 pw, an output pixel (i, j) at flat index q = i*Wp + j
//   reads the padded input at q + kh*Wp + kw for tap (kh, kw),
//
// so the output is computed over the padded-width grid q in [0, OH*Wp)
// (the pw*2 extra columns of each row are discarded) with vector loads at
// fixed offsets: y'(o, q) = sum_c sum_t w[o, c, t] * xpad[c, q + off_t].
// A register tile of OB output channels x QV vectors of q accumulates over
// every channel and tap (the weights packed as [c][t][OB] broadcasts), so
// each loaded input vector feeds OB multiply-adds.
//
// The input gradient is the same computation on the output gradient with
// the kernel flipped and its channel axes swapped (padding k-1-p). The
// weight gradient is, per tap, one GEMM of the output gradient (on the same
// padded-width grid, zero in the discarded columns) with the shifted input,
// over a chunk of images at once (OpenBLAS: long K, no im2col).
//
// Vector width and tile sizes follow the CPU (AVX-512, AVX2 + FMA, SSE2),
// chosen once at run time; results may differ in the last bits between
// them, as OpenBLAS's do.
#include <algorithm>
#include <cstring>

#include <cblas.h>

#include "exec/cpu/kernels.hpp"

namespace synk::cpu {

namespace {

// The geometry of one stride-1 direct convolution: `cin` planes of h x w in,
// padded by (ph, pw), kernel kh x kw, `cout` planes of oh x ow out.
struct Direct {
  int64_t cin, h, w, cout, kh, kw, ph, pw;
  int64_t hp() const { return h + 2 * ph; }
  int64_t wp() const { return w + 2 * pw; }
  int64_t oh() const { return hp() - kh + 1; }
  int64_t ow() const { return wp() - kw + 1; }
  int64_t plane() const { return hp() * wp(); }
  int64_t q() const { return oh() * wp(); }
};

// Floats of q one register tile covers, at most; every tile divides it, so
// the workspace ConvGeom::workspace() sizes for it fits any tile.
constexpr int64_t kMaxTile = ConvGeom::kDirectTile;

int64_t round_up(int64_t v, int64_t m) { return ConvGeom::up(v, m); }
// The computed range of q: whole tiles (the columns past q() are discarded).
int64_t padded_q(const Direct& d, int64_t tile) { return round_up(d.q(), tile); }
// Floats past the last padded plane that tiles of discarded outputs read.
int64_t slack(const Direct& d) { return ConvGeom::direct_slack(d.kh, d.kw, d.wp()); }

// One padded plane [hp, wp] of one channel of one image, at dst.
void pad_plane(const Direct& d, const float* src, float* dst) {
  const int64_t wp = d.wp();
  std::fill(dst, dst + d.ph * wp, 0.f);
  for (int64_t i = 0; i < d.h; ++i) {
    float* row = dst + (d.ph + i) * wp;
    std::fill(row, row + d.pw, 0.f);
    std::memcpy(row + d.pw, src + i * d.w, static_cast<size_t>(d.w) * sizeof(float));
    std::fill(row + d.pw + d.w, row + wp, 0.f);
  }
  std::fill(dst + (d.ph + d.h) * wp, dst + d.hp() * wp, 0.f);
}

template <int V>
struct Vec {
  typedef float type __attribute__((vector_size(V * sizeof(float))));
};

// An unaligned vector load (written as an out-parameter: a vector return
// value would change the ABI between the per-CPU clones).
template <class VF>
[[gnu::always_inline]] inline void load(VF& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

// ---- forward ----------------------------------------------------------------------------

// y'[r][q0 .. q0 + QV*V) for the OB output channels of one block.
template <int V, int OB, int QV>
[[gnu::always_inline]] inline void forward_tile(const Direct& d, const float* xp, const float* wpk,
                                                const int64_t* off, int64_t taps, int64_t q0, float* ybuf,
                                                int64_t ld) {
  using vf = typename Vec<V>::type;
  vf acc[OB][QV];
  for (int r = 0; r < OB; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = vf{};
  const int64_t pl = d.plane();
  for (int64_t c = 0; c < d.cin; ++c) {
    const float* xc = xp + c * pl + q0;
    const float* wc = wpk + c * taps * OB;
    for (int64_t t = 0; t < taps; ++t) {
      vf xv[QV];
      for (int v = 0; v < QV; ++v) load(xv[v], xc + off[t] + v * V);
      for (int r = 0; r < OB; ++r) {
        const float s = wc[t * OB + r];
        for (int v = 0; v < QV; ++v) acc[r][v] += s * xv[v];
      }
    }
  }
  for (int r = 0; r < OB; ++r)
    for (int v = 0; v < QV; ++v) std::memcpy(ybuf + r * ld + q0 + v * V, &acc[r][v], sizeof(vf));
}

// One image: x [cin, h, w] -> y [cout, oh, ow]. wpk: weights packed per
// block of OB output channels as [block][c][t][OB] (zero past cout).
template <int V, int OB, int QV>
[[gnu::always_inline]] inline void forward_image(const Direct& d, const float* x, const float* wpk, float* y,
                                                 float* work, const float* bias, bool relu) {
  float* xp = work;
  float* ybuf = xp + d.cin * d.plane() + slack(d);
  for (int64_t c = 0; c < d.cin; ++c) pad_plane(d, x + c * d.h * d.w, xp + c * d.plane());
  std::fill(xp + d.cin * d.plane(), xp + d.cin * d.plane() + slack(d), 0.f);
  constexpr int64_t tile = static_cast<int64_t>(QV) * V;
  static_assert(kMaxTile % tile == 0 && OB <= ConvGeom::kDirectOb);
  const int64_t taps = d.kh * d.kw, qn = padded_q(d, tile), wp = d.wp(), oh = d.oh(), ow = d.ow();
  int64_t off[64];
  for (int64_t a = 0; a < d.kh; ++a)
    for (int64_t b = 0; b < d.kw; ++b) off[a * d.kw + b] = a * wp + b;
  for (int64_t o0 = 0; o0 < d.cout; o0 += OB) {
    const float* wb = wpk + (o0 / OB) * d.cin * taps * OB;
    for (int64_t q0 = 0; q0 < qn; q0 += tile) forward_tile<V, OB, QV>(d, xp, wb, off, taps, q0, ybuf, qn);
    // Keep the valid columns, then the im2col path's fused bias and ReLU
    // epilogue on the block while it is in cache.
    const int64_t rows = std::min<int64_t>(OB, d.cout - o0);
    float* yb = y + o0 * oh * ow;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < oh; ++i)
        std::memcpy(yb + (r * oh + i) * ow, ybuf + r * qn + i * wp, static_cast<size_t>(ow) * sizeof(float));
    if (bias || relu) bias_relu_rows(rows, oh * ow, bias ? bias + o0 : nullptr, rows, relu, yb);
  }
}

// Packs w (read through `at(o, c, t)`) as [cout/OB][cin][t][OB].
template <int OB, class At>
void pack_weights(const Direct& d, At at, float* wpk) {
  const int64_t taps = d.kh * d.kw;
  for (int64_t o0 = 0; o0 < d.cout; o0 += OB)
    for (int64_t c = 0; c < d.cin; ++c)
      for (int64_t t = 0; t < taps; ++t)
        for (int r = 0; r < OB; ++r) {
          const int64_t o = o0 + r;
          *wpk++ = o < d.cout ? at(o, c, t) : 0.f;
        }
}

int64_t packed_weight_floats(const Direct& d, int64_t ob) { return round_up(d.cout, ob) * d.cin * d.kh * d.kw; }

// images x [n, cin, h, w] -> y [n, cout, oh, ow]; `at` reads the weights.
template <int V, int OB, int QV, class At>
[[gnu::always_inline]] inline void forward_all(const Direct& d, int64_t n, const float* x, At at, float* y,
                                               float* work, const float* bias, bool relu) {
  float* wpk = work;
  pack_weights<OB>(d, at, wpk);
  float* rest = wpk + packed_weight_floats(d, OB);
  for (int64_t i = 0; i < n; ++i)
    forward_image<V, OB, QV>(d, x + i * d.cin * d.h * d.w, wpk, y + i * d.cout * d.oh() * d.ow(), rest, bias,
                             relu);
}

// ---- weight gradient ----------------------------------------------------------------------

// dwt[t][o][c] += the sum over `nb` images. Each channel's padded planes of
// all nb images lie end to end (xp [cin][nb * plane]), and dy sits on the
// same grid (dyq [cout][nb * plane], zero outside each image's oh x ow
// block), so each tap is one long-K GEMM over the whole chunk:
//   dwt[t] [cout, cin] += dyq [cout, Q] x (xp shifted by off_t) [cin, Q]^T.
void grad_weight_chunk(const Direct& d, int64_t nb, const float* x, const float* dy, float* dwt, float* work) {
  const int64_t pl = d.plane(), row = nb * pl, wp = d.wp(), oh = d.oh(), ow = d.ow(), taps = d.kh * d.kw;
  float* xp = work;                        // [cin][row] + slack
  float* dyq = xp + d.cin * row + slack(d);  // [cout][row]
  for (int64_t c = 0; c < d.cin; ++c)
    for (int64_t b = 0; b < nb; ++b) pad_plane(d, x + (b * d.cin + c) * d.h * d.w, xp + c * row + b * pl);
  std::fill(xp + d.cin * row, xp + d.cin * row + slack(d), 0.f);
  std::fill(dyq, dyq + d.cout * row, 0.f);
  for (int64_t o = 0; o < d.cout; ++o)
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t i = 0; i < oh; ++i)
        std::memcpy(dyq + o * row + b * pl + i * wp, dy + ((b * d.cout + o) * oh + i) * ow,
                    static_cast<size_t>(ow) * sizeof(float));
  // Only q < row - off reaches a valid output (dyq is zero past it), so each
  // tap's K stops there and the shifted view stays inside xp.
  for (int64_t t = 0; t < taps; ++t) {
    const int64_t off = (t / d.kw) * wp + t % d.kw;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(d.cout), static_cast<blasint>(d.cin),
                static_cast<blasint>(row - off), 1.f, dyq, static_cast<blasint>(row), xp + off,
                static_cast<blasint>(row), 1.f, dwt + t * d.cout * d.cin, static_cast<blasint>(d.cin));
  }
}

// ---- the three entry points per vector width -------------------------------------------------

template <int V, int OB, int QV>
[[gnu::always_inline]] inline void conv_fwd(const ConvGeom& g, const float* x, const float* w, float* y,
                                            float* work, const float* bias, bool relu) {
  const Direct d{g.c, g.h, g.w, g.o, g.kh, g.kw, g.ph, g.pw};
  const int64_t taps = g.kh * g.kw;
  forward_all<V, OB, QV>(d, g.n, x, [&](int64_t o, int64_t c, int64_t t) { return w[(o * g.c + c) * taps + t]; },
                         y, work, bias, relu);
}

template <int V, int OB, int QV>
[[gnu::always_inline]] inline void conv_grad_in(const ConvGeom& g, const float* dy, const float* w, float* dx,
                                                float* work) {
  // dx = conv(dy padded by k-1-p, w flipped with its channel axes swapped).
  const Direct d{g.o, g.oh, g.ow, g.c, g.kh, g.kw, g.kh - 1 - g.ph, g.kw - 1 - g.pw};
  const int64_t taps = g.kh * g.kw;
  forward_all<V, OB, QV>(
      d, g.n, dy, [&](int64_t c, int64_t o, int64_t t) { return w[(o * g.c + c) * taps + (taps - 1 - t)]; }, dx,
      work, nullptr, false);
}

// The weight gradient is OpenBLAS's (one clone): taps x [o, c] summed in
// dwt (after the chunk buffers in work), then laid out as [o, c, t].
void conv_grad_w(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work) {
  const Direct d{g.c, g.h, g.w, g.o, g.kh, g.kw, g.ph, g.pw};
  const int64_t taps = g.kh * g.kw, chunk = g.direct_gw_images();
  float* dwt = work;
  std::fill(dwt, dwt + taps * g.o * g.c, 0.f);
  for (int64_t i = 0; i < g.n; i += chunk) {
    const int64_t nb = std::min(chunk, g.n - i);
    grad_weight_chunk(d, nb, x + i * g.c * g.h * g.w, dy + i * g.o * g.oh * g.ow, dwt, dwt + taps * g.o * g.c);
  }
  for (int64_t o = 0; o < g.o; ++o)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t t = 0; t < taps; ++t) dw[(o * g.c + c) * taps + t] = dwt[(t * g.o + o) * g.c + c];
}

void fwd_base(const ConvGeom& g, const float* x, const float* w, float* y, float* work, const float* b, bool r) {
  conv_fwd<4, 4, 2>(g, x, w, y, work, b, r);
}
void grad_in_base(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work) {
  conv_grad_in<4, 4, 2>(g, dy, w, dx, work);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SYNK_CONV_CLONES 1
[[gnu::target("avx2,fma")]] void fwd_avx2(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
                                          const float* b, bool r) {
  conv_fwd<8, 6, 2>(g, x, w, y, work, b, r);
}
[[gnu::target("avx2,fma")]] void grad_in_avx2(const ConvGeom& g, const float* dy, const float* w, float* dx,
                                              float* work) {
  conv_grad_in<8, 6, 2>(g, dy, w, dx, work);
}
[[gnu::target("avx512f")]] void fwd_avx512(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
                                           const float* b, bool r) {
  conv_fwd<16, 8, 2>(g, x, w, y, work, b, r);
}
[[gnu::target("avx512f")]] void grad_in_avx512(const ConvGeom& g, const float* dy, const float* w, float* dx,
                                               float* work) {
  conv_grad_in<16, 8, 2>(g, dy, w, dx, work);
}

#endif

}  // namespace

void conv2d_direct(const ConvGeom& g, const float* x, const float* w, float* y, float* work, const float* bias,
                   bool relu) {
#ifdef SYNK_CONV_CLONES
  if (cpu_isa() == Isa::avx512) return fwd_avx512(g, x, w, y, work, bias, relu);
  if (cpu_isa() == Isa::avx2) return fwd_avx2(g, x, w, y, work, bias, relu);
#endif
  fwd_base(g, x, w, y, work, bias, relu);
}

void conv2d_grad_input_direct(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work) {
#ifdef SYNK_CONV_CLONES
  if (cpu_isa() == Isa::avx512) return grad_in_avx512(g, dy, w, dx, work);
  if (cpu_isa() == Isa::avx2) return grad_in_avx2(g, dy, w, dx, work);
#endif
  grad_in_base(g, dy, w, dx, work);
}

void conv2d_grad_weight_direct(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work) {
  conv_grad_w(g, x, dy, dw, work);
}

}  // namespace synk::cpu
