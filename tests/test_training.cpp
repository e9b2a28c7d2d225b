// A short training run whose loss must fall: a small MLP with dropout and
// Nesterov momentum learns a synthetic 3-class problem, and the training
// step and evaluation use different compiled functions of one Session.
#include <gtest/gtest.h>

#include <cmath>

#include "synk/synk.hpp"

using namespace synk;

namespace {

// Points in 2-D labelled by angle sector (3 classes): not linearly
// separable, easy for a small MLP.
void make_data(int64_t n, Array& X, Array& Y) {
  X = Array(f32, {n, 2});
  Y = Array(i32, {n});
  uint64_t s = 99;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double a = static_cast<double>(s >> 11) / 9007199254740992.0 * 6.283185307179586;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double r = 0.5 + static_cast<double>(s >> 11) / 9007199254740992.0;
    X.data<float>()[2 * i] = static_cast<float>(r * std::cos(a));
    X.data<float>()[2 * i + 1] = static_cast<float>(r * std::sin(a));
    Y.data<int32_t>()[i] = static_cast<int32_t>(a / (6.283185307179586 / 3)) % 3;
  }
}

}  // namespace

TEST(Training, LossFallsAndAccuracyRises) {
  Graph g;
  auto x = g.input("x", f32, {batch, 2});
  auto y = g.input("y", i32, {batch});
  auto l1 = nn::dense(g, "l1", 2, 32);
  auto l2 = nn::dense(g, "l2", 32, 3);
  auto net = [&](bool det) { return l2(dropout(relu(l1(x)), 0.1f, det)); };
  auto loss = mean(softmax_cross_entropy(net(false), y));
  auto logits = net(true);
  auto acc = mean(cast(equal(argmax(logits, 1), y), f32));
  std::vector<Tensor> params{l1.W, l1.b, l2.W, l2.b};
  auto ups = optim::nesterov(params, grad(loss, params), {.lr = 0.1f, .momentum = 0.9f});
  Session s(g, {.seed = 11});
  auto train = s.function({"train", {x, y}, {{loss}}, ups});
  auto eval = s.function({"eval", {x, y}, {{mean(softmax_cross_entropy(logits, y))}, {acc}}, {}});

  Array X, Y;
  make_data(600, X, Y);
  auto before = eval({X, Y});
  for (int step = 0; step < 300; ++step) train({X, Y});
  auto after = eval({X, Y});
  EXPECT_LT(after[0].scalar(), 0.5f * before[0].scalar());
  EXPECT_GT(after[1].scalar(), 0.9f);
  // The evaluation function did not touch the weights.
  auto again = eval({X, Y});
  EXPECT_EQ(again[0].scalar(), after[0].scalar());
}

TEST(Training, OptimizersAllDescend) {
  using Opt = std::vector<Update> (*)(const std::vector<Tensor>&, const std::vector<Tensor>&,
                                      const optim::Options&);
  const std::pair<const char*, Opt> opts[] = {{"sgd", optim::sgd},
                                              {"momentum", optim::momentum},
                                              {"nesterov", optim::nesterov},
                                              {"adam", optim::adam},
                                              {"rmsprop", optim::rmsprop}};
  for (auto [name, opt] : opts) {
    Graph g;
    auto w = g.variable("w", {4}, Init::constant(3.f));
    auto loss = sum(square(w - 1.f));  // minimum 0 at w = 1
    auto ups = opt({w}, grad(loss, {w}), {.lr = 0.05f});
    Session s(g);
    auto step = s.function({"step", {}, {{loss}}, ups});
    float first = step({})[0].scalar();
    float last = first;
    for (int i = 0; i < 200; ++i) last = step({})[0].scalar();
    EXPECT_LT(last, 0.1f * first) << name;
  }
}

// Remaking an optimizer over the same parameters (as after a runtime
// restart) reuses its state variables instead of failing on their names.
TEST(Training, OptimizerStateIsReusedWhenRebuilt) {
  Graph g;
  auto w = g.variable("w", {3}, Init::constant(1.f));
  auto loss = sum(square(w));
  auto gw = grad(loss, {w});
  auto first = optim::nesterov({w}, gw);
  auto again = optim::nesterov({w}, gw);
  ASSERT_EQ(first.size(), again.size());
  EXPECT_EQ(first[0].variable, again[0].variable);  // the same "w/velocity"
  EXPECT_EQ(g.variables().size(), 2u);
  auto a1 = optim::adam({w}, gw);
  auto a2 = optim::adam({w}, gw);
  EXPECT_EQ(a1[0].variable, a2[0].variable);  // the same "w/t"
  EXPECT_EQ(g.variables().size(), 5u);        // w, velocity, t, m, v
  Graph h;
  auto p = h.variable("p", {2});
  h.variable("p/velocity", {3});  // a clash of shape is still an error
  EXPECT_THROW(optim::momentum({p}, grad(sum(square(p)), {p})), ArgumentError);
}
