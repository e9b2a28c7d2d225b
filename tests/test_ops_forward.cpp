// Forward values of every op on the CPU executor, on small inputs with
// hand-computed results: broadcasting edge cases, dims of size 0 and 1,
// int32 ops, and the nn ops (conv/pool also against a direct reference loop).
#include <gtest/gtest.h>

#include "graph/internal.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "synk/synk.hpp"

namespace {

using synk::Array;
using synk::ArrayView;
using synk::Graph;
using synk::Op;
using synk::Tensor;
using synk::f32;
using synk::i32;

// One-output function evaluated once in a fresh session.
Array eval(Graph& g, const std::vector<Tensor>& ins, const std::vector<ArrayView>& vals, Tensor out,
           synk::SessionOptions opts = {}) {
  synk::Session s(g, opts);
  auto f = s.function({.name = "t", .inputs = ins, .outputs = {{out}}});
  return f(vals).at(0);
}

// Appends a raw IR node (for ops without a public builder, e.g. gradients).
Tensor raw(Graph& g, Op op, synk::DType dt, synk::Shape shape, std::vector<int32_t> ins,
           std::vector<int64_t> ints = {}, std::vector<float> floats = {}, bool flag = false) {
  return synk::make_node(g, op, dt, std::move(shape), std::move(ins), std::move(ints), std::move(floats), flag);
}

void expect_vec(const std::vector<float>& got, const std::vector<float>& want, float tol = 1e-5f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << "at " << i;
    } else if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << "at " << i;
    } else {
      EXPECT_NEAR(got[i], want[i], tol * (1.f + std::fabs(want[i]))) << "at " << i;
    }
  }
}

Array A(std::vector<float> v, synk::Shape s) { return Array::from(v, std::move(s)); }
Array I(std::vector<int32_t> v, synk::Shape s) { return Array::from(v, std::move(s)); }

// ---- elementwise binary ----------------------------------------------------------

TEST(OpsForward, AddSameShape) {
  Graph g;
  auto a = g.input("a", f32, {2, 2});
  auto b = g.input("b", f32, {2, 2});
  Array r = eval(g, {a, b}, {A({1, 2, 3, 4}, {2, 2}), A({10, 20, 30, 40}, {2, 2})}, a + b);
  EXPECT_EQ(r.shape(), (synk::Shape{2, 2}));
  expect_vec(r.to_vector<float>(), {11, 22, 33, 44});
}

TEST(OpsForward, RowBroadcast) {
  Graph g;
  auto a = g.input("a", f32, {synk::batch, 3});
  auto b = g.input("b", f32, {3});
  Array r = eval(g, {a, b}, {A({1, 2, 3, 4, 5, 6}, {2, 3}), A({10, 20, 30}, {3})}, a - b);
  expect_vec(r.to_vector<float>(), {-9, -18, -27, -6, -15, -24});
}

TEST(OpsForward, OuterBroadcastColumnTimesRow) {
  Graph g;
  auto a = g.input("a", f32, {2, 1});
  auto b = g.input("b", f32, {1, 3});
  Array r = eval(g, {a, b}, {A({2, 3}, {2, 1}), A({1, 10, 100}, {1, 3})}, a * b);
  EXPECT_EQ(r.shape(), (synk::Shape{2, 3}));
  expect_vec(r.to_vector<float>(), {2, 20, 200, 3, 30, 300});
}

TEST(OpsForward, ScalarOperandsBothSides) {
  Graph g;
  auto a = g.input("a", f32, {3});
  Array r1 = eval(g, {a}, {A({1, 2, 4}, {3})}, 1.f / a);
  expect_vec(r1.to_vector<float>(), {1, 0.5f, 0.25f});
  Array r2 = eval(g, {a}, {A({1, 2, 4}, {3})}, a / 2.f - 1.f);
  expect_vec(r2.to_vector<float>(), {-0.5f, 0, 1});
}

TEST(OpsForward, ChannelBroadcastNCHW) {
  Graph g;
  auto x = g.input("x", f32, {2, 2, 1, 2});
  auto b = g.input("b", f32, {2, 1, 1});
  Array r = eval(g, {x, b}, {A({0, 1, 2, 3, 4, 5, 6, 7}, {2, 2, 1, 2}), A({100, 200}, {2, 1, 1})}, x + b);
  expect_vec(r.to_vector<float>(), {100, 101, 202, 203, 104, 105, 206, 207});
}

TEST(OpsForward, BroadcastMiddleDimAndSizeOne) {
  Graph g;
  auto a = g.input("a", f32, {2, 1, 2});
  auto b = g.input("b", f32, {1, 3, 1});
  Array r = eval(g, {a, b}, {A({1, 2, 3, 4}, {2, 1, 2}), A({10, 20, 30}, {1, 3, 1})}, a + b);
  EXPECT_EQ(r.shape(), (synk::Shape{2, 3, 2}));
  expect_vec(r.to_vector<float>(), {11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34});
}

TEST(OpsForward, ZeroRowsBroadcast) {
  Graph g;
  auto a = g.input("a", f32, {synk::batch, 3});
  auto b = g.input("b", f32, {3});
  Array r = eval(g, {a, b}, {A({}, {0, 3}), A({1, 2, 3}, {3})}, a * b);
  EXPECT_EQ(r.shape(), (synk::Shape{0, 3}));
  EXPECT_EQ(r.numel(), 0);
}

TEST(OpsForward, Int32Arithmetic) {
  Graph g;
  auto a = g.input("a", i32, {4});
  auto b = g.input("b", i32, {4});
  Array av = I({7, -7, 6, 5}, {4}), bv = I({2, 2, -3, 5}, {4});
  EXPECT_EQ(eval(g, {a, b}, {av, bv}, a + b).to_vector<int32_t>(), (std::vector<int32_t>{9, -5, 3, 10}));
  EXPECT_EQ(eval(g, {a, b}, {av, bv}, a - b).to_vector<int32_t>(), (std::vector<int32_t>{5, -9, 9, 0}));
  EXPECT_EQ(eval(g, {a, b}, {av, bv}, a * b).to_vector<int32_t>(), (std::vector<int32_t>{14, -14, -18, 25}));
  // Integer division truncates toward zero.
  EXPECT_EQ(eval(g, {a, b}, {av, bv}, a / b).to_vector<int32_t>(), (std::vector<int32_t>{3, -3, -2, 1}));
  EXPECT_EQ(eval(g, {a}, {av}, -a).to_vector<int32_t>(), (std::vector<int32_t>{-7, 7, -6, -5}));
}

TEST(OpsForward, EqualGivesInt32) {
  Graph g;
  auto a = g.input("a", f32, {2, 2});
  auto b = g.input("b", f32, {2});
  Array r = eval(g, {a, b}, {A({1, 2, 3, 2}, {2, 2}), A({1, 2}, {2})}, synk::equal(a, b));
  EXPECT_EQ(r.dtype(), i32);
  EXPECT_EQ(r.to_vector<int32_t>(), (std::vector<int32_t>{1, 1, 0, 1}));

  Graph h;
  auto x = h.input("x", i32, {3});
  auto y = h.input("y", i32, {3});
  Array q = eval(h, {x, y}, {I({4, 5, 6}, {3}), I({4, 0, 6}, {3})}, synk::equal(x, y));
  EXPECT_EQ(q.to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 1}));
}

TEST(OpsForward, ReluGrad) {
  Graph g;
  auto y = g.input("y", f32, {4});
  auto d = g.input("d", f32, {4});
  auto r = raw(g, Op::ReluGrad, f32, {4}, {y.id(), d.id()});
  Array out = eval(g, {y, d}, {A({0, 1, -1, 2}, {4}), A({5, 6, 7, 8}, {4})}, r);
  expect_vec(out.to_vector<float>(), {0, 6, 0, 8});
}

// ---- elementwise unary ----------------------------------------------------------------

TEST(OpsForward, UnaryMath) {
  Graph g;
  auto x = g.input("x", f32, {3});
  Array xv = A({-1.f, 0.5f, 2.f}, {3});
  expect_vec(eval(g, {x}, {xv}, synk::neg(x)).to_vector<float>(), {1, -0.5f, -2});
  expect_vec(eval(g, {x}, {xv}, synk::relu(x)).to_vector<float>(), {0, 0.5f, 2});
  expect_vec(eval(g, {x}, {xv}, synk::tanh(x)).to_vector<float>(), {std::tanh(-1.f), std::tanh(0.5f), std::tanh(2.f)});
  expect_vec(eval(g, {x}, {xv}, synk::sigmoid(x)).to_vector<float>(),
             {1 / (1 + std::exp(1.f)), 1 / (1 + std::exp(-0.5f)), 1 / (1 + std::exp(-2.f))});
  expect_vec(eval(g, {x}, {xv}, synk::exp(x)).to_vector<float>(), {std::exp(-1.f), std::exp(0.5f), std::exp(2.f)});
  expect_vec(eval(g, {x}, {xv}, synk::square(x)).to_vector<float>(), {1, 0.25f, 4});
  Array pv = A({1.f, 4.f, 9.f}, {3});
  expect_vec(eval(g, {x}, {pv}, synk::log(x)).to_vector<float>(), {0, std::log(4.f), std::log(9.f)});
  expect_vec(eval(g, {x}, {pv}, synk::sqrt(x)).to_vector<float>(), {1, 2, 3});
  expect_vec(eval(g, {x}, {pv}, synk::pow(x, 0.5f)).to_vector<float>(), {1, 2, 3});
  expect_vec(eval(g, {x}, {pv}, synk::pow(x, 3.f)).to_vector<float>(), {1, 64, 729});
  expect_vec(eval(g, {x}, {pv}, synk::pow(x, -1.f)).to_vector<float>(), {1, 0.25f, 1.f / 9});
}

TEST(OpsForward, Casts) {
  Graph g;
  auto x = g.input("x", f32, {5});
  Array r = eval(g, {x}, {A({-1.7f, 2.9f, 0.f, -0.2f, 3.f}, {5})}, synk::cast(x, i32));
  EXPECT_EQ(r.dtype(), i32);
  EXPECT_EQ(r.to_vector<int32_t>(), (std::vector<int32_t>{-1, 2, 0, 0, 3}));
  Graph h;
  auto y = h.input("y", i32, {3});
  Array q = eval(h, {y}, {I({-3, 0, 7}, {3})}, synk::cast(y, f32));
  EXPECT_EQ(q.dtype(), f32);
  expect_vec(q.to_vector<float>(), {-3, 0, 7});
}

TEST(OpsForward, Constants) {
  Graph g;
  auto c = g.constant(2.5f);
  auto k = g.constant(7.f, i32);
  synk::Session s(g);
  auto f = s.function({.name = "c", .inputs = {}, .outputs = {{c}, {k}}});
  auto r = f({});
  EXPECT_EQ(r[0].shape(), synk::Shape{});
  EXPECT_FLOAT_EQ(r[0].scalar(), 2.5f);
  EXPECT_EQ(r[1].dtype(), i32);
  EXPECT_EQ(r[1].to_vector<int32_t>(), std::vector<int32_t>{7});
}

// A float scalar with an i32 tensor: whole numbers are exact i32 constants
// (fractional ones are refused when the graph is built, test_graph.cpp).
TEST(OpsForward, Int32WithWholeFloatScalars) {
  Graph g;
  auto x = g.input("x", i32, {4});
  Array xv = I({7, -7, 6, 0}, {4});
  EXPECT_EQ(eval(g, {x}, {xv}, x * 2.f).to_vector<int32_t>(), (std::vector<int32_t>{14, -14, 12, 0}));
  EXPECT_EQ(eval(g, {x}, {xv}, x + -3.f).to_vector<int32_t>(), (std::vector<int32_t>{4, -10, 3, -3}));
  EXPECT_EQ(eval(g, {x}, {xv}, 10.f - x).to_vector<int32_t>(), (std::vector<int32_t>{3, 17, 4, 10}));
  EXPECT_EQ(eval(g, {x}, {xv}, x / 2.f).to_vector<int32_t>(), (std::vector<int32_t>{3, -3, 3, 0}));
}

// ---- many dims -------------------------------------------------------------------
// Shapes of more than 8 dims run when their dims merge into at most 8 loops
// (more are refused when the graph is built, test_graph.cpp); 8 unmergeable
// dims, the most the kernels take, give the right values.

// Row-major multi-index of flat index i in shape s.
std::vector<int64_t> unravel(int64_t i, const synk::Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t k = s.size(); k-- > 0;) {
    idx[k] = i % s[k];
    i /= s[k];
  }
  return idx;
}
// Flat index in shape s of idx (right-aligned; size-1 dims of s broadcast).
int64_t ravel(const std::vector<int64_t>& idx, const synk::Shape& s) {
  int64_t f = 0;
  const size_t off = idx.size() - s.size();
  for (size_t k = 0; k < s.size(); ++k) f = f * s[k] + (s[k] == 1 ? 0 : idx[off + k]);
  return f;
}
std::vector<float> iota_f(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i) * scale;
  return v;
}

TEST(OpsForward, EightUnmergeableBroadcastDims) {
  Graph g;
  const synk::Shape sa{2, 1, 3, 1, 2, 1, 3, 1}, sb{1, 2, 1, 3, 1, 2, 1, 2}, so{2, 2, 3, 3, 2, 2, 3, 2};
  auto a = g.input("a", f32, sa);
  auto b = g.input("b", f32, sb);
  const std::vector<float> av = iota_f(synk::numel(sa), 1.f), bv = iota_f(synk::numel(sb), 1000.f);
  const std::vector<float> got = eval(g, {a, b}, {A(av, sa), A(bv, sb)}, a + b).to_vector<float>();
  ASSERT_EQ(static_cast<int64_t>(got.size()), synk::numel(so));
  for (int64_t i = 0; i < synk::numel(so); ++i) {
    const auto idx = unravel(i, so);
    ASSERT_EQ(got[static_cast<size_t>(i)], av[static_cast<size_t>(ravel(idx, sa))] + bv[static_cast<size_t>(ravel(idx, sb))])
        << "at " << i;
  }
}

TEST(OpsForward, TenDimsThatMergeRun) {
  Graph g;
  // Broadcast: size-1 dims drop out and the rest merge into two loops.
  const synk::Shape sa{1, 1, 2, 3, 1, 2, 1, 1, 1, 2}, sb{2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, so{2, 1, 1, 2, 3, 1, 2, 1, 1, 1, 2};
  auto a = g.input("a", f32, sa);
  auto b = g.input("b", f32, sb);
  const std::vector<float> av = iota_f(synk::numel(sa), 1.f), bv = iota_f(synk::numel(sb), 100.f);
  auto s = eval(g, {a, b}, {A(av, sa), A(bv, sb)}, a * b);
  EXPECT_EQ(s.shape(), so);
  const std::vector<float> got = s.to_vector<float>();
  for (int64_t i = 0; i < synk::numel(so); ++i) {
    const auto idx = unravel(i, so);
    ASSERT_EQ(got[static_cast<size_t>(i)], av[static_cast<size_t>(ravel(idx, sa))] * bv[static_cast<size_t>(ravel(idx, sb))]);
  }

  // Transpose of 9 dims into 7 loops: swapped pairs, then three in order.
  const synk::Shape sx{2, 3, 2, 3, 2, 3, 2, 3, 2};
  const std::vector<int> perm{1, 0, 3, 2, 5, 4, 6, 7, 8};
  auto x = g.input("x", f32, sx);
  const std::vector<float> xv = iota_f(synk::numel(sx), 1.f);
  auto t = eval(g, {x}, {A(xv, sx)}, synk::transpose(x, perm));
  synk::Shape st;
  for (int p : perm) st.push_back(sx[static_cast<size_t>(p)]);
  EXPECT_EQ(t.shape(), st);
  const std::vector<float> tv = t.to_vector<float>();
  for (int64_t i = 0; i < synk::numel(st); ++i) {
    const auto oi = unravel(i, st);
    std::vector<int64_t> ii(sx.size());
    for (size_t k = 0; k < perm.size(); ++k) ii[static_cast<size_t>(perm[k])] = oi[k];
    ASSERT_EQ(tv[static_cast<size_t>(i)], xv[static_cast<size_t>(ravel(ii, sx))]) << "at " << i;
  }

  // Sum of 9 dims over alternating axes, 8 runs.
  auto r = eval(g, {x}, {A(xv, sx)}, synk::sum(x, {0, 2, 4, 6}));
  const synk::Shape sr{3, 3, 3, 3, 2};
  EXPECT_EQ(r.shape(), sr);
  std::vector<double> want(static_cast<size_t>(synk::numel(sr)), 0.0);
  for (int64_t i = 0; i < synk::numel(sx); ++i) {
    const auto idx = unravel(i, sx);
    want[static_cast<size_t>(ravel({idx[1], idx[3], idx[5], idx[7], idx[8]}, sr))] += xv[static_cast<size_t>(i)];
  }
  const std::vector<float> rv = r.to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(rv[i], static_cast<float>(want[i])) << "at " << i;
}

// ---- reductions ----------------------------------------------------------------

TEST(OpsForward, SumMeanMaxAxes) {
  Graph g;
  auto x = g.input("x", f32, {2, 3});
  Array xv = A({1, 5, 3, -4, 2, 6}, {2, 3});
  expect_vec(eval(g, {x}, {xv}, synk::sum(x)).to_vector<float>(), {13});
  expect_vec(eval(g, {x}, {xv}, synk::sum(x, {0})).to_vector<float>(), {-3, 7, 9});
  expect_vec(eval(g, {x}, {xv}, synk::sum(x, {1})).to_vector<float>(), {9, 4});
  Array k = eval(g, {x}, {xv}, synk::sum(x, {1}, true));
  EXPECT_EQ(k.shape(), (synk::Shape{2, 1}));
  expect_vec(eval(g, {x}, {xv}, synk::mean(x)).to_vector<float>(), {13.f / 6});
  expect_vec(eval(g, {x}, {xv}, synk::mean(x, {0})).to_vector<float>(), {-1.5f, 3.5f, 4.5f});
  expect_vec(eval(g, {x}, {xv}, synk::max(x, {1})).to_vector<float>(), {5, 6});
  expect_vec(eval(g, {x}, {xv}, synk::max(x, {-2})).to_vector<float>(), {1, 5, 6});
  expect_vec(eval(g, {x}, {xv}, synk::max(x)).to_vector<float>(), {6});
}

TEST(OpsForward, ReduceMiddleAndOuterAxes) {
  Graph g;
  auto x = g.input("x", f32, {2, 2, 3});
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  Array xv = A(v, {2, 2, 3});
  expect_vec(eval(g, {x}, {xv}, synk::sum(x, {1})).to_vector<float>(), {3, 5, 7, 15, 17, 19});
  expect_vec(eval(g, {x}, {xv}, synk::sum(x, {0, 2})).to_vector<float>(), {0 + 1 + 2 + 6 + 7 + 8, 3 + 4 + 5 + 9 + 10 + 11});
  expect_vec(eval(g, {x}, {xv}, synk::max(x, {0, 1})).to_vector<float>(), {9, 10, 11});
}

TEST(OpsForward, LongSumIsAccurate) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch});
  std::vector<float> v(100003, 0.1f);
  Array r = eval(g, {x}, {A(v, {100003})}, synk::sum(x));
  EXPECT_NEAR(r.scalar(), 10000.3f, 0.5f);
}

TEST(OpsForward, ReductionsOverEmpty) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 2});
  Array e = A({}, {0, 2});
  expect_vec(eval(g, {x}, {e}, synk::sum(x)).to_vector<float>(), {0});
  expect_vec(eval(g, {x}, {e}, synk::sum(x, {0})).to_vector<float>(), {0, 0});
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_vec(eval(g, {x}, {e}, synk::mean(x)).to_vector<float>(), {nan});
  expect_vec(eval(g, {x}, {e}, synk::max(x, {0})).to_vector<float>(), {-inf, -inf});
  EXPECT_EQ(eval(g, {x}, {e}, synk::argmax(x, 0)).to_vector<int32_t>(), (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(eval(g, {x}, {e}, synk::argmax(x, 1)).numel(), 0);
}

TEST(OpsForward, Int32Reductions) {
  Graph g;
  auto x = g.input("x", i32, {2, 2});
  Array xv = I({1, -5, 3, 4}, {2, 2});
  EXPECT_EQ(eval(g, {x}, {xv}, synk::sum(x)).to_vector<int32_t>(), std::vector<int32_t>{3});
  EXPECT_EQ(eval(g, {x}, {xv}, synk::max(x, {0})).to_vector<int32_t>(), (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(eval(g, {x}, {xv}, synk::argmax(x, 1)).to_vector<int32_t>(), (std::vector<int32_t>{0, 1}));
}

TEST(OpsForward, ArgmaxFirstMaxWins) {
  Graph g;
  auto x = g.input("x", f32, {2, 4});
  Array xv = A({1, 3, 3, 0, 2, 2, 2, 2}, {2, 4});
  EXPECT_EQ(eval(g, {x}, {xv}, synk::argmax(x, 1)).to_vector<int32_t>(), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(eval(g, {x}, {xv}, synk::argmax(x, 0)).to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 0, 1}));
}

// ---- layout ----------------------------------------------------------------------

TEST(OpsForward, ReshapeTransposeBroadcastTo) {
  Graph g;
  auto x = g.input("x", f32, {2, 3});
  Array xv = A({0, 1, 2, 3, 4, 5}, {2, 3});
  Array r = eval(g, {x}, {xv}, synk::reshape(x, {3, 2}));
  EXPECT_EQ(r.shape(), (synk::Shape{3, 2}));
  expect_vec(r.to_vector<float>(), {0, 1, 2, 3, 4, 5});
  expect_vec(eval(g, {x}, {xv}, synk::transpose(x)).to_vector<float>(), {0, 3, 1, 4, 2, 5});
  Array b = eval(g, {x}, {xv}, synk::broadcast_to(synk::reshape(x, {2, 1, 3}), {2, 2, 3}));
  expect_vec(b.to_vector<float>(), {0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5});
}

TEST(OpsForward, Transpose3DAndLarge) {
  Graph g;
  auto x = g.input("x", f32, {2, 3, 4});
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  Array r = eval(g, {x}, {A(v, {2, 3, 4})}, synk::transpose(x, {2, 0, 1}));
  EXPECT_EQ(r.shape(), (synk::Shape{4, 2, 3}));
  auto got = r.to_vector<float>();
  for (int c = 0; c < 4; ++c)
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 3; ++b) EXPECT_EQ(got[static_cast<size_t>((c * 2 + a) * 3 + b)], v[static_cast<size_t>((a * 3 + b) * 4 + c)]);

  // Big enough for the tiled path, odd sizes.
  Graph h;
  auto y = h.input("y", f32, {37, 70});
  std::vector<float> w(37 * 70);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  auto t = eval(h, {y}, {A(w, {37, 70})}, synk::transpose(y)).to_vector<float>();
  for (int i = 0; i < 37; ++i)
    for (int j = 0; j < 70; ++j) ASSERT_EQ(t[static_cast<size_t>(j * 37 + i)], w[static_cast<size_t>(i * 70 + j)]);
}

TEST(OpsForward, AveragingBroadcastTo) {
  // flag on BroadcastTo divides by the broadcast factor (gradient of mean).
  Graph g;
  auto x = g.input("x", f32, {1, 2});
  auto b = raw(g, Op::BroadcastTo, f32, {4, 2}, {x.id()}, {}, {}, true);
  expect_vec(eval(g, {x}, {A({4, 8}, {1, 2})}, b).to_vector<float>(), {1, 2, 1, 2, 1, 2, 1, 2});
}

// ---- matmul ----------------------------------------------------------------------

TEST(OpsForward, MatMulTransposeFlags) {
  // a = [[1,2,3],[4,5,6]], b = [[1,0],[0,1],[1,1]]; a b = [[4,5],[10,11]].
  Graph g;
  auto a = g.input("a", f32, {2, 3});
  auto b = g.input("b", f32, {3, 2});
  auto at = g.input("at", f32, {3, 2});
  auto bt = g.input("bt", f32, {2, 3});
  Array av = A({1, 2, 3, 4, 5, 6}, {2, 3}), bv = A({1, 0, 0, 1, 1, 1}, {3, 2});
  Array atv = A({1, 4, 2, 5, 3, 6}, {3, 2}), btv = A({1, 0, 1, 0, 1, 1}, {2, 3});
  std::vector<float> want = {4, 5, 10, 11};
  expect_vec(eval(g, {a, b}, {av, bv}, synk::matmul(a, b)).to_vector<float>(), want);
  expect_vec(eval(g, {at, b}, {atv, bv}, synk::matmul(at, b, true, false)).to_vector<float>(), want);
  expect_vec(eval(g, {a, bt}, {av, btv}, synk::matmul(a, bt, false, true)).to_vector<float>(), want);
  expect_vec(eval(g, {at, bt}, {atv, btv}, synk::matmul(at, bt, true, true)).to_vector<float>(), want);
}

TEST(OpsForward, MatMulZeroSizes) {
  Graph g;
  auto a = g.input("a", f32, {synk::batch, 3});
  auto b = g.input("b", f32, {3, 2});
  Array r = eval(g, {a, b}, {A({}, {0, 3}), A({1, 2, 3, 4, 5, 6}, {3, 2})}, synk::matmul(a, b));
  EXPECT_EQ(r.shape(), (synk::Shape{0, 2}));
  // Inner dim 0: the product is all zeros.
  Graph h;
  auto c = h.input("c", f32, {2, synk::batch});
  auto d = h.input("d", f32, {synk::batch, 2});
  Array q = eval(h, {c, d}, {A({}, {2, 0}), A({}, {0, 2})}, synk::matmul(c, d));
  expect_vec(q.to_vector<float>(), {0, 0, 0, 0});
}

// ---- softmax family ----------------------------------------------------------------

TEST(OpsForward, SoftmaxAndLogSoftmax) {
  Graph g;
  auto x = g.input("x", f32, {2, 3});
  Array xv = A({1, 2, 3, 1000, 1000, 1000}, {2, 3});
  const float s = std::exp(1.f) + std::exp(2.f) + std::exp(3.f);
  expect_vec(eval(g, {x}, {xv}, synk::softmax(x)).to_vector<float>(),
             {std::exp(1.f) / s, std::exp(2.f) / s, std::exp(3.f) / s, 1 / 3.f, 1 / 3.f, 1 / 3.f});
  expect_vec(eval(g, {x}, {xv}, synk::log_softmax(x)).to_vector<float>(),
             {1 - std::log(s), 2 - std::log(s), 3 - std::log(s), -std::log(3.f), -std::log(3.f), -std::log(3.f)});
  // Along axis 0 (strided): columns [1,1000] -> [0, 1] (to float precision).
  expect_vec(eval(g, {x}, {xv}, synk::softmax(x, 0)).to_vector<float>(), {0, 0, 0, 1, 1, 1});
}

TEST(OpsForward, SoftmaxCrossEntropyAndGrad) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 3});
  auto y = g.input("y", i32, {synk::batch});
  Array xv = A({1, 2, 3, 0, 0, 0}, {2, 3});
  Array yv = I({2, 0}, {2});
  const float s = std::exp(1.f) + std::exp(2.f) + std::exp(3.f);
  expect_vec(eval(g, {x, y}, {xv, yv}, synk::softmax_cross_entropy(x, y)).to_vector<float>(),
             {std::log(s) - 3, std::log(3.f)});

  auto gin = g.input("g", f32, {synk::batch});
  auto gr = raw(g, Op::SoftmaxCrossEntropyGrad, f32, {synk::batch, 3}, {x.id(), y.id(), gin.id()});
  Array r = eval(g, {x, y, gin}, {xv, yv, A({1, 2}, {2})}, gr);
  expect_vec(r.to_vector<float>(), {std::exp(1.f) / s, std::exp(2.f) / s, std::exp(3.f) / s - 1,
                                    2 * (1 / 3.f - 1), 2 / 3.f, 2 / 3.f});
}

TEST(OpsForward, SoftmaxCrossEntropyBadLabel) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 3});
  auto y = g.input("y", i32, {synk::batch});
  synk::Session s(g);
  auto f = s.function({.name = "xent", .inputs = {x, y}, .outputs = {{synk::softmax_cross_entropy(x, y)}}});
  Array xv = A({1, 2, 3, 0, 0, 0}, {2, 3});
  try {
    f({xv, I({0, 3}, {2})});
    FAIL() << "expected ArgumentError";
  } catch (const synk::ArgumentError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("xent"), std::string::npos) << m;
    EXPECT_NE(m.find(synk::op_name(Op::SoftmaxCrossEntropy)), std::string::npos) << m;
    EXPECT_NE(m.find("label 3"), std::string::npos) << m;
  }
  EXPECT_THROW(f({xv, I({-1, 0}, {2})}), synk::ArgumentError);
  // The next call works.
  EXPECT_EQ(f({xv, I({0, 1}, {2})}).at(0).numel(), 2);
}

// ---- conv and pooling -------------------------------------------------------------

TEST(OpsForward, Conv2dHandComputed) {
  Graph g;
  auto x = g.input("x", f32, {1, 1, 3, 3});
  auto w = g.input("w", f32, {1, 1, 2, 2});
  Array xv = A({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}), wv = A({1, 0, 0, 1}, {1, 1, 2, 2});
  expect_vec(eval(g, {x, w}, {xv, wv}, synk::conv2d(x, w)).to_vector<float>(), {6, 8, 12, 14});
  // Padding 1, stride 2: out[i,j] = x[2i-1, 2j-1] + x[2i, 2j] with zeros outside.
  expect_vec(eval(g, {x, w}, {xv, wv}, synk::conv2d(x, w, {.stride = 2, .padding = 1})).to_vector<float>(),
             {1, 3, 7, 14});
}

TEST(OpsForward, Conv2dGradsHandComputed) {
  Graph g;
  auto x = g.input("x", f32, {1, 1, 3, 3});
  auto w = g.input("w", f32, {1, 1, 2, 2});
  auto dy = g.input("dy", f32, {1, 1, 2, 2});
  auto gw = raw(g, Op::Conv2dGradWeight, f32, {1, 1, 2, 2}, {x.id(), dy.id()}, {1, 1, 0, 0});
  auto gx = raw(g, Op::Conv2dGradInput, f32, {1, 1, 3, 3}, {dy.id(), w.id()}, {1, 1, 0, 0});
  Array xv = A({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}), wv = A({1, 0, 0, 1}, {1, 1, 2, 2});
  Array ones = A({1, 1, 1, 1}, {1, 1, 2, 2});
  expect_vec(eval(g, {x, dy}, {xv, ones}, gw).to_vector<float>(), {12, 16, 24, 28});
  expect_vec(eval(g, {dy, w}, {ones, wv}, gx).to_vector<float>(), {1, 1, 0, 1, 2, 1, 0, 1, 1});
}

// Direct-loop reference convolution and its adjoints.
struct ConvRef {
  int n, c, h, w, o, kh, kw, s, p, oh, ow;
  float X(const std::vector<float>& x, int i, int ch, int y, int xx) const {
    if (y < 0 || y >= h || xx < 0 || xx >= w) return 0.f;
    return x[static_cast<size_t>(((i * c + ch) * h + y) * w + xx)];
  }
  std::vector<float> fwd(const std::vector<float>& x, const std::vector<float>& wt) const {
    std::vector<float> y(static_cast<size_t>(n * o * oh * ow), 0.f);
    for (int i = 0; i < n; ++i)
      for (int f = 0; f < o; ++f)
        for (int a = 0; a < oh; ++a)
          for (int b = 0; b < ow; ++b) {
            double acc = 0;
            for (int ch = 0; ch < c; ++ch)
              for (int u = 0; u < kh; ++u)
                for (int v = 0; v < kw; ++v)
                  acc += X(x, i, ch, a * s - p + u, b * s - p + v) * wt[static_cast<size_t>(((f * c + ch) * kh + u) * kw + v)];
            y[static_cast<size_t>(((i * o + f) * oh + a) * ow + b)] = static_cast<float>(acc);
          }
    return y;
  }
  void grads(const std::vector<float>& x, const std::vector<float>& wt, const std::vector<float>& dy,
             std::vector<float>& dx, std::vector<float>& dw) const {
    dx.assign(x.size(), 0.f);
    dw.assign(wt.size(), 0.f);
    for (int i = 0; i < n; ++i)
      for (int f = 0; f < o; ++f)
        for (int a = 0; a < oh; ++a)
          for (int b = 0; b < ow; ++b) {
            const float gv = dy[static_cast<size_t>(((i * o + f) * oh + a) * ow + b)];
            for (int ch = 0; ch < c; ++ch)
              for (int u = 0; u < kh; ++u)
                for (int v = 0; v < kw; ++v) {
                  const int yy = a * s - p + u, xx = b * s - p + v;
                  if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                  const size_t wi = static_cast<size_t>(((f * c + ch) * kh + u) * kw + v);
                  const size_t xi = static_cast<size_t>(((i * c + ch) * h + yy) * w + xx);
                  dx[xi] += gv * wt[wi];
                  dw[wi] += gv * x[xi];
                }
          }
  }
};

std::vector<float> ramp(size_t n, float scale, float shift) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(static_cast<float>(i) * scale + shift);
  return v;
}

// One convolution case: the forward value, the input gradient and the
// weight gradient against ConvRef's loops, on inputs that cover every tap.
struct ConvCase {
  int n, c, h, w, o, kh, kw, s, p;
};

void expect_conv_matches_reference(const ConvCase& cs, float gw_tol) {
  SCOPED_TRACE(testing::Message() << "n" << cs.n << " c" << cs.c << " " << cs.h << "x" << cs.w << " o" << cs.o
                                  << " k" << cs.kh << "x" << cs.kw << " s" << cs.s << " p" << cs.p);
  Graph g;
  auto x = g.input("x", f32, {synk::batch, cs.c, cs.h, cs.w});
  auto w = g.input("w", f32, {cs.o, cs.c, cs.kh, cs.kw});
  auto y = synk::conv2d(x, w, {.stride = cs.s, .padding = cs.p});
  ConvRef r{cs.n, cs.c, cs.h, cs.w, cs.o, cs.kh, cs.kw, cs.s, cs.p,
            static_cast<int>(y.shape()[2]), static_cast<int>(y.shape()[3])};
  auto dy = g.input("dy", f32, {synk::batch, cs.o, r.oh, r.ow});
  auto gx = raw(g, Op::Conv2dGradInput, f32, x.shape(), {dy.id(), w.id()}, {cs.s, cs.s, cs.p, cs.p});
  auto gw = raw(g, Op::Conv2dGradWeight, f32, w.shape(), {x.id(), dy.id()}, {cs.s, cs.s, cs.p, cs.p});
  auto xv = ramp(static_cast<size_t>(cs.n * cs.c * cs.h * cs.w), 0.37f, 0.1f);
  auto wv = ramp(static_cast<size_t>(cs.o * cs.c * cs.kh * cs.kw), 0.91f, 0.5f);
  auto dv = ramp(static_cast<size_t>(cs.n * cs.o * r.oh * r.ow), 0.53f, 0.2f);
  synk::Session s(g);
  auto f = s.function({.name = "conv", .inputs = {x, w, dy}, .outputs = {{y}, {gx}, {gw}}});
  auto out = f({A(xv, {cs.n, cs.c, cs.h, cs.w}), A(wv, {cs.o, cs.c, cs.kh, cs.kw}),
                A(dv, {cs.n, cs.o, r.oh, r.ow})});
  std::vector<float> rdx, rdw;
  r.grads(xv, wv, dv, rdx, rdw);
  expect_vec(out[0].to_vector<float>(), r.fwd(xv, wv), 1e-4f);
  expect_vec(out[1].to_vector<float>(), rdx, 1e-4f);
  expect_vec(out[2].to_vector<float>(), rdw, gw_tol);
}

TEST(OpsForward, Conv2dMatchesReference) {
  for (ConvCase cs : {ConvCase{2, 3, 7, 6, 4, 3, 3, 1, 0}, ConvCase{2, 2, 7, 7, 3, 3, 3, 2, 1},
                      ConvCase{1, 3, 4, 5, 2, 1, 1, 1, 0}, ConvCase{3, 2, 5, 5, 2, 2, 2, 2, 0},
                      ConvCase{0, 2, 5, 5, 2, 3, 3, 1, 1}})
    expect_conv_matches_reference(cs, 1e-4f);
}

// Stride 1 with 4 or more channels runs the CPU's direct kernels
// (conv_direct.cpp): channel counts that fill no register block evenly,
// planes smaller than a kernel row and larger than a tile, non-square
// kernels, every padding they take. cpu_isa.* (tests/CMakeLists.txt) runs it
// with each per-CPU clone.
TEST(OpsForward, Conv2dStride1DirectMatchesReference) {
  struct Case { int n, c, h, w, o, kh, kw, p; };
  // Planes of 28x28 and 20x20 with padding 1 also take the direct weight
  // gradient (ConvGeom::direct_gw); one input channel takes im2col.
  for (Case cs : {Case{2, 5, 7, 7, 9, 3, 3, 1}, Case{3, 1, 28, 28, 16, 3, 3, 1}, Case{1, 7, 1, 1, 13, 3, 3, 1},
                  Case{2, 4, 28, 28, 5, 3, 3, 1}, Case{3, 6, 20, 20, 7, 3, 3, 1},
                  Case{2, 3, 9, 5, 7, 3, 2, 1}, Case{1, 4, 6, 11, 8, 5, 5, 2}, Case{2, 6, 12, 12, 6, 5, 5, 0},
                  Case{1, 2, 4, 4, 17, 2, 2, 1}, Case{2, 9, 14, 14, 5, 3, 3, 0}, Case{1, 3, 5, 5, 2, 1, 1, 0}})
    expect_conv_matches_reference({cs.n, cs.c, cs.h, cs.w, cs.o, cs.kh, cs.kw, 1, cs.p}, 2e-4f);
}

// Stride 2 with 4 or more channels and a kernel of 2 or more taps runs the
// direct kernels on the input's four phase planes (forward and, on planes of
// 100 outputs or more, the weight gradient; the input gradient is im2col's):
// odd and even sizes, planes that fill no tile, non-square kernels, channel
// counts that fill no register block, every padding they take, and a 1x1
// kernel (im2col). cpu_isa.* runs it with each per-CPU clone.
TEST(OpsForward, Conv2dStride2DirectMatchesReference) {
  struct Case { int n, c, h, w, o, kh, kw, p; };
  for (Case cs : {Case{2, 5, 7, 7, 9, 3, 3, 1}, Case{2, 4, 28, 28, 5, 3, 3, 1}, Case{3, 6, 21, 23, 7, 3, 3, 0},
                  Case{1, 4, 20, 22, 17, 5, 5, 2}, Case{1, 4, 19, 21, 6, 5, 5, 1}, Case{2, 6, 25, 25, 6, 2, 2, 1},
                  Case{2, 7, 24, 19, 4, 3, 2, 1}, Case{2, 9, 22, 20, 8, 3, 3, 2}, Case{1, 4, 1, 1, 5, 3, 3, 1},
                  Case{1, 5, 4, 4, 4, 3, 3, 2}, Case{2, 8, 14, 14, 6, 1, 1, 0}})
    expect_conv_matches_reference({cs.n, cs.c, cs.h, cs.w, cs.o, cs.kh, cs.kw, 2, cs.p}, 2e-4f);
}

// The planner fuses bias and ReLU into the convolution; the direct kernels
// take the im2col path's epilogue, so a NaN becomes 0 as the ReLU op makes
// it (and not NaN).
TEST(OpsForward, Conv2dDirectBiasReluEpilogue) {
  const int n = 2, c = 4, h = 6, w = 5, o = 6;
  Graph g;
  auto x = g.input("x", f32, {synk::batch, c, h, w});
  auto cv = synk::nn::conv2d(g, "c", c, o, 3, {.stride = 1, .padding = 1});
  auto y = synk::relu(cv(x));
  auto xv = ramp(static_cast<size_t>(n * c * h * w), 0.37f, 0.1f);
  xv[7] = std::numeric_limits<float>::quiet_NaN();
  auto wv = ramp(static_cast<size_t>(o * c * 9), 0.91f, 0.5f);
  auto bv = ramp(static_cast<size_t>(o), 1.3f, 0.4f);
  synk::Session s(g);
  s.set("c/W", A(wv, {o, c, 3, 3}));
  s.set("c/b", A(bv, {o}));
  auto f = s.function({.name = "conv", .inputs = {x}, .outputs = {{y}}});
  auto got = f({A(xv, {n, c, h, w})})[0].to_vector<float>();
  ConvRef r{n, c, h, w, o, 3, 3, 1, 1, h, w};
  const auto raw = r.fwd(xv, wv);
  std::vector<float> want(raw.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const float v = raw[i] + bv[(i / static_cast<size_t>(h * w)) % o];
    want[i] = v > 0.f ? v : 0.f;
  }
  ASSERT_EQ(got.size(), want.size());
  int nan_inputs_reached = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-4f * (1.f + std::fabs(want[i]))) << "at " << i;
    nan_inputs_reached += std::isnan(raw[i]) ? 1 : 0;
  }
  EXPECT_GT(nan_inputs_reached, 0);  // the NaN reached some outputs, which ReLU made 0
}

// Batch norm's training gradient reads x and dy in one pass for its sums
// (BatchNormGradSums: beta's and gamma's gradients and dx's statistics
// terms), then once for dx: the same values as the separate passes
// (BatchNormGrad computing its own sums, BatchNormGradGamma, a sum of dy),
// with spatial dims, without ([N, C]), and with more channels than one
// block of the CPU loops (256).
TEST(OpsForward, BatchNormGradSumsMatchSeparatePasses) {
  for (const synk::Shape& xs : {synk::Shape{6, 5, 3, 4}, synk::Shape{7, 3}, synk::Shape{2, 300, 2, 1},
                                synk::Shape{3, 4, 1, 9}}) {
    SCOPED_TRACE(synk::to_string(xs));
    const int64_t c = xs[1];
    int64_t numel = 1;
    for (int64_t d : xs) numel *= d;
    std::vector<int> axes{0};
    for (int i = 2; i < static_cast<int>(xs.size()); ++i) axes.push_back(i);
    Graph g;
    auto x = g.input("x", f32, xs);
    auto dy = g.input("dy", f32, xs);
    auto bn = synk::nn::batch_norm(g, "bn", c);
    auto y = bn(x, true);
    auto grads = synk::grad(synk::sum(y * dy), {x, bn.gamma, bn.beta});
    // The separate passes, by hand.
    const float eps = bn.eps;
    auto mu = synk::mean(x, axes);
    auto var = raw(g, Op::BatchNormVar, f32, {c}, {x.id(), mu.id()});
    auto dx_sep = raw(g, Op::BatchNormGrad, f32, xs, {x.id(), mu.id(), var.id(), bn.gamma.id(), dy.id()}, {}, {eps},
                      true);
    auto dg_sep = raw(g, Op::BatchNormGradGamma, f32, {c}, {x.id(), mu.id(), var.id(), dy.id()}, {}, {eps});
    auto db_sep = synk::sum(dy, axes);
    synk::Session s(g);
    s.set("bn/gamma", A(ramp(static_cast<size_t>(c), 0.7f, 0.3f), {c}));
    auto f = s.function({.name = "bn", .inputs = {x, dy},
                         .outputs = {{grads[0]}, {grads[1]}, {grads[2]}, {dx_sep}, {dg_sep}, {db_sep}}});
    std::vector<float> xv = ramp(static_cast<size_t>(numel), 0.37f, 0.1f), dv = ramp(static_cast<size_t>(numel), 0.53f, 0.2f);
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = xv[i] * 3.f + 1.5f;  // a mean far from 0
    auto out = f({A(xv, xs), A(dv, xs)});
    // The fused path is what grad() builds in training.
    int sums_nodes = 0;
    for (const auto& n : g.nodes()) sums_nodes += n.op == Op::BatchNormGradSums;
    EXPECT_EQ(sums_nodes, 1);
    expect_vec(out[0].to_vector<float>(), out[3].to_vector<float>(), 1e-5f);
    expect_vec(out[1].to_vector<float>(), out[4].to_vector<float>(), 1e-5f);
    expect_vec(out[2].to_vector<float>(), out[5].to_vector<float>(), 1e-5f);
  }
}

TEST(OpsForward, MaxPool2x2AndGrad) {
  Graph g;
  auto x = g.input("x", f32, {1, 1, 4, 4});
  Array xv = A({1, 2, 5, 0,
                3, 4, 5, 5,
                9, 0, 1, 1,
                0, 0, 1, 1}, {1, 1, 4, 4});
  expect_vec(eval(g, {x}, {xv}, synk::max_pool2d(x, 2)).to_vector<float>(), {4, 5, 9, 1});
  auto dy = g.input("dy", f32, {1, 1, 2, 2});
  auto gx = raw(g, Op::MaxPool2dGrad, f32, {1, 1, 4, 4}, {x.id(), dy.id()}, {2, 2, 2, 2, 0, 0});
  // Ties go to the first maximum in window order.
  expect_vec(eval(g, {x, dy}, {xv, A({10, 20, 30, 40}, {1, 1, 2, 2})}, gx).to_vector<float>(),
             {0, 0, 20, 0,
              0, 10, 0, 0,
              30, 0, 40, 0,
              0, 0, 0, 0});
}

TEST(OpsForward, MaxPoolPaddingAndOverlap) {
  // k=2, stride 1, padding 1 on a 2x2 plane: out is 3x3, padding is -inf.
  Graph g;
  auto x = g.input("x", f32, {1, 1, 2, 2});
  Array xv = A({-1, -2, -3, -4}, {1, 1, 2, 2});
  auto y = synk::max_pool2d(x, 2, 1, 1);
  ASSERT_EQ(y.shape(), (synk::Shape{1, 1, 3, 3}));
  expect_vec(eval(g, {x}, {xv}, y).to_vector<float>(), {-1, -1, -2, -1, -1, -2, -3, -3, -4});
  auto dy = g.input("dy", f32, {1, 1, 3, 3});
  auto gx = raw(g, Op::MaxPool2dGrad, f32, {1, 1, 2, 2}, {x.id(), dy.id()}, {2, 2, 1, 1, 1, 1});
  // Overlapping windows accumulate: x[0,0] is the max of 4 windows.
  expect_vec(eval(g, {x, dy}, {xv, A({1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 3, 3})}, gx).to_vector<float>(), {4, 2, 2, 1});
}

TEST(OpsForward, PoolZeroBatch) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 2, 4, 4});
  Array r = eval(g, {x}, {A({}, {0, 2, 4, 4})}, synk::max_pool2d(x, 2));
  EXPECT_EQ(r.shape(), (synk::Shape{0, 2, 2, 2}));
}

// ---- dropout ------------------------------------------------------------------------

TEST(OpsForward, DropoutMaskValuesAndRate) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch});
  auto m = raw(g, Op::DropoutMask, f32, {synk::batch}, {x.id()}, {g.next_stream()}, {0.25f});
  auto m0 = raw(g, Op::DropoutMask, f32, {synk::batch}, {x.id()}, {g.next_stream()}, {0.f});
  synk::Session s(g, {.seed = 7});
  auto f = s.function({.name = "drop", .inputs = {x}, .outputs = {{m}, {m0}}});
  const int n = 20000;
  Array xv = A(std::vector<float>(n, 1.f), {n});
  auto r1 = f({xv});
  auto r2 = f({xv});
  int zeros = 0;
  for (float v : r1[0].to_vector<float>()) {
    ASSERT_TRUE(v == 0.f || std::fabs(v - 1.f / 0.75f) < 1e-6f) << v;
    zeros += v == 0.f;
  }
  EXPECT_NEAR(zeros / static_cast<double>(n), 0.25, 0.02);
  for (float v : r1[1].to_vector<float>()) ASSERT_EQ(v, 1.f);
  // A new mask every call.
  EXPECT_NE(r1[0].to_vector<float>(), r2[0].to_vector<float>());

  // Reproducible for a seed; different for another seed or rank.
  synk::Session s2(g, {.seed = 7});
  auto f2 = s2.function({.name = "drop", .inputs = {x}, .outputs = {{m}}});
  EXPECT_EQ(f2({xv})[0].to_vector<float>(), r1[0].to_vector<float>());
  synk::Session s3(g, {.seed = 8});
  auto f3 = s3.function({.name = "drop", .inputs = {x}, .outputs = {{m}}});
  EXPECT_NE(f3({xv})[0].to_vector<float>(), r1[0].to_vector<float>());
  synk::Session s4(g, {.seed = 7, .rank = 1});
  auto f4 = s4.function({.name = "drop", .inputs = {x}, .outputs = {{m}}});
  EXPECT_NE(f4({xv})[0].to_vector<float>(), r1[0].to_vector<float>());
}

TEST(OpsForward, DropoutStreamsDiffer) {
  Graph g;
  auto x = g.input("x", f32, {1000});
  auto a = synk::dropout(x, 0.5f);
  auto b = synk::dropout(x, 0.5f);
  synk::Session s(g, {.seed = 1});
  auto f = s.function({.name = "d", .inputs = {x}, .outputs = {{a}, {b}}});
  auto r = f({A(std::vector<float>(1000, 3.f), {1000})});
  EXPECT_NE(r[0].to_vector<float>(), r[1].to_vector<float>());
  for (float v : r[0].to_vector<float>()) ASSERT_TRUE(v == 0.f || v == 6.f);
}

}  // namespace
