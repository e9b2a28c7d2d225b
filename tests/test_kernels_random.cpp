// test_kernels_random.cpp — every kernel launcher of kernels/ops.cuh against
// the CPU executor's kernel (src/exec/cpu) on random shapes, axes, dtypes
// and values, compared with atol + rtol*|ref| (exactly where both sides
// compute the same rounded operations).
//
// Sizes include 0, 1, odd, several blocks, and past the launchers' grid
// cap (65535 blocks of 256 threads) so the grid-stride loops go round.
// Geometry comes from the planner's own builders (exec/plan/geometry.hpp),
// as the executors get it. Seeded: SYNK_TEST_SEED (default fixed) varies
// the cases, and every failure names the seed and the case.
//
// A Gpu* suite: it runs under the CUDA emulation in CI (SYNK_CUDA_EMU) and
// on a real GPU in the GPU check, so the two cross-check each other; it
// skips where no CUDA device is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "synk/config.hpp"

#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include "../kernels/dropout_bits.hpp"
#include "../kernels/ops.cuh"
#include "cuda/device.hpp"
#include "exec/cpu/kernels.hpp"
#include "exec/plan/geometry.hpp"
#include "support/device_array.hpp"
#endif

namespace {

#if SYNK_HAVE_CUDA

using synk::Shape;
using synk::cuda::DeviceArray;
namespace plan = synk::plan;
namespace cpu = synk::cpu;
namespace gpu = synk::kernels;

#define SYNK_REQUIRE_GPU()                                                    \
  do {                                                                        \
    if (synk::cuda::device_count() == 0)                                      \
      GTEST_SKIP() << "no CUDA device (synk::cuda::device_count() == 0)";    \
  } while (0)

// Past grid_for's cap of 65535 blocks of 256: the grid-stride loops go round.
constexpr int64_t kPastGridCap = int64_t{65535} * 256 + 1001;

uint64_t test_seed() {
  const char* e = std::getenv("SYNK_TEST_SEED");
  return e && *e ? std::strtoull(e, nullptr, 0) : 20240601;
}

// A stream of its own for the launches, synchronised before any download.
class GpuKernelsRandom : public ::testing::Test {
 protected:
  void SetUp() override {
    SYNK_REQUIRE_GPU();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    rng_.seed(test_seed() ^ std::hash<std::string>{}(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  // After the launches of one case: no launch error, and the work is done.
  void finish() {
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  }

  template <class T>
  DeviceArray<T> up(const std::vector<T>& h) {
    DeviceArray<T> d(h.size());
    d.upload(h);
    return d;
  }
  template <class T>
  std::vector<T> down(const DeviceArray<T>& d) {
    std::vector<T> h(d.size());
    d.download(h);
    return h;
  }

  int64_t uni(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  bool coin() { return rng_() & 1; }

  // A dim: often 1 or small and odd, sometimes 0 or a few hundred.
  int64_t dim() {
    switch (rng_() % 10) {
      case 0: return 0;
      case 1: case 2: return 1;
      case 3: return uni(200, 700);
      default: return uni(2, 13);
    }
  }
  // A shape of rank 0..4 with at most `cap` elements (zero-size allowed).
  Shape shape(int64_t cap = 1 << 18) {
    for (;;) {
      Shape s(uni(0, 4));
      for (auto& d : s) d = dim();
      int64_t n = 1;
      for (auto d : s) n *= d;
      if (n <= cap) return s;
    }
  }
  static int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (auto d : s) n *= d;
    return n;
  }

  // Floats in [-4, 4), with exact zeros, ones and repeats mixed in.
  std::vector<float> floats(int64_t n, float lo = -4.f, float hi = 4.f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) {
      const auto r = rng_() % 16;
      x = r == 0 ? 0.f : r == 1 ? 1.f : d(rng_);
    }
    return v;
  }
  std::vector<int32_t> ints(int64_t n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) {
      const auto r = rng_() % 16;
      x = r == 0   ? 0
          : r == 1 ? -1
          : r == 2 ? std::numeric_limits<int32_t>::min()
          : r == 3 ? std::numeric_limits<int32_t>::max()
                   : static_cast<int32_t>(uni(-1000, 1000));
    }
    return v;
  }

  std::string seed_note() const { return "SYNK_TEST_SEED=" + std::to_string(test_seed()); }

  cudaStream_t stream_ = nullptr;
  std::mt19937_64 rng_;
};

std::string str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

// got vs want within atol + rtol*|want|; NaN matches NaN, infinities match
// exactly. Reports the first few mismatches.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float g = got[i], w = want[i];
    bool ok;
    if (std::isnan(w)) ok = std::isnan(g);
    else if (std::isinf(w)) ok = g == w;
    else ok = std::fabs(g - w) <= atol + rtol * std::fabs(w);
    if (!ok && ++bad <= 5) ADD_FAILURE() << what << ": element " << i << " is " << g << ", want " << w;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

template <class T>
void expect_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    bool ok;
    if constexpr (std::is_floating_point_v<T>) ok = (std::isnan(got[i]) && std::isnan(want[i])) || got[i] == want[i];
    else ok = got[i] == want[i];
    if (!ok && ++bad <= 5) ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

// b broadcast against a: each dim kept, made 1, or (leading) dropped.
Shape broadcast_of(const Shape& out, std::mt19937_64& rng) {
  Shape s = out;
  for (auto& d : s)
    if (rng() % 3 == 0) d = 1;
  size_t drop = rng() % (s.size() + 1);
  if (rng() % 2) drop = 0;
  s.erase(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(drop));
  return s;
}

TEST_F(GpuKernelsRandom, BinaryAndCompare) {
  for (int trial = 0; trial < 90; ++trial) {
    const Shape out = shape();
    const Shape sa = broadcast_of(out, rng_), sb = broadcast_of(out, rng_);
    const plan::Strided g = plan::make_broadcast(out, sa, &sb);
    // Every kind in turn, each several times (a random pick could miss one).
    const auto op = static_cast<plan::BinOp>(trial % static_cast<int>(plan::BinOp::kCount));
    const bool f32 = coin() || !synk::ew::binary_has_i32(op);  // the gradient kinds are f32 only
    const std::string what = seed_note() + " trial " + std::to_string(trial) + (f32 ? " f32" : " i32") + " op " +
                             std::to_string(static_cast<int>(op)) + " out " + str(out) + " a " + str(sa) + " b " + str(sb);
    SCOPED_TRACE(what);
    if (f32) {
      const auto a = floats(numel(sa)), b = floats(numel(sb));
      auto da = up(a), db = up(b);
      if (synk::ew::is_compare(op)) {
        DeviceArray<int32_t> dout(numel(out));
        gpu::compare_f32(op, g, da.data(), db.data(), dout.data(), stream_);
        finish();
        std::vector<int32_t> want(numel(out));
        cpu::compare_f32(op, g, a.data(), b.data(), want.data());
        expect_equal(down(dout), want, what);
      } else {
        DeviceArray<float> dout(numel(out));
        gpu::binary_f32(op, g, da.data(), db.data(), dout.data(), stream_);
        finish();
        std::vector<float> want(numel(out));
        cpu::binary_f32(op, g, a.data(), b.data(), want.data());
        if (op == plan::BinOp::GeluGrad || op == plan::BinOp::GeluTanhGrad)
          expect_close(down(dout), want, 1e-6f, 1e-5f, what);  // device erff/expf/tanhf: last ulps
        else
          expect_equal(down(dout), want, what);  // one rounded operation (or a choice): exact
      }
    } else {
      const auto a = ints(numel(sa)), b = ints(numel(sb));
      auto da = up(a), db = up(b);
      DeviceArray<int32_t> dout(numel(out));
      gpu::binary_i32(op, g, da.data(), db.data(), dout.data(), stream_);
      finish();
      std::vector<int32_t> want(numel(out));
      cpu::binary_i32(op, g, a.data(), b.data(), want.data());
      expect_equal(down(dout), want, what);
    }
  }
}

TEST_F(GpuKernelsRandom, UnaryNegCasts) {
  for (int trial = 0; trial < 64; ++trial) {
    const int64_t n = trial == 0 ? kPastGridCap : numel(shape());
    const auto op = static_cast<plan::UnOp>(trial % static_cast<int>(plan::UnOp::kCount));
    const float p = std::vector<float>{2.f, 1.f, 0.5f, -1.f, 3.f, 0.3f}[rng_() % 6];
    const float q = p + static_cast<float>(uni(0, 3));  // Clip's upper bound
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " n " + std::to_string(n) +
                             " unary op " + std::to_string(static_cast<int>(op)) + " p " + std::to_string(p) +
                             " q " + std::to_string(q);
    SCOPED_TRACE(what);
    // Negative inputs too, so log/sqrt/pow produce NaN on both sides.
    const auto x = floats(n, -3.f, 3.f);
    auto dx = up(x);
    DeviceArray<float> dy(n);
    gpu::unary_f32(op, n, dx.data(), dy.data(), p, q, stream_);
    finish();
    std::vector<float> want(n);
    cpu::unary_f32(op, n, x.data(), want.data(), p, q);
    // Device (and libm) transcendental functions differ in the last ulps.
    expect_close(down(dy), want, 1e-6f, 1e-5f, what);

    const auto xi = ints(n);
    auto dxi = up(xi);
    DeviceArray<int32_t> dyi(n);
    gpu::neg_i32(n, dxi.data(), dyi.data(), stream_);
    DeviceArray<float> dyf(n);
    gpu::cast_i32_f32(n, dxi.data(), dyf.data(), stream_);
    // Floats beyond the int32 range, infinities and NaN saturate / give 0.
    std::vector<float> xf = floats(n, -3e9f, 3e9f);
    for (int64_t i = 0; i < n; i += 7) xf[i] = i % 3 == 0 ? NAN : (i % 3 == 1 ? INFINITY : -INFINITY);
    for (int64_t i = 3; i < n; i += 11) xf[i] = -2.75f;
    auto dxf = up(xf);
    DeviceArray<int32_t> dci(n);
    gpu::cast_f32_i32(n, dxf.data(), dci.data(), stream_);
    finish();
    std::vector<int32_t> neg(n), ci(n);
    std::vector<float> cf(n);
    cpu::neg_i32(n, xi.data(), neg.data());
    cpu::cast_i32_f32(n, xi.data(), cf.data());
    cpu::cast_f32_i32(n, xf.data(), ci.data());
    expect_equal(down(dyi), neg, what + " neg_i32");
    expect_equal(down(dyf), cf, what + " cast_i32_f32");
    expect_equal(down(dci), ci, what + " cast_f32_i32");
  }
}

TEST_F(GpuKernelsRandom, Where) {
  for (int trial = 0; trial < 50; ++trial) {
    const Shape out = shape();
    const Shape sc = broadcast_of(out, rng_), sa = broadcast_of(out, rng_), sb = broadcast_of(out, rng_);
    const plan::Strided g = plan::make_broadcast(out, sc, &sa, &sb);
    const bool f32 = coin();
    const std::string what = seed_note() + " trial " + std::to_string(trial) + (f32 ? " f32" : " i32") + " out " +
                             str(out) + " cond " + str(sc) + " a " + str(sa) + " b " + str(sb);
    SCOPED_TRACE(what);
    auto c = ints(numel(sc));
    for (auto& v : c) v = v % 3 == 0 ? 0 : v;  // about a third false
    auto dc = up(c);
    if (f32) {
      const auto a = floats(numel(sa)), b = floats(numel(sb));
      auto da = up(a), db = up(b);
      DeviceArray<float> dout(numel(out));
      gpu::where_f32(g, dc.data(), da.data(), db.data(), dout.data(), stream_);
      finish();
      std::vector<float> want(numel(out));
      cpu::where_f32(g, c.data(), a.data(), b.data(), want.data());
      expect_equal(down(dout), want, what);
    } else {
      const auto a = ints(numel(sa)), b = ints(numel(sb));
      auto da = up(a), db = up(b);
      DeviceArray<int32_t> dout(numel(out));
      gpu::where_i32(g, dc.data(), da.data(), db.data(), dout.data(), stream_);
      finish();
      std::vector<int32_t> want(numel(out));
      cpu::where_i32(g, c.data(), a.data(), b.data(), want.data());
      expect_equal(down(dout), want, what);
    }
  }
}

TEST_F(GpuKernelsRandom, StridedCopyTransposeAndBroadcast) {
  for (int trial = 0; trial < 40; ++trial) {
    plan::Strided g;
    Shape in;
    std::string desc;
    if (coin()) {
      in = shape();
      std::vector<int64_t> perm(in.size());
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng_);
      g = plan::make_transpose(in, perm);
      desc = "transpose " + str(in) + " perm " + str(perm);
    } else {
      const Shape out = shape();
      in = broadcast_of(out, rng_);
      g = plan::make_broadcast(out, in, nullptr);
      desc = "broadcast " + str(in) + " to " + str(out);
    }
    const bool scaled = coin();
    const float scale = scaled ? 1.f / static_cast<float>(uni(2, 9)) : 1.f;
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " " + desc + (scaled ? " scaled" : "");
    SCOPED_TRACE(what);
    const auto xf = floats(numel(in));
    std::vector<uint32_t> x(xf.size());
    std::memcpy(x.data(), xf.data(), x.size() * 4);
    auto dx = up(x);
    DeviceArray<uint32_t> dy(g.numel);
    gpu::strided_copy(g, dx.data(), dy.data(), scaled, scale, stream_);
    finish();
    std::vector<uint32_t> want(g.numel);
    cpu::strided_copy(g, x.data(), want.data());
    if (scaled)  // as the CPU executor's BroadcastTo scales
      for (auto& w : want) {
        float f;
        std::memcpy(&f, &w, 4);
        f *= scale;
        std::memcpy(&w, &f, 4);
      }
    expect_equal(down(dy), want, what);
  }
}

TEST_F(GpuKernelsRandom, BiasReluFillScaleAddDropout) {
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t rows = dim(), cols = dim();
    const int64_t n = rows * cols;
    const bool by_row = coin(), relu = coin();
    const bool bias = by_row ? coin() : true;  // the CPU's column form always has a bias
    const int64_t nb = by_row ? std::max<int64_t>(1, uni(1, std::max<int64_t>(rows, 1))) : cols;
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " rows " + std::to_string(rows) +
                             " cols " + std::to_string(cols) + (bias ? " bias" : "") + (relu ? " relu" : "") +
                             (by_row ? " by row, nb " + std::to_string(nb) : " by col");
    SCOPED_TRACE(what);
    const auto y0 = floats(n), b = floats(nb);
    auto dy = up(y0), db = up(b);
    if (by_row) gpu::bias_relu_rows(rows, cols, bias ? db.data() : nullptr, nb, relu, dy.data(), stream_);
    else gpu::bias_relu_cols(rows, cols, bias ? db.data() : nullptr, relu, dy.data(), stream_);
    finish();
    auto want = y0;
    if (by_row) cpu::bias_relu_rows(rows, cols, bias ? b.data() : nullptr, nb, relu, want.data());
    else cpu::bias_relu_cols(rows, cols, bias ? b.data() : nullptr, relu, want.data());
    expect_equal(down(dy), want, what + " bias_relu");
  }
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t n = trial == 0 ? kPastGridCap : numel(shape());
    const float w = static_cast<float>(uni(-9, 9)) / 7.f, v = static_cast<float>(uni(-9, 9)) / 3.f;
    const bool add = coin();
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " n " + std::to_string(n);
    SCOPED_TRACE(what);
    const auto x = floats(n), y0 = floats(n);
    auto dx = up(x), dy = up(y0);
    DeviceArray<float> dfill(n);
    gpu::fill(n, v, dfill.data(), stream_);
    gpu::scale_add(n, w, dx.data(), dy.data(), add, stream_);
    finish();
    expect_equal(down(dfill), std::vector<float>(n, v), what + " fill");
    std::vector<float> want(n);
    for (int64_t i = 0; i < n; ++i) {  // the runtime's CPU form: rounded product, then rounded sum
      const float wx = w * x[i];
      want[i] = add ? y0[i] + wx : wx;
    }
    expect_equal(down(dy), want, what + " scale_add");

    // Dropout: the CPU's mask bit for bit, the call number read on the device.
    const float p = static_cast<float>(uni(1, 9)) / 10.f;
    const uint64_t seed = rng_(), call = uni(0, 1000);
    const int rank = static_cast<int>(uni(0, 3));
    const int64_t st = uni(0, 5);
    const auto dp = synk::dropout::params(p);
    DeviceArray<unsigned long long> counter(1);
    counter.upload(std::vector<unsigned long long>{call});
    DeviceArray<float> dm(n);
    gpu::dropout_mask(n, dp.thr, dp.scale, synk::dropout::key_base(seed, rank, st), counter.data(), dm.data(), stream_);
    finish();
    std::vector<float> mask(n);
    cpu::dropout_mask(n, p, cpu::dropout_key(seed, rank, st, call), mask.data());
    expect_equal(down(dm), mask, what + " dropout p " + std::to_string(p));
  }
}

TEST_F(GpuKernelsRandom, Reductions) {
  for (int trial = 0; trial < 50; ++trial) {
    const Shape in = shape();
    std::vector<int64_t> axes;
    for (int64_t d = 0; d < static_cast<int64_t>(in.size()); ++d)
      if (coin()) axes.push_back(d);
    const plan::Reduce g = plan::make_reduce(in, axes);
    const auto op = static_cast<plan::ReduceKind>(uni(0, 2));
    const bool f32 = coin();
    const std::string what = seed_note() + " trial " + std::to_string(trial) + (f32 ? " f32" : " i32") + " op " +
                             std::to_string(static_cast<int>(op)) + " in " + str(in) + " axes " + str(axes);
    SCOPED_TRACE(what);
    if (f32) {
      const auto x = floats(numel(in));
      auto dx = up(x);
      DeviceArray<float> dy(g.out_numel);
      const float inv = g.in_numel > 0
          ? static_cast<float>(static_cast<double>(g.out_numel) / static_cast<double>(g.in_numel)) : 1.f;
      gpu::reduce_f32(op, g, inv, dx.data(), dy.data(), stream_);
      finish();
      std::vector<float> want(g.out_numel);
      cpu::reduce_f32(op, g, x.data(), want.data());
      // Both accumulate in double, in different orders.
      expect_close(down(dy), want, 1e-5f, 1e-5f, what);
    } else {
      auto x = ints(numel(in));
      if (op == plan::ReduceKind::Mean)  // keep the sums in range: the mean divides a wrapped sum otherwise
        for (auto& v : x) v %= 1000;
      auto dx = up(x);
      DeviceArray<int32_t> dy(g.out_numel);
      gpu::reduce_i32(op, g, dx.data(), dy.data(), stream_);
      finish();
      std::vector<int32_t> want(g.out_numel);
      cpu::reduce_i32(op, g, x.data(), want.data());
      expect_equal(down(dy), want, what);
    }
  }
}

TEST_F(GpuKernelsRandom, ArgmaxSoftmax) {
  for (int trial = 0; trial < 40; ++trial) {
    const Shape in = shape();
    if (in.empty()) continue;
    const int64_t axis = uni(0, static_cast<int64_t>(in.size()) - 1);
    const plan::AxisGeom g = plan::make_axis(in, axis);
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " in " + str(in) + " axis " +
                             std::to_string(axis);
    SCOPED_TRACE(what);
    const int64_t n = numel(in), rows = g.outer * g.inner;
    auto x = floats(n);
    for (auto& v : x) v = std::round(v * 2.f) / 2.f;  // ties: the first maximum wins on both
    auto dx = up(x);
    DeviceArray<int32_t> da(rows);
    gpu::argmax_f32(g, dx.data(), da.data(), stream_);
    const auto xi = ints(n);
    auto dxi = up(xi);
    DeviceArray<int32_t> dai(rows);
    gpu::argmax_i32(g, dxi.data(), dai.data(), stream_);
    const bool log = coin();
    DeviceArray<float> ds(n);
    gpu::softmax(g, dx.data(), ds.data(), log, stream_);
    finish();
    std::vector<int32_t> a(rows), ai(rows);
    cpu::argmax<float>(g, x.data(), a.data());
    cpu::argmax<int32_t>(g, xi.data(), ai.data());
    expect_equal(down(da), a, what + " argmax f32");
    expect_equal(down(dai), ai, what + " argmax i32");
    if (g.n > 0) {  // softmax over an empty axis launches nothing
      std::vector<float> s(n);
      cpu::softmax(g, x.data(), s.data(), log);
      expect_close(down(ds), s, 1e-6f, 1e-5f, what + (log ? " log_softmax" : " softmax"));
    }
  }
}

TEST_F(GpuKernelsRandom, SoftmaxCrossEntropy) {
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t n = trial == 0 ? 70000 : dim(), c = std::max<int64_t>(1, dim() % 40);
    const bool some_bad = trial % 3 == 0;
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " n " + std::to_string(n) + " c " +
                             std::to_string(c) + (some_bad ? " with bad labels" : "");
    SCOPED_TRACE(what);
    const auto logits = floats(n * c), g = floats(n);
    std::vector<int32_t> labels(n);
    for (auto& l : labels) l = static_cast<int32_t>(uni(0, c - 1));
    if (some_bad && n > 0)
      for (int k = 0; k < 3; ++k) labels[uni(0, n - 1)] = coin() ? static_cast<int32_t>(c) : -1;
    auto dl = up(logits), dg = up(g);
    auto dlab = up(labels);
    const unsigned long long none = ~0ull;
    DeviceArray<unsigned long long> bad(1), bad2(1);
    bad.upload(std::vector<unsigned long long>{none});
    bad2.upload(std::vector<unsigned long long>{none});
    DeviceArray<float> dloss(n), ddx(n * c);
    gpu::softmax_xent(n, c, dl.data(), dlab.data(), dloss.data(), bad.data(), stream_);
    gpu::softmax_xent_grad(n, c, dl.data(), dlab.data(), dg.data(), ddx.data(), bad2.data(), stream_);
    finish();
    std::vector<float> loss(n), dx(n * c);
    const int64_t first_bad = cpu::softmax_xent(n, c, logits.data(), labels.data(), loss.data());
    const int64_t first_bad2 = cpu::softmax_xent_grad(n, c, logits.data(), labels.data(), g.data(), dx.data());
    if (first_bad < 0) {
      expect_close(down(dloss), loss, 1e-5f, 1e-5f, what + " loss");
      expect_close(down(ddx), dx, 1e-6f, 1e-5f, what + " grad");
    } else {  // the CPU stops at the first bad label; the GPU makes bad rows NaN (ops.cuh)
      const auto gl = down(dloss);
      for (int64_t i = 0; i < n; ++i)
        if (labels[i] < 0 || labels[i] >= c) EXPECT_TRUE(std::isnan(gl[i])) << what << " row " << i;
    }
    const auto want_bad = [](int64_t b) { return b < 0 ? ~0ull : static_cast<unsigned long long>(b); };
    EXPECT_EQ(down(bad)[0], want_bad(first_bad)) << what;
    EXPECT_EQ(down(bad2)[0], want_bad(first_bad2)) << what;
  }
}

plan::ConvGeom random_conv(std::mt19937_64& rng) {
  auto u = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (;;) {
    plan::ConvGeom g{};
    g.n = u(1, 3), g.c = u(1, 3), g.h = u(1, 11), g.w = u(1, 11), g.o = u(1, 4);
    g.kh = u(1, 4), g.kw = u(1, 4), g.sh = u(1, 3), g.sw = u(1, 3), g.ph = u(0, 2), g.pw = u(0, 2);
    if (rng() % 4 == 0) g.kh = g.kw = g.sh = g.sw = 1, g.ph = g.pw = 0;  // 1x1
    const int64_t eh = g.h + 2 * g.ph - g.kh, ew = g.w + 2 * g.pw - g.kw;
    if (eh < 0 || ew < 0) continue;
    g.oh = eh / g.sh + 1, g.ow = ew / g.sw + 1;
    return g;
  }
}

std::string str(const plan::ConvGeom& g) {
  std::ostringstream o;
  o << "n" << g.n << " c" << g.c << " " << g.h << "x" << g.w << " o" << g.o << " k" << g.kh << "x" << g.kw << " s"
    << g.sh << "x" << g.sw << " p" << g.ph << "x" << g.pw << " -> " << g.oh << "x" << g.ow;
  return o.str();
}

// im2col and col2im are checked through the CPU convolution they serve:
// the GPU's column matrix times the filters (one CPU matmul per image) is
// the CPU's conv2d; the CPU's column gradients through the GPU's col2im are
// the CPU's conv2d_grad_input.
TEST_F(GpuKernelsRandom, Im2colCol2imPack) {
  for (int trial = 0; trial < 30; ++trial) {
    const plan::ConvGeom g = random_conv(rng_);
    const int64_t K = g.k(), P = g.p(), img = g.c * g.h * g.w;
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " " + str(g);
    SCOPED_TRACE(what);
    const auto x = floats(g.n * img), w = floats(g.o * K), dy = floats(g.n * g.o * P);
    auto dx = up(x);
    DeviceArray<float> dcol(g.n * K * P);
    gpu::im2col(g, g.n, dx.data(), dcol.data(), K * P, P, stream_);
    finish();
    const auto col = down(dcol);
    std::vector<float> y(g.n * g.o * P), want(g.n * g.o * P), work(std::max<int64_t>(g.workspace(), 1));
    for (int64_t i = 0; i < g.n; ++i)
      cpu::matmul(false, false, g.o, P, K, w.data(), col.data() + i * K * P, y.data() + i * g.o * P);
    cpu::conv2d(g, x.data(), w.data(), want.data(), work.data());
    expect_close(y, want, 1e-5f, 1e-5f, what + " im2col");

    std::vector<float> cols(g.n * K * P);
    for (int64_t i = 0; i < g.n; ++i)
      cpu::matmul(true, false, K, P, g.o, w.data(), dy.data() + i * g.o * P, cols.data() + i * K * P);
    auto dcols = up(cols);
    DeviceArray<float> ddx(g.n * img);
    gpu::col2im(g, g.n, dcols.data(), ddx.data(), stream_);
    // [count][o][p] -> [o][count][p]
    auto ddy = up(dy);
    DeviceArray<float> dpk(dy.size());
    gpu::pack_channels(g.n, g.o, P, ddy.data(), dpk.data(), stream_);
    finish();
    std::vector<float> dxw(g.n * img);
    cpu::conv2d_grad_input(g, dy.data(), w.data(), dxw.data(), work.data());
    expect_close(down(ddx), dxw, 1e-5f, 1e-5f, what + " col2im");
    const plan::Strided t = plan::make_transpose({g.n, g.o, P}, {1, 0, 2});
    std::vector<uint32_t> bits(dy.size()), packed(dy.size());
    std::memcpy(bits.data(), dy.data(), bits.size() * 4);
    cpu::strided_copy(t, bits.data(), packed.data());
    std::vector<float> pk(dy.size());
    std::memcpy(pk.data(), packed.data(), pk.size() * 4);
    expect_equal(down(dpk), pk, what + " pack_channels");
  }
}

TEST_F(GpuKernelsRandom, MaxPool) {
  for (int trial = 0; trial < 30; ++trial) {
    plan::PoolGeom g{};
    const plan::ConvGeom c = random_conv(rng_);
    g.n = c.n, g.c = c.c, g.h = c.h, g.w = c.w, g.kh = c.kh, g.kw = c.kw, g.sh = c.sh, g.sw = c.sw;
    g.ph = std::min(c.ph, (c.kh - 1) / 2), g.pw = std::min(c.pw, (c.kw - 1) / 2);  // a window never all padding
    g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1, g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
    if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw) continue;
    const std::string what = seed_note() + " trial " + std::to_string(trial) + " pool " + str(c);
    SCOPED_TRACE(what);
    const int64_t in = g.n * g.c * g.h * g.w, out = g.n * g.c * g.oh * g.ow;
    auto x = floats(in);
    for (auto& v : x) v = std::round(v);  // ties inside windows: the first maximum on both
    const auto dy = floats(out);
    auto dx = up(x), ddy = up(dy);
    DeviceArray<float> dout(out), dgrad(in);
    gpu::max_pool2d(g, dx.data(), dout.data(), stream_);
    gpu::max_pool2d_grad(g, dx.data(), ddy.data(), dgrad.data(), stream_);
    finish();
    std::vector<float> y(out), grad(in);
    cpu::max_pool2d(g, x.data(), y.data());
    cpu::max_pool2d_grad(g, x.data(), dy.data(), grad.data());
    expect_equal(down(dout), y, what + " max_pool2d");
    expect_close(down(dgrad), grad, 1e-6f, 1e-6f, what + " max_pool2d_grad");
  }
}

#else

TEST(GpuKernelsRandom, Skipped) { GTEST_SKIP() << "synk was built without CUDA (SYNK_WITH_CUDA=OFF or no toolkit found)"; }

#endif

}  // namespace
