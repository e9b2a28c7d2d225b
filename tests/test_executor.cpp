// The CPU executor as a whole: buffer planning (reuse gives the same results
// as no reuse), steady state (no scratch growth, identical repeated calls),
// batch size 0, input checking (and recovery after a bad call), update
// semantics, and Session variable access.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "exec/cpu/executor.hpp"
#include "exec/executor.hpp"
#include "exec/plan/plan.hpp"
#include "graph/internal.hpp"
#include "support/rank_memory.hpp"
#include "synk/synk.hpp"

namespace {

using synk::Array;
using synk::Graph;
using synk::Tensor;
using synk::f32;
using synk::i32;

// Restores the process-wide planner switches when a test ends.
struct PlannerOptions {
  synk::plan::CompileOptions saved = synk::plan::default_compile_options();
  explicit PlannerOptions(bool reuse) {
    synk::plan::default_compile_options().reuse = reuse;
    synk::plan::default_compile_options().inplace_updates = reuse;
    synk::plan::default_compile_options().fuse = reuse;
  }
  ~PlannerOptions() { synk::plan::default_compile_options() = saved; }
};

// A small MLP with dropout, trained by Nesterov momentum.
struct Mlp {
  Graph g;
  Tensor x, y, loss, acc;
  std::vector<synk::Update> updates;
  std::vector<Tensor> params;
  explicit Mlp(bool with_updates = true) {
    x = g.input("x", f32, {synk::batch, 6});
    y = g.input("y", i32, {synk::batch});
    auto l1 = synk::nn::dense(g, "l1", 6, 16);
    auto l2 = synk::nn::dense(g, "l2", 16, 4);
    Tensor logits = l2(synk::dropout(synk::relu(l1(x)), 0.3f));
    loss = synk::mean(synk::softmax_cross_entropy(logits, y));
    acc = synk::mean(synk::cast(synk::equal(synk::argmax(logits, 1), y), f32));
    params = {l1.W, l1.b, l2.W, l2.b};
    auto grads = synk::grad(loss, params);
    if (with_updates) updates = synk::optim::nesterov(params, grads, {.lr = 0.1f, .momentum = 0.9f});
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

// An input listed in a function but read by no output or update (issue 16,
// item 1; the CUDA half is GpuSession.UnusedInputOfManyFloats): the call
// takes and checks it, and computes the rest as without it.
TEST(Executor, UnusedInputOfManyFloats) {
  Graph g;
  Tensor u = g.input("u", f32, {synk::batch, 300});
  Tensor x = g.input("x", f32, {synk::batch, 3});
  Tensor w = g.variable("w", {3}, synk::Init::constant(1.f));
  synk::Session s(g, {.seed = 1});
  auto f = s.function({.name = "unused", .inputs = {u, x}, .outputs = {{synk::sum(x * w)}, {x}},
                       .updates = {{w, w + synk::sum(x, {0})}}});
  const Array uv = Array::from(std::vector<float>(4 * 300, 7.f), {4, 300});
  const Array xv = Array::from(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {4, 3});
  auto r = f({uv, xv});
  EXPECT_EQ(r[0].scalar(), 78.f);
  EXPECT_EQ(r[1].to_vector<float>(), xv.to_vector<float>());
  EXPECT_EQ(s.get("w").to_vector<float>(), (std::vector<float>{23.f, 27.f, 31.f}));
  EXPECT_EQ(f({uv, xv})[0].scalar(), 23.f * 22 + 27.f * 26 + 31.f * 30);  // with the updated w
  EXPECT_THROW(f({Array::zeros(f32, {4, 299}), xv}), synk::ShapeError);  // still checked
}

// A call refused for an out-of-range label counts as a call: the dropout
// masks after it are those of the next call number. This is the reference
// the CUDA session keeps in step with (issue 16, item 5; the CUDA half is
// GpuGraphReplay.DropoutMasksStayInStepAfterARefusedCall).
TEST(Executor, CallRefusedForALabelCountsForDropout) {
  Graph g;
  Tensor x = g.input("x", f32, {synk::batch, 64});
  Tensor y = g.input("y", i32, {synk::batch});
  Tensor d = synk::dropout(x, 0.5f);
  synk::FunctionSpec spec{.name = "drop", .inputs = {x, y},
                          .outputs = {{d}, {synk::mean(synk::softmax_cross_entropy(d, y))}}, .updates = {}};
  const Array ones = Array::from(std::vector<float>(2 * 64, 1.f), {2, 64});
  const Array good = Array::from(std::vector<int32_t>{0, 63}, {2});
  const Array bad = Array::from(std::vector<int32_t>{0, 64}, {2});
  synk::Session a(g, {.seed = 5}), b(g, {.seed = 5});
  auto fa = a.function(spec), fb = b.function(spec);
  const std::vector<float> first = fa({ones, good})[0].to_vector<float>();
  EXPECT_THROW(fa({ones, bad}), synk::ArgumentError);
  const std::vector<float> after = fa({ones, good})[0].to_vector<float>();
  std::vector<std::vector<float>> masks;
  for (int call = 0; call < 3; ++call) masks.push_back(fb({ones, good})[0].to_vector<float>());
  EXPECT_EQ(first, masks[0]);
  EXPECT_NE(after, masks[1]) << "the refused call did not count";
  EXPECT_EQ(after, masks[2]);
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

// ---- fused elementwise groups and call_into ------------------------------------------

namespace {

// Switches the CPU-only elementwise fusion for one test.
struct ElementwiseFusion {
  bool saved = synk::cpu::cpu_fuse_elementwise();
  explicit ElementwiseFusion(bool on) { synk::cpu::cpu_fuse_elementwise() = on; }
  ~ElementwiseFusion() { synk::cpu::cpu_fuse_elementwise() = saved; }
};

// Training trace of the Mlp under an optimizer, with fusion on or off.
template <class Opt>
std::vector<float> optim_trace(bool fuse, Opt opt) {
  ElementwiseFusion ef(fuse);
  Mlp m(false);
  auto ups = opt(m.params, synk::grad(m.loss, m.params));
  synk::Session s(m.g, {.seed = 5});
  auto train = s.function({.name = "t", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .updates = ups});
  std::vector<float> trace;
  for (int i = 0; i < 5; ++i) {
    const int rows = i == 3 ? 3 : 8;
    trace.push_back(train({batch_x(rows, static_cast<float>(i)), batch_y(rows, static_cast<float>(i))})[0].scalar());
  }
  for (const Tensor& p : m.params)
    for (float v : s.get(p.name()).to_vector<float>()) trace.push_back(v);
  return trace;
}

template <class Opt>
void expect_fusion_bit_identical(Opt opt) {
  auto a = optim_trace(true, opt);
  auto b = optim_trace(false, opt);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << i;
}

}  // namespace

// Fused groups compute every op as its own kernel would, in the same order:
// the results are bit-identical (Nesterov has its own loop; Adam and RMSprop
// go through the interpreter, with sqrt, div and scalar operands).
TEST(ExecutorFusion, NesterovBitIdentical) {
  expect_fusion_bit_identical([](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
    return synk::optim::nesterov(p, g, {.lr = 0.1f, .momentum = 0.9f});
  });
}
TEST(ExecutorFusion, AdamBitIdentical) {
  expect_fusion_bit_identical([](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
    return synk::optim::adam(p, g, {.lr = 0.01f});
  });
}
TEST(ExecutorFusion, RmspropAndMomentumBitIdentical) {
  expect_fusion_bit_identical([](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
    auto u = synk::optim::rmsprop({p[0], p[1]}, {g[0], g[1]}, {.lr = 0.01f});
    auto w = synk::optim::momentum({p[2], p[3]}, {g[2], g[3]}, {.lr = 0.05f, .momentum = 0.8f});
    u.insert(u.end(), w.begin(), w.end());
    return u;
  });
}

// Every elementwise formula (kernels/elementwise.hpp), Pow's special cases
// and operand forms (tensor, scalar on either side) included, gives the same
// bits fused and as its own kernel. Each op sits in a group of three (the
// fused groups' minimum), checked to be fused; the inputs hold negatives,
// zeros and huge values, so NaN and infinities come out too (compared as bits).
TEST(ExecutorFusion, EveryElementwiseFormulaBitIdentical) {
  const int64_t n = 1031;  // odd: a partial chunk and SIMD tail
  std::vector<float> xv(n), yv(n);
  for (int64_t i = 0; i < n; ++i) {
    xv[i] = static_cast<float>(i % 97 - 48) * 0.37f;
    yv[i] = i % 13 == 0 ? 0.f : (i % 17 == 0 ? 3e38f : static_cast<float>(i % 29 - 10) * 0.61f);
  }
  using Fn = std::function<Tensor(Tensor)>;
  const std::vector<std::pair<std::string, Fn>> ops = {
      {"neg", [](Tensor t) { return synk::neg(t); }},
      {"relu", [](Tensor t) { return synk::relu(t); }},
      {"tanh", [](Tensor t) { return synk::tanh(t); }},
      {"sigmoid", [](Tensor t) { return synk::sigmoid(t); }},
      {"exp", [](Tensor t) { return synk::exp(t); }},
      {"log", [](Tensor t) { return synk::log(t); }},
      {"sqrt", [](Tensor t) { return synk::sqrt(t); }},
      {"square", [](Tensor t) { return synk::square(t); }},
      {"pow 2", [](Tensor t) { return synk::pow(t, 2.f); }},
      {"pow 1", [](Tensor t) { return synk::pow(t, 1.f); }},
      {"pow 0.5", [](Tensor t) { return synk::pow(t, 0.5f); }},
      {"pow -1", [](Tensor t) { return synk::pow(t, -1.f); }},
      {"pow 3", [](Tensor t) { return synk::pow(t, 3.f); }},
      {"pow 0.3", [](Tensor t) { return synk::pow(t, 0.3f); }},
      {"t - s", [](Tensor t) { return t - 1.5f; }},
      {"s - t", [](Tensor t) { return 1.5f - t; }},
      {"t / s", [](Tensor t) { return t / 0.7f; }},
      {"s / t", [](Tensor t) { return 0.7f / t; }},
      {"t * s", [](Tensor t) { return t * 3.f; }},
      {"s + t", [](Tensor t) { return 2.f + t; }},
      {"relu_grad", [](Tensor t) { return synk::relu_grad(t, t * t); }},
      {"gelu", [](Tensor t) { return synk::gelu(t); }},
      {"gelu tanh", [](Tensor t) { return synk::gelu(t, true); }},
      {"abs", [](Tensor t) { return synk::abs(t); }},
      {"sin", [](Tensor t) { return synk::sin(t); }},
      {"cos", [](Tensor t) { return synk::cos(t); }},
      {"clip", [](Tensor t) { return synk::clip(t, -2.5f, 4.f); }},
      {"clip_mask", [](Tensor t) { return synk::clip_mask(t, -2.5f, 4.f); }},
      {"maximum t s", [](Tensor t) { return synk::maximum(t, 0.5f); }},
      {"minimum s t", [](Tensor t) { return synk::minimum(0.5f, t); }},
      {"maximum t t", [](Tensor t) { return synk::maximum(t, t * 0.5f); }},
      {"minimum t t", [](Tensor t) { return synk::minimum(t * -1.f, t); }},
      {"gelu_grad", [](Tensor t) { return synk::gelu_grad(t, t * 0.5f, false); }},
      {"gelu_tanh_grad", [](Tensor t) { return synk::gelu_grad(t, t * 0.5f, true); }},
      {"abs_grad", [](Tensor t) { return synk::abs_grad(t, t * 0.5f); }},
      {"maximum_grad_mask", [](Tensor t) { return synk::maximum_grad_mask(t, t * t); }},
  };
  auto bits = [](const Array& a) {
    std::vector<uint32_t> b(static_cast<size_t>(a.numel()));
    std::memcpy(b.data(), a.raw(), b.size() * sizeof(uint32_t));
    return b;
  };
  for (const auto& [name, op] : ops) {
    SCOPED_TRACE(name);
    Graph g;
    Tensor x = g.input("x", f32, {n}), y = g.input("y", f32, {n});
    // Three members or more: the op between a binary before and after it.
    Tensor out = op(x * y) / y;
    std::vector<Array> res[2];
    for (int fuse = 0; fuse < 2; ++fuse) {
      ElementwiseFusion ef(fuse != 0);
      synk::Session s(g);
      auto f = s.function({.name = "f", .inputs = {x, y}, .outputs = {{out}}});
      const Array xa = Array::from(xv, {n}), ya = Array::from(yv, {n});
      res[fuse] = f({xa, ya});
    }
    EXPECT_EQ(bits(res[0][0]), bits(res[1][0]));
    synk::plan::CompileOptions o;
    o.fuse_elementwise = true;
    const synk::FunctionDef def = synk::make_function_def({.name = "f", .inputs = {x, y}, .outputs = {{out}}});
    const synk::plan::Plan p = synk::plan::compile(g.nodes(), def, -1, o);
    ASSERT_EQ(p.steps.size(), 1u);
    EXPECT_GE(p.steps[0].fused, 0);
  }
}

// The planner makes fused steps only when asked (the CUDA executor compiles
// with the defaults and must never see one), and a Nesterov update becomes
// one step per parameter, written in place into both variables.
TEST(ExecutorFusion, PlanHasFusedStepsOnlyWhenAsked) {
  Graph g;
  Tensor w = g.variable("w", {300}, synk::Init::uniform(-1.f, 1.f));
  Tensor gi = g.input("g", f32, {300});
  auto ups = synk::optim::nesterov({w}, {gi}, {.lr = 0.5f, .momentum = 0.25f});
  synk::FunctionDef def = synk::make_function_def({.name = "u", .inputs = {gi}, .updates = ups});
  synk::plan::CompileOptions plain;
  EXPECT_FALSE(plain.fuse_elementwise);
  synk::plan::Plan a = synk::plan::compile(g.nodes(), def, -1, plain);
  EXPECT_TRUE(a.fused.empty());
  for (const auto& s : a.steps) EXPECT_LT(s.fused, 0);
  plain.fuse_elementwise = true;
  synk::plan::Plan b = synk::plan::compile(g.nodes(), def, -1, plain);
  ASSERT_EQ(b.steps.size(), 1u);
  ASSERT_EQ(b.fused.size(), 1u);
  EXPECT_EQ(b.fused[0].pattern, synk::plan::EwProgram::Nesterov);
  EXPECT_TRUE(b.copies.empty());  // both updates written in place

  // Hand-computed: w' = w + (v2*mu - g*lr) with v2 = v*mu - g*lr, v = 0 first.
  ElementwiseFusion ef(true);
  synk::Session s(g, {.seed = 2});
  auto upd = s.function(def);
  std::vector<float> w0 = s.get("w").to_vector<float>(), gv(300);
  for (size_t i = 0; i < gv.size(); ++i) gv[i] = 0.01f * static_cast<float>(i) - 1.f;
  upd({Array::from(gv, {300})});
  upd({Array::from(gv, {300})});
  std::vector<float> w2 = s.get("w").to_vector<float>(), v2 = s.get("w/velocity").to_vector<float>();
  for (size_t i = 0; i < gv.size(); ++i) {
    const float st = gv[i] * 0.5f;
    float v = 0.f * 0.25f - st, w = w0[i] + (v * 0.25f - st);
    v = v * 0.25f - st;
    w = w + (v * 0.25f - st);
    EXPECT_EQ(v2[i], v) << i;
    EXPECT_EQ(w2[i], w) << i;
  }
}

// Two runs' values bit for bit (the first few differences named).
static void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  int64_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && diff++ < 5) ADD_FAILURE() << "differ at " << i;
  EXPECT_EQ(diff, 0);
}

// A residual block's tail on activations past the cache: relu(batch_norm(x))
// runs as one step (the ReLU folded into the normalising pass,
// CompileOptions::fuse_norm_relu), and relu(h + x), a group of two, fuses
// because it is large (a pass over memory fewer). Both give the same bits
// as the plain ops, forward and backward, in training and evaluation.
TEST(ExecutorFusion, BatchNormReluAndLargePairsFoldBitIdentical) {
  const int64_t n = 8, c = 4, h = 180, w = 200;  // 1.15M elements: past kBigGroup
  auto run = [&](bool fuse) {
    ElementwiseFusion ef(fuse);
    Graph g;
    Tensor x = g.input("x", f32, {synk::batch, c, h, w});
    auto bn = synk::nn::batch_norm(g, "bn", c);
    auto block = [&](bool training) { return synk::relu(synk::relu(bn(x, training)) + x); };
    Tensor z = block(true);
    Tensor loss = synk::mean(z);
    std::vector<Tensor> params = {bn.gamma, bn.beta};
    auto grads = synk::grad(loss, params);
    auto ups = synk::optim::momentum(params, grads, {.lr = 0.1f, .momentum = 0.9f});
    synk::Session s(g, {.seed = 4});
    auto train = s.function({.name = "train", .inputs = {x}, .outputs = {{z}, {loss}}, .updates = ups});
    auto eval = s.function({.name = "eval", .inputs = {x}, .outputs = {{block(false)}}});
    std::vector<float> trace;
    std::vector<float> xv(static_cast<size_t>(n * c * h * w));
    for (int step = 0; step < 2; ++step) {
      for (size_t i = 0; i < xv.size(); ++i)
        xv[i] = std::sin(0.013f * static_cast<float>(i) + static_cast<float>(step)) * 2.f - 0.3f;
      xv[5] = std::numeric_limits<float>::quiet_NaN();  // NaN through both ReLUs, as the ReLU op
      auto out = train({Array::from(xv, {n, c, h, w})});
      for (const Array& a : out)
        for (float v : a.to_vector<float>()) trace.push_back(v);
    }
    for (float v : eval({Array::from(xv, {n, c, h, w})})[0].to_vector<float>()) trace.push_back(v);
    for (const Tensor& p : params)
      for (float v : s.get(p.name()).to_vector<float>()) trace.push_back(v);
    // The plan folds both ReLUs only when fusing.
    synk::FunctionDef def = synk::make_function_def({.name = "f", .inputs = {x}, .outputs = {{z}}});
    synk::plan::Plan p = synk::plan::compile(g.nodes(), def, n, synk::cpu::cpu_session_options());
    int folded = 0, plain_relu = 0, fused = 0;
    for (const auto& st : p.steps) {
      folded += st.op == synk::Op::BatchNorm && st.relu;
      plain_relu += st.fused < 0 && st.op == synk::Op::Relu;
      fused += st.fused >= 0;
    }
    EXPECT_EQ(folded, fuse ? 1 : 0);
    EXPECT_EQ(plain_relu, fuse ? 0 : 2);
    EXPECT_EQ(fused > 0, fuse);
    return trace;
  };
  expect_same_bits(run(true), run(false));
}

// The large-pair rule is for memory-bound ops only: a GELU (or its
// gradient) beside one other op over 1M elements keeps its own vector loop,
// which the interpreter does not match; an add + ReLU pair still fuses.
TEST(ExecutorFusion, LargePairsWithAGeluKeepTheirOwnLoops) {
  Graph g;
  Tensor x = g.input("x", f32, {synk::batch, 1200, 1000});
  Tensor y = g.input("y", f32, {synk::batch, 1200, 1000});
  Tensor gl = synk::gelu(x) * y;          // a pair with a GELU
  Tensor ar = synk::relu(x + y);          // a memory-bound pair
  synk::FunctionDef def = synk::make_function_def({.name = "f", .inputs = {x, y}, .outputs = {{gl}, {ar}}});
  synk::plan::CompileOptions o = synk::plan::default_compile_options();
  o.fuse_elementwise = true;
  synk::plan::Plan p = synk::plan::compile(g.nodes(), def, 1, o);
  int gelu_own = 0, fused = 0;
  for (const auto& st : p.steps) {
    gelu_own += st.fused < 0 && st.op == synk::Op::Gelu;
    fused += st.fused >= 0;
  }
  EXPECT_EQ(gelu_own, 1);
  EXPECT_EQ(fused, 1);  // relu(x + y)
}

// A transformer MLP's backward: gelu_grad(h, dA) with dA = dY W2^T over
// tokens, read by nothing else, folds into the product (the GeluGrad op's
// loop applied to each block of rows; CompileOptions::fuse_matmul_gelu_grad)
// and gives the plain ops' bits: loss and every gradient, erf and tanh forms,
// widths that take gemm_small's path (128, rows not a multiple of its
// 6-row blocks) and OpenBLAS's (40, then a pass after the product).
TEST(ExecutorFusion, GeluGradFoldedIntoItsProductBitIdentical) {
  for (const bool tanh_form : {false, true})
    for (const int64_t hidden : {128, 40}) {
      SCOPED_TRACE(std::string(tanh_form ? "tanh" : "erf") + " hidden " + std::to_string(hidden));
      const int64_t t = 7, d = 32, n = 11;  // 77 rows
      auto run = [&](bool fuse) {
        ElementwiseFusion ef(fuse);
        Graph g;
        Tensor x = g.input("x", f32, {synk::batch, t, d});
        Tensor w1 = g.variable("w1", {d, hidden}, synk::Init::uniform(-0.4f, 0.4f));
        Tensor w2 = g.variable("w2", {hidden, d}, synk::Init::uniform(-0.4f, 0.4f));
        Tensor y = synk::matmul(synk::gelu(synk::matmul(x, w1), tanh_form), w2);
        Tensor loss = synk::mean(y * y);
        auto grads = synk::grad(loss, {w1, w2, x});
        synk::Session s(g, {.seed = 3});
        auto f = s.function({.name = "f", .inputs = {x}, .outputs = {{loss}, {grads[0]}, {grads[1]}, {grads[2]}}});
        std::vector<float> xv(static_cast<size_t>(n * t * d));
        for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(0.37f * static_cast<float>(i)) * 2.5f;
        std::vector<float> trace;
        for (const Array& a : f({Array::from(xv, {n, t, d})}))
          for (float v : a.to_vector<float>()) trace.push_back(v);
        // The plan folds the GeluGrad only when fusing.
        const synk::FunctionDef def = synk::make_function_def({.name = "f", .inputs = {x}, .outputs = {{grads[0]}}});
        const synk::plan::Plan p = synk::plan::compile(g.nodes(), def, n, synk::cpu::cpu_session_options());
        int folded = 0, own = 0;
        for (const auto& st : p.steps) {
          folded += st.op == synk::Op::BatchMatMul && st.gelu_grad;
          own += st.fused < 0 && st.op == synk::Op::GeluGrad;
        }
        EXPECT_EQ(folded, fuse ? 1 : 0);
        EXPECT_EQ(own, fuse ? 0 : 1);
        return trace;
      };
      expect_same_bits(run(true), run(false));
    }
}

// Not folded where the product has another reader (its value must stay).
TEST(ExecutorFusion, GeluGradNotFoldedIntoAProductReadElsewhere) {
  Graph g;
  Tensor h = g.input("h", f32, {synk::batch, 5, 16});
  Tensor dy = g.input("dy", f32, {synk::batch, 5, 8});
  Tensor w = g.variable("w", {16, 8}, synk::Init::uniform(-1.f, 1.f));
  Tensor da = synk::matmul(dy, w, false, true);
  const synk::FunctionDef def = synk::make_function_def(
      {.name = "f", .inputs = {h, dy}, .outputs = {{synk::gelu_grad(h, da, false)}, {da}}});
  const synk::plan::Plan p = synk::plan::compile(g.nodes(), def, 3, synk::cpu::cpu_session_options());
  for (const auto& st : p.steps) EXPECT_FALSE(st.gelu_grad);
}

// With a learning-rate schedule the lr is a computed scalar: Nesterov's
// update keeps its hand-written loop (the lr a scalar operand of the
// group), and the scheduled optimizers give the same bits fused or not.
TEST(ExecutorFusion, ScheduledOptimizersKeepTheirLoopAndBits) {
  synk::optim::Options o{.lr = 0.1f, .momentum = 0.9f};
  o.schedule = {synk::optim::Schedule::warmup_cosine, 2, 4, 0.01f};
  Graph g;
  Tensor w = g.variable("w", {300}, synk::Init::uniform(-1.f, 1.f));
  Tensor gi = g.input("g", f32, {300});
  auto ups = synk::optim::nesterov({w}, {gi}, o);
  synk::plan::CompileOptions co;
  co.fuse_elementwise = true;
  const synk::FunctionDef def = synk::make_function_def({.name = "u", .inputs = {gi}, .outputs = {}, .updates = ups});
  const synk::plan::Plan p = synk::plan::compile(g.nodes(), def, -1, co);
  int nesterov_groups = 0;
  for (const auto& pr : p.fused) nesterov_groups += pr.pattern == synk::plan::EwProgram::Nesterov;
  EXPECT_EQ(nesterov_groups, 1);

  expect_fusion_bit_identical([o](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
    return synk::optim::nesterov(p, g, o);
  });
  expect_fusion_bit_identical([o](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
    synk::optim::Options a = o;
    a.weight_decay = 0.1f;
    return synk::optim::adamw(p, synk::optim::clip_by_global_norm(g, 0.5f), a);
  });
}

// A chain whose middle value is also an output and a group whose member is
// read by a later non-elementwise step: stored members, scheduling.
TEST(ExecutorFusion, StoredMembersAndLaterReaders) {
  for (bool fuse : {false, true}) {
    ElementwiseFusion ef(fuse);
    Graph g;
    Tensor x = g.input("x", f32, {synk::batch, 3});
    Tensor a = synk::exp(x * 0.5f);
    Tensor b = synk::sqrt(a + 1.f);
    Tensor c = synk::sum(b, {1});      // reads a member
    Tensor d = (b - a) * synk::tanh(x) / 2.f;
    synk::Session s(g);
    auto f = s.function({.name = "f", .inputs = {x}, .outputs = {{a}, {c}, {d}}});
    auto r = f({Array::from(std::vector<float>{0.f, 1.f, -2.f, 4.f, 0.5f, -0.25f}, {2, 3})});
    const float xs[] = {0.f, 1.f, -2.f, 4.f, 0.5f, -0.25f};
    for (int i = 0; i < 6; ++i) {
      const float av = std::exp(xs[i] * 0.5f), bv = std::sqrt(av + 1.f);
      EXPECT_EQ(r[0].data<float>()[i], av) << fuse << " " << i;
      EXPECT_EQ(r[2].data<float>()[i], (bv - av) * std::tanh(xs[i]) / 2.f) << fuse << " " << i;
    }
    for (int row = 0; row < 2; ++row) {
      float sum = 0.f;
      for (int k = 0; k < 3; ++k) sum += std::sqrt(std::exp(xs[row * 3 + k] * 0.5f) + 1.f);
      EXPECT_FLOAT_EQ(r[1].data<float>()[row], sum);
    }
  }
}

// call_into writes the same values as operator() into the caller's buffers
// (computed in place where possible, copied otherwise) and applies updates.
TEST(ExecutorCallInto, MatchesCallAndAppliesUpdates) {
  Mlp m1, m2;
  auto grads1 = synk::grad(m1.loss, m1.params);
  auto grads2 = synk::grad(m2.loss, m2.params);
  synk::Session s1(m1.g, {.seed = 4}), s2(m2.g, {.seed = 4});
  auto spec = [](Mlp& m, const std::vector<Tensor>& gr) {
    synk::FunctionSpec f{"g", {m.x, m.y}, {{m.loss}, {m.acc}, {m.params[1]}, {m.x}}, m.updates};
    for (const Tensor& t : gr) f.outputs.push_back({t});
    f.outputs.push_back({synk::reshape(gr[1], {4, 4})});  // shares its value with another output
    return f;
  };
  auto f1 = s1.function(spec(m1, grads1));
  auto f2 = s2.function(spec(m2, grads2));
  for (int step = 0; step < 3; ++step) {
    const int rows = step == 1 ? 5 : 8;
    Array X = batch_x(rows, static_cast<float>(step)), Y = batch_y(rows, static_cast<float>(step));
    auto want = f1({X, Y});
    std::vector<std::vector<float>> bufs;
    std::vector<void*> ptrs;
    for (const Array& a : want) bufs.emplace_back(static_cast<size_t>(a.numel()) + 1, -7.f);
    for (auto& b : bufs) ptrs.push_back(b.data());
    f2.call_into({X, Y}, ptrs);
    for (size_t k = 0; k < want.size(); ++k) {
      const auto w = want[k].to_vector<float>();
      for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(bufs[k][i], w[i]) << "output " << k << " element " << i;
      EXPECT_EQ(bufs[k][w.size()], -7.f) << "output " << k << " written past its end";
    }
  }
  for (const Tensor& p : m1.params) EXPECT_EQ(s1.get(p.name()).to_vector<float>(), s2.get(p.name()).to_vector<float>());
}

TEST(ExecutorCallInto, RejectsBadBuffers) {
  Mlp m, m2;
  synk::Session s(m.g, {.seed = 4}), s2(m2.g, {.seed = 4});
  auto f = s.function({.name = "f", .inputs = {m.x, m.y}, .outputs = {{m.loss}}});
  auto f2 = s2.function({.name = "f", .inputs = {m2.x, m2.y}, .outputs = {{m2.loss}}});
  float loss = 0.f;
  EXPECT_THROW(f.call_into({batch_x(4, 0.f), batch_y(4)}, {}), synk::ArgumentError);
  EXPECT_THROW(f.call_into({batch_x(4, 0.f), batch_y(4)}, {nullptr}), synk::ArgumentError);
  // (The failed calls did not run: both sessions are at their first call.)
  f.call_into({batch_x(4, 0.f), batch_y(4)}, {&loss});
  EXPECT_EQ(loss, f2({batch_x(4, 0.f), batch_y(4)})[0].scalar());
}

namespace {

TEST(RankMemory, CpuExecutor) {
  Graph g;
  g.variable("v", {3});
  auto ex = synk::exec::make_executor(g, {.device = synk::exec::Device::cpu});
  synk_test::check_rank_memory(*ex);
  EXPECT_EQ(ex->stream(), nullptr);
}

}  // namespace

namespace {

// A caller's dropout key (Function::call_into with a CallKey): the masks
// depend on the seed and the key alone, not on the session's rank or how
// many calls it made; without a key they depend on both.
TEST(Session, CallKeyFixesTheDropoutMasks) {
  Graph g;
  Tensor x = g.input("x", f32, {synk::batch, 64});
  Tensor y = synk::dropout(x, 0.5f);
  synk::Session a(g, {.seed = 1, .rank = 0}), b(g, {.seed = 1, .rank = 3});
  synk::Function fa = a.function(synk::FunctionSpec{"d", {x}, {{y}}});
  synk::Function fb = b.function(synk::FunctionSpec{"d", {x}, {{y}}});
  const Array X = Array::from(std::vector<float>(4 * 64, 1.f), {4, 64});
  const std::vector<float> a0 = fa({X})[0].to_vector<float>();
  EXPECT_NE(fb({X})[0].to_vector<float>(), a0) << "unkeyed masks of ranks 0 and 3 agree";
  const std::vector<float> ka = fa({X}, synk::CallKey{42})[0].to_vector<float>();
  std::vector<float> kb(4 * 64);
  fb.call_into({X}, {kb.data()}, synk::CallKey{42});  // b has made one more call than a
  EXPECT_EQ(ka, kb) << "the same key drew different masks";
  EXPECT_NE(fa({X}, synk::CallKey{43})[0].to_vector<float>(), ka) << "another key drew the same mask";
  int kept = 0;
  for (float v : ka) kept += v != 0.f;
  EXPECT_GT(kept, 64);
  EXPECT_LT(kept, 192) << "p = 0.5 keeps about half";
}

// plan::output_last_steps on a plan laid out as CUDA ranks get it (outputs
// in the arena, no fused groups, buffers reused): run by the CPU executor,
// each output computed by a step holds its final bytes already after its
// last step (nothing later writes over it: what CudaFunction::call_into
// with ready relies on to copy it out early), the last layer's gradients
// come before the first layer's and before the plan's end, and outputs no
// step computes (an input, a variable) have none.
TEST(PlanOutputLastSteps, ArenaOutputsFinalFromTheirStep) {
  Mlp m(false);
  auto grads = synk::grad(m.loss, m.params);
  synk::FunctionSpec spec{"g", {m.x, m.y}, {{m.loss}, {m.x}, {m.params[1]}}, {}};
  for (const Tensor& t : grads) spec.outputs.push_back({t});
  spec.outputs.push_back({synk::reshape(grads[0], {16, 6})});  // an alias of output 3's value
  const synk::FunctionDef def = synk::make_function_def(spec);
  synk::plan::CompileOptions o = synk::plan::default_compile_options();
  o.fuse_elementwise = false;
  o.outputs_external = false;
  o.reuse = true;
  const int rows = 7;
  synk::plan::Plan p = synk::plan::compile(m.g.nodes(), def, rows, o);
  const std::vector<int64_t> last = synk::plan::output_last_steps(p);
  ASSERT_EQ(last.size(), spec.outputs.size());
  EXPECT_EQ(last[1], -1) << "an input is computed by no step";
  EXPECT_EQ(last[2], -1) << "a variable is computed by no step";
  for (size_t k : {size_t{0}, size_t{3}, size_t{4}, size_t{5}, size_t{6}, size_t{7}}) EXPECT_GE(last[k], 0) << k;
  EXPECT_EQ(last[7], last[3]) << "an alias shares its value's bytes";
  EXPECT_LT(last[5], last[3]) << "l2/W's gradient is final before l1/W's";
  EXPECT_LT(last[5], static_cast<int64_t>(p.steps.size()) - 1) << "a gradient final before the plan ends";

  // Variables and the arena (filled with a pattern no result has).
  std::vector<Array> vars;
  std::vector<void*> var_ptr(m.g.nodes().size(), nullptr);
  for (const Tensor& t : m.params) {
    const synk::Node& n = m.g.node(t.id());
    std::vector<float> v(static_cast<size_t>(synk::numel(n.shape)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.3f * std::sin(0.37f * static_cast<float>(i + 1) + t.id());
    vars.push_back(Array::from(v, n.shape));
    var_ptr[static_cast<size_t>(t.id())] = vars.back().raw();
  }
  std::vector<float> arena_f(static_cast<size_t>(p.arena_bytes / 4 + 16), std::nanf("1"));
  auto* arena = reinterpret_cast<uint8_t*>(arena_f.data());
  const Array X = batch_x(rows, 0.f), Y = batch_y(rows);
  std::vector<std::vector<uint8_t>> at_last(last.size());
  const std::function<void(size_t)> after = [&](size_t si) {
    for (size_t k = 0; k < last.size(); ++k) {
      if (last[k] != static_cast<int64_t>(si)) continue;
      const auto* b = static_cast<const uint8_t*>(p.ptr[static_cast<size_t>(p.outputs[k])]);
      at_last[k].assign(b, b + p.bytes(p.outputs[k]));
    }
  };
  synk::cpu::RunContext ctx;
  ctx.seed = 5;
  synk::cpu::execute(p, m.g.nodes(), arena, {X.view(), Y.view()}, var_ptr.data(), ctx, nullptr, &after);
  for (size_t k = 0; k < last.size(); ++k) {
    if (last[k] < 0) continue;
    const auto* b = static_cast<const uint8_t*>(p.ptr[static_cast<size_t>(p.outputs[k])]);
    EXPECT_EQ(at_last[k], std::vector<uint8_t>(b, b + p.bytes(p.outputs[k]))) << "output " << k << " changed after its last step";
    bool finite = true;
    for (int64_t i = 0; i < p.bytes(p.outputs[k]) / 4; ++i) finite = finite && std::isfinite(reinterpret_cast<const float*>(b)[i]);
    EXPECT_TRUE(finite) << "output " << k << " still holds the arena's fill";
  }
}

}  // namespace
