// Graph construction: shape inference (symbolic batch included), the errors
// a bad graph gives at build time, function specs and initialisation.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <utility>

#include "synk/synk.hpp"

using namespace synk;

namespace {

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected exception was not thrown";
  return {};
}

}  // namespace

TEST(GraphShapes, BroadcastingRules) {
  Graph g;
  auto a = g.input("a", f32, {batch, 1, 4});
  auto b = g.input("b", f32, {3, 1});
  auto c = g.input("c", f32, {4});
  EXPECT_EQ((a + b).shape(), (Shape{batch, 3, 4}));
  EXPECT_EQ((a * c).shape(), (Shape{batch, 1, 4}));
  EXPECT_EQ((b - c).shape(), (Shape{3, 4}));
  EXPECT_EQ((a + 1.f).shape(), a.shape());
  EXPECT_EQ((2.f / c).shape(), c.shape());
  auto one = g.input("one", f32, {1});
  EXPECT_EQ((one + a).shape(), (Shape{batch, 1, 4}));
  auto z = g.input("z", f32, {0, 4});
  EXPECT_EQ((z + c).shape(), (Shape{0, 4}));
  auto zb = g.input("zb", f32, {1, 4});
  EXPECT_EQ((z * zb).shape(), (Shape{0, 4}));
}

TEST(GraphShapes, BroadcastErrorsNameOpAndShapes) {
  Graph g;
  auto a = g.input("a", f32, {batch, 784});
  auto b = g.input("b", f32, {10});
  std::string msg = error_of<ShapeError>([&] { add(a, b); });
  EXPECT_NE(msg.find("add"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[batch, 784]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[10]"), std::string::npos) << msg;
  // batch never silently matches a concrete size other than 1
  auto c = g.input("c", f32, {5, 784});
  EXPECT_THROW(a + c, ShapeError);
}

TEST(GraphShapes, DtypeMismatch) {
  Graph g;
  auto a = g.input("a", f32, {3});
  auto b = g.input("b", i32, {3});
  std::string msg = error_of<TypeError>([&] { mul(a, b); });
  EXPECT_NE(msg.find("mul"), std::string::npos) << msg;
  EXPECT_THROW(synk::exp(b), TypeError);
  EXPECT_EQ(equal(b, b).dtype(), i32);
  EXPECT_EQ(cast(b, f32).dtype(), f32);
  EXPECT_EQ(argmax(a).dtype(), i32);
}

TEST(GraphShapes, MatmulChecksInnerDims) {
  Graph g;
  auto x = g.input("x", f32, {batch, 784});
  auto w = g.variable("w", {784, 800});
  auto v = g.variable("v", {800, 10});
  EXPECT_EQ(matmul(x, w).shape(), (Shape{batch, 800}));
  EXPECT_EQ(matmul(w, v, false, false).shape(), (Shape{784, 10}));
  EXPECT_EQ(matmul(x, x, true, false).shape(), (Shape{784, 784}));  // contraction over batch
  EXPECT_EQ(matmul(v, w, true, true).shape(), (Shape{10, 784}));
  std::string msg = error_of<ShapeError>([&] { matmul(x, v); });
  EXPECT_NE(msg.find("matmul"), std::string::npos);
  EXPECT_NE(msg.find("[800, 10]"), std::string::npos) << msg;
  auto t = g.input("t", f32, {2, 3, 4});
  EXPECT_THROW(matmul(t, w), ShapeError);
}

TEST(GraphShapes, Reductions) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3, 4});
  EXPECT_EQ(sum(x).shape(), Shape{});
  EXPECT_EQ(mean(x, {0}).shape(), (Shape{3, 4}));
  EXPECT_EQ(max(x, {-1}, true).shape(), (Shape{batch, 3, 1}));
  EXPECT_EQ(sum(x, {2, 0}).shape(), (Shape{3}));
  EXPECT_EQ(argmax(x, 1).shape(), (Shape{batch, 4}));
  EXPECT_THROW(sum(x, {3}), ShapeError);
  EXPECT_THROW(sum(x, {1, 1}), ShapeError);
  EXPECT_THROW(argmax(x, -4), ShapeError);
}

TEST(GraphShapes, LayoutOps) {
  Graph g;
  auto x = g.input("x", f32, {batch, 2, 3, 4});
  EXPECT_EQ(flatten(x).shape(), (Shape{batch, 24}));
  EXPECT_EQ(reshape(x, {batch, 6, 4}).shape(), (Shape{batch, 6, 4}));
  EXPECT_THROW(reshape(x, {batch, 5, 4}), ShapeError);
  EXPECT_THROW(reshape(x, {2, 3, 4}), ShapeError);  // drops the batch dim
  EXPECT_THROW(flatten(x, 0), ShapeError);         // would merge batch
  EXPECT_EQ(transpose(x, {0, 3, 1, 2}).shape(), (Shape{batch, 4, 2, 3}));
  EXPECT_EQ(transpose(g.input("m", f32, {2, 5})).shape(), (Shape{5, 2}));
  EXPECT_THROW(transpose(x, {0, 1, 1, 2}), ShapeError);
  auto b = g.input("b", f32, {3, 1});
  EXPECT_EQ(broadcast_to(b, {2, 3, 5}).shape(), (Shape{2, 3, 5}));
  EXPECT_THROW(broadcast_to(b, {3, 5, 2}), ShapeError);
}

TEST(GraphShapes, NeuralNetOps) {
  Graph g;
  auto x = g.input("x", f32, {batch, 1, 28, 28});
  auto w = g.variable("w", {32, 1, 5, 5});
  auto c = conv2d(x, w);
  EXPECT_EQ(c.shape(), (Shape{batch, 32, 24, 24}));
  EXPECT_EQ(conv2d(x, w, {.stride = 2, .padding = 2}).shape(), (Shape{batch, 32, 14, 14}));
  EXPECT_EQ(max_pool2d(c, 2).shape(), (Shape{batch, 32, 12, 12}));
  EXPECT_EQ(max_pool2d(c, 3, 2, 1).shape(), (Shape{batch, 32, 12, 12}));
  auto w2 = g.variable("w2", {32, 3, 5, 5});
  std::string msg = error_of<ShapeError>([&] { conv2d(x, w2); });
  EXPECT_NE(msg.find("conv2d"), std::string::npos);
  EXPECT_NE(msg.find("channels"), std::string::npos) << msg;
  auto logits = g.input("logits", f32, {batch, 10});
  auto y = g.input("y", i32, {batch});
  EXPECT_EQ(softmax_cross_entropy(logits, y).shape(), (Shape{batch}));
  EXPECT_THROW(softmax_cross_entropy(logits, logits), ShapeError);
  EXPECT_THROW(softmax_cross_entropy(logits, g.input("yf", f32, {batch})), TypeError);
  EXPECT_EQ(softmax(logits).shape(), logits.shape());
  EXPECT_EQ(dropout(logits, 0.5f, true), logits);   // identity when deterministic
  EXPECT_NE(dropout(logits, 0.5f), logits);
  EXPECT_THROW(dropout(logits, 1.0f), ArgumentError);
}

TEST(GraphNames, UniqueAndFindable) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3});
  g.variable("W", {3, 3});
  EXPECT_THROW(g.input("x", f32, {1}), ArgumentError);
  EXPECT_THROW(g.variable("W", {3}), ArgumentError);
  EXPECT_EQ(g.find("x"), x);
  EXPECT_THROW(g.find("nope"), ArgumentError);
  EXPECT_THROW(g.variable("bad", {batch, 3}), ShapeError);
  EXPECT_EQ(g.variables().size(), 1u);
}

TEST(GraphFunctions, SpecValidation) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3});
  auto y = g.input("y", f32, {batch, 3});
  auto W = g.variable("W", {3, 3});
  auto out = sum(matmul(x, W) + y);
  EXPECT_THROW(make_function_def({"f", {x}, {{out}}, {}}), ArgumentError);  // y missing
  EXPECT_THROW(make_function_def({"f", {x, out}, {{out}}, {}}), ArgumentError);  // not an input
  EXPECT_THROW(make_function_def({"f", {x, y, x}, {{out}}, {}}), ArgumentError);  // duplicate
  EXPECT_THROW(make_function_def({"f", {x, y}, {{out}}, {{W, out}}}), ArgumentError);  // shape
  EXPECT_THROW(make_function_def({"f", {x, y}, {{out}}, {{x, x}}}), ArgumentError);  // not a variable
  FunctionDef d = make_function_def({"f", {x, y}, {{out, Collect::sum}}, {{W, W * 2.f}}});
  EXPECT_EQ(d.inputs, (std::vector<int32_t>{x.id(), y.id()}));
  EXPECT_EQ(d.collects.at(0), Collect::sum);
  EXPECT_EQ(d.updates.size(), 1u);
  Graph other;
  auto z = other.input("z", f32, {1});
  EXPECT_THROW(make_function_def({"f", {x, y, z}, {{out}}, {}}), ArgumentError);
}

TEST(GraphInit, DeterministicAndInRange) {
  Graph g;
  auto w = g.variable("w", {100, 50}, Init::glorot_uniform());
  auto c = g.variable("c", {8, 4, 3, 3}, Init::glorot_uniform());
  auto k = g.variable("k", {7}, Init::constant(2.5f));
  std::vector<float> a(5000), b(5000), d(5000);
  initial_value(w.node(), w.id(), 42, a.data());
  initial_value(w.node(), w.id(), 42, b.data());
  initial_value(w.node(), w.id(), 43, d.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  const float lim = std::sqrt(6.f / 150.f);
  float lo = 1, hi = -1;
  for (float v : a) { lo = std::min(lo, v); hi = std::max(hi, v); }
  EXPECT_GE(lo, -lim);
  EXPECT_LE(hi, lim);
  EXPECT_LT(lo, -0.9f * lim);  // actually spans the range
  EXPECT_GT(hi, 0.9f * lim);
  std::vector<float> cv(8 * 4 * 9);
  initial_value(c.node(), c.id(), 1, cv.data());
  const float climit = std::sqrt(6.f / (4 * 9 + 8 * 9));
  for (float v : cv) EXPECT_LE(std::fabs(v), climit);
  std::vector<float> kv(7);
  initial_value(k.node(), k.id(), 1, kv.data());
  for (float v : kv) EXPECT_EQ(v, 2.5f);
  EXPECT_THROW(g.variable("iv", {2}, Init::uniform(0, 1), i32), TypeError);
}

TEST(GraphGrad, RejectsNonScalarLoss) {
  Graph g;
  auto x = g.input("x", f32, {batch, 3});
  auto W = g.variable("W", {3, 3});
  EXPECT_THROW(grad(matmul(x, W), {W}), ShapeError);
  EXPECT_THROW(grad(sum(matmul(x, W)), {g.input("i", i32, {3})}), TypeError);
  auto gs = grad(sum(matmul(x, W)), {W, g.variable("unused", {2})});
  EXPECT_EQ(gs[0].shape(), W.shape());
  EXPECT_EQ(gs[1].shape(), (Shape{2}));
}

TEST(GraphShapes, HugeShapesAreRefusedNotWrapped) {
  const Dim big = Dim{1} << 32;
  EXPECT_THROW(numel({big, big}), ShapeError);
  EXPECT_THROW(static_numel({batch, big, big}), ShapeError);
  EXPECT_EQ(numel({big, 4}), big * 4);
  Graph g;
  EXPECT_THROW(g.variable("v", {big, big}), ShapeError);
  EXPECT_THROW(g.input("x", f32, {batch, (Dim{1} << 62) + 1, 4}), ShapeError);
}

// Every unary op whose kernels take f32 only refuses an i32 operand when the
// graph is built (relu and square used to accept it and fail at run time).
TEST(GraphShapes, F32OnlyUnaryOpsRefuseI32WhenBuilt) {
  Graph g;
  auto x = g.input("x", i32, {batch, 3});
  const std::vector<std::pair<const char*, std::function<Tensor(Tensor)>>> ops = {
      {"relu", [](Tensor t) { return relu(t); }},       {"square", [](Tensor t) { return square(t); }},
      {"tanh", [](Tensor t) { return synk::tanh(t); }}, {"sigmoid", [](Tensor t) { return sigmoid(t); }},
      {"exp", [](Tensor t) { return synk::exp(t); }},   {"log", [](Tensor t) { return synk::log(t); }},
      {"sqrt", [](Tensor t) { return synk::sqrt(t); }}, {"pow", [](Tensor t) { return synk::pow(t, 2.f); }},
  };
  for (const auto& [name, op] : ops) {
    std::string msg = error_of<TypeError>([&] { op(x); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
    EXPECT_EQ(op(cast(x, f32)).dtype(), f32) << name;
  }
  EXPECT_EQ(neg(x).dtype(), i32);  // neg has an i32 kernel
  EXPECT_EQ((-x).dtype(), i32);
}

// A float scalar with an i32 tensor is never truncated: a whole number is
// an exact i32 constant, anything else is a TypeError naming the op and the
// scalar.
TEST(GraphShapes, FractionalScalarWithI32TensorIsRefused) {
  Graph g;
  auto x = g.input("x", i32, {batch, 3});
  std::string msg = error_of<TypeError>([&] { x * 0.5f; });
  EXPECT_NE(msg.find("mul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0.5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
  msg = error_of<TypeError>([&] { x + 2.7f; });
  EXPECT_NE(msg.find("add"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2.7"), std::string::npos) << msg;
  EXPECT_THROW(0.5f * x, TypeError);
  EXPECT_THROW(1.25f - x, TypeError);
  EXPECT_THROW(x / 0.1f, TypeError);
  EXPECT_THROW(3.5f / x, TypeError);
  EXPECT_THROW(x + NAN, TypeError);
  EXPECT_THROW(x + INFINITY, TypeError);
  EXPECT_THROW(x * 3e9f, TypeError);  // whole, but not an i32
  // Whole numbers are exact.
  EXPECT_EQ((x * 2.f).dtype(), i32);
  EXPECT_EQ((x - -3.f).dtype(), i32);
  EXPECT_EQ((x + -2147483648.f).dtype(), i32);
  // An f32 tensor takes any float.
  auto y = g.input("y", f32, {3});
  EXPECT_EQ((y * 0.5f).dtype(), f32);
  // Graph::constant refuses the same floats for i32.
  msg = error_of<TypeError>([&] { g.constant(0.5f, i32); });
  EXPECT_NE(msg.find("0.5"), std::string::npos) << msg;
  EXPECT_THROW(g.constant(NAN, i32), TypeError);
  EXPECT_THROW(g.constant(3e9f, i32), TypeError);
  EXPECT_THROW(g.constant(1.f, static_cast<DType>(7)), TypeError);
  EXPECT_EQ(g.constant(-7.f, i32).dtype(), i32);
  EXPECT_EQ(g.constant(0.5f).dtype(), f32);
}

// The kernels iterate over at most 8 dims once adjacent dims that step alike
// are merged; shapes that need more are refused when the graph is built,
// with a ShapeError naming the op and the shapes.
TEST(GraphShapes, MoreThanEightLoopDimsRefusedWhenBuilt) {
  Graph g;
  auto a = g.input("a", f32, {2, 1, 2, 1, 2, 1, 2, 1, 2});
  auto b = g.input("b", f32, {1, 2, 1, 2, 1, 2, 1, 2, 1});
  std::string msg = error_of<ShapeError>([&] { a + b; });
  EXPECT_NE(msg.find("add"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 1, 2, 1, 2, 1, 2, 1, 2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 8"), std::string::npos) << msg;
  EXPECT_THROW(equal(a, b), ShapeError);

  auto x = g.input("x", f32, {2, 3, 2, 3, 2, 3, 2, 3, 2});
  msg = error_of<ShapeError>([&] { transpose(x); });
  EXPECT_NE(msg.find("transpose"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 8"), std::string::npos) << msg;
  msg = error_of<ShapeError>([&] { sum(x, {0, 2, 4, 6, 8}); });
  EXPECT_NE(msg.find("sum"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 8"), std::string::npos) << msg;
  EXPECT_THROW(max(x, {1, 3, 5, 7}), ShapeError);
  EXPECT_THROW(mean(x, {0, 2, 4, 6, 8}, true), ShapeError);
  EXPECT_THROW(broadcast_to(a, {2, 3, 2, 3, 2, 3, 2, 3, 2}), ShapeError);

  // The batch dim counts as larger than 1.
  auto ab = g.input("ab", f32, {batch, 1, 2, 1, 2, 1, 2, 1, 2});
  EXPECT_THROW(ab + b, ShapeError);

  // Many dims that merge are fine: same shapes, 8 runs, size-1 dims.
  EXPECT_EQ((x + x).shape(), x.shape());
  auto a8 = g.input("a8", f32, {2, 1, 2, 1, 2, 1, 2, 1});
  auto b8 = g.input("b8", f32, {1, 2, 1, 2, 1, 2, 1, 2});
  EXPECT_EQ((a8 + b8).ndim(), 8);
  auto ones = g.input("ones", f32, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2});
  EXPECT_EQ((ones + a).ndim(), 11);
  EXPECT_EQ(sum(x, {0, 1, 2, 3, 4}).shape(), (Shape{3, 2, 3, 2}));
  EXPECT_EQ(transpose(x, {0, 1, 2, 3, 4, 5, 6, 8, 7}).ndim(), 9);
  EXPECT_EQ(sum(x, {0, 2, 4, 6}).ndim(), 5);  // 8 runs
}
