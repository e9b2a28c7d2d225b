// The CPU executor as a whole: buffer planning (reuse gives the same results
// as no reuse), steady state (no scratch growth, identical repeated calls),
// batch size 0, input checking (and recovery after a bad call), update
// semantics, and Session variable access.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "exec/cpu/plan.hpp"
#include "synk/synk.hpp"

namespace {

using synk::Array;
using synk::Graph;
using synk::Tensor;
using synk::f32;
using synk::i32;

// Restores the process-wide planner switches when a test ends.
struct PlannerOptions {
  synk::cpu::CompileOptions saved = synk::cpu::default_compile_options();
  explicit PlannerOptions(bool reuse) {
    synk::cpu::default_compile_options().reuse = reuse;
    synk::cpu::default_compile_options().inplace_updates = reuse;
    synk::cpu::default_compile_options().fuse = reuse;
  }
  ~PlannerOptions() { synk::cpu::default_compile_options() = saved; }
};

// A small MLP with dropout, trained by Nesterov momentum.
struct Mlp {
  Graph g;
  Tensor x, y, loss, acc;
  std::vector<synk::Update> updates;
  std::vector<Tensor> params;
  Mlp() {
    x = g.input("x", f32, {synk::batch, 6});
    y = g.input("y", i32, {synk::batch});
    auto l1 = synk::nn::dense(g, "l1", 6, 16);
    auto l2 = synk::nn::dense(g, "l2", 16, 4);
    Tensor logits = l2(synk::dropout(synk::relu(l1(x)), 0.3f));
    loss = synk::mean(synk::softmax_cross_entropy(logits, y));
    acc = synk::mean(synk::cast(synk::equal(synk::argmax(logits, 1), y), f32));
    params = {l1.W, l1.b, l2.W, l2.b};
    auto grads = synk::grad(loss, params);
    updates = synk::optim::nesterov(params, grads, {.lr = 0.1f, .momentum = 0.9f});
  }
};

Array batch_x(int rows, float phase) {
  std::vector<float> v(static_cast<size_t>(rows) * 6);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.7f * static_cast<float>(i) + phase);
  return Array::from(v, {rows, 6});
}

// Labels that are a function of the features of batch_x(rows, phase), so
// that the model can learn them.
Array batch_y(int rows, float phase = 0.f) {
  Array x = batch_x(rows, phase);
  const float* xv = x.data<float>();
  std::vector<int32_t> v(static_cast<size_t>(rows));
  for (size_t i = 0; i < v.size(); ++i) v[i] = (xv[i * 6] > 0.f ? 1 : 0) + (xv[i * 6 + 1] > 0.f ? 2 : 0);
  return Array::from(v, {rows});
}

// Runs a few training steps (varying batch sizes) and returns every output
// and final parameter, flattened.
std::vector<float> train_trace(bool reuse, size_t* scratch = nullptr) {
  PlannerOptions po(reuse);
  Mlp m;
  synk::Session s(m.g, {.seed = 3});
  auto train = s.function({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}, {m.acc}}, .updates = m.updates});
  std::vector<float> trace;
  const int sizes[] = {8, 8, 5, 8, 1, 0, 8};
  for (int i = 0; i < 7; ++i) {
    auto r = train({batch_x(sizes[i], static_cast<float>(i)), batch_y(sizes[i], static_cast<float>(i))});
    trace.push_back(r[0].scalar());
    trace.push_back(r[1].scalar());
  }
  for (const Tensor& p : m.params)
    for (float v : s.get(p.name()).to_vector<float>()) trace.push_back(v);
  if (scratch) *scratch = s.scratch_bytes();
  return trace;
}

TEST(Executor, BufferReuseMatchesNoReuse) {
  size_t with = 0, without = 0;
  auto a = train_trace(true, &with);
  auto b = train_trace(false, &without);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) {
      EXPECT_TRUE(std::isnan(b[i])) << i;  // mean over a batch of 0
    } else {
      EXPECT_EQ(a[i], b[i]) << i;
    }
  }
  EXPECT_LT(with, without);
  EXPECT_GT(with, 0u);
}

// A small CNN (conv + bias + ReLU + pool, twice, then dense): its training
// trace with fusion and buffer reuse equals the one without.
std::vector<float> cnn_trace(bool optimise) {
  PlannerOptions po(optimise);
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 2, 9, 9});
  auto y = g.input("y", i32, {synk::batch});
  auto c1 = synk::nn::conv2d(g, "c1", 2, 3, 3, {.stride = 1, .padding = 1}, synk::Init::glorot_uniform(),
                             synk::Init::uniform(-0.1f, 0.1f));
  auto c2 = synk::nn::conv2d(g, "c2", 3, 4, 2, {.stride = 2, .padding = 0}, synk::Init::glorot_uniform(),
                             synk::Init::uniform(-0.1f, 0.1f));
  auto d = synk::nn::dense(g, "d", 4 * 2 * 2, 3, synk::Init::glorot_uniform(), synk::Init::uniform(-0.1f, 0.1f));
  Tensor h = synk::max_pool2d(synk::relu(c1(x)), 2);         // [B,3,4,4]
  h = synk::relu(c2(h));                                      // [B,4,2,2]
  Tensor logits = d(synk::flatten(h));
  Tensor loss = synk::mean(synk::softmax_cross_entropy(logits, y));
  std::vector<Tensor> params = {c1.W, c1.b, c2.W, c2.b, d.W, d.b};
  auto ups = synk::optim::nesterov(params, synk::grad(loss, params), {.lr = 0.05f, .momentum = 0.9f});
  synk::Session s(g, {.seed = 11});
  auto train = s.function({.name = "cnn", .inputs = {x, y}, .outputs = {{loss}, {h}}, .updates = ups});
  std::vector<float> trace;
  for (int step = 0; step < 4; ++step) {
    const int rows = step == 2 ? 3 : 5;
    std::vector<float> xv(static_cast<size_t>(rows) * 2 * 81);
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::cos(0.37f * static_cast<float>(i) + static_cast<float>(step));
    std::vector<int32_t> yv(static_cast<size_t>(rows));
    for (size_t i = 0; i < yv.size(); ++i) yv[i] = static_cast<int32_t>((i + static_cast<size_t>(step)) % 3);
    auto r = train({Array::from(xv, {rows, 2, 9, 9}), Array::from(yv, {rows})});
    for (const Array& a : r)
      for (float v : a.to_vector<float>()) trace.push_back(v);
  }
  for (const Tensor& p : params)
    for (float v : s.get(p.name()).to_vector<float>()) trace.push_back(v);
  return trace;
}

TEST(Executor, FusionAndReuseMatchPlainPlan) {
  auto a = cnn_trace(true);
  auto b = cnn_trace(false);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << i;
}

TEST(Executor, TrainingReducesLoss) {
  Mlp m;
  synk::Session s(m.g, {.seed = 5});
  auto train = s.function({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .updates = m.updates});
  Array x = batch_x(32, 0.f), y = batch_y(32);
  const float first = train({x, y})[0].scalar();
  float last = first;
  for (int i = 0; i < 60; ++i) last = train({x, y})[0].scalar();
  EXPECT_LT(last, first * 0.7f);
}

TEST(Executor, RepeatedCallsIdenticalAndNoScratchGrowth) {
  Mlp m;
  synk::Session s(m.g, {.seed = 1});
  auto eval = s.function({.name = "eval", .inputs = {m.x, m.y}, .outputs = {{m.loss}, {m.acc}}});
  Array x = batch_x(16, 0.3f), y = batch_y(16, 0.3f);
  eval({x, y});
  const size_t scratch = s.scratch_bytes();
  EXPECT_GT(scratch, 0u);
  for (int i = 0; i < 5; ++i) {
    eval({x, y});
    EXPECT_EQ(s.scratch_bytes(), scratch);
  }
  // A smaller batch fits in the arena already planned.
  eval({batch_x(3, 0.f), batch_y(3)});
  EXPECT_EQ(s.scratch_bytes(), scratch);
  eval({x, y});
  EXPECT_EQ(s.scratch_bytes(), scratch);
}

TEST(Executor, DeterministicFunctionGivesIdenticalOutputs) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch, 5});
  auto d = synk::nn::dense(g, "d", 5, 3, synk::Init::uniform(-1, 1), synk::Init::uniform(-1, 1));
  auto out = synk::softmax(synk::tanh(d(x)) * 2.f);
  synk::Session s(g, {.seed = 9});
  auto f = s.function({.name = "f", .inputs = {x}, .outputs = {{out}, {synk::sum(out, {0})}}});
  Array xv = batch_x(7, 0.f);
  Array xv5 = Array::from(std::vector<float>(xv.data<float>(), xv.data<float>() + 35), {7, 5});
  auto a = f({xv5});
  for (int i = 0; i < 3; ++i) {
    auto b = f({xv5});
    EXPECT_EQ(a[0].to_vector<float>(), b[0].to_vector<float>());
    EXPECT_EQ(a[1].to_vector<float>(), b[1].to_vector<float>());
  }
  // Columns of the batch sum of a softmax add up to the row count.
  auto cols = a[1].to_vector<float>();
  EXPECT_NEAR(cols[0] + cols[1] + cols[2], 7.f, 1e-4f);
}

TEST(Executor, ZeroBatch) {
  Mlp m;
  synk::Session s(m.g, {.seed = 2});
  auto train = s.function({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .updates = m.updates});
  auto r = train({Array::zeros(f32, {0, 6}), Array::zeros(i32, {0})});
  EXPECT_TRUE(std::isnan(r[0].scalar()));  // mean over no rows
  // The next call with rows works.
  auto r2 = train({batch_x(4, 0.f), batch_y(4)});
  EXPECT_EQ(r2.size(), 1u);
}

TEST(Executor, BadInputsThrowAndNextCallWorks) {
  Mlp m;
  synk::Session s(m.g, {.seed = 2});
  auto train = s.function({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .updates = m.updates});
  Array x = batch_x(4, 0.f), y = batch_y(4);
  const auto w0 = s.get("l1/W").to_vector<float>();

  EXPECT_THROW(train({x}), synk::ArgumentError);                                    // count
  EXPECT_THROW(train({Array::zeros(i32, {4, 6}), y}), synk::ArgumentError);         // dtype
  EXPECT_THROW(train({Array::zeros(f32, {4, 5}), y}), synk::ShapeError);            // dim
  EXPECT_THROW(train({Array::zeros(f32, {4, 6, 1}), y}), synk::ShapeError);         // rank
  try {
    train({x, batch_y(3)});
    FAIL() << "expected ShapeError";
  } catch (const synk::ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'y'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("train"), std::string::npos) << msg;
  }
  // A label out of range fails inside a kernel: named function and op, and
  // no update is applied.
  try {
    train({x, Array::from(std::vector<int32_t>{0, 1, 9, 2}, {4})});
    FAIL() << "expected ArgumentError";
  } catch (const synk::ArgumentError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("function 'train'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("softmax_cross_entropy"), std::string::npos) << msg;
  }
  EXPECT_EQ(s.get("l1/W").to_vector<float>(), w0);

  auto r = train({x, y});
  EXPECT_TRUE(std::isfinite(r[0].scalar()));
  EXPECT_NE(s.get("l1/W").to_vector<float>(), w0);
}

TEST(Executor, UpdatesAppliedAfterOutputs) {
  Graph g;
  auto w = g.variable("w", {3}, synk::Init::constant(1.f));
  auto v = g.variable("v", {3}, synk::Init::constant(10.f));
  synk::Session s(g);
  // Outputs see the old values; each update reads old values even though
  // the other variable is updated by the same call.
  auto f = s.function({.name = "f", .inputs = {}, .outputs = {{w}, {v * 1.f}},
                       .updates = {{w, w + v}, {v, w * 2.f}}});
  auto r = f({});
  EXPECT_EQ(r[0].to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(r[1].to_vector<float>(), (std::vector<float>{10, 10, 10}));
  EXPECT_EQ(s.get("w").to_vector<float>(), (std::vector<float>{11, 11, 11}));
  EXPECT_EQ(s.get("v").to_vector<float>(), (std::vector<float>{2, 2, 2}));
  f({});
  EXPECT_EQ(s.get("w").to_vector<float>(), (std::vector<float>{13, 13, 13}));
  EXPECT_EQ(s.get("v").to_vector<float>(), (std::vector<float>{22, 22, 22}));
}

TEST(Executor, SwapUpdates) {
  Graph g;
  auto a = g.variable("a", {2}, synk::Init::constant(1.f));
  auto b = g.variable("b", {2}, synk::Init::constant(2.f));
  synk::Session s(g);
  auto f = s.function({.name = "swap", .inputs = {}, .outputs = {}, .updates = {{a, b}, {b, a}}});
  f({});
  EXPECT_EQ(s.get("a").to_vector<float>(), (std::vector<float>{2, 2}));
  EXPECT_EQ(s.get("b").to_vector<float>(), (std::vector<float>{1, 1}));
}

TEST(Executor, NesterovUpdateValues) {
  // p' = p + mu*v' - lr*g with v' = mu*v - lr*g; g = d(sum(p*x))/dp = x.
  Graph g;
  auto x = g.input("x", f32, {2});
  auto p = g.variable("p", {2}, synk::Init::constant(1.f));
  auto loss = synk::sum(p * x);
  auto grads = synk::grad(loss, {p});
  auto ups = synk::optim::nesterov({p}, grads, {.lr = 0.5f, .momentum = 0.5f});
  synk::Session s(g);
  auto f = s.function({.name = "step", .inputs = {x}, .outputs = {{loss}}, .updates = ups});
  Array xv = Array::from(std::vector<float>{1.f, 2.f}, {2});
  EXPECT_FLOAT_EQ(f({xv})[0].scalar(), 3.f);
  // v' = -0.5*x = [-0.5, -1]; p' = 1 + 0.5*v' - 0.5*x = [0.25, -0.5]
  EXPECT_EQ(s.get("p").to_vector<float>(), (std::vector<float>{0.25f, -0.5f}));
  EXPECT_EQ(s.get("p/velocity").to_vector<float>(), (std::vector<float>{-0.5f, -1.f}));
  f({xv});
  // v'' = 0.5*v' - 0.5*x = [-0.75, -1.5]; p'' = p' + 0.5*v'' - 0.5*x = [-0.625, -2.25]
  EXPECT_EQ(s.get("p/velocity").to_vector<float>(), (std::vector<float>{-0.75f, -1.5f}));
  EXPECT_EQ(s.get("p").to_vector<float>(), (std::vector<float>{-0.625f, -2.25f}));
}

TEST(Executor, OutputOfReshapedInputAndVariable) {
  Graph g;
  auto x = g.input("x", f32, {2, 2});
  auto w = g.variable("w", {2, 2}, synk::Init::constant(3.f));
  synk::Session s(g);
  auto f = s.function({.name = "f", .inputs = {x}, .outputs = {{synk::reshape(x, {4})}, {synk::reshape(w, {4})}, {x}},
                       .updates = {{w, w * 2.f}}});
  auto r = f({Array::from(std::vector<float>{1, 2, 3, 4}, {2, 2})});
  EXPECT_EQ(r[0].shape(), (synk::Shape{4}));
  EXPECT_EQ(r[0].to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(r[1].to_vector<float>(), (std::vector<float>{3, 3, 3, 3}));
  EXPECT_EQ(r[2].to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(s.get("w").to_vector<float>(), (std::vector<float>{6, 6, 6, 6}));
}

TEST(Executor, ScratchReuseShrinksChains) {
  // A long chain of same-size elementwise ops needs a couple of buffers with
  // reuse, one per op without.
  auto build_and_run = [](bool reuse) {
    PlannerOptions po(reuse);
    Graph g;
    auto x = g.input("x", f32, {1024});
    Tensor h = x;
    for (int i = 0; i < 10; ++i) h = synk::tanh(h * 1.5f) + 0.25f;
    synk::Session s(g);
    auto f = s.function({.name = "chain", .inputs = {x}, .outputs = {{h}}});
    auto r = f({Array::from(std::vector<float>(1024, 0.5f), {1024})});
    return std::make_pair(s.scratch_bytes(), r[0].to_vector<float>());
  };
  auto [with, a] = build_and_run(true);
  auto [without, b] = build_and_run(false);
  EXPECT_EQ(a, b);
  EXPECT_LE(with, 2u * 4096u);
  EXPECT_GE(without, 30u * 4096u);
}

TEST(Session, VariablesGetSetAndInit) {
  Graph g;
  auto w = g.variable("w", {2, 3}, synk::Init::uniform(-1, 1));
  auto k = g.variable("k", {2}, synk::Init::zeros(), i32);
  (void)k;
  synk::Session s1(g, {.seed = 4}), s2(g, {.seed = 4}), s3(g, {.seed = 5});
  EXPECT_EQ(s1.get("w").to_vector<float>(), s2.get("w").to_vector<float>());
  EXPECT_NE(s1.get("w").to_vector<float>(), s3.get("w").to_vector<float>());
  for (float v : s1.get("w").to_vector<float>()) {
    EXPECT_GE(v, -1.f);
    EXPECT_LT(v, 1.f);
  }
  s1.set("w", Array::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}));
  EXPECT_EQ(s1.get("w").to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(static_cast<float*>(s1.variable_data(w.id()))[5], 6.f);
  EXPECT_THROW(s1.set("w", Array::zeros(f32, {3, 2})), synk::ShapeError);
  EXPECT_THROW(s1.set("w", Array::zeros(i32, {2, 3})), synk::ArgumentError);
  EXPECT_THROW(s1.set("nope", Array::zeros(f32, {2, 3})), synk::ArgumentError);
  EXPECT_THROW(s1.get("nope"), synk::ArgumentError);
  EXPECT_THROW(s1.variable_data(-1), synk::ArgumentError);
  EXPECT_EQ(s1.get("k").dtype(), i32);

  auto f = s1.function({.name = "f", .inputs = {}, .outputs = {{synk::sum(w)}}});
  EXPECT_FLOAT_EQ(f({})[0].scalar(), 21.f);
  EXPECT_EQ(f.def().name, "f");
}

TEST(Session, FunctionFromDef) {
  Graph g;
  auto x = g.input("x", f32, {synk::batch});
  auto y = x * 2.f;
  synk::Session s(g);
  synk::FunctionDef def = synk::make_function_def({.name = "double", .inputs = {x}, .outputs = {{y}}});
  auto f = s.function(def);
  EXPECT_EQ(f({Array::from(std::vector<float>{1, 2}, {2})})[0].to_vector<float>(), (std::vector<float>{2, 4}));
  synk::FunctionDef bad = def;
  bad.outputs = {12345};
  EXPECT_ANY_THROW(s.function(bad));
}

}  // namespace
