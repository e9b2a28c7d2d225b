// scaled_dot_product_attention: values (heads-first and tokens-first, keys
// and features not multiples of the CPU kernel's vector width, a custom
// scale) and the stacked q/k/v gradient against loops in double; the
// builder's errors; nn::multi_head_attention against the same layer written
// with transposes, batched matmuls and softmax. Gradients are also checked
// numerically in test_grad.cpp, and the CUDA kernels against the CPU in
// test_cuda_exec.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/random_values.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

using synk_test::rnd;

// One attention problem: B batches of H heads, q [L, E], k [S, E], v [S,
// Ev] each; tokens_first stores them [B, L, H, E], else [B, H, L, E].
struct Problem {
  int64_t B, H, L, S, E, Ev;
  bool tokens_first;
  float scale;  // 0: 1/sqrt(E)
  int64_t at(int64_t b, int64_t h, int64_t t, int64_t len, int64_t w) const {
    return tokens_first ? ((b * len + t) * H + h) * w : ((b * H + h) * len + t) * w;
  }
  Shape shape(int64_t len, int64_t w) const { return tokens_first ? Shape{B, len, H, w} : Shape{B, H, len, w}; }
  double sc() const { return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(E)); }
};

// o, and with dy, dq dk dv, in double.
void reference(const Problem& p, const std::vector<float>& q, const std::vector<float>& k,
               const std::vector<float>& v, const std::vector<float>* dy, std::vector<double>& o,
               std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  o.assign(static_cast<size_t>(p.B * p.H * p.L * p.Ev), 0.0);
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.L; ++i) {
        std::vector<double> z(static_cast<size_t>(p.S)), pr(z.size()), dp(z.size());
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j < p.S; ++j) {
          double d = 0;
          for (int64_t c = 0; c < p.E; ++c) d += double(q[p.at(b, h, i, p.L, p.E) + c]) * k[p.at(b, h, j, p.S, p.E) + c];
          z[j] = d * p.sc();
          m = std::max(m, z[j]);
        }
        for (int64_t j = 0; j < p.S; ++j) sum += pr[j] = std::exp(z[j] - m);
        for (int64_t j = 0; j < p.S; ++j) {
          pr[j] /= sum;
          for (int64_t c = 0; c < p.Ev; ++c) o[p.at(b, h, i, p.L, p.Ev) + c] += pr[j] * v[p.at(b, h, j, p.S, p.Ev) + c];
        }
        if (!dy) continue;
        double D = 0;
        for (int64_t j = 0; j < p.S; ++j) {
          dp[j] = 0;
          for (int64_t c = 0; c < p.Ev; ++c) dp[j] += double((*dy)[p.at(b, h, i, p.L, p.Ev) + c]) * v[p.at(b, h, j, p.S, p.Ev) + c];
          D += pr[j] * dp[j];
        }
        for (int64_t j = 0; j < p.S; ++j) {
          const double dz = pr[j] * (dp[j] - D) * p.sc();
          for (int64_t c = 0; c < p.E; ++c) {
            dq[p.at(b, h, i, p.L, p.E) + c] += dz * k[p.at(b, h, j, p.S, p.E) + c];
            dk[p.at(b, h, j, p.S, p.E) + c] += dz * q[p.at(b, h, i, p.L, p.E) + c];
          }
          for (int64_t c = 0; c < p.Ev; ++c) dv[p.at(b, h, j, p.S, p.Ev) + c] += pr[j] * (*dy)[p.at(b, h, i, p.L, p.Ev) + c];
        }
      }
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " element " << i;
}

// Runs the op (and the gradient of sum(o * w), so that dy = w) through a
// Session with the batch dim symbolic, against the reference.
void check(const Problem& p) {
  Graph g;
  auto sym = [](Shape s) {
    s[0] = batch;
    return s;
  };
  const Shape qs = p.shape(p.L, p.E), ks = p.shape(p.S, p.E), vs = p.shape(p.S, p.Ev), os = p.shape(p.L, p.Ev);
  Tensor q = g.input("q", f32, sym(qs)), k = g.input("k", f32, sym(ks)), v = g.input("v", f32, sym(vs));
  Tensor w = g.input("w", f32, sym(os));
  AttentionOptions opt{.layout = p.tokens_first ? AttentionOptions::tokens_first : AttentionOptions::heads_first,
                       .scale = p.scale};
  Tensor o = scaled_dot_product_attention(q, k, v, opt);
  ASSERT_EQ(o.shape(), sym(os));
  auto gr = grad(sum(o * w), {q, k, v});
  Session s(g);
  auto f = s.function({"attn", {q, k, v, w}, {{o}, {gr[0]}, {gr[1]}, {gr[2]}}, {}});
  const auto qv = rnd(numel(qs), -2.f, 2.f, 1), kv = rnd(numel(ks), -2.f, 2.f, 2), vv = rnd(numel(vs), -1.f, 1.f, 3);
  const auto wv = rnd(numel(os), -1.f, 1.f, 4);
  auto out = f({Array::from(qv, qs), Array::from(kv, ks), Array::from(vv, vs), Array::from(wv, os)});
  std::vector<double> ro, rdq, rdk, rdv;
  reference(p, qv, kv, vv, &wv, ro, rdq, rdk, rdv);
  expect_close(out[0].to_vector<float>(), ro, 1e-5, "o");
  expect_close(out[1].to_vector<float>(), rdq, 1e-4, "dq");
  expect_close(out[2].to_vector<float>(), rdk, 1e-4, "dk");
  expect_close(out[3].to_vector<float>(), rdv, 1e-5, "dv");
}

TEST(Attention, HeadsFirstMatchesReference) {
  // Self-attention shapes (the stacked gradient); 19 queries and keys: more
  // than one vector of queries; E = 20: a vector of features and a rest.
  check({.B = 3, .H = 2, .L = 19, .S = 19, .E = 20, .Ev = 20, .tokens_first = false, .scale = 0});
}

TEST(Attention, HeadsFirstCrossShapesMatchReference) {
  // L != S, Ev != E: the gradients as three separate nodes.
  check({.B = 2, .H = 3, .L = 5, .S = 7, .E = 4, .Ev = 6, .tokens_first = false, .scale = 0.3f});
}

TEST(Attention, TokensFirstMatchesReference) {
  check({.B = 3, .H = 4, .L = 17, .S = 17, .E = 16, .Ev = 16, .tokens_first = true, .scale = 0});
  check({.B = 2, .H = 3, .L = 33, .S = 6, .E = 5, .Ev = 18, .tokens_first = true, .scale = 0.7f});
}

TEST(Attention, LargeScoresStayFinite) {
  // Scores in the hundreds: the softmax's shift keeps e^z in range.
  Graph g;
  Tensor q = g.input("q", f32, {1, 1, 3, 2}), k = g.input("k", f32, {1, 1, 3, 2}), v = g.input("v", f32, {1, 1, 3, 2});
  Session s(g);
  auto f = s.function({"a", {q, k, v}, {{scaled_dot_product_attention(q, k, v, {.scale = 1.f})}}, {}});
  std::vector<float> qv{30, 0, -30, 0, 0, 30}, kv{30, 0, -30, 0, 0, 30}, vv{1, 2, 3, 4, 5, 6};
  auto o = f({Array::from(qv, {1, 1, 3, 2}), Array::from(kv, {1, 1, 3, 2}), Array::from(vv, {1, 1, 3, 2})})[0]
               .to_vector<float>();
  // Each query's own key wins by 900 (or more): o is that key's value.
  const std::vector<float> want{1, 2, 3, 4, 5, 6};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(o[i], want[i]) << i;
}

TEST(Attention, ChecksShapes) {
  Graph g;
  auto in = [&](const char* n, Shape s, DType t = f32) { return g.input(n, t, s); };
  Tensor q = in("q", {batch, 2, 5, 4}), k = in("k", {batch, 2, 7, 4}), v = in("v", {batch, 2, 7, 6});
  EXPECT_NO_THROW(scaled_dot_product_attention(q, k, v));
  EXPECT_THROW(scaled_dot_product_attention(q, in("k3", {batch, 2, 7, 3}), v), ShapeError);  // E differs
  EXPECT_THROW(scaled_dot_product_attention(q, k, in("v6", {batch, 2, 6, 6})), ShapeError);  // S differs
  EXPECT_THROW(scaled_dot_product_attention(q, in("kh", {batch, 3, 7, 4}), in("vh", {batch, 3, 7, 6})),
               ShapeError);  // heads differ (no broadcasting)
  EXPECT_THROW(scaled_dot_product_attention(q, in("kr", {2, 7, 4}), v), ShapeError);  // rank
  EXPECT_THROW(scaled_dot_product_attention(in("qv", {4}), in("kv", {4}), in("vv", {4})), ShapeError);
  EXPECT_THROW(scaled_dot_product_attention(in("qb", {2, batch, 4}), in("kb", {2, batch, 4}), in("vb", {2, batch, 4})),
               ShapeError);  // tokens may not be `batch`
  EXPECT_THROW(scaled_dot_product_attention(in("qi", {2, 5, 4}, i32), in("ki", {2, 5, 4}), in("vi", {2, 5, 4})),
               TypeError);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, {.scale = -1.f}), ArgumentError);
  // tokens first: [N, L, H, E] exactly.
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, {.layout = AttentionOptions::tokens_first}), ShapeError);
  Tensor qt = in("qt", {batch, 5, 2, 4}), kt = in("kt", {batch, 7, 2, 4}), vt = in("vt", {batch, 7, 2, 6});
  EXPECT_EQ(scaled_dot_product_attention(qt, kt, vt, {.layout = AttentionOptions::tokens_first}).shape(),
            (Shape{batch, 5, 2, 6}));
  EXPECT_THROW(scaled_dot_product_attention(in("q3", {batch, 5, 4}), in("k3d", {batch, 7, 4}), in("v3", {batch, 7, 6}),
                                            {.layout = AttentionOptions::tokens_first}),
               ShapeError);
  try {
    scaled_dot_product_attention(q, in("k5", {batch, 2, 7, 5}), v);
    FAIL() << "no error";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("scaled_dot_product_attention"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[batch, 2, 7, 5]"), std::string::npos) << e.what();
  }
}

TEST(Attention, MultiHeadAttentionMatchesTheComposedLayer) {
  // nn::multi_head_attention (one tokens-first attention op) against the
  // same weights through transposes, batched matmuls and softmax, forward
  // and the gradients of the input and of every weight.
  const int64_t N = 3, T = 6, D = 12, H = 3, dh = D / H;
  Graph g;
  Tensor x = g.input("x", f32, {batch, T, D});
  auto mha = nn::multi_head_attention(g, "mha", D, H);
  Tensor y = mha(x);
  auto split = [&](Tensor t) { return transpose(reshape(t, {batch, T, H, dh}), {0, 2, 1, 3}); };
  Tensor att = softmax(matmul(split(mha.q(x)), split(mha.k(x)), false, true) * (1.f / std::sqrt(float(dh))));
  Tensor y2 = mha.proj(reshape(transpose(matmul(att, split(mha.v(x))), {0, 2, 1, 3}), {batch, T, D}));
  Tensor w = g.variable("w", {T, D}, Init::uniform(-1, 1));
  std::vector<Tensor> wrt{x};
  for (const Tensor& p : mha.params()) wrt.push_back(p);
  auto g1 = grad(sum(y * w), wrt), g2 = grad(sum(y2 * w), wrt);
  std::vector<OutputSpec> outs{{y}, {y2}};
  for (size_t i = 0; i < wrt.size(); ++i) {
    outs.push_back({g1[i]});
    outs.push_back({g2[i]});
  }
  Session s(g);
  auto f = s.function({"mha", {x}, outs, {}});
  auto r = f({Array::from(rnd(N * T * D, -2.f, 2.f, 5), {N, T, D})});
  for (size_t i = 0; i < r.size(); i += 2) {
    auto a = r[i].to_vector<float>(), b = r[i + 1].to_vector<float>();
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-5f * (1 + std::fabs(b[j]))) << "output " << i << " element " << j;
  }
}

}  // namespace
