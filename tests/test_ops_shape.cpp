// The shape ops on the CPU executor: concat, slice (and its gradient step),
// embedding (and its scatter-add gradient) and the batched matmul, against
// hand-computed values and plain loop references; their shape and dtype
// errors at graph-building time; the embedding's bad-index error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "exec/plan/plan.hpp"
#include "graph/internal.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

Array eval(Graph& g, const std::vector<Tensor>& ins, const std::vector<ArrayView>& vals, Tensor out) {
  Session s(g);
  auto f = s.function({.name = "t", .inputs = ins, .outputs = {{out}}});
  return f(vals).at(0);
}

Array A(std::vector<float> v, Shape s) { return Array::from(v, std::move(s)); }
Array I(std::vector<int32_t> v, Shape s) { return Array::from(v, std::move(s)); }

std::vector<float> iota_f(int64_t n, float start = 0.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + static_cast<float>(i);
  return v;
}

Array rnd(Shape shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  std::vector<float> v(static_cast<size_t>(numel(shape)));
  for (float& x : v) x = d(gen);
  return Array::from(v, std::move(shape));
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- concat ----------------------------------------------------------------------

TEST(OpsShape, ConcatAlongEachAxis) {
  Graph g;
  auto a = g.input("a", f32, {2, 1, 3});
  auto b = g.input("b", f32, {2, 2, 3});
  Array av = A(iota_f(6), {2, 1, 3}), bv = A(iota_f(12, 100.f), {2, 2, 3});
  Array r = eval(g, {a, b}, {av, bv}, concat({a, b}, 1));
  EXPECT_EQ(r.shape(), (Shape{2, 3, 3}));
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{0, 1, 2, 100, 101, 102, 103, 104, 105,
                                                      3, 4, 5, 106, 107, 108, 109, 110, 111}));
  // Three operands along the last axis (negative), one of them twice.
  auto c = g.input("c", f32, {2, 2, 1});
  Array cv = A({-1, -2, -3, -4}, {2, 2, 1});
  Array q = eval(g, {b, c}, {bv, cv}, concat({c, b, c}, -1));
  EXPECT_EQ(q.shape(), (Shape{2, 2, 5}));
  EXPECT_EQ(q.to_vector<float>(), (std::vector<float>{-1, 100, 101, 102, -1, -2, 103, 104, 105, -2,
                                                      -3, 106, 107, 108, -3, -4, 109, 110, 111, -4}));
  // Axis 0: the operands one after the other.
  auto d = g.input("d", f32, {1, 2, 3});
  Array dv = A(iota_f(6, 50.f), {1, 2, 3});
  Array z = eval(g, {b, d}, {bv, dv}, concat({b, d}, 0));
  EXPECT_EQ(z.shape(), (Shape{3, 2, 3}));
  std::vector<float> want = bv.to_vector<float>();
  for (float v : dv.to_vector<float>()) want.push_back(v);
  EXPECT_EQ(z.to_vector<float>(), want);
}

TEST(OpsShape, ConcatInt32WithBatchAndEmptyOperand) {
  Graph g;
  auto a = g.input("a", i32, {batch, 2});
  auto b = g.input("b", i32, {batch, 0});
  auto c = g.input("c", i32, {batch, 1});
  Tensor r = concat({a, b, c}, 1);
  EXPECT_EQ(r.shape(), (Shape{batch, 3}));
  Session s(g);
  auto f = s.function({.name = "cat", .inputs = {a, b, c}, .outputs = {{r}}});
  auto out = f({I({1, 2, 3, 4}, {2, 2}), I({}, {2, 0}), I({9, 8}, {2, 1})});
  EXPECT_EQ(out[0].dtype(), i32);
  EXPECT_EQ(out[0].to_vector<int32_t>(), (std::vector<int32_t>{1, 2, 9, 3, 4, 8}));
  auto zero = f({I({}, {0, 2}), I({}, {0, 0}), I({}, {0, 1})});
  EXPECT_EQ(zero[0].shape(), (Shape{0, 3}));
  // One operand is returned as it is.
  EXPECT_EQ(concat({a}, 0), a);
}

TEST(OpsShape, ConcatManyComputedOperandsStayLive) {
  // Five operands computed into the arena: the planner must keep every one
  // (not only the first three a step names in Step::in) alive until the
  // concat runs, with and without buffer reuse.
  Graph g;
  auto x = g.input("x", f32, {batch, 2});
  std::vector<Tensor> parts;
  for (int i = 1; i <= 5; ++i) parts.push_back(x * static_cast<float>(i) + static_cast<float>(10 * i));
  Tensor c = concat(parts, 1);
  EXPECT_EQ(c.shape(), (Shape{batch, 10}));
  Array r = eval(g, {x}, {A({1, 2, 3, 4}, {2, 2})}, c * 1.f);
  std::vector<float> want;
  for (int row = 0; row < 2; ++row)
    for (int i = 1; i <= 5; ++i)
      for (int j = 0; j < 2; ++j) want.push_back(static_cast<float>((row * 2 + j + 1) * i + 10 * i));
  EXPECT_EQ(r.to_vector<float>(), want);
}

TEST(OpsShape, ConcatRefusesMismatches) {
  Graph g;
  auto a = g.input("a", f32, {batch, 2});
  auto b = g.input("b", f32, {3, 2});
  auto c = g.input("c", i32, {batch, 2});
  auto d = g.input("d", f32, {batch, 2, 1});
  std::string msg = error_of([&] { concat({a, b}, 1); });
  EXPECT_NE(msg.find("concat"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 2]"), std::string::npos) << msg;
  EXPECT_THROW(concat({a, b}, 1), ShapeError);   // batch vs 3 in dim 0
  EXPECT_THROW(concat({a, a}, 0), ShapeError);   // along the batch dim
  EXPECT_THROW(concat({a, c}, 1), TypeError);    // dtypes
  EXPECT_THROW(concat({a, d}, 1), ShapeError);   // ranks
  EXPECT_THROW(concat({a, a}, 2), ShapeError);   // axis
  EXPECT_THROW(concat({}, 0), ArgumentError);
  EXPECT_EQ(concat({a, a}, -1).shape(), (Shape{batch, 4}));
}

// ---- slice -------------------------------------------------------------------------

TEST(OpsShape, SliceMiddleAxisPythonRules) {
  Graph g;
  auto x = g.input("x", f32, {2, 5, 2});
  Array xv = A(iota_f(20), {2, 5, 2});
  auto run = [&](int64_t b, int64_t e) { return eval(g, {x}, {xv}, slice(x, 1, b, e)); };
  // x[:, 1:3]
  Array r = run(1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{2, 3, 4, 5, 12, 13, 14, 15}));
  // x[:, -2:] (end past the dim is clamped), x[:, :-4], x[:, -9:1]
  EXPECT_EQ(run(-2, std::numeric_limits<int64_t>::max()).to_vector<float>(),
            (std::vector<float>{6, 7, 8, 9, 16, 17, 18, 19}));
  EXPECT_EQ(run(0, -4).to_vector<float>(), (std::vector<float>{0, 1, 10, 11}));
  EXPECT_EQ(run(-9, 1).to_vector<float>(), (std::vector<float>{0, 1, 10, 11}));
  // Reversed or out-of-range ranges are empty, as in Python.
  EXPECT_EQ(run(3, 1).shape(), (Shape{2, 0, 2}));
  EXPECT_EQ(run(7, 9).shape(), (Shape{2, 0, 2}));
  // The whole range is x itself.
  EXPECT_EQ(slice(x, 1, 0, 5), x);
  EXPECT_EQ(slice(x, -2, -100, 100), x);
}

TEST(OpsShape, SliceInt32BatchAndLastAxis) {
  Graph g;
  auto p = g.input("p", i32, {batch, 4});
  Tensor r = slice(p, -1, 1, 3);
  EXPECT_EQ(r.shape(), (Shape{batch, 2}));
  Array out = eval(g, {p}, {I({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4})}, r);
  EXPECT_EQ(out.to_vector<int32_t>(), (std::vector<int32_t>{2, 3, 6, 7, 10, 11}));
  std::string msg = error_of([&] { slice(p, 0, 0, 1); });
  EXPECT_NE(msg.find("slice"), std::string::npos) << msg;
  EXPECT_THROW(slice(p, 0, 0, 1), ShapeError);  // the batch dim
  EXPECT_THROW(slice(p, 2, 0, 1), ShapeError);  // axis
}

TEST(OpsShape, SliceGradientPlacesIntoZeros) {
  Graph g;
  auto x = g.variable("x", {2, 4, 3}, Init::uniform(-1, 1));
  auto w = g.input("w", f32, {2, 2, 3});
  Tensor dx = grad(sum(slice(x, 1, 1, 3) * w), {x})[0];
  EXPECT_EQ(dx.node().op, Op::SliceGrad);
  Array wv = A(iota_f(12, 1.f), {2, 2, 3});
  const std::vector<float> want = {0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0, 0};
  Array r = eval(g, {w}, {wv}, dx);
  EXPECT_EQ(r.to_vector<float>(), want);
  {
    // Into a caller's buffer full of other values: every element is written.
    Session s(g);
    auto f = s.function({.name = "dx", .inputs = {w}, .outputs = {{dx}}});
    std::vector<float> out(24, 7.f);
    f.call_into({wv}, {out.data()});
    EXPECT_EQ(out, want);
  }
  // Concat's gradient: each operand its slice of g.
  auto a = g.variable("a", {2, 1}, Init::uniform(-1, 1));
  auto b = g.variable("b", {2, 2}, Init::uniform(-1, 1));
  auto v = g.input("v", f32, {2, 3});
  auto gs = grad(sum(concat({a, b}, 1) * v), {a, b});
  Session s(g);
  auto f = s.function({.name = "g", .inputs = {v}, .outputs = {{gs[0]}, {gs[1]}}});
  auto out = f({A({1, 2, 3, 4, 5, 6}, {2, 3})});
  EXPECT_EQ(out[0].to_vector<float>(), (std::vector<float>{1, 4}));
  EXPECT_EQ(out[1].to_vector<float>(), (std::vector<float>{2, 3, 5, 6}));
}

// ---- embedding -----------------------------------------------------------------------

TEST(OpsShape, EmbeddingGathersRows) {
  Graph g;
  auto table = g.input("table", f32, {4, 3});
  auto idx = g.input("idx", i32, {batch, 2});
  Tensor e = embedding(table, idx);
  EXPECT_EQ(e.shape(), (Shape{batch, 2, 3}));
  Array tv = A(iota_f(12), {4, 3});
  Array r = eval(g, {table, idx}, {tv, I({3, 0, 1, 1, 2, 3}, {3, 2})}, e);
  EXPECT_EQ(r.shape(), (Shape{3, 2, 3}));
  EXPECT_EQ(r.to_vector<float>(), (std::vector<float>{9, 10, 11, 0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  Array none = eval(g, {table, idx}, {tv, I({}, {0, 2})}, e);
  EXPECT_EQ(none.shape(), (Shape{0, 2, 3}));
}

TEST(OpsShape, EmbeddingGradientAddsRepeatedIndices) {
  Graph g;
  auto table = g.variable("table", {5, 2}, Init::uniform(-1, 1));
  auto idx = g.input("idx", i32, {4});
  auto w = g.input("w", f32, {4, 2});
  Tensor dt = grad(sum(embedding(table, idx) * w), {table})[0];
  EXPECT_EQ(dt.node().op, Op::EmbeddingGrad);
  Session s(g);
  auto f = s.function({.name = "g", .inputs = {idx, w}, .outputs = {{dt}}});
  auto r = f({I({3, 1, 3, 0}, {4}), A({1, 2, 10, 20, 100, 200, 1000, 2000}, {4, 2})});
  EXPECT_EQ(r[0].shape(), (Shape{5, 2}));
  EXPECT_EQ(r[0].to_vector<float>(), (std::vector<float>{1000, 2000, 10, 20, 0, 0, 101, 202, 0, 0}));
}

TEST(OpsShape, EmbeddingBadIndexNamesOpIndexAndRows) {
  Graph g;
  auto table = g.variable("table", {5, 2}, Init::uniform(-1, 1));
  auto idx = g.input("idx", i32, {3});
  Tensor e = embedding(table, idx);
  Tensor dt = grad(sum(e), {table})[0];
  Session s(g);
  auto f = s.function({.name = "emb", .inputs = {idx}, .outputs = {{e}}});
  for (int32_t bad : {5, -1}) {
    std::string msg = error_of([&] { f({I({0, bad, 2}, {3})}); });
    EXPECT_NE(msg.find("emb"), std::string::npos) << msg;
    EXPECT_NE(msg.find("embedding"), std::string::npos) << msg;
    EXPECT_NE(msg.find("index " + std::to_string(bad) + " at position 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 5)"), std::string::npos) << msg;
    EXPECT_THROW(f({I({0, bad, 2}, {3})}), ArgumentError);
  }
  auto fg = s.function({.name = "emb_grad", .inputs = {idx}, .outputs = {{dt}}});
  std::string msg = error_of([&] { fg({I({7, 0, 0}, {3})}); });
  EXPECT_NE(msg.find("embedding_grad"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 7 at position 0"), std::string::npos) << msg;
}

TEST(OpsShape, EmbeddingRefusesBadOperands) {
  Graph g;
  auto table = g.variable("table", {5, 2});
  auto t3 = g.variable("t3", {5, 2, 1});
  auto ti = g.variable("ti", {5, 2}, Init::zeros(), i32);
  auto idx = g.input("idx", i32, {3});
  auto fidx = g.input("fidx", f32, {3});
  EXPECT_THROW(embedding(table, fidx), TypeError);
  EXPECT_THROW(embedding(ti, idx), TypeError);
  EXPECT_THROW(embedding(t3, idx), ShapeError);
  std::string msg = error_of([&] { embedding(table, fidx); });
  EXPECT_NE(msg.find("embedding"), std::string::npos) << msg;
}

// ---- batched matmul ---------------------------------------------------------------------

// torch.matmul by loops: a [.., m, k] (or [.., k, m] with ta) times b.
std::vector<float> bmm_ref(const Array& a, const Array& b, bool ta, bool tb, Shape* out_shape) {
  const Shape as = a.shape(), bs = b.shape();
  const size_t ra = as.size(), rb = bs.size();
  const int64_t m = as[ra - (ta ? 1 : 2)], k = as[ra - (ta ? 2 : 1)], n = bs[rb - (tb ? 2 : 1)];
  const size_t nd = std::max(ra, rb) - 2;
  Shape full(nd);
  auto dim = [&](const Shape& s, size_t i) -> int64_t {
    const size_t lead = s.size() - 2;
    return i + lead < nd ? 1 : s[i + lead - nd];
  };
  for (size_t i = 0; i < nd; ++i) full[i] = dim(as, i) == 1 ? dim(bs, i) : dim(as, i);
  *out_shape = full;
  out_shape->push_back(m);
  out_shape->push_back(n);
  const int64_t count = numel(full);
  std::vector<float> c(static_cast<size_t>(count * m * n), 0.f);
  const float* A_ = a.data<float>();
  const float* B_ = b.data<float>();
  for (int64_t bi = 0; bi < count; ++bi) {
    // Offsets of this batch index in a and b (broadcast dims stay at 0).
    int64_t rem = bi, oa = 0, ob = 0, sa = m * k, sb = k * n;
    for (size_t i = nd; i-- > 0;) {
      const int64_t x = rem % full[i];
      rem /= full[i];
      if (dim(as, i) != 1) oa += x * sa;
      if (dim(bs, i) != 1) ob += x * sb;
      sa *= dim(as, i);
      sb *= dim(bs, i);
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p)
          s += static_cast<double>(A_[oa + (ta ? p * m + i : i * k + p)]) * B_[ob + (tb ? j * k + p : p * n + j)];
        c[static_cast<size_t>((bi * m + i) * n + j)] = static_cast<float>(s);
      }
  }
  return c;
}

TEST(OpsShape, BatchMatMulMatchesLoops) {
  struct Case {
    Shape a, b;
  };
  // Plain batches, broadcast batch dims, a 2-D operand on either side,
  // more dims on one side, a size-1 matrix dim.
  const std::vector<Case> cases = {
      {{2, 3, 4, 5}, {2, 3, 5, 6}}, {{2, 1, 4, 5}, {3, 5, 6}}, {{4, 5}, {2, 3, 5, 6}},
      {{2, 3, 4, 5}, {5, 6}},       {{3, 1, 5}, {1, 5, 2}},    {{1, 2, 1, 4, 5}, {3, 5, 1}},
      // Many rows against a small shared B (the CPU's gemm_small, with
      // tb through B's transpose): 77 rows (6-row tiles and a rest), 48
      // columns (3 vectors); 70 rows, 80 columns (a 4-vector chunk and 1).
      {{7, 11, 24}, {24, 48}},      {{5, 14, 16}, {16, 80}},
  };
  uint32_t seed = 1;
  for (const Case& c : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Shape as = c.a, bs = c.b;
        if (ta) std::swap(as[as.size() - 1], as[as.size() - 2]);
        if (tb) std::swap(bs[bs.size() - 1], bs[bs.size() - 2]);
        Graph g;
        auto a = g.input("a", f32, as);
        auto b = g.input("b", f32, bs);
        Tensor y = matmul(a, b, ta, tb);
        EXPECT_EQ(y.node().op, Op::BatchMatMul);
        Array av = rnd(as, seed++), bv = rnd(bs, seed++);
        Shape want_shape;
        std::vector<float> want = bmm_ref(av, bv, ta, tb, &want_shape);
        const std::string what = to_string(as) + (ta ? "^T" : "") + " x " + to_string(bs) + (tb ? "^T" : "");
        ASSERT_EQ(y.shape(), want_shape) << what;
        Array r = eval(g, {a, b}, {av, bv}, y);
        ASSERT_EQ(r.shape(), want_shape) << what;
        auto got = r.to_vector<float>();
        for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5f) << what << " at " << i;
      }
}

TEST(OpsShape, DenseOverTokensWithBiasMatchesLoops) {
  // A dense layer over [N, T, D] tokens: the bias (and ReLU) fused into the
  // batched product's epilogue, written into the output before the GEMM
  // adds onto it (many rows: the CPU's gemm_small; 32 columns: OpenBLAS).
  for (int64_t n : {48, 36})
    for (bool relu_on : {false, true}) {
      Graph g;
      auto x = g.input("x", f32, {batch, 8, 24});
      auto W = g.input("W", f32, {24, n});
      auto bias = g.input("b", f32, {n});
      Tensor y = matmul(x, W) + bias;
      if (relu_on) y = relu(y);
      Array xv = rnd({9, 8, 24}, 1), wv = rnd({24, n}, 2), bv = rnd({n}, 3);
      auto got = eval(g, {x, W, bias}, {xv, wv, bv}, y).to_vector<float>();
      const float *X = xv.data<float>(), *Wp = wv.data<float>(), *B = bv.data<float>();
      for (int64_t r = 0; r < 72; ++r)
        for (int64_t j = 0; j < n; ++j) {
          double s = B[j];
          for (int64_t p = 0; p < 24; ++p) s += static_cast<double>(X[r * 24 + p]) * Wp[p * n + j];
          if (relu_on) s = std::max(s, 0.0);
          ASSERT_NEAR(got[static_cast<size_t>(r * n + j)], s, 1e-5) << "n " << n << " relu " << relu_on << " at " << r;
        }
    }
}

TEST(OpsShape, BatchMatMulAttentionShapesWithBatch) {
  // q k^T then x v over [N, H, T, d] with a symbolic N; one GEMM per
  // product, and x [N, T, D] times a shared W [D, E] (one stacked GEMM).
  Graph g;
  auto q = g.input("q", f32, {batch, 2, 3, 4});
  auto k = g.input("k", f32, {batch, 2, 3, 4});
  auto W = g.input("W", f32, {4, 5});
  Tensor s = matmul(q, k, false, true);
  EXPECT_EQ(s.shape(), (Shape{batch, 2, 3, 3}));
  Tensor o = matmul(s, k);
  EXPECT_EQ(o.shape(), (Shape{batch, 2, 3, 4}));
  Tensor p = matmul(q, W);
  EXPECT_EQ(p.shape(), (Shape{batch, 2, 3, 5}));
  Session ses(g);
  auto f = ses.function({.name = "att", .inputs = {q, k, W}, .outputs = {{s}, {o}, {p}}});
  for (int64_t n : {3, 1, 0}) {
    Array qv = rnd({n, 2, 3, 4}, 7), kv = rnd({n, 2, 3, 4}, 8), wv = rnd({4, 5}, 9);
    auto r = f({qv, kv, wv});
    Shape sh;
    std::vector<float> ws = bmm_ref(qv, kv, false, true, &sh);
    ASSERT_EQ(r[0].shape(), sh);
    Array sv = Array::from(ws, sh);
    std::vector<float> wo = bmm_ref(sv, kv, false, false, &sh);
    std::vector<float> wp = bmm_ref(qv, wv, false, false, &sh);
    auto r0 = r[0].to_vector<float>(), r1 = r[1].to_vector<float>(), r2 = r[2].to_vector<float>();
    ASSERT_EQ(r0.size(), ws.size());
    ASSERT_EQ(r1.size(), wo.size());
    ASSERT_EQ(r2.size(), wp.size());
    for (size_t i = 0; i < ws.size(); ++i) ASSERT_NEAR(r0[i], ws[i], 1e-5f);
    for (size_t i = 0; i < wo.size(); ++i) ASSERT_NEAR(r1[i], wo[i], 1e-5f);
    for (size_t i = 0; i < wp.size(); ++i) ASSERT_NEAR(r2[i], wp[i], 1e-5f);
  }
}

TEST(OpsShape, BatchMatMulSharedOperandGradientIsSummed) {
  // y = x W with x [N, T, D] and W [D, E]: dW = sum over N of x_n^T dy_n,
  // one BatchMatMul step summing its batch (a stacked GEMM), no [N, D, E]
  // intermediate.
  Graph g;
  auto x = g.input("x", f32, {batch, 3, 4});
  auto W = g.variable("W", {4, 2}, Init::uniform(-1, 1));
  auto v = g.input("v", f32, {batch, 3, 2});
  Tensor dW = grad(sum(matmul(x, W) * v), {W})[0];
  EXPECT_EQ(dW.node().op, Op::BatchMatMul);
  EXPECT_EQ(dW.shape(), (Shape{4, 2}));
  Array xv = rnd({5, 3, 4}, 3), vv = rnd({5, 3, 2}, 4);
  Array r = eval(g, {x, v}, {xv, vv}, dW);
  const float* X = xv.data<float>();
  const float* V = vv.data<float>();
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) {
      double s = 0;
      for (int n = 0; n < 5; ++n)
        for (int t = 0; t < 3; ++t) s += static_cast<double>(X[(n * 3 + t) * 4 + i]) * V[(n * 3 + t) * 2 + j];
      EXPECT_NEAR(r.data<float>()[i * 2 + j], s, 1e-5) << i << "," << j;
    }
  // A broadcast batch dim of size 1 sums to 1: a [1, 2, 3, 4] against b [3, 2, 4, 2].
  Graph h;
  auto a = h.variable("a", {1, 2, 3, 4}, Init::uniform(-1, 1));
  auto b = h.variable("b", {3, 2, 4, 2}, Init::uniform(-1, 1));
  Tensor da = grad(sum(matmul(a, b)), {a})[0];
  EXPECT_EQ(da.shape(), (Shape{1, 2, 3, 4}));
  Session s(h, {.seed = 2});
  auto f = s.function({.name = "da", .inputs = {}, .outputs = {{da}}});
  Array bv = s.get("b");
  Array dav = f({})[0];
  // d/da[0,h,i,p] of sum = sum over n, j of b[n,h,p,j].
  for (int hh = 0; hh < 2; ++hh)
    for (int i = 0; i < 3; ++i)
      for (int p = 0; p < 4; ++p) {
        double want = 0;
        for (int n = 0; n < 3; ++n)
          for (int j = 0; j < 2; ++j) want += bv.data<float>()[((n * 2 + hh) * 4 + p) * 2 + j];
        EXPECT_NEAR(dav.data<float>()[(hh * 3 + i) * 4 + p], want, 1e-5);
      }
}

TEST(OpsShape, BatchMatMulBiasReluFused) {
  // x [N, T, D] W + b, then ReLU: a dense layer over tokens runs as one
  // step (the bias and ReLU folded into the batched product's epilogue).
  Graph g;
  auto x = g.input("x", f32, {batch, 3, 4});
  auto W = g.input("W", f32, {4, 5});
  auto b = g.input("b", f32, {5});
  Tensor y = relu(matmul(x, W) + b);
  FunctionSpec spec{.name = "dense", .inputs = {x, W, b}, .outputs = {{y}}, .updates = {}};
  const plan::Plan p = plan::compile(g.nodes(), make_function_def(spec), 2, plan::CompileOptions{});
  ASSERT_EQ(p.steps.size(), 1u);
  EXPECT_EQ(p.steps[0].op, Op::BatchMatMul);
  EXPECT_TRUE(p.steps[0].relu);
  Array xv = rnd({2, 3, 4}, 11), wv = rnd({4, 5}, 12), bv = rnd({5}, 13);
  Array r = eval(g, {x, W, b}, {xv, wv, bv}, y);
  Shape sh;
  std::vector<float> want = bmm_ref(xv, wv, false, false, &sh);
  for (size_t i = 0; i < want.size(); ++i) want[i] = std::max(0.f, want[i] + bv.data<float>()[i % 5]);
  auto got = r.to_vector<float>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f) << i;
}

TEST(OpsShape, BatchMatMulZeroSizes) {
  Graph g;
  auto a = g.input("a", f32, {2, 3, 0});
  auto b = g.input("b", f32, {2, 0, 4});
  Array r = eval(g, {a, b}, {A({}, {2, 3, 0}), A({}, {2, 0, 4})}, matmul(a, b));
  EXPECT_EQ(r.shape(), (Shape{2, 3, 4}));
  for (float v : r.to_vector<float>()) EXPECT_EQ(v, 0.f);  // inner dim 0: zeros
  auto c = g.input("c", f32, {0, 3, 2});
  auto d = g.input("d", f32, {2, 4});
  Array q = eval(g, {c, d}, {A({}, {0, 3, 2}), A(iota_f(8), {2, 4})}, matmul(c, d));
  EXPECT_EQ(q.shape(), (Shape{0, 3, 4}));
  // No rows: a shared operand's gradient sums nothing and is all zeros,
  // written into a caller's buffer full of other values.
  Graph h;
  auto x = h.input("x", f32, {batch, 3, 2});
  auto W = h.variable("W", {2, 4}, Init::uniform(-1, 1));
  auto A2 = h.variable("A2", {3, 3}, Init::uniform(-1, 1));
  auto gs = grad(sum(matmul(x, W)) + sum(matmul(A2, x, true, false)), {W, A2});
  Session s(h);
  auto f = s.function({.name = "g", .inputs = {x}, .outputs = {{gs[0]}, {gs[1]}}});
  std::vector<float> dw(8, 7.f), da(9, 7.f);
  f.call_into({A({}, {0, 3, 2})}, {dw.data(), da.data()});
  EXPECT_EQ(dw, std::vector<float>(8, 0.f));
  EXPECT_EQ(da, std::vector<float>(9, 0.f));
}

TEST(OpsShape, BatchMatMulBatchInsideTheMatrix) {
  // `batch` as a matrix dim: rows of each product, and the contraction.
  Graph g;
  auto a = g.input("a", f32, {2, batch, 4});
  auto b = g.input("b", f32, {2, 4, 3});
  auto c = g.input("c", f32, {2, batch, 3});
  Tensor y = matmul(a, b), z = matmul(a, c, true, false);
  EXPECT_EQ(y.shape(), (Shape{2, batch, 3}));
  EXPECT_EQ(z.shape(), (Shape{2, 4, 3}));
  Session s(g);
  auto f = s.function({.name = "f", .inputs = {a, b, c}, .outputs = {{y}, {z}}});
  Array av = rnd({2, 5, 4}, 21), bv = rnd({2, 4, 3}, 22), cv = rnd({2, 5, 3}, 23);
  auto r = f({av, bv, cv});
  Shape sh;
  std::vector<float> wy = bmm_ref(av, bv, false, false, &sh), wz = bmm_ref(av, cv, true, false, &sh);
  auto ry = r[0].to_vector<float>(), rz = r[1].to_vector<float>();
  ASSERT_EQ(ry.size(), wy.size());
  ASSERT_EQ(rz.size(), wz.size());
  for (size_t i = 0; i < wy.size(); ++i) EXPECT_NEAR(ry[i], wy[i], 1e-5f);
  for (size_t i = 0; i < wz.size(); ++i) EXPECT_NEAR(rz[i], wz[i], 1e-5f);
}

TEST(OpsShape, MatMulRefusesBadBatchedShapes) {
  Graph g;
  auto a = g.input("a", f32, {2, 3, 4, 5});
  auto b = g.input("b", f32, {3, 5, 6});
  auto c = g.input("c", f32, {4, 6, 7});
  auto v = g.input("v", f32, {5});
  auto p = g.input("p", i32, {2, 5, 6});
  EXPECT_EQ(matmul(a, b).shape(), (Shape{2, 3, 4, 6}));
  std::string msg = error_of([&] { matmul(a, c); });  // inner dims 5 vs 6
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 6, 7]"), std::string::npos) << msg;
  EXPECT_THROW(matmul(a, c), ShapeError);
  EXPECT_THROW(matmul(a, g.input("e", f32, {4, 5, 6})), ShapeError);  // batch dims 3 vs 4
  EXPECT_THROW(matmul(a, v), ShapeError);  // 1-D
  EXPECT_THROW(matmul(a, p), TypeError);
  // 2-D operands stay the plain MatMul node.
  auto x = g.input("x", f32, {4, 5});
  auto w = g.input("w", f32, {5, 6});
  EXPECT_EQ(matmul(x, w).node().op, Op::MatMul);
}

// The new ops and their gradient steps go through the serialised format
// and compute the same after loading.
TEST(OpsShape, SerialisedGraphComputesTheSame) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3, 4});
  auto idx = g.input("idx", i32, {batch, 3});
  auto table = g.variable("table", {6, 4}, Init::uniform(-1, 1));
  auto W = g.variable("W", {4, 4}, Init::uniform(-1, 1));
  Tensor h = concat({slice(x, 1, 0, 2), embedding(table, idx)}, 1);  // [batch, 5, 4]
  Tensor y = matmul(softmax(matmul(h, h, false, true)), matmul(h, W));
  Tensor loss = sum(square(y));
  std::vector<Tensor> gs = grad(loss, {table, W});
  FunctionSpec spec{.name = "f", .inputs = {x, idx}, .outputs = {{loss}, {gs[0]}, {gs[1]}}, .updates = {}};
  const std::vector<uint8_t> bytes = serialize(g, {make_function_def(spec)});
  Graph h2;
  std::vector<FunctionDef> fns = deserialize(bytes.data(), bytes.size(), h2);
  ASSERT_EQ(fns.size(), 1u);
  Array xv = rnd({2, 3, 4}, 5), iv = I({5, 0, 5, 1, 2, 3}, {2, 3});
  Session a(g, {.seed = 4}), b(h2, {.seed = 4});
  auto ra = a.function(spec)({xv, iv});
  auto rb = b.function(fns[0])({xv, iv});
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(ra[i].to_vector<float>(), rb[i].to_vector<float>()) << i;
}

}  // namespace
