// Gradients: every differentiable op's backward graph against central
// differences of its forward, evaluated by the CPU executor.
//
// Each case builds loss = sum(f(v...) * w) with random variables v and a
// random weighting w (so every output element matters), computes grad(loss,
// v) and compares it with (loss(v + eps) - loss(v - eps)) / 2 eps for a
// sample of elements.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "synk/synk.hpp"

using namespace synk;

namespace {

struct VarSpec {
  Shape shape;
  float lo = -1.f, hi = 1.f;
};

struct GradCase {
  std::string name;
  std::vector<VarSpec> vars;
  std::function<Tensor(std::vector<Tensor>&)> f;
  // Optional: fix values after initialisation (e.g. keep max-pool windows
  // free of near-ties, which central differences would cross).
  std::function<void(Session&)> setup;
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, MatchesCentralDifferences) {
  const GradCase& c = GetParam();
  Graph g;
  std::vector<Tensor> vars;
  for (size_t i = 0; i < c.vars.size(); ++i)
    vars.push_back(g.variable("v" + std::to_string(i), c.vars[i].shape,
                              Init::uniform(c.vars[i].lo, c.vars[i].hi)));
  Tensor out = c.f(vars);
  ASSERT_EQ(out.dtype(), f32);
  Tensor w = g.variable("w", out.shape(), Init::uniform(-1.f, 1.f));
  Tensor loss = sum(out * w);
  std::vector<Tensor> grads = grad(loss, vars);
  Session s(g, {.seed = 7});
  if (c.setup) c.setup(s);
  Function f_loss = s.function({"loss", {}, {{loss}}, {}});
  std::vector<OutputSpec> gouts;
  for (auto& t : grads) gouts.emplace_back(t);
  Function f_grad = s.function({"grads", {}, gouts, {}});
  std::vector<Array> analytic = f_grad({});
  ASSERT_EQ(analytic.size(), vars.size());

  const float eps = 1e-2f;
  for (size_t i = 0; i < vars.size(); ++i) {
    const std::string name = "v" + std::to_string(i);
    Array v = s.get(name);
    ASSERT_EQ(analytic[i].shape(), v.shape());
    const int64_t n = v.numel();
    const int64_t stride = std::max<int64_t>(1, n / 24);  // sample ~24 elements
    for (int64_t j = 0; j < n; j += stride) {
      Array p = v;
      p.data<float>()[j] = v.data<float>()[j] + eps;
      s.set(name, p);
      const double lp = f_loss({})[0].scalar();
      p.data<float>()[j] = v.data<float>()[j] - eps;
      s.set(name, p);
      const double lm = f_loss({})[0].scalar();
      s.set(name, v);
      const double num = (lp - lm) / (2 * eps);
      const double ana = analytic[i].data<float>()[j];
      EXPECT_NEAR(ana, num, 2e-2 + 2e-2 * std::fabs(num)) << c.name << ": d loss / d " << name << "[" << j << "]";
    }
  }
}

// Values 0.05 apart in a random order: max-pool windows and max reductions
// then have a unique maximum with margin > 2 eps.
std::function<void(Session&)> distinct(const std::string& name) {
  return [name](Session& s) {
    Array v = s.get(name);
    std::vector<int> perm(static_cast<size_t>(v.numel()));
    std::iota(perm.begin(), perm.end(), 0);
    uint64_t st = 12345;
    for (size_t i = perm.size(); i > 1; --i) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      std::swap(perm[i - 1], perm[(st >> 33) % i]);
    }
    for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = 0.05f * static_cast<float>(perm[i]) - 1.f;
    s.set(name, v);
  };
}

std::vector<GradCase> cases() {
  using V = std::vector<Tensor>;
  std::vector<GradCase> c;
  c.push_back({"add_broadcast", {{{3, 4}}, {{4}}}, [](V& v) { return v[0] + v[1]; }});
  c.push_back({"add_broadcast_col", {{{2, 3, 4}}, {{3, 1}}}, [](V& v) { return v[0] + v[1]; }});
  c.push_back({"sub_broadcast", {{{1, 4}}, {{3, 1}}}, [](V& v) { return v[0] - v[1]; }});
  c.push_back({"mul_scalar_var", {{{3, 4}}, {{}}}, [](V& v) { return v[0] * v[1]; }});
  c.push_back({"mul_same", {{{5}}, {{5}}}, [](V& v) { return v[0] * v[1]; }});
  c.push_back({"div", {{{2, 3}}, {{3}, 0.5f, 2.f}}, [](V& v) { return v[0] / v[1]; }});
  c.push_back({"neg", {{{4}}}, [](V& v) { return -v[0]; }});
  c.push_back({"relu_pos", {{{6}, 0.1f, 1.f}}, [](V& v) { return relu(v[0]); }});
  c.push_back({"relu_neg", {{{6}, -1.f, -0.1f}}, [](V& v) { return relu(v[0]); }});
  c.push_back({"tanh", {{{5}, -2.f, 2.f}}, [](V& v) { return synk::tanh(v[0]); }});
  c.push_back({"sigmoid", {{{5}, -3.f, 3.f}}, [](V& v) { return sigmoid(v[0]); }});
  c.push_back({"exp", {{{5}}}, [](V& v) { return synk::exp(v[0]); }});
  c.push_back({"log", {{{5}, 0.5f, 2.f}}, [](V& v) { return synk::log(v[0]); }});
  c.push_back({"sqrt", {{{5}, 0.5f, 2.f}}, [](V& v) { return synk::sqrt(v[0]); }});
  c.push_back({"square", {{{5}}}, [](V& v) { return square(v[0]); }});
  c.push_back({"pow3", {{{5}}}, [](V& v) { return synk::pow(v[0], 3.f); }});
  c.push_back({"pow_half", {{{5}, 0.5f, 2.f}}, [](V& v) { return synk::pow(v[0], 0.5f); }});
  c.push_back({"sum_all", {{{3, 4}}}, [](V& v) { return sum(v[0]); }});
  c.push_back({"sum_axis0", {{{3, 4}}}, [](V& v) { return sum(v[0], {0}); }});
  c.push_back({"sum_axes02_keep", {{{2, 3, 4}}}, [](V& v) { return sum(v[0], {0, 2}, true); }});
  c.push_back({"mean_axis1", {{{3, 4}}}, [](V& v) { return mean(v[0], {1}); }});
  c.push_back({"mean_all", {{{2, 3, 2}}}, [](V& v) { return mean(v[0]); }});
  c.push_back({"max_axis1", {{{3, 5}}}, [](V& v) { return max(v[0], {1}); }, distinct("v0")});
  c.push_back({"max_all", {{{2, 6}}}, [](V& v) { return max(v[0]); }, distinct("v0")});
  c.push_back({"reshape", {{{2, 6}}}, [](V& v) { return reshape(v[0], {3, 4}) * reshape(v[0], {3, 4}); }});
  c.push_back({"flatten", {{{2, 2, 3}}}, [](V& v) { return square(flatten(v[0])); }});
  c.push_back({"transpose", {{{2, 3, 4}}}, [](V& v) { return square(transpose(v[0], {2, 0, 1})); }});
  c.push_back({"broadcast_to", {{{3, 1}}}, [](V& v) { return square(broadcast_to(v[0], {2, 3, 4})); }});
  c.push_back({"matmul", {{{3, 4}}, {{4, 5}}}, [](V& v) { return matmul(v[0], v[1]); }});
  c.push_back({"matmul_ta", {{{4, 3}}, {{4, 5}}}, [](V& v) { return matmul(v[0], v[1], true, false); }});
  c.push_back({"matmul_tb", {{{3, 4}}, {{5, 4}}}, [](V& v) { return matmul(v[0], v[1], false, true); }});
  c.push_back({"matmul_tatb", {{{4, 3}}, {{5, 4}}}, [](V& v) { return matmul(v[0], v[1], true, true); }});
  c.push_back({"softmax_last", {{{3, 5}, -2.f, 2.f}}, [](V& v) { return softmax(v[0]); }});
  c.push_back({"softmax_axis0", {{{3, 5}, -2.f, 2.f}}, [](V& v) { return softmax(v[0], 0); }});
  c.push_back({"log_softmax", {{{3, 5}, -2.f, 2.f}}, [](V& v) { return log_softmax(v[0]); }});
  c.push_back({"softmax_xent",
               {{{4, 5}, -2.f, 2.f}},
               [](V& v) {
                 Tensor labels = v[0].graph().variable("labels", {4}, Init::zeros(), i32);
                 return softmax_cross_entropy(v[0], labels);
               },
               [](Session& s) { s.set("labels", Array::from(std::vector<int32_t>{1, 0, 4, 2}, {4})); }});
  c.push_back({"conv2d", {{{2, 3, 6, 5}}, {{4, 3, 3, 3}}}, [](V& v) { return conv2d(v[0], v[1]); }});
  c.push_back({"conv2d_stride_pad",
               {{{2, 2, 7, 6}}, {{3, 2, 3, 2}}},
               [](V& v) { return conv2d(v[0], v[1], {.stride = 2, .padding = 1}); }});
  c.push_back({"max_pool2d", {{{2, 2, 4, 6}}}, [](V& v) { return max_pool2d(v[0], 2); }, distinct("v0")});
  c.push_back({"max_pool2d_overlap_pad",
               {{{1, 2, 5, 5}}},
               [](V& v) { return max_pool2d(v[0], 3, 2, 1); },
               distinct("v0")});
  c.push_back({"gelu", {{{3, 5}, -3.f, 3.f}}, [](V& v) { return gelu(v[0]); }});
  c.push_back({"gelu_tanh", {{{3, 5}, -3.f, 3.f}}, [](V& v) { return gelu(v[0], true); }});
  // abs on either side of its kink (central differences would straddle 0).
  c.push_back({"abs_pos", {{{5}, 0.1f, 2.f}}, [](V& v) { return synk::abs(v[0]); }});
  c.push_back({"abs_neg", {{{5}, -2.f, -0.1f}}, [](V& v) { return synk::abs(v[0]) * v[0]; }});
  c.push_back({"sin", {{{6}, -4.f, 4.f}}, [](V& v) { return synk::sin(v[0]); }});
  c.push_back({"cos", {{{6}, -4.f, 4.f}}, [](V& v) { return synk::cos(v[0]); }});
  // Values on a 0.05 grid, bounds 0.02-0.03 off it: no element within eps
  // of a bound.
  c.push_back({"clip", {{{4, 6}}}, [](V& v) { return clip(v[0], -0.52f, 0.33f) * v[0]; }, distinct("v0")});
  // Two grids 0.025 apart: no near-ties between the operands.
  auto two_grids = [](Session& s) {
    distinct("v0")(s);
    distinct("v1")(s);
    Array b = s.get("v1");
    for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] += 0.025f;
    s.set("v1", b);
  };
  c.push_back({"maximum_broadcast", {{{3, 4}}, {{4}}}, [](V& v) { return maximum(v[0], v[1]); }, two_grids});
  c.push_back({"minimum_broadcast", {{{3, 1}}, {{3, 4}}}, [](V& v) { return minimum(v[0], v[1]); }, two_grids});
  c.push_back({"maximum_scalar", {{{2, 5}}}, [](V& v) { return maximum(v[0], 0.013f) * v[0]; }, distinct("v0")});
  c.push_back({"where_broadcast",
               {{{3, 4}}, {{4}}},
               [](V& v) {
                 Tensor cond = v[0].graph().variable("cond", {3, 1}, Init::zeros(), i32);
                 return where(cond, v[0], v[1]) * v[1];
               },
               [](Session& s) { s.set("cond", Array::from(std::vector<int32_t>{1, 0, 5}, {3, 1})); }});
  c.push_back({"where_mask_of_values",
               {{{2, 6}}},
               [](V& v) { return where(greater(v[0], 0.013f), square(v[0]), synk::exp(v[0])); },
               distinct("v0")});
  c.push_back({"conv2d_3x3_stride2_pad1",
               {{{2, 3, 7, 8}}, {{4, 3, 3, 3}}},
               [](V& v) { return conv2d(v[0], v[1], {.stride = 2, .padding = 1}); }});
  c.push_back({"conv2d_1x1_stride2",
               {{{2, 3, 7, 6}}, {{4, 3, 1, 1}}},
               [](V& v) { return conv2d(v[0], v[1], {.stride = 2}); }});
  c.push_back({"conv2d_1x1_stride1", {{{2, 3, 5, 4}}, {{4, 3, 1, 1}}}, [](V& v) { return conv2d(v[0], v[1]); }});
  c.push_back({"avg_pool2d", {{{2, 2, 4, 6}}}, [](V& v) { return avg_pool2d(v[0], 2); }});
  c.push_back({"avg_pool2d_overlap_pad", {{{1, 2, 5, 6}}}, [](V& v) { return avg_pool2d(v[0], 3, 2, 1); }});
  c.push_back({"global_avg_pool2d", {{{2, 3, 3, 4}}}, [](V& v) { return global_avg_pool2d(v[0]); }});
  c.push_back({"layer_norm",
               {{{3, 7}, -2.f, 2.f}, {{7}, 0.5f, 1.5f}, {{7}}},
               [](V& v) { return layer_norm(v[0], v[1], v[2]); }});
  // Self-attention shapes (the stacked q/k/v gradient node) and cross
  // shapes (one node per operand), in both layouts.
  c.push_back({"attention_self",
               {{{2, 2, 5, 3}, -2.f, 2.f}, {{2, 2, 5, 3}, -2.f, 2.f}, {{2, 2, 5, 3}, -3.f, 3.f}},
               [](V& v) { return scaled_dot_product_attention(v[0], v[1], v[2]); }});
  c.push_back({"attention_cross_tokens_first",
               {{{2, 3, 2, 3}, -2.f, 2.f}, {{2, 4, 2, 3}, -2.f, 2.f}, {{2, 4, 2, 2}, -3.f, 3.f}},
               [](V& v) {
                 return scaled_dot_product_attention(
                     v[0], v[1], v[2], {.layout = AttentionOptions::tokens_first, .scale = 0.8f});
               }});
  c.push_back({"layer_norm_3d",
               {{{2, 3, 5}, -2.f, 2.f}, {{5}, 0.5f, 1.5f}, {{5}}},
               [](V& v) { return layer_norm(v[0], v[1], v[2], 1e-3f); }});
  auto bn = [](bool training) {
    return [training](V& v) {
      Graph& g = v[0].graph();
      const Dim c = v[0].shape()[1];
      Tensor rm = g.variable("rm", {c}, Init::uniform(-0.5f, 0.5f));
      Tensor rv = g.variable("rv", {c}, Init::uniform(0.5f, 2.f));
      return batch_norm(v[0], v[1], v[2], rm, rv, {.training = training});
    };
  };
  c.push_back({"batch_norm2d_train", {{{3, 2, 2, 3}, -1.f, 2.f}, {{2}, 0.5f, 1.5f}, {{2}}}, bn(true)});
  c.push_back({"batch_norm1d_train", {{{5, 3}, -1.f, 2.f}, {{3}, 0.5f, 1.5f}, {{3}}}, bn(true)});
  c.push_back({"batch_norm2d_eval", {{{3, 2, 2, 3}, -1.f, 2.f}, {{2}, 0.5f, 1.5f}, {{2}}}, bn(false)});
  c.push_back({"batch_norm1d_eval", {{{4, 3}, -1.f, 2.f}, {{3}, 0.5f, 1.5f}, {{3}}}, bn(false)});
  c.push_back({"mlp_chain",
               {{{4, 6}}, {{6, 5}}, {{5}}},
               [](V& v) { return log_softmax(synk::tanh(matmul(v[0], v[1]) + v[2])); }});
  c.push_back({"concat_axis1", {{{2, 3, 2}}, {{2, 1, 2}}}, [](V& v) { return concat({v[0], v[1], v[0]}, 1); }});
  c.push_back({"concat_last", {{{3, 2}}, {{3, 4}}}, [](V& v) { return square(concat({v[0], v[1]}, -1)); }});
  c.push_back({"slice_middle", {{{2, 5, 3}}}, [](V& v) { return square(slice(v[0], 1, 1, -1)); }});
  c.push_back({"slice_of_slice_grad",  // SliceGrad's own gradient (a slice)
               {{{3, 4}}},
               [](V& v) {
                 Tensor s = slice(v[0], 0, 1, 3);
                 return square(grad(sum(s * s), {v[0]})[0]);
               }});
  c.push_back({"embedding",
               {{{5, 3}}},
               [](V& v) {
                 Tensor idx = v[0].graph().variable("idx", {2, 3}, Init::zeros(), i32);
                 return square(embedding(v[0], idx));
               },
               [](Session& s) { s.set("idx", Array::from(std::vector<int32_t>{4, 1, 4, 0, 4, 2}, {2, 3})); }});
  c.push_back({"embedding_grad_of_grad",  // EmbeddingGrad's gradient (a gather)
               {{{4, 2}}, {{3, 2}}},
               [](V& v) {
                 Tensor idx = v[0].graph().variable("idx", {3}, Init::zeros(), i32);
                 Tensor dt = grad(sum(embedding(v[0], idx) * v[1]), {v[0]})[0];
                 return square(dt);
               },
               [](Session& s) { s.set("idx", Array::from(std::vector<int32_t>{2, 0, 2}, {3})); }});
  c.push_back({"batch_matmul", {{{2, 3, 4}}, {{2, 4, 5}}}, [](V& v) { return matmul(v[0], v[1]); }});
  c.push_back({"batch_matmul_ta_tb", {{{2, 4, 3}}, {{2, 5, 4}}}, [](V& v) { return matmul(v[0], v[1], true, true); }});
  c.push_back({"batch_matmul_shared_w", {{{2, 3, 4}}, {{4, 5}}}, [](V& v) { return matmul(v[0], v[1]); }});
  c.push_back({"batch_matmul_shared_w_tb", {{{2, 3, 4}}, {{5, 4}}}, [](V& v) { return matmul(v[0], v[1], false, true); }});
  c.push_back({"batch_matmul_shared_a", {{{3, 4}}, {{2, 2, 4, 5}}}, [](V& v) { return matmul(v[0], v[1]); }});
  c.push_back({"batch_matmul_broadcast",
               {{{2, 1, 3, 4}}, {{3, 4, 2}}},
               [](V& v) { return matmul(v[0], v[1], false, false); }});
  c.push_back({"attention",
               {{{2, 2, 3, 4}}, {{2, 2, 3, 4}}, {{2, 2, 3, 4}}},
               [](V& v) { return matmul(softmax(matmul(v[0], v[1], false, true)), v[2]); }});
  c.push_back({"shared_operand", {{{3}}}, [](V& v) { return v[0] * v[0] + synk::exp(v[0]) * v[0]; }});
  return c;
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Gradients through a batch input: mean over the symbolic batch divides by
// the actual row count.
TEST(GradBatch, MeanOverBatchUsesRowCount) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3});
  auto W = g.variable("W", {3, 2}, Init::uniform(-1, 1));
  auto loss = mean(square(matmul(x, W)));
  auto gW = grad(loss, {W})[0];
  Session s(g, {.seed = 3});
  auto f = s.function({"g", {x}, {{gW}}, {}});
  for (int64_t rows : {1, 4, 7}) {
    std::vector<float> xv(static_cast<size_t>(rows * 3));
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
    Array X = Array::from(xv, {rows, 3});
    Array Wv = s.get("W");
    // d/dW mean((xW)^2) = 2 x^T (xW) / (rows * 2)
    std::vector<double> expect(6, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < 2; ++j) {
        double y = 0;
        for (int k = 0; k < 3; ++k) y += xv[r * 3 + k] * Wv.data<float>()[k * 2 + j];
        for (int k = 0; k < 3; ++k) expect[k * 2 + j] += 2 * xv[r * 3 + k] * y / (rows * 2.0);
      }
    Array got = f({X})[0];
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(got.data<float>()[i], expect[i], 1e-5) << "rows " << rows;
  }
}

// Dropout: within one call the gradient is the same mask times the
// upstream gradient, and masks change between calls.
TEST(GradDropout, GradientUsesTheSameMask) {
  Graph g;
  auto x = g.variable("x", {1000}, Init::uniform(0.5f, 1.f));
  auto y = dropout(x, 0.5f);
  auto gx = grad(sum(y * 3.f), {x})[0];
  Session s(g, {.seed = 5});
  auto f = s.function({"f", {}, {{y}, {gx}}, {}});
  auto r1 = f({});
  auto r2 = f({});
  Array xv = s.get("x");
  int zeros = 0, changed = 0;
  for (int i = 0; i < 1000; ++i) {
    const float m = r1[0].data<float>()[i] / xv.data<float>()[i];
    EXPECT_TRUE(std::fabs(m) < 1e-6f || std::fabs(m - 2.f) < 1e-5f) << m;
    EXPECT_NEAR(r1[1].data<float>()[i], 3.f * m, 1e-5);
    zeros += m < 1.f;
    changed += (r1[0].data<float>()[i] == 0.f) != (r2[0].data<float>()[i] == 0.f);
  }
  EXPECT_GT(zeros, 400);
  EXPECT_LT(zeros, 600);
  EXPECT_GT(changed, 300);
}

}  // namespace
