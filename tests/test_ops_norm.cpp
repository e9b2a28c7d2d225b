// Normalisation and pooling ops: layer_norm, batch_norm (with its running
// statistics, kept by state updates), avg_pool2d, global_avg_pool2d, and
// conv2d at ResNet's strides, against reference loops in double; the
// builders' errors; the running statistics through Session functions,
// train_step and a 2-rank Runtime. Gradients are checked numerically in
// test_grad.cpp and the CUDA kernels against these in test_cuda_exec.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "support/runtime_helpers.hpp"
#include "support/random_values.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

using synk_test::rnd;

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << " element " << i;
}

// Mean and biased variance of the values at offsets off(i), i < m, in double.
template <class F>
void stats(int64_t m, F at, double& mean, double& var) {
  mean = 0;
  for (int64_t i = 0; i < m; ++i) mean += at(i);
  mean /= static_cast<double>(m);
  var = 0;
  for (int64_t i = 0; i < m; ++i) var += (at(i) - mean) * (at(i) - mean);
  var /= static_cast<double>(m);
}

TEST(LayerNorm, MatchesReference) {
  // Rows offset far from zero: a one-pass sum of squares would lose them.
  const int64_t R = 6, D = 67;
  Graph g;
  Tensor x = g.input("x", f32, {batch, 2, D});
  Tensor gm = g.variable("gm", {D}, Init::uniform(0.5f, 1.5f)), bt = g.variable("bt", {D}, Init::uniform(-1, 1));
  Session s(g);
  auto f = s.function({"ln", {x}, {{layer_norm(x, gm, bt, 1e-4f)}}, {}});
  std::vector<float> xv = rnd(R * D, -1.f, 1.f, 1);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < D; ++j) xv[static_cast<size_t>(r * D + j)] += 1000.f * static_cast<float>(r);
  auto out = f({Array::from(xv, {R / 2, 2, D})})[0].to_vector<float>();
  auto gv = s.get("gm").to_vector<float>(), bv = s.get("bt").to_vector<float>();
  std::vector<double> want;
  for (int64_t r = 0; r < R; ++r) {
    double mu, var;
    stats(D, [&](int64_t j) { return static_cast<double>(xv[static_cast<size_t>(r * D + j)]); }, mu, var);
    for (int64_t j = 0; j < D; ++j)
      want.push_back((xv[static_cast<size_t>(r * D + j)] - mu) / std::sqrt(var + 1e-4) * gv[j] + bv[j]);
  }
  // The offsets of 1000s leave float x only ~1e-4 of resolution.
  expect_close(out, want, 2e-3, "layer_norm");
}

TEST(LayerNorm, ChecksShapes) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 4});
  Tensor v4 = g.variable("v4", {4}), v3 = g.variable("v3", {3});
  EXPECT_THROW(layer_norm(x, v3, v4), ShapeError);
  EXPECT_THROW(layer_norm(x, v4, v3), ShapeError);
  EXPECT_THROW(layer_norm(g.input("b", f32, {batch}), v4, v4), ShapeError);
  EXPECT_THROW(layer_norm(g.input("i", i32, {2, 4}), v4, v4), TypeError);
  EXPECT_THROW(layer_norm(x, v4, v4, -1.f), ArgumentError);
  try {
    layer_norm(x, v3, v4);
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layer_norm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3]"), std::string::npos) << e.what();
  }
}

// A batch-norm model: x [batch, C, H, W] (or [batch, C] when hw == 0).
struct BnNet {
  Graph g;
  int64_t C;
  Tensor x, gm, bt, rm, rv, y_train, y_eval;
  BnNet(int64_t c, int64_t hw, float momentum = 0.1f) : C(c) {
    Shape xs{batch, c};
    if (hw > 0) xs = {batch, c, hw, hw + 1};
    x = g.input("x", f32, xs);
    gm = g.variable("gm", {c}, Init::uniform(0.5f, 1.5f));
    bt = g.variable("bt", {c}, Init::uniform(-1, 1));
    rm = g.variable("rm", {c});
    rv = g.variable("rv", {c}, Init::constant(1.f));
    y_train = batch_norm(x, gm, bt, rm, rv, {.momentum = momentum});
    y_eval = batch_norm(x, gm, bt, rm, rv, {.training = false});
  }
};

// Batch mean and biased variance per channel of x [N, C, S].
void channel_stats(const std::vector<float>& xv, int64_t N, int64_t C, int64_t S, std::vector<double>& mu,
                   std::vector<double>& var) {
  mu.assign(static_cast<size_t>(C), 0);
  var.assign(static_cast<size_t>(C), 0);
  for (int64_t c = 0; c < C; ++c)
    stats(N * S,
          [&](int64_t i) { return static_cast<double>(xv[static_cast<size_t>(((i / S) * C + c) * S + i % S)]); },
          mu[static_cast<size_t>(c)], var[static_cast<size_t>(c)]);
}

TEST(BatchNorm, TrainingNormalisesWithBatchStatisticsAndUpdatesRunningOnes) {
  for (int64_t hw : {0, 3}) {
    const int64_t N = 5, C = 4, S = hw > 0 ? hw * (hw + 1) : 1;
    BnNet m(C, hw, 0.25f);
    Session s(m.g);
    auto f = s.function({"train", {m.x}, {{m.y_train}}, {}});
    // The state updates were appended: one per running statistic.
    EXPECT_EQ(f.def().updates.size(), 2u);
    Shape xs{N, C};
    if (hw > 0) xs = {N, C, hw, hw + 1};
    std::vector<double> rm(static_cast<size_t>(C), 0.0), rv(static_cast<size_t>(C), 1.0);
    for (int call = 0; call < 2; ++call) {
      std::vector<float> xv = rnd(N * C * S, -1.f, 3.f, 10 + call);
      for (size_t i = 0; i < xv.size(); ++i) xv[i] += 50.f;  // an offset the statistics must not lose
      auto out = f({Array::from(xv, xs)})[0].to_vector<float>();
      std::vector<double> mu, var;
      channel_stats(xv, N, C, S, mu, var);
      auto gv = s.get("gm").to_vector<float>(), bv = s.get("bt").to_vector<float>();
      std::vector<double> want(xv.size());
      for (size_t i = 0; i < xv.size(); ++i) {
        const size_t c = static_cast<size_t>((static_cast<int64_t>(i) / S) % C);
        want[i] = (xv[i] - mu[c]) / std::sqrt(var[c] + 1e-5) * gv[c] + bv[c];
      }
      expect_close(out, want, 1e-4, hw > 0 ? "batch_norm2d" : "batch_norm1d");
      // PyTorch's update: the unbiased variance, momentum 0.25 here.
      const double M = static_cast<double>(N * S);
      for (size_t c = 0; c < static_cast<size_t>(C); ++c) {
        rm[c] = 0.75 * rm[c] + 0.25 * mu[c];
        rv[c] = 0.75 * rv[c] + 0.25 * var[c] * M / (M - 1);
      }
    }
    expect_close(s.get("rm").to_vector<float>(), rm, 1e-5, "running_mean after 2 calls");
    expect_close(s.get("rv").to_vector<float>(), rv, 1e-5, "running_var after 2 calls");
  }
}

TEST(BatchNorm, EvaluationUsesRunningStatisticsAndUpdatesNothing) {
  const int64_t N = 3, C = 2, hw = 2, S = 6;
  BnNet m(C, hw);
  Session s(m.g);
  s.set("rm", Array::from(std::vector<float>{0.5f, -1.f}, {C}));
  s.set("rv", Array::from(std::vector<float>{2.f, 0.25f}, {C}));
  auto f = s.function({"eval", {m.x}, {{m.y_eval}}, {}});
  EXPECT_TRUE(f.def().updates.empty());
  std::vector<float> xv = rnd(N * C * S, -2.f, 2.f, 3);
  auto out = f({Array::from(xv, {N, C, hw, hw + 1})})[0].to_vector<float>();
  f({Array::from(xv, {N, C, hw, hw + 1})});
  const double rm[] = {0.5, -1}, rv[] = {2, 0.25};
  auto gv = s.get("gm").to_vector<float>(), bv = s.get("bt").to_vector<float>();
  std::vector<double> want(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const size_t c = (i / S) % C;
    want[i] = (xv[i] - rm[c]) / std::sqrt(rv[c] + 1e-5) * gv[c] + bv[c];
  }
  expect_close(out, want, 1e-5, "batch_norm eval");
  EXPECT_EQ(s.get("rm").to_vector<float>(), (std::vector<float>{0.5f, -1.f}));
  EXPECT_EQ(s.get("rv").to_vector<float>(), (std::vector<float>{2.f, 0.25f}));
}

TEST(BatchNorm, StateUpdatesOnlyWhereTheFunctionComputesTheTrigger) {
  BnNet m(3, 2);
  Tensor other = m.g.input("o", f32, {batch, 3});
  // A function that does not compute the training batch norm: no updates.
  EXPECT_TRUE(make_function_def({"o", {other}, {{other * 2.f}}, {}}).updates.empty());
  // Through the gradient graph (the train step's outputs are gradients).
  Tensor loss = mean(square(m.y_train));
  auto gr = grad(loss, {m.gm});
  EXPECT_EQ(make_function_def({"g", {m.x}, {{gr[0]}}, {}}).updates.size(), 2u);
  // A variable the user updates keeps the user's update.
  Tensor mine = m.rm * 0.f;
  FunctionDef d = make_function_def({"u", {m.x}, {{loss}}, {{m.rm, mine}}});
  ASSERT_EQ(d.updates.size(), 2u);
  EXPECT_EQ(d.updates[0], (std::pair<int32_t, int32_t>{m.rm.id(), mine.id()}));
  EXPECT_EQ(d.updates[1].first, m.rv.id());
}

TEST(BatchNorm, ChecksArguments) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3, 4, 4});
  Tensor v3 = g.variable("v3", {3}), v2 = g.variable("v2", {2}), r = g.variable("r", {3});
  EXPECT_THROW(batch_norm(x, v2, v3, r, v3), ShapeError);
  EXPECT_THROW(batch_norm(x, v3, v3, v2, v3), ShapeError);
  EXPECT_THROW(batch_norm(g.input("v", f32, {batch}), v3, v3, r, v3), ShapeError);
  EXPECT_THROW(batch_norm(x, v3, v3, v3 * 1.f, v3), ArgumentError);  // running stats must be variables
  EXPECT_THROW(batch_norm(x, v3, v3, r, v3, {.momentum = 2.f}), ArgumentError);
  EXPECT_THROW(batch_norm(g.input("one", f32, {1, 3}), v3, v3, r, v3), ShapeError);  // 1 value per channel
  EXPECT_NO_THROW(batch_norm(g.input("one_eval", f32, {1, 3}), v3, v3, r, v3, {.training = false}));
  EXPECT_THROW(batch_norm(g.input("one_sync", f32, {1, 3}), v3, v3, r, v3, {.sync = true}), ShapeError);
  // A batch of one row with no spatial dims: refused when compiled for it.
  Graph h;
  Tensor xb = h.input("x", f32, {batch, 3});
  Tensor a = h.variable("a", {3}), b = h.variable("b", {3}), rm = h.variable("rm", {3}), rv = h.variable("rv", {3});
  Session s(h);
  auto f = s.function({"t", {xb}, {{batch_norm(xb, a, b, rm, rv)}}, {}});
  EXPECT_THROW(f({Array::from(std::vector<float>{1, 2, 3}, {1, 3})}), ShapeError);
  EXPECT_NO_THROW(f({Array::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3})}));
}

TEST(BatchNorm, TrainStepOnTwoRanksKeepsPerRankStatistics) {
  // Each rank normalises and updates its running statistics from its own
  // rows (as DDP); the parameters stay equal; snapshot() holds rank 0's.
  const int64_t N = 8, C = 2;
  BnNet m(C, 0);
  nn::Dense head = nn::dense(m.g, "head", C, 1, Init::uniform(-0.5f, 0.5f), Init::zeros());
  Tensor loss = mean(square(head(m.y_train)));
  std::vector<Tensor> params = head.params();
  params.push_back(m.gm);
  params.push_back(m.bt);
  Runtime rt = synk::fork(synk_test::opts(2));
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x}, .outputs = {{loss}}, .loss = loss,
                                         .params = params, .optimizer = [](const auto& p, const auto& gr) {
                                           return optim::sgd(p, gr, {.lr = 0.1f});
                                         }});
  rt.distribute();
  std::vector<float> xv = rnd(N * C, -1.f, 1.f, 5);
  for (size_t i = C * N / 2; i < xv.size(); ++i) xv[i] += 4.f;  // rank 1's rows are shifted
  Array X = Array::from(xv, {N, C});
  step({X});
  step({X});
  for (int r = 0; r < 2; ++r) {
    std::vector<float> part(xv.begin() + r * N / 2 * C, xv.begin() + (r + 1) * N / 2 * C);
    std::vector<double> mu, var;
    channel_stats(part, N / 2, C, 1, mu, var);
    std::vector<double> rm(C), rv(C);
    for (size_t c = 0; c < C; ++c) {
      const double M = N / 2;
      rm[c] = 0.9 * (0.1 * mu[c]) + 0.1 * mu[c];
      rv[c] = 0.9 * (0.9 + 0.1 * var[c] * M / (M - 1)) + 0.1 * var[c] * M / (M - 1);
    }
    expect_close(rt.get("rm", r).to_vector<float>(), rm, 1e-5, r == 0 ? "rank 0 running_mean" : "rank 1 running_mean");
    expect_close(rt.get("rv", r).to_vector<float>(), rv, 1e-5, r == 0 ? "rank 0 running_var" : "rank 1 running_var");
  }
  EXPECT_EQ(rt.get("gm", 0).to_vector<float>(), rt.get("gm", 1).to_vector<float>());
  for (const auto& [name, value] : rt.snapshot())
    if (name == "rm") EXPECT_EQ(value.to_vector<float>(), rt.get("rm", 0).to_vector<float>());
}

TEST(AvgPool, MatchesReferenceCountingPadding) {
  const int64_t N = 2, C = 3, H = 7, W = 6;
  std::vector<float> xv = rnd(N * C * H * W, -1.f, 1.f, 9);
  struct P { int k, s, p; };
  for (P q : {P{2, 2, 0}, P{3, 2, 1}, P{3, 1, 1}, P{2, 1, 0}}) {
    Graph g;
    Tensor x = g.input("x", f32, {batch, C, H, W});
    Tensor y = avg_pool2d(x, q.k, q.s, q.p);
    Session s(g);
    auto out = s.function({"p", {x}, {{y}}, {}})({Array::from(xv, {N, C, H, W})})[0];
    const int64_t OH = (H + 2 * q.p - q.k) / q.s + 1, OW = (W + 2 * q.p - q.k) / q.s + 1;
    ASSERT_EQ(out.shape(), (Shape{N, C, OH, OW}));
    std::vector<double> want;
    for (int64_t pl = 0; pl < N * C; ++pl)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = 0;
          for (int64_t i = 0; i < q.k; ++i)
            for (int64_t j = 0; j < q.k; ++j) {
              const int64_t ih = oh * q.s - q.p + i, iw = ow * q.s - q.p + j;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W) acc += xv[static_cast<size_t>((pl * H + ih) * W + iw)];
            }
          want.push_back(acc / (q.k * q.k));
        }
    expect_close(out.to_vector<float>(), want, 1e-6, "avg_pool2d");
  }
}

TEST(AvgPool, GlobalAndErrors) {
  const int64_t N = 2, C = 3, H = 4, W = 5;
  Graph g;
  Tensor x = g.input("x", f32, {batch, C, H, W});
  Tensor y = global_avg_pool2d(x);
  EXPECT_EQ(y.shape(), (Shape{batch, C}));
  std::vector<float> xv = rnd(N * C * H * W, -1.f, 1.f, 4);
  Session s(g);
  auto out = s.function({"p", {x}, {{y}}, {}})({Array::from(xv, {N, C, H, W})})[0].to_vector<float>();
  std::vector<double> want;
  for (int64_t pl = 0; pl < N * C; ++pl) {
    double acc = 0;
    for (int64_t i = 0; i < H * W; ++i) acc += xv[static_cast<size_t>(pl * H * W + i)];
    want.push_back(acc / (H * W));
  }
  expect_close(out, want, 1e-6, "global_avg_pool2d");
  EXPECT_THROW(avg_pool2d(x, 2, 2, 2), ShapeError);  // padding over k / 2
  EXPECT_THROW(avg_pool2d(x, 6), ShapeError);        // window larger than the input
  EXPECT_THROW(avg_pool2d(g.input("v", f32, {batch, 3}), 2), ShapeError);
  EXPECT_THROW(global_avg_pool2d(g.input("w", f32, {batch, 3, 4})), ShapeError);
}

TEST(Conv2dStrides, ResNetShapesMatchReference) {
  // 3x3 stride 2 pad 1, 1x1 stride 2 (shortcut), 1x1 stride 1 (the input is
  // its own column matrix: no im2col), odd and even sizes.
  struct P { int64_t k, s, p, h, w; };
  for (P q : {P{3, 2, 1, 7, 8}, P{3, 2, 1, 8, 8}, P{1, 2, 0, 7, 6}, P{1, 1, 0, 5, 3}}) {
    const int64_t N = 2, C = 3, O = 4;
    Graph g;
    Tensor x = g.input("x", f32, {batch, C, q.h, q.w});
    Tensor w = g.variable("w", {O, C, q.k, q.k}, Init::uniform(-1, 1));
    Tensor y = conv2d(x, w, {.stride = static_cast<int>(q.s), .padding = static_cast<int>(q.p)});
    std::vector<float> xv = rnd(N * C * q.h * q.w, -1.f, 1.f, 8);
    Session s(g);
    auto out = s.function({"c", {x}, {{y}}, {}})({Array::from(xv, {N, C, q.h, q.w})})[0];
    auto wv = s.get("w").to_vector<float>();
    const int64_t OH = (q.h + 2 * q.p - q.k) / q.s + 1, OW = (q.w + 2 * q.p - q.k) / q.s + 1;
    ASSERT_EQ(out.shape(), (Shape{N, O, OH, OW}));
    std::vector<double> want;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            double acc = 0;
            for (int64_t c = 0; c < C; ++c)
              for (int64_t i = 0; i < q.k; ++i)
                for (int64_t j = 0; j < q.k; ++j) {
                  const int64_t ih = oh * q.s - q.p + i, iw = ow * q.s - q.p + j;
                  if (ih < 0 || ih >= q.h || iw < 0 || iw >= q.w) continue;
                  acc += static_cast<double>(xv[static_cast<size_t>(((n * C + c) * q.h + ih) * q.w + iw)]) *
                         wv[static_cast<size_t>(((o * C + c) * q.k + i) * q.k + j)];
                }
            want.push_back(acc);
          }
    expect_close(out.to_vector<float>(), want, 1e-5, "conv2d");
  }
}

TEST(Conv2dStrides, BiasFreeLayer) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3, 6, 6});
  nn::Conv2d c = nn::conv2d(g, "c", 3, 4, 1, {.stride = 2}, Init::uniform(-1, 1), Init::zeros(), false);
  ASSERT_EQ(c.params().size(), 1u);
  EXPECT_FALSE(g.contains("c/b"));
  Session s(g);
  Array xv = Array::from(rnd(2 * 3 * 36, -1.f, 1.f, 2), {2, 3, 6, 6});
  auto a = s.function({"a", {x}, {{c(x)}}, {}})({xv})[0].to_vector<float>();
  auto b = s.function({"b", {x}, {{conv2d(x, c.W, {.stride = 2})}}, {}})({xv})[0].to_vector<float>();
  EXPECT_EQ(a, b);
}

// CPU time of forward + backward (dx, dgamma, dbeta) of layer_norm on
// [128, 17, 64] and batch_norm on [128, 32, 14, 14]; a measurement, not a
// test (run with --gtest_also_run_disabled_tests).
TEST(NormTiming, DISABLED_ForwardBackward) {
  auto time = [](const char* what, Graph& g, Tensor x, Tensor y, std::vector<Tensor> params, Shape xs) {
    Tensor w = g.variable("w", xs, Init::uniform(-1, 1));
    Tensor loss = sum(y * w);
    std::vector<Tensor> wrt{x};
    wrt.insert(wrt.end(), params.begin(), params.end());
    auto gr = grad(loss, wrt);
    Session s(g);
    auto fwd = s.function({"f", {}, {{sum(y)}}, {}});
    std::vector<OutputSpec> outs;
    for (Tensor t : gr) outs.emplace_back(sum(t));
    auto both = s.function({"fb", {}, outs, {}});
    for (int i = 0; i < 3; ++i) both({});
    auto t0 = std::chrono::steady_clock::now();
    const int reps = 50;
    for (int i = 0; i < reps; ++i) fwd({});
    auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) both({});
    auto t2 = std::chrono::steady_clock::now();
    std::printf("%-34s forward %8.3f ms   forward+backward %8.3f ms\n", what,
                std::chrono::duration<double, std::milli>(t1 - t0).count() / reps,
                std::chrono::duration<double, std::milli>(t2 - t1).count() / reps);
  };
  {
    Graph g;
    Tensor x = g.variable("x", {128, 17, 64}, Init::uniform(-1, 1));
    Tensor gm = g.variable("gm", {64}, Init::uniform(0.5f, 1.5f)), bt = g.variable("bt", {64});
    time("layer_norm [128,17,64]", g, x, layer_norm(x, gm, bt), {gm, bt}, {128, 17, 64});
  }
  {
    Graph g;
    Tensor x = g.variable("x", {128, 32, 14, 14}, Init::uniform(-1, 1));
    Tensor gm = g.variable("gm", {32}, Init::uniform(0.5f, 1.5f)), bt = g.variable("bt", {32});
    Tensor rm = g.variable("rm", {32}), rv = g.variable("rv", {32}, Init::constant(1));
    time("batch_norm train [128,32,14,14]", g, x, batch_norm(x, gm, bt, rm, rv), {gm, bt}, {128, 32, 14, 14});
  }
  {
    Graph g;
    Tensor x = g.variable("x", {128, 32, 14, 14}, Init::uniform(-1, 1));
    time("global_avg_pool2d [128,32,14,14]", g, x, global_avg_pool2d(x), {}, {128, 32});
  }
}

}  // namespace
