// exec/cpu/conv_direct.cpp — convolutions without im2col (stride 1 and 2).
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
// fixed offsets: y'(o, q) = sum_k w[o, k] * xpad[q + off_k], k = (c, tap).
// A register tile of OB output channels x QV vectors of q accumulates over
// every channel and tap (the weights packed as [k][OB] broadcasts), so each
// loaded input vector feeds OB multiply-adds.
//
// Stride 2 splits each padded channel into its four phases (rows and
// columns of even or odd index), planes of Wq = ceil(Wp / 2) columns: tap
// (a, b) of output (i, j) reads phase (a % 2, b % 2) at (i + a/2, j + b/2),
// again a fixed offset from q = i*Wq + j. So a stride-2 convolution is the
// same loop over a different offset list, with no wasted multiply-adds.
//
// The input gradient (stride 1) is the same computation on the output
// gradient with the kernel flipped and its channel axes swapped (padding
// k-1-p). The weight gradient dw[o, k] = sum_q dy'(o, q) * xpad[q + off_k],
// with dy' the output gradient on the same grid (zero in the discarded
// columns), is a register tile of OB rows x KB columns of dw whose
// accumulators are vectors along q, summed across their lanes once per
// chunk of images.
//
// Vector width and tile sizes follow the CPU (AVX-512, AVX2 + FMA, SSE2),
// chosen once at run time; results may differ in the last bits between
// them, as OpenBLAS's do.
#include <algorithm>
#include <cstring>
#include <vector>

#include "exec/cpu/kernels.hpp"

namespace synk::cpu {

namespace {

// The geometry of one direct convolution: `cin` planes of h x w in, padded
// by (ph, pw), kernel kh x kw, stride s (both axes), `cout` planes of
// oh x ow out. Each input channel is held as s*s phase planes of hq x wq.
struct Direct {
  int64_t cin, h, w, cout, kh, kw, ph, pw, s;
  int64_t hp() const { return h + 2 * ph; }
  int64_t wp() const { return w + 2 * pw; }
  int64_t hq() const { return ConvGeom::direct_wq(h, ph, s); }
  int64_t wq() const { return ConvGeom::direct_wq(w, pw, s); }
  int64_t phase() const { return hq() * wq(); }
  int64_t plane() const { return s * s * phase(); }  // floats per channel
  int64_t oh() const { return (hp() - kh) / s + 1; }
  int64_t ow() const { return (wp() - kw) / s + 1; }
  int64_t q() const { return oh() * wq(); }
  int64_t taps() const { return kh * kw; }
  int64_t k() const { return cin * taps(); }
  // Where column k = (c, a, b) of the weights reads, relative to q.
  int64_t koff(int64_t c, int64_t a, int64_t b) const {
    return c * plane() + ((a % s) * s + b % s) * phase() + (a / s) * wq() + b / s;
  }
  // Every column's offset, in the weights' [c][kh][kw] order.
  std::vector<int64_t> offsets() const {
    std::vector<int64_t> off(static_cast<size_t>(k()));
    for (int64_t c = 0; c < cin; ++c)
      for (int64_t a = 0; a < kh; ++a)
        for (int64_t b = 0; b < kw; ++b) off[static_cast<size_t>((c * kh + a) * kw + b)] = koff(c, a, b);
    return off;
  }
};

// Floats of q one register tile covers, at most; every tile divides it, so
// the workspace ConvGeom::workspace() sizes for it fits any tile.
constexpr int64_t kMaxTile = ConvGeom::kDirectTile;

int64_t round_up(int64_t v, int64_t m) { return ConvGeom::up(v, m); }
// The computed range of q: whole tiles (the columns past q() are discarded).
int64_t padded_q(const Direct& d, int64_t tile) { return round_up(d.q(), tile); }
// Floats past the last padded plane that tiles of discarded outputs read.
int64_t slack(const Direct& d) { return ConvGeom::direct_slack(d.kh, d.kw, d.wq()); }

// One channel of one image [h, w] at src, padded, as its s*s phase planes
// [hq, wq] at dst (stride 1: the one padded plane [hp, wp]).
void pad_plane(const Direct& d, const float* src, float* dst) {
  if (d.s == 1) {
    const int64_t wp = d.wp();
    std::fill(dst, dst + d.ph * wp, 0.f);
    for (int64_t i = 0; i < d.h; ++i) {
      float* row = dst + (d.ph + i) * wp;
      std::fill(row, row + d.pw, 0.f);
      std::memcpy(row + d.pw, src + i * d.w, static_cast<size_t>(d.w) * sizeof(float));
      std::fill(row + d.pw + d.w, row + wp, 0.f);
    }
    std::fill(dst + (d.ph + d.h) * wp, dst + d.hp() * wp, 0.f);
    return;
  }
  // Zero the channel's phase planes at once, then copy in the input rows
  // each phase takes (phases no tap reads stay zero: a 1x1 kernel reads one).
  const int64_t s = d.s, hq = d.hq(), wq = d.wq();
  std::fill(dst, dst + d.plane(), 0.f);
  for (int64_t t = 0; t < s && t < d.kw; ++t) {
    // Phase columns v read input column s*v + t - pw: those in [0, w).
    int64_t v0 = 0;
    while (v0 < wq && s * v0 + t - d.pw < 0) ++v0;
    int64_t v1 = v0;
    while (v1 < wq && s * v1 + t - d.pw < d.w) ++v1;
    for (int64_t r = 0; r < s && r < d.kh; ++r) {
      float* ph = dst + (r * s + t) * d.phase();
      for (int64_t u = 0; u < hq; ++u) {
        const int64_t i = s * u + r - d.ph;
        if (i < 0 || i >= d.h) continue;
        float* __restrict row = ph + u * wq;
        const float* __restrict in = src + i * d.w + t - d.pw;
        if (s == 2) {
          for (int64_t v = v0; v < v1; ++v) row[v] = in[2 * v];
        } else {
          for (int64_t v = v0; v < v1; ++v) row[v] = in[s * v];
        }
      }
    }
  }
}

// One image's channels padded at xp, then the slack its tiles read past them.
void pad_image(const Direct& d, const float* x, float* xp) {
  for (int64_t c = 0; c < d.cin; ++c) pad_plane(d, x + c * d.h * d.w, xp + c * d.plane());
  std::fill(xp + d.cin * d.plane(), xp + d.cin * d.plane() + slack(d), 0.f);
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

// The sum of a vector's lanes, by halves.
template <int V>
[[gnu::always_inline]] inline float hsum(const typename Vec<V>::type& v) {
  if constexpr (V <= 4) {
    float lane[V];
    std::memcpy(lane, &v, sizeof lane);
    float t = 0.f;
    for (int l = 0; l < V; ++l) t += lane[l];
    return t;
  } else {
    typename Vec<V / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hsum<V / 2>(lo + hi);
  }
}

// ---- forward ----------------------------------------------------------------------------

// y'[r][q0 .. q0 + QV*V) for the OB output channels of one block.
template <int V, int OB, int QV>
[[gnu::always_inline]] inline void forward_tile(const float* xp, const float* wpk, const int64_t* off, int64_t kn,
                                                int64_t q0, float* ybuf, int64_t ld) {
  using vf = typename Vec<V>::type;
  vf acc[OB][QV];
  for (int r = 0; r < OB; ++r)
    for (int v = 0; v < QV; ++v) acc[r][v] = vf{};
  const float* xq = xp + q0;
  for (int64_t k = 0; k < kn; ++k) {
    vf xv[QV];
    for (int v = 0; v < QV; ++v) load(xv[v], xq + off[k] + v * V);
    for (int r = 0; r < OB; ++r) {
      const float s = wpk[k * OB + r];
      for (int v = 0; v < QV; ++v) acc[r][v] += s * xv[v];
    }
  }
  for (int r = 0; r < OB; ++r)
    for (int v = 0; v < QV; ++v) std::memcpy(ybuf + r * ld + q0 + v * V, &acc[r][v], sizeof(vf));
}

// One image: x [cin, h, w] -> y [cout, oh, ow]. wpk: weights packed per
// block of OB output channels as [block][k][OB] (zero past cout).
template <int V, int OB, int QV>
[[gnu::always_inline]] inline void forward_image(const Direct& d, const float* x, const float* wpk,
                                                 const int64_t* off, float* y, float* work, const float* bias,
                                                 bool relu) {
  float* xp = work;
  float* ybuf = xp + d.cin * d.plane() + slack(d);
  pad_image(d, x, xp);
  constexpr int64_t tile = static_cast<int64_t>(QV) * V;
  static_assert(kMaxTile % tile == 0 && OB <= ConvGeom::kDirectOb);
  const int64_t kn = d.k(), qn = padded_q(d, tile), wq = d.wq(), oh = d.oh(), ow = d.ow();
  for (int64_t o0 = 0; o0 < d.cout; o0 += OB) {
    const float* wb = wpk + (o0 / OB) * kn * OB;
    for (int64_t q0 = 0; q0 < qn; q0 += tile) forward_tile<V, OB, QV>(xp, wb, off, kn, q0, ybuf, qn);
    // Keep the valid columns, then the im2col path's fused bias and ReLU
    // epilogue on the block while it is in cache.
    const int64_t rows = std::min<int64_t>(OB, d.cout - o0);
    float* yb = y + o0 * oh * ow;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < oh; ++i)
        std::memcpy(yb + (r * oh + i) * ow, ybuf + r * qn + i * wq, static_cast<size_t>(ow) * sizeof(float));
    if (bias || relu) bias_relu_rows(rows, oh * ow, bias ? bias + o0 : nullptr, rows, relu, yb);
  }
}

// Packs w (read through `at(o, c, t)`) as [cout/OB][cin][t][OB].
template <int OB, class At>
void pack_weights(const Direct& d, At at, float* wpk) {
  const int64_t taps = d.taps();
  for (int64_t o0 = 0; o0 < d.cout; o0 += OB)
    for (int64_t c = 0; c < d.cin; ++c)
      for (int64_t t = 0; t < taps; ++t)
        for (int r = 0; r < OB; ++r) {
          const int64_t o = o0 + r;
          *wpk++ = o < d.cout ? at(o, c, t) : 0.f;
        }
}

int64_t packed_weight_floats(const Direct& d, int64_t ob) { return round_up(d.cout, ob) * d.k(); }

// images x [n, cin, h, w] -> y [n, cout, oh, ow]; `at` reads the weights.
template <int V, int OB, int QV, class At>
[[gnu::always_inline]] inline void forward_all(const Direct& d, int64_t n, const float* x, At at, float* y,
                                               float* work, const float* bias, bool relu) {
  float* wpk = work;
  pack_weights<OB>(d, at, wpk);
  float* rest = wpk + packed_weight_floats(d, OB);
  const std::vector<int64_t> off = d.offsets();
  for (int64_t i = 0; i < n; ++i)
    forward_image<V, OB, QV>(d, x + i * d.cin * d.h * d.w, wpk, off.data(), y + i * d.cout * d.oh() * d.ow(), rest,
                             bias, relu);
}

// ---- weight gradient ----------------------------------------------------------------------

// The chunk of nb images the weight gradient sums at once: each image's
// padded input (xs floats apart, slack after the last) and its output
// gradient on the grid, rows padded to kDirectGwOb with zeros (ds floats
// apart, qp per row).
struct GwChunk {
  const float* xp;
  const float* dq;
  int64_t nb, xs, ds, qp;
};

// dw[r][k0 + j] += sum over the chunk's images and grid of dy'[o0 + r] *
// xpad[q + off[j]] for the OB x KB tile at (o0, k0); `rows` x `cols` of it
// are real (off of the others is 0, their dy' rows zero or discarded).
template <int V, int OB, int KB>
[[gnu::always_inline]] inline void grad_weight_tile(const GwChunk& ch, int64_t o0, const int64_t* off, float* dw,
                                                    int64_t ldw, int64_t rows, int64_t cols) {
  using vf = typename Vec<V>::type;
  vf acc[OB][KB];
  for (int r = 0; r < OB; ++r)
    for (int j = 0; j < KB; ++j) acc[r][j] = vf{};
  for (int64_t b = 0; b < ch.nb; ++b) {
    const float* dq = ch.dq + b * ch.ds + o0 * ch.qp;
    const float* xb = ch.xp + b * ch.xs;
    for (int64_t q = 0; q < ch.qp; q += V) {
      vf dv[OB];
      for (int r = 0; r < OB; ++r) load(dv[r], dq + r * ch.qp + q);
      for (int j = 0; j < KB; ++j) {
        vf xv;
        load(xv, xb + off[j] + q);
        for (int r = 0; r < OB; ++r) acc[r][j] += dv[r] * xv;
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) dw[r * ldw + j] += hsum<V>(acc[r][j]);
}

// dw [cout, k] (the weights' layout) = sum over the n images of dy'(o, q) *
// xpad[q + off_k], one chunk of images (in cache) at a time.
template <int V, int OB, int KB>
[[gnu::always_inline]] inline void grad_weight_all(const ConvGeom& g, const float* x, const float* dy, float* dw,
                                                   float* work) {
  static_assert(OB <= ConvGeom::kDirectGwOb && ConvGeom::kDirectVec % V == 0);
  const Direct d{g.c, g.h, g.w, g.o, g.kh, g.kw, g.ph, g.pw, g.sh};
  const int64_t kn = d.k(), oh = d.oh(), ow = d.ow(), wq = d.wq(), qp = g.direct_gw_grid();
  const int64_t orows = round_up(g.o, ConvGeom::kDirectGwOb), chunk = g.direct_gw_images();
  // The columns in tiles of KB; the last tile's extra columns read offset 0.
  std::vector<int64_t> off = d.offsets();
  off.resize(static_cast<size_t>(round_up(kn, KB)), 0);
  std::fill(dw, dw + g.o * kn, 0.f);
  GwChunk ch{work, nullptr, 0, d.cin * d.plane(), orows * qp, qp};
  float* dq = work + chunk * ch.xs + slack(d);
  ch.dq = dq;
  for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
    ch.nb = std::min(chunk, g.n - i0);
    for (int64_t b = 0; b < ch.nb; ++b) {
      const int64_t img = i0 + b;
      for (int64_t c = 0; c < d.cin; ++c)
        pad_plane(d, x + (img * d.cin + c) * d.h * d.w, work + b * ch.xs + c * d.plane());
      float* db = dq + b * ch.ds;
      std::fill(db, db + ch.ds, 0.f);
      for (int64_t o = 0; o < g.o; ++o)
        for (int64_t i = 0; i < oh; ++i)
          std::memcpy(db + o * qp + i * wq, dy + ((img * g.o + o) * oh + i) * ow,
                      static_cast<size_t>(ow) * sizeof(float));
    }
    std::fill(work + ch.nb * ch.xs, work + ch.nb * ch.xs + slack(d), 0.f);
    for (int64_t o0 = 0; o0 < g.o; o0 += OB)
      for (int64_t k0 = 0; k0 < kn; k0 += KB)
        grad_weight_tile<V, OB, KB>(ch, o0, off.data() + k0, dw + o0 * kn + k0, kn, std::min<int64_t>(OB, g.o - o0),
                                    std::min<int64_t>(KB, kn - k0));
  }
}

// ---- the three entry points per vector width -------------------------------------------------

template <int V, int OB, int QV>
[[gnu::always_inline]] inline void conv_fwd(const ConvGeom& g, const float* x, const float* w, float* y,
                                            float* work, const float* bias, bool relu) {
  const Direct d{g.c, g.h, g.w, g.o, g.kh, g.kw, g.ph, g.pw, g.sh};
  const int64_t taps = g.kh * g.kw;
  forward_all<V, OB, QV>(d, g.n, x, [&](int64_t o, int64_t c, int64_t t) { return w[(o * g.c + c) * taps + t]; },
                         y, work, bias, relu);
}

template <int V, int OB, int QV>
[[gnu::always_inline]] inline void conv_grad_in(const ConvGeom& g, const float* dy, const float* w, float* dx,
                                                float* work) {
  // dx = conv(dy padded by k-1-p, w flipped with its channel axes swapped).
  const Direct d{g.o, g.oh, g.ow, g.c, g.kh, g.kw, g.kh - 1 - g.ph, g.kw - 1 - g.pw, 1};
  const int64_t taps = g.kh * g.kw;
  forward_all<V, OB, QV>(
      d, g.n, dy, [&](int64_t c, int64_t o, int64_t t) { return w[(o * g.c + c) * taps + (taps - 1 - t)]; }, dx,
      work, nullptr, false);
}

void fwd_base(const ConvGeom& g, const float* x, const float* w, float* y, float* work, const float* b, bool r) {
  conv_fwd<4, 4, 2>(g, x, w, y, work, b, r);
}
void grad_in_base(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work) {
  conv_grad_in<4, 4, 2>(g, dy, w, dx, work);
}
void grad_w_base(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work) {
  grad_weight_all<4, 2, 5>(g, x, dy, dw, work);
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
[[gnu::target("avx2,fma")]] void grad_w_avx2(const ConvGeom& g, const float* x, const float* dy, float* dw,
                                             float* work) {
  grad_weight_all<8, 2, 5>(g, x, dy, dw, work);
}
[[gnu::target("avx512f")]] void fwd_avx512(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
                                           const float* b, bool r) {
  conv_fwd<16, 8, 2>(g, x, w, y, work, b, r);
}
[[gnu::target("avx512f")]] void grad_in_avx512(const ConvGeom& g, const float* dy, const float* w, float* dx,
                                               float* work) {
  conv_grad_in<16, 8, 2>(g, dy, w, dx, work);
}
[[gnu::target("avx512f")]] void grad_w_avx512(const ConvGeom& g, const float* x, const float* dy, float* dw,
                                              float* work) {
  grad_weight_all<16, 4, 6>(g, x, dy, dw, work);
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
#ifdef SYNK_CONV_CLONES
  if (cpu_isa() == Isa::avx512) return grad_w_avx512(g, x, dy, dw, work);
  if (cpu_isa() == Isa::avx2) return grad_w_avx2(g, x, dy, dw, work);
#endif
  grad_w_base(g, x, dy, dw, work);
}

}  // namespace synk::cpu
