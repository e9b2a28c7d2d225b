// The pointwise ops added for ResNets and transformers (gelu, abs, sin, cos,
// clip, maximum, minimum, greater, less, where) on the CPU executor: values
// against references computed in double (PyTorch's formulas), their
// gradients at the points where PyTorch picks a convention (ties, bounds,
// zero), broadcasting, and the errors raised when a graph is built. The
// numerical gradient checks are in test_grad.cpp, the CUDA-against-CPU
// cases in test_cuda_exec.cpp (GpuOps) and test_kernels_random.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "graph/internal.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

Array A(std::vector<float> v, Shape s) { return Array::from(v, std::move(s)); }
Array I(std::vector<int32_t> v, Shape s) { return Array::from(v, std::move(s)); }

// The outputs of one call of a fresh session.
std::vector<Array> run(Graph& g, const std::vector<Tensor>& ins, const std::vector<Array>& vals,
                       const std::vector<Tensor>& outs) {
  Session s(g);
  FunctionSpec spec{.name = "t", .inputs = ins, .outputs = {}, .updates = {}};
  for (const Tensor& t : outs) spec.outputs.emplace_back(t);
  std::vector<ArrayView> views(vals.begin(), vals.end());
  return s.function(spec)(views);
}

void expect_vec(const std::vector<float>& got, const std::vector<double>& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i << ": " << got[i];
    } else if (std::isinf(want[i])) {
      EXPECT_EQ(static_cast<double>(got[i]), want[i]) << what << " at " << i;
    } else {
      EXPECT_NEAR(got[i], want[i], 1e-7 + rtol * std::fabs(want[i])) << what << " at " << i;
    }
  }
}

// PyTorch's GELU forms in double.
double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}
// d/dx f at x by central differences in double: a check of the gradient
// formulas independent of how they are written.
double deriv(const std::function<double(double)>& f, double x) {
  const double h = 1e-5;
  return (f(x + h) - f(x - h)) / (2 * h);
}

const std::vector<float> kGeluX = {-10.f, -3.f, -1.f, -0.5f, -1e-3f, 0.f, 1e-3f, 0.5f, 1.f, 2.5f, 3.f, 10.f};

TEST(OpsPointwise, GeluBothFormsMatchPyTorch) {
  Graph g;
  Tensor x = g.input("x", f32, {static_cast<int64_t>(kGeluX.size())});
  auto r = run(g, {x}, {A(kGeluX, x.shape())}, {gelu(x), gelu(x, true)});
  std::vector<double> we, wt;
  for (float v : kGeluX) {
    we.push_back(gelu_erf(v));
    wt.push_back(gelu_tanh(v));
  }
  expect_vec(r[0].to_vector<float>(), we, 2e-6, "gelu erf");
  expect_vec(r[1].to_vector<float>(), wt, 2e-6, "gelu tanh");
  // torch.nn.functional.gelu(torch.tensor(1.)) and approximate='tanh'.
  EXPECT_NEAR(r[0].to_vector<float>()[8], 0.8413447f, 1e-6f);
  EXPECT_NEAR(r[1].to_vector<float>()[8], 0.8411920f, 1e-6f);
  // The two forms are different functions.
  EXPECT_NE(r[0].to_vector<float>()[9], r[1].to_vector<float>()[9]);
}

// GELU is computed without libm's erf/tanh (kernels/elementwise.hpp, so
// that its loops vectorise): on a dense grid its values and derivatives stay
// within a few units in the last place of the double references (relative
// near zero crossings and in the far tail, where they are tiny, absolute).
TEST(OpsPointwise, GeluAccurateOnADenseGrid) {
  const int64_t n = 16001;
  std::vector<float> xs(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) xs[static_cast<size_t>(i)] = -8.f + 16.f * static_cast<float>(i) / (n - 1);
  Graph g;
  Tensor v = g.variable("v", {n}, Init::zeros());
  auto ge = grad(sum(gelu(v)), {v})[0], gt = grad(sum(gelu(v, true)), {v})[0];
  Session s(g);
  s.set("v", A(xs, {n}));
  auto r = s.function({"f", {}, {{gelu(v)}, {gelu(v, true)}, {ge}, {gt}}, {}})({});
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  auto sig2u = [&](double x) { return 1 / (1 + std::exp(-2 * c * (x + 0.044715 * x * x * x))); };
  std::vector<double> w[4];
  for (float xf : xs) {
    const double x = xf;
    w[0].push_back(gelu_erf(x));
    w[1].push_back(gelu_tanh(x));
    w[2].push_back(0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) * 0.3989422804014327);
    const double sg = sig2u(x);
    w[3].push_back(sg + 2 * x * sg * (1 - sg) * c * (1 + 3 * 0.044715 * x * x));
  }
  const char* names[] = {"gelu", "gelu tanh", "gelu grad", "gelu tanh grad"};
  for (int k = 0; k < 4; ++k) {
    const std::vector<float> got = r[static_cast<size_t>(k)].to_vector<float>();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double err = std::fabs(got[i] - w[k][i]) / (3e-7 + 2e-6 * std::fabs(w[k][i]));
      worst = std::max(worst, err);
    }
    EXPECT_LE(worst, 1.0) << names[k] << ": error / (3e-7 + 2e-6 |want|)";
  }
}

// At the ends of float: as PyTorch's formulas give them.
TEST(OpsPointwise, GeluSpecialValues) {
  Graph g;
  const std::vector<float> xv = {kInf, -kInf, kNaN, 1e30f, -1e30f, 100.f, -100.f};
  Tensor v = g.variable("v", {7}, Init::zeros());
  auto ge = grad(sum(gelu(v)), {v})[0], gt = grad(sum(gelu(v, true)), {v})[0];
  Session s(g);
  s.set("v", A(xv, {7}));
  auto r = s.function({"f", {}, {{gelu(v)}, {gelu(v, true)}, {ge}, {gt}}, {}})({});
  for (int k = 0; k < 2; ++k) {
    // gelu(-inf) is -inf * 0 = NaN in PyTorch too.
    expect_vec(r[static_cast<size_t>(k)].to_vector<float>(), {INFINITY, NAN, NAN, 1e30, -0.0, 100, -0.0}, 1e-7,
               k ? "gelu tanh" : "gelu");
    expect_vec(r[static_cast<size_t>(k + 2)].to_vector<float>(), {1, 0, NAN, 1, 0, 1, 0}, 0,
               k ? "gelu tanh grad" : "gelu grad");
  }
}

TEST(OpsPointwise, GeluGradientIsTheExactDerivativeOfEachForm) {
  const Shape shape{static_cast<int64_t>(kGeluX.size())};
  for (bool tanh_form : {false, true}) {
    Graph g;
    Tensor v = g.variable("v", shape, Init::zeros());
    Tensor w = g.input("w", f32, shape);
    Tensor gv = grad(sum(gelu(v, tanh_form) * w), {v})[0];
    Session s(g);
    s.set("v", A(kGeluX, shape));
    std::vector<float> wts(kGeluX.size());
    for (size_t i = 0; i < wts.size(); ++i) wts[i] = 0.5f + 0.25f * static_cast<float>(i % 3);
    auto out = s.function({"g", {w}, {{gv}}, {}})({A(wts, shape)})[0].to_vector<float>();
    std::vector<double> want;
    for (size_t i = 0; i < kGeluX.size(); ++i)
      want.push_back(wts[i] * deriv(tanh_form ? gelu_tanh : gelu_erf, kGeluX[i]));
    expect_vec(out, want, 1e-5, tanh_form ? "gelu tanh grad" : "gelu erf grad");
  }
}

TEST(OpsPointwise, AbsSinCosValuesAndGradients) {
  Graph g;
  const std::vector<float> xv = {-2.f, -0.f, 0.f, 0.75f, 3.f, kNaN, -kInf};
  Tensor v = g.variable("v", {7}, Init::zeros());
  Tensor ga = grad(sum(synk::abs(v)), {v})[0];
  Tensor gs = grad(sum(synk::sin(v) * 2.f), {v})[0];
  Tensor gc = grad(sum(synk::cos(v)), {v})[0];
  Session s(g);
  s.set("v", A(xv, {7}));
  auto r = s.function({"f", {}, {{synk::abs(v)}, {synk::sin(v)}, {synk::cos(v)}, {ga}, {gs}, {gc}}, {}})({});
  std::vector<double> wa, ws, wc, wga, wgs, wgc;
  for (float x : xv) {
    wa.push_back(std::fabs(x));
    ws.push_back(std::sin(static_cast<double>(x)));
    wc.push_back(std::cos(static_cast<double>(x)));
    // sign(x), 0 at +-0; sign(NaN) = 0 as PyTorch's sgn.
    wga.push_back(x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0));
    wgs.push_back(2 * std::cos(static_cast<double>(x)));
    wgc.push_back(-std::sin(static_cast<double>(x)));
  }
  expect_vec(r[0].to_vector<float>(), wa, 0, "abs");
  expect_vec(r[1].to_vector<float>(), ws, 1e-6, "sin");
  expect_vec(r[2].to_vector<float>(), wc, 1e-6, "cos");
  expect_vec(r[3].to_vector<float>(), wga, 0, "abs grad");
  expect_vec(r[4].to_vector<float>(), wgs, 1e-6, "sin grad");
  expect_vec(r[5].to_vector<float>(), wgc, 1e-6, "cos grad");
}

TEST(OpsPointwise, ClipIsClampAndItsGradientPassesInsideTheBoundsIncluded) {
  Graph g;
  const std::vector<float> xv = {-3.f, -1.f, -0.5f, 0.f, 2.f, 2.5f, kNaN, kInf, -kInf};
  Tensor v = g.variable("v", {9}, Init::zeros());
  Tensor y = clip(v, -1.f, 2.f);
  Tensor gy = grad(sum(y * 3.f), {v})[0];
  Tensor point = clip(v, 0.5f, 0.5f);  // lo == hi: a constant where x is not NaN
  Session s(g);
  s.set("v", A(xv, {9}));
  auto r = s.function({"f", {}, {{y}, {gy}, {point}}, {}})({});
  expect_vec(r[0].to_vector<float>(), {-1, -1, -0.5, 0, 2, 2, NAN, 2, -1}, 0, "clip");
  // torch.clamp's backward: g where lo <= x <= hi, the bounds included; 0
  // outside and for NaN.
  expect_vec(r[1].to_vector<float>(), {0, 3, 3, 3, 3, 0, 0, 0, 0}, 0, "clip grad");
  expect_vec(r[2].to_vector<float>(), {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, NAN, 0.5, 0.5}, 0, "clip to a point");
}

TEST(OpsPointwise, ClipRefusesBadBoundsAndI32) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3});
  try {
    clip(x, 1.f, -1.f);
    FAIL() << "lo > hi accepted";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("clip"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("lo = 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(clip(x, kNaN, 1.f), ArgumentError);
  EXPECT_THROW(clip(x, 0.f, kNaN), ArgumentError);
  EXPECT_THROW(clip(g.input("p", i32, {3}), 0.f, 1.f), TypeError);
  EXPECT_NO_THROW(clip(x, -kInf, 0.f));
}

TEST(OpsPointwise, MaximumMinimumBroadcastNaNAndScalars) {
  Graph g;
  Tensor a = g.input("a", f32, {batch, 3});
  Tensor b = g.input("b", f32, {3});
  Array av = A({1, 5, kNaN, -2, 0, 7}, {2, 3}), bv = A({2, 5, 1}, {3});
  auto r = run(g, {a, b}, {av, bv},
               {maximum(a, b), minimum(a, b), maximum(a, 0.f), minimum(4.f, a), maximum(b, kNaN)});
  EXPECT_EQ(r[0].shape(), (Shape{2, 3}));
  expect_vec(r[0].to_vector<float>(), {2, 5, NAN, 2, 5, 7}, 0, "maximum");
  expect_vec(r[1].to_vector<float>(), {1, 5, NAN, -2, 0, 1}, 0, "minimum");
  expect_vec(r[2].to_vector<float>(), {1, 5, NAN, 0, 0, 7}, 0, "maximum with 0 (relu-like)");
  expect_vec(r[3].to_vector<float>(), {1, 4, NAN, -2, 0, 4}, 0, "minimum of 4 and a");
  expect_vec(r[4].to_vector<float>(), {NAN, NAN, NAN}, 0, "a NaN scalar wins");
}

TEST(OpsPointwise, MaximumMinimumI32) {
  Graph g;
  Tensor p = g.input("p", i32, {4});
  Tensor q = g.input("q", i32, {4});
  auto r = run(g, {p, q}, {I({3, -7, 0, 2147483647}, {4}), I({-1, -7, 5, 0}, {4})},
               {maximum(p, q), minimum(p, q), maximum(p, 2.f), minimum(-3.f, q)});
  EXPECT_EQ(r[0].dtype(), i32);
  EXPECT_EQ(r[0].to_vector<int32_t>(), (std::vector<int32_t>{3, -7, 5, 2147483647}));
  EXPECT_EQ(r[1].to_vector<int32_t>(), (std::vector<int32_t>{-1, -7, 0, 0}));
  EXPECT_EQ(r[2].to_vector<int32_t>(), (std::vector<int32_t>{3, 2, 2, 2147483647}));
  EXPECT_EQ(r[3].to_vector<int32_t>(), (std::vector<int32_t>{-3, -7, -3, -3}));
  EXPECT_THROW(maximum(p, 0.5f), TypeError);  // would be truncated
  EXPECT_THROW(maximum(p, g.input("f", f32, {4})), TypeError);
  EXPECT_THROW(maximum(p, g.input("s", i32, {3})), ShapeError);
}

// PyTorch's maximum/minimum backward: the larger (smaller) operand takes g,
// a tie splits it half and half, a broadcast operand sums its share.
TEST(OpsPointwise, MaximumMinimumGradientsSplitTies) {
  Graph g;
  Tensor a = g.variable("a", {2, 3}, Init::zeros());
  Tensor b = g.variable("b", {3}, Init::zeros());
  Tensor w = g.input("w", f32, {2, 3});
  auto gmax = grad(sum(maximum(a, b) * w), {a, b});
  auto gmin = grad(sum(minimum(a, b) * w), {a, b});
  Session s(g);
  s.set("a", A({1, 5, 3, -2, 0, 7}, {2, 3}));
  s.set("b", A({2, 5, 1}, {3}));
  Array wv = A({1, 2, 4, 8, 16, 32}, {2, 3});
  auto r = s.function({"f", {w}, {{gmax[0]}, {gmax[1]}, {gmin[0]}, {gmin[1]}}, {}})({wv});
  // maximum: a wins at (0,2), (1,2); tie at (0,1); b wins at (0,0), (1,0), (1,1).
  expect_vec(r[0].to_vector<float>(), {0, 1, 4, 0, 0, 32}, 0, "d max / d a");
  expect_vec(r[1].to_vector<float>(), {1 + 8, 1 + 16, 0}, 0, "d max / d b");
  expect_vec(r[2].to_vector<float>(), {1, 1, 0, 8, 16, 0}, 0, "d min / d a");
  expect_vec(r[3].to_vector<float>(), {0, 1, 4 + 32}, 0, "d min / d b");
}

TEST(OpsPointwise, GreaterLessGiveI32Masks) {
  Graph g;
  Tensor a = g.input("a", f32, {batch, 3});
  Tensor b = g.input("b", f32, {3});
  Tensor p = g.input("p", i32, {3});
  auto r = run(g, {a, b, p}, {A({1, 5, kNaN, -2, 0, 7}, {2, 3}), A({2, 5, 1}, {3}), I({-1, 0, 4}, {3})},
               {greater(a, b), less(a, b), greater(a, 0.f), less(1.f, a), greater(p, 0.f), less(p, p * 2.f)});
  for (const Array& x : r) EXPECT_EQ(x.dtype(), i32);
  EXPECT_EQ(r[0].to_vector<int32_t>(), (std::vector<int32_t>{0, 0, 0, 0, 0, 1}));  // NaN compares false
  EXPECT_EQ(r[1].to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 0, 1, 1, 0}));
  EXPECT_EQ(r[2].to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 0, 0, 0, 1}));
  EXPECT_EQ(r[3].to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 0, 0, 0, 1}));
  EXPECT_EQ(r[4].to_vector<int32_t>(), (std::vector<int32_t>{0, 0, 1}));
  EXPECT_EQ(r[5].to_vector<int32_t>(), (std::vector<int32_t>{0, 0, 1}));
  EXPECT_THROW(greater(a, p), TypeError);
  EXPECT_THROW(less(p, 0.5f), TypeError);
}

TEST(OpsPointwise, WhereBroadcastsAllThreeOperands) {
  Graph g;
  Tensor c = g.input("c", i32, {2, 1, 3});
  Tensor a = g.input("a", f32, {4, 1});
  Tensor b = g.input("b", f32, {});
  Tensor y = where(c, a, b);
  EXPECT_EQ(y.shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(y.dtype(), f32);
  Array cv = I({1, 0, -3, 0, 0, 7}, {2, 1, 3}), av = A({10, 20, 30, 40}, {4, 1}), bv = A({-1}, {});
  auto r = run(g, {c, a, b}, {cv, av, bv}, {y});
  std::vector<double> want;
  const std::vector<int32_t> cs = cv.to_vector<int32_t>();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 3; ++k) want.push_back(cs[static_cast<size_t>(i * 3 + k)] != 0 ? 10.0 * (j + 1) : -1.0);
  expect_vec(r[0].to_vector<float>(), want, 0, "where");
}

// It selects: the branch not taken never leaks a NaN or an infinity, as an
// arithmetic blend (m a + (1 - m) b) would.
TEST(OpsPointwise, WhereSelectsWithoutBlendingBranches) {
  Graph g;
  Tensor x = g.input("x", f32, {5});
  Tensor safe = where(greater(x, 0.f), synk::log(x), x * 0.f);
  auto r = run(g, {x}, {A({2.f, 0.f, -1.f, kInf, kNaN}, {5})}, {safe});
  expect_vec(r[0].to_vector<float>(), {std::log(2.0), 0, -0.0, INFINITY, NAN}, 1e-6, "where over log");
  EXPECT_FALSE(std::isnan(r[0].to_vector<float>()[2]));
}

TEST(OpsPointwise, WhereI32AndBatch) {
  Graph g;
  Tensor c = g.input("c", i32, {batch});
  Tensor p = g.input("p", i32, {batch});
  Tensor y = where(c, p, g.constant(-9.f, i32));
  EXPECT_EQ(y.dtype(), i32);
  auto r = run(g, {c, p}, {I({0, 1, 2, 0}, {4}), I({5, 6, 7, 8}, {4})}, {y});
  EXPECT_EQ(r[0].to_vector<int32_t>(), (std::vector<int32_t>{-9, 6, 7, -9}));
  auto e = run(g, {c, p}, {I({}, {0}), I({}, {0})}, {y});
  EXPECT_EQ(e[0].numel(), 0);
}

// g to a where cond, to b elsewhere, each summed over its broadcast dims;
// PyTorch's where backward.
TEST(OpsPointwise, WhereGradientMasksAndUnbroadcasts) {
  Graph g;
  Tensor c = g.input("c", i32, {2, 3});
  Tensor a = g.variable("a", {3}, Init::constant(1.f));
  Tensor b = g.variable("b", {2, 1}, Init::constant(2.f));
  Tensor w = g.input("w", f32, {2, 3});
  auto gr = grad(sum(where(c, a, b) * w), {a, b});
  Session s(g);
  auto r = s.function({"f", {c, w}, {{gr[0]}, {gr[1]}}, {}})({I({1, 0, 1, 0, 0, 1}, {2, 3}),
                                                             A({1, 2, 4, 8, 16, 32}, {2, 3})});
  expect_vec(r[0].to_vector<float>(), {1, 0, 4 + 32}, 0, "d / d a");
  expect_vec(r[1].to_vector<float>(), {2, 8 + 16}, 0, "d / d b");
}

TEST(OpsPointwise, WhereRefusesBadOperands) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3});
  Tensor c = g.input("c", i32, {batch, 3});
  try {
    where(x, x, x);
    FAIL() << "an f32 condition accepted";
  } catch (const TypeError& e) {
    EXPECT_NE(std::string(e.what()).find("where"), std::string::npos) << e.what();
  }
  EXPECT_THROW(where(c, x, c), TypeError);
  EXPECT_THROW(where(c, x, g.input("y", f32, {4})), ShapeError);
  EXPECT_THROW(where(g.input("c2", i32, {2}), x, x), ShapeError);
  Graph h;
  EXPECT_THROW(where(c, x, h.input("z", f32, {3})), ArgumentError);
  // Three operands that broadcast on alternating dims need more than the
  // kernels' 8 loops: refused when built.
  Graph k;
  Tensor p = k.input("p", i32, {2, 1, 1, 2, 1, 1, 2, 1, 1});
  Tensor q = k.input("q", f32, {1, 2, 1, 1, 2, 1, 1, 2, 1});
  Tensor r = k.input("r", f32, {1, 1, 2, 1, 1, 2, 1, 1, 2});
  EXPECT_THROW(where(p, q, r), ShapeError);
}

// The ops' attributes (gelu's form, clip's bounds) survive serialisation:
// a deserialised graph computes the same values.
TEST(OpsPointwise, SerialisedGraphComputesTheSame) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 4});
  Tensor y = gelu(x, true) + gelu(x) + clip(x, -0.5f, 0.25f) +
             where(less(x, 0.f), synk::abs(x), maximum(synk::sin(x), synk::cos(x)));
  Tensor v = g.variable("v", {4}, Init::uniform(-1.f, 1.f));
  Tensor gv = grad(sum(gelu(v * x, true) + minimum(v, x) + clip(v, -0.5f, 0.5f) * x), {v})[0];
  const FunctionDef def = make_function_def({"f", {x}, {{y}, {gv}}, {}});
  const std::vector<uint8_t> bytes = serialize(g, {def});
  Graph h;
  const std::vector<FunctionDef> back = deserialize(bytes.data(), bytes.size(), h);
  const Array xv = A({-1.5f, -0.25f, 0.f, 0.75f, 2.f, -3.f, 0.125f, 1.f}, {2, 4});
  Session a(g, {.seed = 9}), b(h, {.seed = 9});
  auto ra = a.function({"f", {x}, {{y}, {gv}}, {}})({xv});
  Tensor hx = h.tensor(back[0].inputs[0]);
  auto rb = b.function({"f", {hx}, {{h.tensor(back[0].outputs[0])}, {h.tensor(back[0].outputs[1])}}, {}})({xv});
  for (size_t k = 0; k < 2; ++k) EXPECT_EQ(ra[k].to_vector<float>(), rb[k].to_vector<float>()) << k;
}

// The f32-only ops refuse i32 tensors when the graph is built.
TEST(OpsPointwise, F32OnlyOpsRefuseI32) {
  Graph g;
  Tensor p = g.input("p", i32, {3});
  EXPECT_THROW(gelu(p), TypeError);
  EXPECT_THROW(synk::abs(p), TypeError);
  EXPECT_THROW(synk::sin(p), TypeError);
  EXPECT_THROW(synk::cos(p), TypeError);
}

// A deserialised graph could hold a gradient helper on i32 operands, which
// has no i32 kernel: compiling refuses it rather than running garbage.
TEST(OpsPointwise, PlannerRefusesI32ForF32OnlyKinds) {
  Graph g;
  Tensor p = g.input("p", i32, {3});
  Tensor bad = make_node(g, Op::AbsGrad, i32, {3}, {p.id(), p.id()});
  Session s(g);
  Function f = s.function({"f", {p}, {{bad}}, {}});
  try {
    f({I({1, 2, 3}, {3})});
    FAIL() << "abs_grad on i32 operands ran";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("needs f32 operands"), std::string::npos) << e.what();
  }
}

}  // namespace
