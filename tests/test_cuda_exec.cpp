// test_cuda_exec.cpp — the CUDA graph executor (synk::CudaSession) against
// the CPU Session, the reference: every op, gradients, CUDA-graph replay,
// dropout masks (bit for bit), update semantics, bad inputs, and a short
// training run; and, without a device, the device layout of plans
// (CudaPlanLayout: input slots, planner switches).
//
// Suites named Gpu* need a device: CMake labels them `gpu` and they skip
// with a reason where there is none (or where synk is built without CUDA).
// Floats compare with |gpu - cpu| <= atol + rtol * |cpu|; integers exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "synk/config.hpp"
#include "synk/cuda_session.hpp"
#include "synk/synk.hpp"
#include "exec/executor.hpp"
#include "support/rank_memory.hpp"
#if SYNK_HAVE_CUDA
#include <sys/wait.h>
#include <unistd.h>

#include "exec/plan/plan.hpp"
#include "cuda/device.hpp"
#include "exec/cuda/executor.hpp"
#include "graph/internal.hpp"
#endif

using namespace synk;

namespace {

#define SYNK_REQUIRE_GPU()                                                                     \
  do {                                                                                         \
    if (!CudaSession::available())                                                             \
      GTEST_SKIP() << "no CUDA device (or synk built without CUDA): CudaSession unavailable"; \
  } while (0)

Array rnd(Shape shape, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(numel(shape)));
  for (float& x : v) x = d(gen);
  return Array::from(v, std::move(shape));
}

Array rnd_int(Shape shape, int lo, int hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int32_t> v(static_cast<size_t>(numel(shape)));
  for (int32_t& x : v) x = d(gen);
  return Array::from(v, std::move(shape));
}

// Small integers stored as floats, so that equality comparisons hit.
Array rnd_int_f32(Shape shape, int lo, int hi, uint32_t seed) {
  Array a = rnd_int(shape, lo, hi, seed);
  std::vector<float> v;
  for (int32_t x : a.to_vector<int32_t>()) v.push_back(static_cast<float>(x));
  return Array::from(v, std::move(shape));
}

void expect_close(const Array& ref, const Array& got, float atol, float rtol, const std::string& what) {
  ASSERT_EQ(ref.dtype(), got.dtype()) << what;
  ASSERT_EQ(ref.shape(), got.shape()) << what;
  if (ref.dtype() == i32) {
    auto r = ref.to_vector<int32_t>(), g = got.to_vector<int32_t>();
    for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r[i], g[i]) << what << " element " << i;
    return;
  }
  auto r = ref.to_vector<float>(), g = got.to_vector<float>();
  for (size_t i = 0; i < r.size(); ++i) {
    if (std::isnan(r[i])) {
      ASSERT_TRUE(std::isnan(g[i])) << what << " element " << i << ": cpu NaN, gpu " << g[i];
      continue;
    }
    if (std::isinf(r[i])) {
      ASSERT_EQ(r[i], g[i]) << what << " element " << i;
      continue;
    }
    ASSERT_LE(std::fabs(g[i] - r[i]), atol + rtol * std::fabs(r[i]))
        << what << " element " << i << ": cpu " << r[i] << ", gpu " << g[i];
  }
}

// A function of a graph, the values of its inputs and the tolerances.
struct Built {
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
  std::vector<Array> values;
};

struct OpCase {
  std::string name;
  std::function<void(Graph&, Built&)> build;
  float atol = 1e-5f, rtol = 1e-4f;
};
void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

constexpr int64_t B = 5;  // batch rows: odd, small

Tensor var(Graph& g, const std::string& name, Shape s, float lo = -1.f, float hi = 1.f) {
  return g.variable(name, std::move(s), Init::uniform(lo, hi));
}

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cs;
  auto add = [&](std::string name, std::function<void(Graph&, Built&)> f, float atol = 1e-5f, float rtol = 1e-4f) {
    cs.push_back({std::move(name), std::move(f), atol, rtol});
  };
  // One f32 input x of shape [B, 3, 4] and its values.
  auto x34 = [](Graph& g, Built& b, float lo = -2.f, float hi = 2.f) {
    Tensor x = g.input("x", f32, {batch, 3, 4});
    b.inputs.push_back(x);
    b.values.push_back(rnd({B, 3, 4}, lo, hi, 11));
    return x;
  };

  // ---- elementwise ----
  add("AddSubBroadcast", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    b.outputs = {x + var(g, "v", {4}), x - var(g, "w", {3, 1}), var(g, "u", {3, 1}) + var(g, "r", {1, 4})};
  });
  add("MulDivScalar", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    b.outputs = {x * 2.5f, x / var(g, "d", {3, 4}, 0.5f, 2.f), 1.f / (x * x + 1.f), x * var(g, "m", {4})};
  });
  add("EqualF32AndI32", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 6});
    Tensor y = g.input("y", f32, {batch, 6});
    Tensor p = g.input("p", i32, {batch, 6});
    Tensor q = g.input("q", i32, {6});
    b.inputs = {x, y, p, q};
    b.values = {rnd_int_f32({B, 6}, 0, 2, 1), rnd_int_f32({B, 6}, 0, 2, 2), rnd_int({B, 6}, 0, 2, 3),
                rnd_int({6}, 0, 2, 4)};
    b.outputs = {equal(x, y), equal(p, q)};
  });
  add("UnaryMath", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    b.outputs = {neg(x), relu(x), synk::tanh(x), sigmoid(x), synk::exp(x), square(x),
                 synk::pow(x, 3.f), synk::pow(x, 2.f), synk::pow(x, 1.f)};
  });
  add("UnaryPositive", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b, 0.1f, 3.f);
    b.outputs = {synk::log(x), synk::sqrt(x), synk::pow(x, 0.5f), synk::pow(x, -1.f), synk::pow(x, 1.7f)};
  });
  add("GeluAbsSinCosClip", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b, -4.f, 4.f);
    b.outputs = {gelu(x), gelu(x, true), synk::abs(x), synk::sin(x), synk::cos(x), clip(x, -1.5f, 0.75f),
                 clip(x, 0.f, 0.f)};
  });
  add("MaximumMinimum", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    Tensor p = g.input("p", i32, {batch, 4});
    b.inputs.push_back(p);
    b.values.push_back(rnd_int({B, 4}, -5, 5, 20));
    Tensor v = var(g, "v", {4}), w = var(g, "w", {3, 1});
    b.outputs = {maximum(x, v), minimum(w, x), maximum(x, 0.25f), minimum(-0.5f, x),
                 maximum(p, g.constant(1.f, i32)), minimum(p, 2.f)};
  });
  add("GreaterLessWhere", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    Tensor y = g.input("y", f32, {batch, 3, 4});
    Tensor p = g.input("p", i32, {batch, 4});
    b.inputs.push_back(y);
    b.inputs.push_back(p);
    b.values.push_back(rnd_int_f32({B, 3, 4}, -1, 1, 21));  // ties with x's integers below
    b.values.push_back(rnd_int({B, 4}, -2, 2, 22));
    Tensor xi = g.input("xi", f32, {batch, 3, 4});
    b.inputs.push_back(xi);
    b.values.push_back(rnd_int_f32({B, 3, 4}, -1, 1, 23));
    Tensor m = greater(xi, y);
    Tensor pm = reshape(p, {batch, 1, 4});
    b.outputs = {m, less(xi, y), greater(p, 0.f), less(1.f, p),
                 where(m, x, y), where(less(x, 0.f), x * 0.01f, x),
                 where(pm, x, var(g, "v", {3, 1})), where(greater(p, 0.f), p, p * -1.f)};
  });
  add("PointwiseGrads", [=](Graph& g, Built& b) {
    // The gradient helpers: GeluGrad (both forms), AbsGrad, ClipMask,
    // MaximumGradMask, and where's masking with broadcasting.
    Tensor v = var(g, "v", {4, 6}, -3.f, 3.f), u = var(g, "u", {6}, -3.f, 3.f);
    Tensor c = greater(var(g, "m", {4, 1}), 0.f);  // [4, 1] i32, some rows true
    Tensor l = sum(gelu(v) * u) + sum(gelu(v, true) * v) + sum(synk::abs(v) * u) + sum(clip(v, -1.f, 1.f) * u) +
               sum(maximum(v, u) * v) + sum(minimum(u, v)) + sum(where(c, v, u) * v) +
               sum(synk::sin(v) + synk::cos(u));
    b.outputs = grad(l, {v, u});
  });
  add("IntArithmetic", [=](Graph& g, Built& b) {
    Tensor p = g.input("p", i32, {batch, 7});
    Tensor q = g.input("q", i32, {batch, 7});
    b.inputs = {p, q};
    b.values = {rnd_int({B, 7}, -9, 9, 5), rnd_int({B, 7}, -3, 3, 6)};  // q has zeros: x/0 = 0
    b.outputs = {p + q, p - q, p * q, p / q, -p};
  });
  add("Cast", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b, -5.f, 5.f);
    Tensor p = g.input("p", i32, {batch, 3});
    b.inputs.push_back(p);
    b.values.push_back(rnd_int({B, 3}, -100, 100, 7));
    b.outputs = {cast(x, i32), cast(p, f32), cast(x, f32)};
  });
  add("ReluGradAndBroadcastMean", [=](Graph& g, Built& b) {
    // Backward of relu (ReluGrad) and of mean (BroadcastTo with its flag).
    Tensor v = var(g, "v", {4, 6});
    Tensor w = var(g, "w", {6});
    Tensor l = sum(mean(relu(v) * w, {1})) + mean(v);
    b.outputs = grad(l, {v, w});
  });
  add("BroadcastTo", [=](Graph& g, Built& b) {
    b.outputs = {broadcast_to(var(g, "v", {3, 1}), {2, 3, 4}), broadcast_to(var(g, "w", {4}), {3, 4})};
  });

  // ---- reductions ----
  add("Reductions", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    b.outputs = {sum(x), sum(x, {0}), mean(x, {1}, true), synk::max(x, {0, 2}), synk::max(x),
                 mean(x, {-1}), sum(x, {0, 1, 2}, true)};
  });
  add("LongReductions", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 3001});
    b.inputs = {x};
    b.values = {rnd({B, 3001}, -1.f, 1.f, 8)};
    b.outputs = {sum(x), mean(x, {1}), synk::max(x, {1}), sum(x, {0})};
  }, 1e-4f, 1e-4f);
  add("IntReductions", [=](Graph& g, Built& b) {
    Tensor p = g.input("p", i32, {batch, 3, 4});
    b.inputs = {p};
    b.values = {rnd_int({B, 3, 4}, -50, 50, 9)};
    b.outputs = {sum(p), sum(p, {1}), synk::max(p, {0, 2}), sum(p, {0, 2}, true)};
  });
  add("Argmax", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    Tensor y = g.input("y", f32, {batch, 7});
    Tensor p = g.input("p", i32, {batch, 7});
    b.inputs.push_back(y);
    b.inputs.push_back(p);
    b.values.push_back(rnd_int_f32({B, 7}, 0, 3, 12));  // ties: the first maximum wins
    b.values.push_back(rnd_int({B, 7}, 0, 3, 13));
    b.outputs = {argmax(x, 1), argmax(x, 0), argmax(x, -1), argmax(y, 1), argmax(p, 1)};
  });

  // ---- layout ----
  add("ReshapeTranspose", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    b.outputs = {transpose(x, {2, 0, 1}), transpose(reshape(x, {batch, 12})), flatten(x) * 1.f,
                 transpose(x, {0, 2, 1}) + 1.f};
  });

  // ---- linear algebra ----
  add("MatMul", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 6});
    b.inputs = {x};
    b.values = {rnd({B, 6}, -1.f, 1.f, 14)};
    Tensor W = var(g, "W", {6, 4}), Wt = var(g, "Wt", {4, 6});
    Tensor A = var(g, "A", {6, 5}), C = var(g, "C", {7, 6});
    b.outputs = {matmul(x, W), matmul(x, Wt, false, true), matmul(A, C, true, true), matmul(A, x, true, true),
                 matmul(x, matmul(x, W), true, false)};
  }, 1e-5f, 1e-4f);
  add("DenseBiasReluFused", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 6});
    b.inputs = {x};
    b.values = {rnd({B, 6}, -1.f, 1.f, 15)};
    auto d = nn::dense(g, "d", 6, 9, Init::glorot_uniform(), Init::uniform(-0.5f, 0.5f));
    auto e = nn::dense(g, "e", 9, 3, Init::glorot_uniform(), Init::uniform(-0.5f, 0.5f));
    b.outputs = {e(relu(d(x)))};
  });

  // ---- nn ----
  add("Softmax", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b, -4.f, 4.f);
    b.outputs = {softmax(x), softmax(x, 1), log_softmax(x), log_softmax(x, 0)};
  });
  add("SoftmaxCrossEntropyAndGrad", [=](Graph& g, Built& b) {
    Tensor y = g.input("y", i32, {B});
    b.inputs = {y};
    b.values = {rnd_int({B}, 0, 9, 16)};
    Tensor logits = var(g, "logits", {B, 10}, -3.f, 3.f);
    Tensor l = softmax_cross_entropy(logits, y);
    b.outputs = {l, grad(mean(l), {logits})[0]};
  });
  add("Conv2d", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 3, 9, 8});
    b.inputs = {x};
    b.values = {rnd({B, 3, 9, 8}, -1.f, 1.f, 17)};
    Tensor W = var(g, "W", {4, 3, 3, 3}), W1 = var(g, "W1", {2, 3, 1, 1});
    b.outputs = {conv2d(x, W), conv2d(x, W, {.stride = 2, .padding = 1}), conv2d(x, W1)};
  }, 1e-4f, 1e-4f);
  add("Conv2dBiasReluFused", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 2, 8, 8});
    b.inputs = {x};
    b.values = {rnd({B, 2, 8, 8}, -1.f, 1.f, 18)};
    auto c = nn::conv2d(g, "c", 2, 5, 3, {.stride = 1, .padding = 1}, Init::glorot_uniform(),
                        Init::uniform(-0.5f, 0.5f));
    b.outputs = {relu(c(x))};
  }, 1e-4f, 1e-4f);
  add("Conv2dGrads", [=](Graph& g, Built& b) {
    Tensor X = var(g, "X", {3, 3, 7, 6}), W = var(g, "W", {4, 3, 3, 3}), W1 = var(g, "W1", {2, 3, 1, 1});
    Tensor w = var(g, "w", {3, 4, 4, 3}), w1 = var(g, "w1", {3, 2, 7, 6});
    Tensor l = sum(conv2d(X, W, {.stride = 2, .padding = 1}) * w) + sum(conv2d(X, W1) * w1);
    b.outputs = grad(l, {X, W, W1});
  }, 1e-4f, 1e-4f);
  add("MaxPool", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 2, 6, 7});
    b.inputs = {x};
    b.values = {rnd({B, 2, 6, 7}, -1.f, 1.f, 19)};
    b.outputs = {max_pool2d(x, 2), max_pool2d(x, 3, 2, 1), max_pool2d(x, 2, 1)};
  });
  add("MaxPoolGrads", [=](Graph& g, Built& b) {
    Tensor X = var(g, "X", {2, 3, 7, 6});
    Tensor w2 = var(g, "w2", {2, 3, 3, 3}), w3 = var(g, "w3", {2, 3, 4, 3}), w4 = var(g, "w4", {2, 3, 6, 5});
    Tensor l = sum(max_pool2d(X, 2) * w2) + sum(max_pool2d(X, 3, 2, 1) * w3) + sum(max_pool2d(X, 2, 1) * w4);
    b.outputs = grad(l, {X});
  });
  // ---- shape ops ----
  add("ConcatSliceF32I32", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    Tensor p = g.input("p", i32, {batch, 3});
    b.inputs.push_back(p);
    b.values.push_back(rnd_int({B, 3}, -9, 9, 30));
    Tensor v = var(g, "v", {2, 4});
    b.outputs = {concat({x, x}, 1),
                 concat({slice(x, 2, 0, 1), x, x * 2.f}, -1),  // [B, 3, 9]
                 concat({v, v, v}, 0),
                 concat({p, p * 2, p}, 1),
                 concat({x + 1.f, x * 2.f, x - 3.f, x * x, x + 5.f}, 2),  // more operands than Step::in holds
                 slice(x, 1, 1, 3), slice(x, -1, -3, -1), slice(p, 1, 2, 9), slice(x, 2, 3, 1)};
  });
  add("ConcatSliceGrads", [=](Graph& g, Built& b) {
    Tensor u = var(g, "u", {3, 2, 4}), v = var(g, "v", {3, 1, 4}), w = var(g, "w", {3, 5, 4});
    Tensor c = concat({u, v, u}, 1);                   // [3, 5, 4]
    Tensor l = sum(c * w) + sum(square(slice(w, 1, 1, 4))) + sum(slice(c, 2, 1, 3) * slice(w, 2, 0, 2));
    b.outputs = grad(l, {u, v, w});
  });
  add("Embedding", [=](Graph& g, Built& b) {
    Tensor idx = g.input("idx", i32, {batch, 3});
    b.inputs = {idx};
    b.values = {rnd_int({B, 3}, 0, 6, 31)};  // repeated indices
    Tensor table = var(g, "table", {7, 5});
    Tensor e = embedding(table, idx);
    Tensor w = var(g, "w", {3, 5});
    // Indices computed on the device (checked by the kernels) as well.
    Tensor e2 = embedding(table, idx + g.constant(0.f, i32));
    b.outputs = {e, e2, grad(sum(e * w) + sum(square(e2)), {table})[0]};
  });
  add("BatchMatMul", [=](Graph& g, Built& b) {
    Tensor q = g.input("q", f32, {batch, 2, 5, 4});
    b.inputs = {q};
    b.values = {rnd({B, 2, 5, 4}, -1.f, 1.f, 32)};
    Tensor k = var(g, "k", {2, 5, 4}), W = var(g, "W", {4, 3}), Wt = var(g, "Wt", {3, 4});
    Tensor h = var(g, "h", {1, 2, 5, 6}), A = var(g, "A", {5, 4});
    Tensor s = matmul(q, k, false, true);  // [B, 2, 5, 5], k broadcast over B
    b.outputs = {s, matmul(softmax(s), q), matmul(q, W), matmul(q, Wt, false, true), matmul(q, h, true, false),
                 matmul(A, q, false, true), matmul(var(g, "C", {3, 1, 5, 4}), var(g, "D", {2, 4, 3}))};
  }, 1e-5f, 1e-4f);
  add("BatchMatMulBiasReluFused", [=](Graph& g, Built& b) {
    Tensor x = x34(g, b);
    Tensor W = var(g, "W", {4, 6}), bias = var(g, "bias", {6}), c = var(g, "c", {3});
    b.outputs = {relu(matmul(x, W) + bias), matmul(x, W, false, false) * 1.f + bias,
                 matmul(var(g, "h", {1, 2, 4}), x, false, true) + c};
  });
  add("BatchMatMulGrads", [=](Graph& g, Built& b) {
    Tensor q = var(g, "q", {3, 2, 5, 4}), k = var(g, "k", {3, 2, 5, 4}), v = var(g, "v", {3, 2, 5, 4});
    Tensor W = var(g, "W", {4, 6}), Wt = var(g, "Wt", {6, 4}), h = var(g, "h", {2, 4, 3});
    Tensor x = var(g, "x", {3, 5, 4}), A = var(g, "A", {5, 5}), r = var(g, "r", {3, 1, 5, 4});
    Tensor att = matmul(softmax(matmul(q, k, false, true)), v);
    // r [3, 1] against h [2]: each gradient sums a different batch dim.
    Tensor l = sum(square(att)) + sum(square(matmul(x, W))) + sum(square(matmul(x, Wt, false, true))) +
               sum(square(matmul(r, h))) + sum(square(matmul(A, x, true, false)));
    b.outputs = grad(l, {q, k, v, W, Wt, h, x, A, r});
  }, 1e-4f, 1e-4f);
  add("Conv2dResNetStrides", [=](Graph& g, Built& b) {
    // ResNet's downsampling: 3x3 stride 2 pad 1, 1x1 stride 2 (shortcut),
    // 1x1 stride 1 (no im2col), on odd and even sizes, with both gradients.
    Tensor x = g.input("x", f32, {batch, 3, 9, 8});
    b.inputs = {x};
    b.values = {rnd({B, 3, 9, 8}, -1.f, 1.f, 31)};
    Tensor W = var(g, "W", {4, 3, 3, 3}), W1 = var(g, "W1", {5, 3, 1, 1}), W2 = var(g, "W2", {2, 3, 1, 1});
    Tensor a = conv2d(x, W, {.stride = 2, .padding = 1}), c = conv2d(x, W1, {.stride = 2}), d = conv2d(x, W2);
    Tensor l = sum(a * var(g, "wa", {4, 5, 4})) + sum(c * var(g, "wc", {5, 5, 4})) + sum(d * var(g, "wd", {2, 9, 8}));
    auto gr = grad(l, {x, W, W1, W2});
    b.outputs = {a, c, d, gr[0], gr[1], gr[2], gr[3]};
  }, 1e-4f, 1e-4f);
  add("LayerNormAndGrads", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 3, 37});
    b.inputs = {x};
    b.values = {rnd({B, 3, 37}, -2.f, 3.f, 32)};
    Tensor gm = var(g, "gm", {37}, 0.5f, 1.5f), bt = var(g, "bt", {37});
    Tensor y = layer_norm(x, gm, bt);
    Tensor wide = g.input("wide", f32, {batch, 700});  // more values than a block's threads
    b.inputs.push_back(wide);
    b.values.push_back(rnd({B, 700}, -1.f, 1.f, 33));
    Tensor gw = var(g, "gw", {700}), bw = var(g, "bw", {700});
    Tensor yw = layer_norm(wide, gw, bw, 1e-3f);
    Tensor l = sum(y * var(g, "w", {3, 37})) + sum(square(yw));
    auto gr = grad(l, {x, gm, bt, wide, gw});
    b.outputs = {y, yw, gr[0], gr[1], gr[2], gr[3], gr[4]};
  }, 1e-4f, 1e-3f);
  add("AttentionAndGrads", [=](Graph& g, Built& b) {
    // Tokens first with self-attention shapes (the stacked gradient); heads
    // first with L != S and Ev != E (one gradient node per operand).
    Tensor q = g.input("q", f32, {batch, 19, 3, 8}), k = g.input("k", f32, {batch, 19, 3, 8});
    Tensor v = g.input("v", f32, {batch, 19, 3, 8});
    Tensor qh = g.input("qh", f32, {batch, 2, 5, 4}), kh = g.input("kh", f32, {batch, 2, 7, 4});
    Tensor vh = g.input("vh", f32, {batch, 2, 7, 6});
    b.inputs = {q, k, v, qh, kh, vh};
    b.values = {rnd({B, 19, 3, 8}, -2.f, 2.f, 41), rnd({B, 19, 3, 8}, -2.f, 2.f, 42), rnd({B, 19, 3, 8}, -1.f, 1.f, 43),
                rnd({B, 2, 5, 4}, -2.f, 2.f, 44), rnd({B, 2, 7, 4}, -2.f, 2.f, 45), rnd({B, 2, 7, 6}, -1.f, 1.f, 46)};
    Tensor o = scaled_dot_product_attention(q, k, v, {.layout = AttentionOptions::tokens_first});
    Tensor oh = scaled_dot_product_attention(qh, kh, vh, {.scale = 0.4f});
    Tensor l = sum(o * var(g, "w", {19, 3, 8})) + sum(oh * var(g, "wh", {2, 5, 6}));
    auto gr = grad(l, {q, k, v, qh, kh, vh});
    b.outputs = {o, oh, gr[0], gr[1], gr[2], gr[3], gr[4], gr[5]};
  }, 1e-4f, 1e-4f);
  add("BatchNormTrainAndGrads", [=](Graph& g, Built& b) {
    // 5 * 8 * 9 = 360 values per channel: more than a block's 256 threads.
    Tensor x = g.input("x", f32, {batch, 3, 8, 9});
    Tensor v = g.input("v", f32, {batch, 4});
    b.inputs = {x, v};
    b.values = {rnd({B, 3, 8, 9}, -1.f, 3.f, 34), rnd({B, 4}, -2.f, 2.f, 35)};
    Tensor gm = var(g, "gm", {3}, 0.5f, 1.5f), bt = var(g, "bt", {3});
    Tensor rm = g.variable("rm", {3}), rv = g.variable("rv", {3}, Init::constant(1.f));
    Tensor y = batch_norm(x, gm, bt, rm, rv);
    Tensor g1 = var(g, "g1", {4}, 0.5f, 1.5f), b1 = var(g, "b1", {4});
    Tensor rm1 = g.variable("rm1", {4}), rv1 = g.variable("rv1", {4}, Init::constant(1.f));
    Tensor y1 = batch_norm(v, g1, b1, rm1, rv1, {.momentum = 0.3f});
    Tensor l = sum(y * var(g, "w", {3, 8, 9})) + sum(square(y1));
    auto gr = grad(l, {x, gm, bt, v, g1, b1});
    // The running statistics as outputs: read before each call's update, so
    // the third call shows two updates on each side.
    b.outputs = {y, y1, gr[0], gr[1], gr[2], gr[3], gr[4], gr[5], rm, rv, rm1, rv1};
  }, 1e-4f, 1e-3f);
  add("SyncBatchNormLoneSessionAndGrads", [=](Graph& g, Built& b) {
    // rank_sum in a lone session (one rank: a copy on the device), and the
    // synchronized batch norm made of graph ops around it.
    Tensor x = g.input("x", f32, {batch, 3, 5, 4});
    b.inputs = {x};
    b.values = {rnd({B, 3, 5, 4}, -1.f, 3.f, 36)};
    Tensor gm = var(g, "gm", {3}, 0.5f, 1.5f), bt = var(g, "bt", {3});
    Tensor rm = g.variable("rm", {3}), rv = g.variable("rv", {3}, Init::constant(1.f));
    Tensor y = batch_norm(x, gm, bt, rm, rv, {.sync = true});
    Tensor l = sum(y * var(g, "w", {3, 5, 4})) + sum(rank_sum(sum(x, {0})) * var(g, "u", {3, 5, 4}));
    auto gr = grad(l, {x, gm, bt});
    b.outputs = {y, gr[0], gr[1], gr[2], rm, rv};
  }, 1e-4f, 1e-3f);
  add("BatchNormEvalAndGrad", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 3, 4, 4});
    b.inputs = {x};
    b.values = {rnd({B, 3, 4, 4}, -1.f, 3.f, 36)};
    Tensor gm = var(g, "gm", {3}, 0.5f, 1.5f), bt = var(g, "bt", {3});
    Tensor rm = var(g, "rm", {3}), rv = var(g, "rv", {3}, 0.5f, 2.f);
    Tensor y = batch_norm(x, gm, bt, rm, rv, {.training = false});
    auto gr = grad(sum(y * var(g, "w", {3, 4, 4})), {x, gm, bt});
    b.outputs = {y, gr[0], gr[1], gr[2]};
  }, 1e-4f, 1e-3f);
  add("AvgPoolAndGrads", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 2, 7, 6});
    b.inputs = {x};
    b.values = {rnd({B, 2, 7, 6}, -1.f, 1.f, 37)};
    Tensor a = avg_pool2d(x, 2), c = avg_pool2d(x, 3, 2, 1), d = avg_pool2d(x, 3, 1), e = global_avg_pool2d(x);
    Tensor l = sum(a * var(g, "wa", {2, 3, 3})) + sum(c * var(g, "wc", {2, 4, 3})) +
               sum(d * var(g, "wd", {2, 5, 4})) + sum(e * var(g, "we", {2}));
    b.outputs = {a, c, d, e, grad(l, {x})[0]};
  });
  add("DropoutMaskBitIdentical", [=](Graph& g, Built& b) {
    Tensor x = g.input("x", f32, {batch, 1000});
    b.inputs = {x};
    b.values = {Array::from(std::vector<float>(static_cast<size_t>(B) * 1000, 1.f), {B, 1000})};
    b.outputs = {dropout(x, 0.3f), dropout(x, 0.5f), dropout(x, 0.f), dropout(x, 0.3f, true)};
  }, 0.f, 0.f);
  return cs;
}

// Runs `spec` on the CPU and the GPU with one seed; returns both outputs.
// `calls` calls on each side; the last outputs are returned.
std::pair<std::vector<Array>, std::vector<Array>> run_both(Graph& g, const FunctionSpec& spec,
                                                           const std::vector<Array>& values,
                                                           CudaSessionOptions gopts = {}, int calls = 1) {
  std::vector<ArrayView> views(values.begin(), values.end());
  Session cpu(g, {.seed = 21});
  gopts.seed = 21;
  CudaSession gpu(g, gopts);
  auto fc = cpu.function(spec);
  auto fg = gpu.function(spec);
  std::vector<Array> rc, rg;
  for (int i = 0; i < calls; ++i) {
    rc = fc(views);
    rg = fg(views);
  }
  return {std::move(rc), std::move(rg)};
}

class GpuOps : public ::testing::TestWithParam<OpCase> {};

TEST_P(GpuOps, MatchesCpu) {
  SYNK_REQUIRE_GPU();
  const OpCase& c = GetParam();
  for (bool graphs : {true, false}) {
    Graph g;
    Built b;
    c.build(g, b);
    FunctionSpec spec{.name = c.name, .inputs = b.inputs, .outputs = {}, .updates = {}};
    for (const Tensor& t : b.outputs) spec.outputs.emplace_back(t);
    // Three calls on each side: eager warm-up, capture, replay (the same
    // call count keeps dropout masks in step).
    auto [ref, got] = run_both(g, spec, b.values, {.graphs = graphs}, 3);
    ASSERT_EQ(ref.size(), got.size());
    for (size_t i = 0; i < ref.size(); ++i)
      expect_close(ref[i], got[i], c.atol, c.rtol,
                   c.name + " output " + std::to_string(i) + (graphs ? " (graph)" : " (eager)"));
  }
}

INSTANTIATE_TEST_SUITE_P(All, GpuOps, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& i) { return i.param.name; });

// A small CNN + MLP with dropout: the model of the training tests.
struct Net {
  Graph g;
  Tensor x, y, loss, acc;
  std::vector<Tensor> params, grads;
  std::vector<Update> updates;
  explicit Net(float drop = 0.25f) {
    x = g.input("x", f32, {batch, 1, 10, 10});
    y = g.input("y", i32, {batch});
    auto c1 = nn::conv2d(g, "c1", 1, 4, 3, {.stride = 1, .padding = 1});
    auto d1 = nn::dense(g, "d1", 4 * 5 * 5, 16);
    auto d2 = nn::dense(g, "d2", 16, 3);
    Tensor h = max_pool2d(relu(c1(x)), 2);
    Tensor logits = d2(dropout(relu(d1(flatten(h))), drop));
    loss = mean(softmax_cross_entropy(logits, y));
    acc = mean(cast(equal(argmax(logits, 1), y), f32));
    params = {c1.W, c1.b, d1.W, d1.b, d2.W, d2.b};
    grads = grad(loss, params);
    updates = optim::nesterov(params, grads, {.lr = 0.05f, .momentum = 0.9f});
  }
};

Array net_x(int64_t rows, uint32_t seed) { return rnd({rows, 1, 10, 10}, -1.f, 1.f, seed); }
Array net_y(const Array& x) {
  // A learnable label: which third of the image has the largest sum.
  const float* v = x.data<float>();
  const int64_t rows = x.shape()[0];
  std::vector<int32_t> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    float s[3] = {0, 0, 0};
    for (int64_t i = 0; i < 100; ++i) s[std::min<int64_t>(i / 34, 2)] += v[r * 100 + i];
    out[static_cast<size_t>(r)] = s[0] >= s[1] && s[0] >= s[2] ? 0 : (s[1] >= s[2] ? 1 : 2);
  }
  return Array::from(out, {rows});
}

TEST(GpuGrad, NetworkGradientsMatchCpu) {
  SYNK_REQUIRE_GPU();
  Net n;
  FunctionSpec spec{.name = "grads", .inputs = {n.x, n.y}, .outputs = {{n.loss}}, .updates = {}};
  for (const Tensor& t : n.grads) spec.outputs.emplace_back(t);
  Array x = net_x(9, 31);
  auto [ref, got] = run_both(n.g, spec, {x, net_y(x)});
  ASSERT_EQ(ref.size(), got.size());
  for (size_t i = 0; i < ref.size(); ++i) expect_close(ref[i], got[i], 1e-4f, 1e-3f, "output " + std::to_string(i));
}

TEST(GpuGraphReplay, ReplayEqualsFirstCallAndEagerRun) {
  SYNK_REQUIRE_GPU();
  Net n(0.f);
  FunctionSpec spec{.name = "eval", .inputs = {n.x, n.y}, .outputs = {{n.loss}, {n.acc}}, .updates = {}};
  for (const Tensor& t : n.grads) spec.outputs.emplace_back(t);
  Array x = net_x(7, 32), y = net_y(x);
  CudaSession s(n.g, {.seed = 4});
  auto f = s.function(spec);
  auto warm = f({x, y});  // eager warm-up
  EXPECT_EQ(s.graph_captures(), 0u);
  auto first = f({x, y});  // captured, then launched
  EXPECT_EQ(s.graph_captures(), 1u);
  for (size_t k = 0; k < first.size(); ++k) expect_close(warm[k], first[k], 1e-6f, 1e-6f, "warm-up " + std::to_string(k));
  for (int i = 0; i < 3; ++i) {
    auto again = f({x, y});
    ASSERT_EQ(again.size(), first.size());
    for (size_t k = 0; k < first.size(); ++k) expect_close(first[k], again[k], 0.f, 0.f, "replay output " + std::to_string(k));
  }
  EXPECT_EQ(s.graph_captures(), 1u);  // replayed, not re-captured
  // A new batch size gets its own graph; the old one still replays.
  Array x3 = net_x(3, 33);
  f({x3, net_y(x3)});
  EXPECT_EQ(s.graph_captures(), 1u);
  f({x3, net_y(x3)});
  EXPECT_EQ(s.graph_captures(), 2u);
  auto back = f({x, y});
  for (size_t k = 0; k < first.size(); ++k) expect_close(first[k], back[k], 0.f, 0.f, "after resize " + std::to_string(k));

  CudaSession eager(n.g, {.seed = 4, .graphs = false});
  auto fe = eager.function(spec);
  auto e = fe({x, y});
  EXPECT_EQ(eager.graph_captures(), 0u);
  for (size_t k = 0; k < first.size(); ++k) expect_close(first[k], e[k], 1e-6f, 1e-6f, "eager " + std::to_string(k));

  CudaSession debug(n.g, {.seed = 4, .sync_each_step = true});
  auto fd = debug.function(spec);
  auto d = fd({x, y});
  for (size_t k = 0; k < first.size(); ++k) expect_close(first[k], d[k], 1e-6f, 1e-6f, "sync_each_step " + std::to_string(k));
}

// call_into with ready (what the NCCL rank's gradient buckets rest on):
// gradients bound for device memory are handed over during the call, the
// last layer's first, each with its copy queued before ready() (a copy
// queued on the stream inside ready() sees the final values); the loss
// (host memory) comes after the call; every output once; the values are
// those of a plain call, eager and replayed (one graph per segment).
TEST(GpuSession, CallIntoReadyHandsOverGradientsDuringTheCall) {
  SYNK_REQUIRE_GPU();
#if SYNK_HAVE_CUDA
  Net n(0.f);
  FunctionSpec spec{.name = "grads", .inputs = {n.x, n.y}, .outputs = {{n.loss}}, .updates = {}};
  for (const Tensor& t : n.grads) spec.outputs.emplace_back(t);
  const Array x = net_x(7, 41), y = net_y(x);
  for (bool graphs : {true, false}) {
    const std::string mode = graphs ? "graphs" : "eager";
    CudaSession s(n.g, {.seed = 4, .graphs = graphs});
    CudaFunction f = s.function(spec);
    const std::vector<Array> want = f({x, y});  // the plan's eager first call
    Array loss(f32, want[0].shape());
    std::vector<cuda::DeviceBuffer> dev, seen;
    std::vector<void*> ptrs{loss.raw()};
    for (size_t k = 1; k < want.size(); ++k) {
      dev.emplace_back(want[k].nbytes());
      seen.emplace_back(want[k].nbytes());
      ptrs.push_back(dev.back().data());
    }
    const uint64_t captures_before = s.graph_captures();
    for (int call = 0; call < 3; ++call) {
      std::vector<size_t> order;
      f.call_into({x, y}, ptrs, [&](size_t k) {
        order.push_back(k);
        if (k == 0) return;
        EXPECT_EQ(cudaMemcpyAsync(seen[k - 1].data(), dev[k - 1].data(), want[k].nbytes(), cudaMemcpyDeviceToDevice,
                                  s.stream()),
                  cudaSuccess);
      });
      ASSERT_EQ(cudaStreamSynchronize(s.stream()), cudaSuccess);
      ASSERT_EQ(order.size(), want.size()) << mode;
      std::vector<size_t> sorted = order;
      std::sort(sorted.begin(), sorted.end());
      for (size_t k = 0; k < sorted.size(); ++k) EXPECT_EQ(sorted[k], k) << mode << ": every output once";
      EXPECT_EQ(order.back(), 0u) << mode << ": the loss (host memory) is handed over after the call";
      const auto pos = [&](size_t k) { return std::find(order.begin(), order.end(), k) - order.begin(); };
      EXPECT_LT(pos(5), pos(1)) << mode << ": d2/W's gradient before c1/W's";
      expect_close(want[0], loss, 1e-6f, 1e-6f, mode + " loss");
      for (size_t k = 1; k < want.size(); ++k) {
        Array got(f32, want[k].shape()), at_ready(f32, want[k].shape());
        dev[k - 1].download(got.raw());
        seen[k - 1].download(at_ready.raw());
        expect_close(got, at_ready, 0.f, 0.f, mode + ": output " + std::to_string(k) + " changed after ready()");
        expect_close(want[k], got, 1e-6f, 1e-6f, mode + ": output " + std::to_string(k));
      }
    }
    if (graphs) EXPECT_GT(s.graph_captures(), captures_before + 1) << "one graph per segment";
    else EXPECT_EQ(s.graph_captures(), 0u);
  }
#endif
}

// Segment graphs (call_into with ready) recaptured for new splits where a
// capture fails midway (made to throw at the second segment): the failed set
// is dropped whole, so a later call with the splits captured before replays
// their graphs (not the failed set's first segment and nothing for the
// rest), and a call with the failed splits captures them afresh; every value
// as the plain call's.
TEST(GpuGraphReplay, FailedSegmentCaptureLeavesNoPartialGraphs) {
  SYNK_REQUIRE_GPU();
#if SYNK_HAVE_CUDA
  Net n(0.f);
  FunctionSpec spec{.name = "grads", .inputs = {n.x, n.y}, .outputs = {{n.loss}}, .updates = {}};
  for (const Tensor& t : n.grads) spec.outputs.emplace_back(t);
  const Array x = net_x(7, 43), y = net_y(x);
  CudaSession s(n.g, {.seed = 4});
  CudaFunction f = s.function(spec);
  const std::vector<Array> want = f({x, y});  // the plan's eager first call
  Array loss(f32, want[0].shape());
  std::vector<cuda::DeviceBuffer> dev;
  std::vector<Array> host;
  for (size_t k = 1; k < want.size(); ++k) {
    dev.emplace_back(want[k].nbytes());
    host.emplace_back(f32, want[k].shape());
  }
  // Splits A: every gradient to device memory; splits B: only d2's
  // (outputs 5 and 6, finished early in the backward pass, so B has
  // segments too), the rest to host memory.
  auto to_device = [](bool all, size_t k) { return all || k >= 5; };
  auto ptrs = [&](bool all) {
    std::vector<void*> p{loss.raw()};
    for (size_t k = 1; k < want.size(); ++k) p.push_back(to_device(all, k) ? dev[k - 1].data() : host[k - 1].raw());
    return p;
  };
  auto call = [&](bool all) {
    size_t handed = 0;
    f.call_into({x, y}, ptrs(all), [&](size_t) { ++handed; });
    return handed;
  };
  auto check = [&](bool all, const std::string& what) {
    expect_close(want[0], loss, 1e-6f, 1e-6f, what + ": loss");
    for (size_t k = 1; k < want.size(); ++k) {
      Array got(f32, want[k].shape());
      if (to_device(all, k)) dev[k - 1].download(got.raw());
      else got = host[k - 1];
      expect_close(want[k], got, 1e-6f, 1e-6f, what + ": output " + std::to_string(k));
    }
  };
  struct Unhook {
    ~Unhook() { cuda::test_before_segment_capture = nullptr; }
  } unhook;

  ASSERT_EQ(call(true), want.size());
  check(true, "splits A, captured");
  const uint64_t after_a = s.graph_captures();
  ASSERT_GT(after_a, 1u) << "splits A run as several segment graphs";

  cuda::test_before_segment_capture = [](size_t segment) {
    if (segment == 1) throw BackendError("test: the capture of segment 1 refused");
  };
  try {
    call(false);
    ADD_FAILURE() << "the refused capture did not fail the call";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("segment 1 refused"), std::string::npos) << e.what();
  }
  cuda::test_before_segment_capture = nullptr;
  EXPECT_EQ(s.graph_captures(), after_a) << "no graph of the failed set counted";

  ASSERT_EQ(call(true), want.size());
  check(true, "splits A after B's capture failed");
  EXPECT_EQ(s.graph_captures(), after_a) << "A's graphs kept and replayed";

  ASSERT_EQ(call(false), want.size());
  check(false, "splits B, captured afresh");
  EXPECT_GT(s.graph_captures(), after_a + 1) << "B's segments captured whole";
#endif
}

TEST(GpuGraphReplay, DropoutDrawsNewMasksPerCallLikeTheCpu) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 257});
  Tensor other = g.input("z", f32, {batch});
  FunctionSpec drop{.name = "drop", .inputs = {x}, .outputs = {{dropout(x, 0.4f)}}, .updates = {}};
  FunctionSpec plain{.name = "plain", .inputs = {other}, .outputs = {{other * 2.f}}, .updates = {}};
  Array ones = Array::from(std::vector<float>(3 * 257, 1.f), {3, 257});
  Array z = rnd({3}, -1.f, 1.f, 1);
  Session cpu(g, {.seed = 8, .rank = 2});
  CudaSession gpu(g, {.seed = 8, .rank = 2});
  auto dc = cpu.function(drop), pc = cpu.function(plain);
  auto dg = gpu.function(drop), pg = gpu.function(plain);
  std::vector<float> prev;
  for (int call = 0; call < 4; ++call) {
    // Calls of other functions advance the counter too, on both devices.
    if (call == 2) {
      pc({z});
      pg({z});
    }
    Array mc = dc({ones})[0], mg = dg({ones})[0];
    expect_close(mc, mg, 0.f, 0.f, "mask of call " + std::to_string(call));
    EXPECT_NE(mg.to_vector<float>(), prev) << "call " << call << " repeated the previous mask";
    prev = mg.to_vector<float>();
  }
  EXPECT_EQ(gpu.graph_captures(), 1u);  // "drop" replays; "plain" ran once, eagerly
}

TEST(GpuTraining, ShortRunMatchesCpu) {
  SYNK_REQUIRE_GPU();
  Net n;
  FunctionSpec spec{.name = "train", .inputs = {n.x, n.y}, .outputs = {{n.loss}, {n.acc}}, .updates = n.updates};
  Session cpu(n.g, {.seed = 5});
  CudaSession gpu(n.g, {.seed = 5});
  auto tc = cpu.function(spec);
  auto tg = gpu.function(spec);
  const int64_t sizes[] = {16, 16, 9, 16, 1, 0, 16, 16, 16, 16};
  float first = 0.f, last = 0.f;
  for (int step = 0; step < 10; ++step) {
    Array x = net_x(sizes[step], 100 + static_cast<uint32_t>(step)), y = net_y(x);
    auto rc = tc({x, y});
    auto rg = tg({x, y});
    expect_close(rc[0], rg[0], 1e-4f, 1e-3f, "loss at step " + std::to_string(step));
    if (step == 0) first = rg[0].scalar();
    if (sizes[step] > 0) last = rg[0].scalar();
  }
  for (const Tensor& p : n.params) expect_close(cpu.get(p.name()), gpu.get(p.name()), 1e-4f, 1e-3f, p.name());
  // Optimizer state too.
  for (const Tensor& v : n.g.variables()) expect_close(cpu.get(v.name()), gpu.get(v.name()), 1e-4f, 1e-3f, v.name());
  EXPECT_TRUE(std::isfinite(first) && std::isfinite(last));
}

// AdamW with a warm-up/cosine schedule over clipped gradients, a GELU MLP:
// the scheduled lr (reported through learning_rate), the step counter and
// every variable follow the CPU over the whole schedule.
TEST(GpuTraining, AdamWScheduleClipMatchesCpu) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 6});
  Tensor y = g.input("y", f32, {batch, 2});
  auto d1 = nn::dense(g, "d1", 6, 8, Init::glorot_uniform(), Init::uniform(-0.1f, 0.1f));
  auto d2 = nn::dense(g, "d2", 8, 2);
  Tensor loss = mean(square(d2(gelu(d1(x), true)) - y));
  std::vector<Tensor> params = {d1.W, d1.b, d2.W, d2.b};
  optim::Options o{.lr = 0.02f, .weight_decay = 0.05f};
  o.schedule = {optim::Schedule::warmup_cosine, 3, 8, 0.002f};
  Tensor norm;
  auto ups = optim::adamw(params, optim::clip_by_global_norm(grad(loss, params), 0.5f, &norm), o);
  Tensor lr = optim::learning_rate(g.find("d1/W/t") + 1.f, o);
  FunctionSpec spec{.name = "train", .inputs = {x, y}, .outputs = {{loss}, {norm}, {lr}}, .updates = ups};
  Session cpu(g, {.seed = 6});
  CudaSession gpu(g, {.seed = 6});
  auto tc = cpu.function(spec);
  auto tg = gpu.function(spec);
  for (int step = 0; step < 10; ++step) {
    Array xv = rnd({7, 6}, -2.f, 2.f, 200 + static_cast<uint32_t>(step)), yv = rnd({7, 2}, -1.f, 1.f, 300);
    auto rc = tc({xv, yv});
    auto rg = tg({xv, yv});
    for (size_t k = 0; k < rc.size(); ++k)
      expect_close(rc[k], rg[k], 1e-5f, 1e-4f, "output " + std::to_string(k) + " at step " + std::to_string(step));
  }
  for (const Tensor& v : g.variables()) expect_close(cpu.get(v.name()), gpu.get(v.name()), 1e-5f, 1e-4f, v.name());
  EXPECT_EQ(gpu.get("d1/W/t").scalar(), 10.f);
}

TEST(GpuUpdates, SwapAndOutputsSeeOldValues) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor a = g.variable("a", {3}, Init::uniform(-1.f, 1.f));
  Tensor b = g.variable("b", {3}, Init::uniform(-1.f, 1.f));
  Tensor c = g.variable("c", {3}, Init::constant(1.f));
  FunctionSpec spec{.name = "swap", .inputs = {}, .outputs = {{a}, {b}, {c}},
                    .updates = {{a, b}, {b, a}, {c, c * 2.f}}};
  Session cpu(g, {.seed = 1});
  CudaSession gpu(g, {.seed = 1});
  auto fc = cpu.function(spec);
  auto fg = gpu.function(spec);
  for (int i = 0; i < 3; ++i) {
    auto rc = fc({}), rg = fg({});
    for (size_t k = 0; k < rc.size(); ++k) expect_close(rc[k], rg[k], 0.f, 0.f, "call " + std::to_string(i));
  }
  for (const char* name : {"a", "b", "c"}) expect_close(cpu.get(name), gpu.get(name), 0.f, 0.f, name);
}

TEST(GpuSession, GetSetVariables) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor w = g.variable("w", {2, 3}, Init::glorot_uniform());
  Session cpu(g, {.seed = 3});
  CudaSession gpu(g, {.seed = 3});
  expect_close(cpu.get("w"), gpu.get("w"), 0.f, 0.f, "initial value");
  Array v = Array::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  gpu.set("w", v);
  expect_close(v, gpu.get("w"), 0.f, 0.f, "after set");
  auto f = gpu.function({.name = "f", .inputs = {}, .outputs = {{sum(w)}}, .updates = {}});
  EXPECT_EQ(f({})[0].scalar(), 21.f);
  EXPECT_NE(gpu.variable_data(w.id()), nullptr);
  EXPECT_THROW(gpu.get("nope"), ArgumentError);
  EXPECT_THROW(gpu.set("w", Array::zeros(f32, {3, 2})), ShapeError);
  EXPECT_THROW(gpu.set("w", Array::zeros(i32, {2, 3})), ArgumentError);
}

TEST(GpuSession, BadInputsThrowAndNextCallWorks) {
  SYNK_REQUIRE_GPU();
  Net n;
  CudaSession gpu(n.g, {.seed = 2});
  auto f = gpu.function({.name = "train", .inputs = {n.x, n.y}, .outputs = {{n.loss}}, .updates = n.updates});
  Array x = net_x(4, 7), y = net_y(x);
  EXPECT_THROW(f({x}), ArgumentError);
  EXPECT_THROW(f({net_x(3, 1), y}), ShapeError);
  Array bad = Array::from(std::vector<int32_t>{0, 1, 3, 2}, {4});
  const Array before = gpu.get("d2/W");
  try {
    f({x, bad});
    FAIL() << "an out-of-range label did not throw";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("label 3 at row 2"), std::string::npos) << e.what();
  }
  expect_close(before, gpu.get("d2/W"), 0.f, 0.f, "variables untouched by the refused call");
  EXPECT_TRUE(std::isfinite(f({x, y})[0].scalar()));
}

// An embedding index outside the table: from a host input it is refused
// before anything runs (the update is not applied); computed on the device
// it is found by the kernels and reported after the call, with the op, the
// index, its position and the table's rows; either way the next call works.
TEST(GpuEmbedding, BadIndexIsReportedAndNextCallWorks) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor idx = g.input("idx", i32, {batch});
  Tensor table = g.variable("table", {5, 3}, Init::uniform(-1.f, 1.f));
  Tensor e = embedding(table, idx);
  Tensor e_dev = embedding(table, idx + g.constant(1.f, i32));  // indices computed on the device
  Tensor dt = grad(sum(e), {table})[0];
  CudaSession gpu(g, {.seed = 3});
  auto step = gpu.function({.name = "step", .inputs = {idx}, .outputs = {{sum(e)}}, .updates = {{table, table - dt}}});
  auto dev = gpu.function({.name = "dev", .inputs = {idx}, .outputs = {{e_dev}}, .updates = {}});
  const Array before = gpu.get("table");
  try {
    step({Array::from(std::vector<int32_t>{0, 4, 5}, {3})});
    FAIL() << "an out-of-range index did not throw";
  } catch (const ArgumentError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("function 'step'"), std::string::npos) << m;
    EXPECT_NE(m.find("embedding"), std::string::npos) << m;
    EXPECT_NE(m.find("index 5 at position 2 is outside [0, 5)"), std::string::npos) << m;
  }
  expect_close(before, gpu.get("table"), 0.f, 0.f, "table untouched by the refused call");
  for (int round = 0; round < 2; ++round) {  // the second after a capture (graphs on)
    try {
      dev({Array::from(std::vector<int32_t>{0, 1, 2, -2, 4, 3}, {6})});
      FAIL() << "an out-of-range computed index did not throw";
    } catch (const ArgumentError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("on the GPU"), std::string::npos) << m;
      EXPECT_NE(m.find("index -1 at position 3 is outside [0, 5)"), std::string::npos) << m;  // -2 + 1, the first bad one
    }
    Array ok = dev({Array::from(std::vector<int32_t>{0, 3, 2}, {3})})[0];
    EXPECT_EQ(ok.shape(), (Shape{3, 3}));
    const Array t = gpu.get("table");
    for (int j = 0; j < 3; ++j) EXPECT_EQ(ok.data<float>()[3 + j], t.data<float>()[12 + j]);
  }
  EXPECT_NO_THROW(step({Array::from(std::vector<int32_t>{0, 4, 4}, {3})}));
}

// Batched products over no rows: the outputs are empty, and a shared
// operand's gradient (a sum over no products) is zeros, as on the CPU.
TEST(GpuBatchMatMul, ZeroRowsMatchCpu) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3, 4});
  Tensor W = var(g, "W", {4, 2}), A = var(g, "A", {3, 3});
  Tensor y = matmul(x, W);
  std::vector<Tensor> gs = grad(sum(y) + sum(matmul(A, x, true, false)), {W, A});
  FunctionSpec spec{.name = "zero", .inputs = {x}, .outputs = {{y}, {gs[0]}, {gs[1]}}, .updates = {}};
  for (int64_t rows : {0, 2}) {
    auto [ref, got] = run_both(g, spec, {rnd({rows, 3, 4}, -1.f, 1.f, 40)}, {}, 2);
    for (size_t i = 0; i < ref.size(); ++i)
      expect_close(ref[i], got[i], 1e-5f, 1e-4f, "output " + std::to_string(i) + " rows " + std::to_string(rows));
  }
}

// call_into: outputs to host or device pointers, inputs from either, so
// results can stay on the GPU between calls (the NCCL training step does).
TEST(GpuSession, CallIntoHostAndDevicePointers) {
  SYNK_REQUIRE_GPU();
#if SYNK_HAVE_CUDA
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3});
  Tensor y = g.input("y", f32, {batch, 3});
  CudaSession gpu(g, {.seed = 1});
  auto twice = gpu.function({.name = "twice", .inputs = {x}, .outputs = {{x * 2.f}, {sum(x)}}, .updates = {}});
  auto total = gpu.function({.name = "total", .inputs = {y}, .outputs = {{sum(y)}}, .updates = {}});
  const Array xv = rnd({4, 3}, -1.f, 1.f, 5);
  const std::vector<Array> ref = twice({xv});

  Array o0(f32, {4, 3}), o1(f32, ref[1].shape());
  twice.call_into({xv}, {o0.raw(), o1.raw()});
  expect_close(ref[0], o0, 0.f, 0.f, "host output 0");
  expect_close(ref[1], o1, 0.f, 0.f, "host output 1");

  cuda::DeviceBuffer on_gpu(12 * sizeof(float));
  Array s(f32, ref[1].shape());
  twice.call_into({xv}, {on_gpu.data(), s.raw()});
  Array back(f32, {4, 3});
  on_gpu.download(back.raw());
  expect_close(ref[0], back, 0.f, 0.f, "device output 0");
  const float t = total({ArrayView{f32, {4, 3}, on_gpu.data()}})[0].scalar();
  EXPECT_NEAR(t, 2.f * ref[1].scalar(), 1e-4f);

  EXPECT_THROW(twice.call_into({xv}, {o0.raw()}), ArgumentError);
#endif
}

TEST(GpuSession, Tf32MatmulIsClose) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 64});
  Tensor W = g.variable("W", {64, 32}, Init::uniform(-1.f, 1.f));
  FunctionSpec spec{.name = "mm", .inputs = {x}, .outputs = {{matmul(x, W)}}, .updates = {}};
  auto [ref, got] = run_both(g, spec, {rnd({33, 64}, -1.f, 1.f, 3)}, {.tf32 = true});
  expect_close(ref[0], got[0], 5e-2f, 1e-2f, "tf32 matmul");
}

// Keeps the GPU case table honest on machines without a GPU: every case
// builds its graph and runs on the CPU reference.
TEST(CudaExecCases, EveryOpCaseRunsOnTheCpu) {
  for (const OpCase& c : op_cases()) {
    Graph g;
    Built b;
    ASSERT_NO_THROW(c.build(g, b)) << c.name;
    FunctionSpec spec{.name = c.name, .inputs = b.inputs, .outputs = {}, .updates = {}};
    for (const Tensor& t : b.outputs) spec.outputs.emplace_back(t);
    Session cpu(g, {.seed = 21});
    auto f = cpu.function(spec);
    std::vector<ArrayView> views(b.values.begin(), b.values.end());
    std::vector<Array> out;
    ASSERT_NO_THROW(out = f(views)) << c.name;
    EXPECT_EQ(out.size(), b.outputs.size()) << c.name;
  }
}

TEST(CudaExecCases, NetOfTheGpuTestsTrainsOnTheCpu) {
  Net n;
  Session cpu(n.g, {.seed = 5});
  auto f = cpu.function({.name = "train", .inputs = {n.x, n.y}, .outputs = {{n.loss}, {n.acc}}, .updates = n.updates});
  for (int64_t rows : {16, 1, 0}) {
    Array x = net_x(rows, 1), y = net_y(x);
    auto r = f({x, y});
    ASSERT_EQ(r.size(), 2u);
    if (rows > 0) EXPECT_TRUE(std::isfinite(r[0].scalar()));
  }
}

TEST(CudaSessionNoDevice, ConstructorThrowsBackendError) {
  if (CudaSession::available()) GTEST_SKIP() << "a CUDA device is present (the Gpu* suites cover it)";
  Graph g;
  g.variable("w", {2}, Init::zeros());
  try {
    CudaSession s(g);
    FAIL() << "CudaSession constructed without a device";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("CudaSession"), std::string::npos) << e.what();
  }
}


// ---- issue 16: read before the first GPU run -----------------------------------------------

// The process-wide planner switches, restored when the test ends.
struct CompileOptionsGuard {
#if SYNK_HAVE_CUDA
  plan::CompileOptions saved = plan::default_compile_options();
  ~CompileOptionsGuard() { plan::default_compile_options() = saved; }
#endif
};

// A function with an input of 300 floats per row that no output or update
// reads, listed first, next to a used one.
struct UnusedInput {
  Graph g;
  Tensor u, x, w;
  FunctionSpec spec;
  UnusedInput() {
    u = g.input("u", f32, {batch, 300});
    x = g.input("x", f32, {batch, 3});
    w = g.variable("w", {3}, Init::constant(1.f));
    spec = {.name = "unused", .inputs = {u, x}, .outputs = {{sum(x * w)}, {x}}, .updates = {{w, w + sum(x, {0})}}};
  }
};

// Item 1, the layout half (no device needed): every input slot the plan
// has holds the input's whole declared shape at the batch size, inside the
// arena and apart from the other slots. The planner resolves shapes of
// needed nodes only, so an unused input used to get a 256-byte slot at the
// end of the arena, and its 4 x 300 floats were copied past it.
TEST(CudaPlanLayout, EveryInputSlotHoldsItsInput) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  UnusedInput m;
  for (bool unused_first : {true, false}) {
    FunctionSpec spec = m.spec;
    if (!unused_first) spec.inputs = {m.x, m.u};
    const FunctionDef def = make_function_def(spec);
    const int64_t batch_rows = 4;
    plan::Plan plan = plan::compile(m.g.nodes(), def, batch_rows, cuda::plan_options());
    ASSERT_TRUE(plan.consts.empty()) << "the test needs a plan without constants (no device here)";
    const cuda::CudaPlan cp = cuda::make_cuda_plan(std::move(plan), m.g.nodes(), def, 1, 0, nullptr);
    ASSERT_EQ(cp.input_offset.size(), 2u);
    std::vector<std::pair<int64_t, int64_t>> slots;
    for (size_t i = 0; i < def.inputs.size(); ++i) {
      if (cp.input_offset[i] < 0) continue;  // not copied at all: fine
      const Node& n = m.g.node(def.inputs[i]);
      const int64_t bytes = batch_rows * n.shape[1] * 4;
      EXPECT_GE(cp.input_offset[i], 0);
      EXPECT_LE(cp.input_offset[i] + bytes, cp.arena_bytes) << "input '" << n.name << "' runs past the arena";
      for (auto [o, e] : slots)
        EXPECT_TRUE(cp.input_offset[i] + bytes <= o || e <= cp.input_offset[i]) << "input '" << n.name << "' overlaps";
      slots.emplace_back(cp.input_offset[i], cp.input_offset[i] + bytes);
    }
    // The used input has its slot.
    const size_t xi = unused_first ? 1 : 0;
    EXPECT_GE(cp.input_offset[xi], 0);
  }
#endif
}

// Item 6, the planner half: CUDA plans never carry the CPU-only steps,
// whatever the process-wide defaults say, and a plan that does is refused.
TEST(CudaPlanLayout, CpuOnlyPlannerSwitchesAreForcedOffAndRefused) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  CompileOptionsGuard guard;
  plan::default_compile_options().fuse_elementwise = true;
  plan::default_compile_options().fuse_norm_relu = true;
  plan::default_compile_options().fuse_matmul_gelu_grad = true;
  plan::default_compile_options().outputs_external = true;
  plan::default_compile_options().reuse = false;
  const plan::CompileOptions o = cuda::plan_options();
  EXPECT_FALSE(o.fuse_elementwise);
  EXPECT_FALSE(o.fuse_norm_relu);
  EXPECT_FALSE(o.fuse_matmul_gelu_grad);
  EXPECT_FALSE(o.outputs_external);
  EXPECT_FALSE(o.reuse) << "the other switches come from the defaults";

  Graph g;
  Tensor x = g.input("x", f32, {batch, 8});
  Tensor v = g.variable("v", {8}, Init::uniform(-1.f, 1.f));
  const FunctionDef def =
      make_function_def({.name = "chain", .inputs = {x}, .outputs = {{tanh(x * v) * v + x}}, .updates = {}});
  plan::Plan cpu_plan = plan::compile(g.nodes(), def, 4, plan::default_compile_options());
  bool cpu_only = !cpu_plan.fused.empty();
  for (const plan::ValueLoc& l : cpu_plan.loc) cpu_only = cpu_only || l.kind == plan::Loc::Output;
  ASSERT_TRUE(cpu_only) << "the defaults did not make CPU-only steps; the test shows nothing";
  ASSERT_TRUE(cpu_plan.consts.empty());
  try {
    (void)cuda::make_cuda_plan(std::move(cpu_plan), g.nodes(), def, 1, 0, nullptr);
    FAIL() << "the CUDA executor took a plan with CPU-only steps";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("chain"), std::string::npos) << e.what();
  }
  plan::Plan plan = plan::compile(g.nodes(), def, 4, cuda::plan_options());
  EXPECT_TRUE(plan.fused.empty());
  EXPECT_NO_THROW((void)cuda::make_cuda_plan(std::move(plan), g.nodes(), def, 1, 0, nullptr));

  // A ReLU folded into its batch norm (the CUDA batch norm has no ReLU).
  Graph gb;
  Tensor xb = gb.input("x", f32, {batch, 3, 4, 4});
  auto bn = nn::batch_norm(gb, "bn", 3);
  const FunctionDef bdef =
      make_function_def({.name = "bn_relu", .inputs = {xb}, .outputs = {{relu(bn(xb, true))}}, .updates = {}});
  plan::CompileOptions folding;
  folding.fuse_norm_relu = true;
  plan::Plan folded = plan::compile(gb.nodes(), bdef, 2, folding);
  bool has_fold = false;
  for (const plan::Step& s : folded.steps) has_fold = has_fold || (s.op == Op::BatchNorm && s.relu);
  ASSERT_TRUE(has_fold) << "the planner did not fold the ReLU; the test shows nothing";
  try {
    (void)cuda::make_cuda_plan(std::move(folded), gb.nodes(), bdef, 1, 0, nullptr);
    FAIL() << "the CUDA executor took a batch norm with a folded ReLU";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("'bn_relu': the CUDA executor got a plan"), std::string::npos) << e.what();
  }
  plan::Plan unfolded = plan::compile(gb.nodes(), bdef, 2, cuda::plan_options());
  for (const plan::Step& s : unfolded.steps) EXPECT_FALSE(s.op == Op::BatchNorm && s.relu);

  // GELU's gradient folded into the product it reads (the CUDA product has
  // no such epilogue).
  Graph gg;
  Tensor hg = gg.input("h", f32, {batch, 5, 16});
  Tensor dyg = gg.input("dy", f32, {batch, 5, 8});
  Tensor wg = gg.variable("w", {16, 8}, Init::uniform(-1.f, 1.f));
  const FunctionDef gdef = make_function_def(
      {.name = "gelu_back", .inputs = {hg, dyg}, .outputs = {{gelu_grad(hg, matmul(dyg, wg, false, true), false)}}});
  plan::CompileOptions gelu_folding;
  gelu_folding.fuse_matmul_gelu_grad = true;
  plan::Plan gfolded = plan::compile(gg.nodes(), gdef, 2, gelu_folding);
  bool has_gelu_fold = false;
  for (const plan::Step& s : gfolded.steps) has_gelu_fold = has_gelu_fold || s.gelu_grad;
  ASSERT_TRUE(has_gelu_fold) << "the planner did not fold GELU's gradient; the test shows nothing";
  try {
    (void)cuda::make_cuda_plan(std::move(gfolded), gg.nodes(), gdef, 1, 0, nullptr);
    FAIL() << "the CUDA executor took a product with GELU's gradient folded in";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("'gelu_back': the CUDA executor got a plan"), std::string::npos) << e.what();
  }
  plan::Plan gplain = plan::compile(gg.nodes(), gdef, 2, cuda::plan_options());
  for (const plan::Step& s : gplain.steps) EXPECT_FALSE(s.gelu_grad);
#endif
}

// Item 1 on the device: the unused input is not copied over the next slot
// or past the arena; results and variables equal the CPU's.
TEST(GpuSession, UnusedInputOfManyFloats) {
  SYNK_REQUIRE_GPU();
  UnusedInput m;
  Session cpu(m.g, {.seed = 3});
  CudaSession gpu(m.g, {.seed = 3});
  auto fc = cpu.function(m.spec);
  auto fg = gpu.function(m.spec);
  for (int call = 0; call < 4; ++call) {
    const int64_t rows = call == 2 ? 7 : 4;
    Array u = rnd({rows, 300}, 1e6f, 2e6f, 40 + static_cast<uint32_t>(call));
    Array x = rnd({rows, 3}, -1.f, 1.f, 50 + static_cast<uint32_t>(call));
    auto rc = fc({u, x}), rg = fg({u, x});
    for (size_t k = 0; k < rc.size(); ++k)
      expect_close(rc[k], rg[k], 1e-5f, 1e-5f, "call " + std::to_string(call) + " output " + std::to_string(k));
  }
  expect_close(cpu.get("w"), gpu.get("w"), 1e-5f, 1e-5f, "w");
}

// Item 4: constants are uploaded on the session's stream, so the first
// (eager) call reads them uploaded.
TEST(GpuSession, ConstantsReadyOnTheFirstCall) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 5});
  Tensor y = x;
  for (int k = 1; k <= 40; ++k) y = y * (1.f + 0.001f * static_cast<float>(k)) + static_cast<float>(k);
  FunctionSpec spec{.name = "consts", .inputs = {x}, .outputs = {{y}}, .updates = {}};
  auto [ref, got] = run_both(g, spec, {rnd({6, 5}, -1.f, 1.f, 9)});
  expect_close(ref[0], got[0], 1e-3f, 1e-5f, "first call");
}

// Item 5: a call refused for a bad label counts on both devices, so the
// next dropout masks stay equal to the CPU's.
TEST(GpuGraphReplay, DropoutMasksStayInStepAfterARefusedCall) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 257});
  Tensor y = g.input("y", i32, {batch});
  Tensor d = dropout(x, 0.4f);
  FunctionSpec spec{.name = "drop", .inputs = {x, y}, .outputs = {{d}, {mean(softmax_cross_entropy(d, y))}},
                    .updates = {}};
  Session cpu(g, {.seed = 8, .rank = 1});
  CudaSession gpu(g, {.seed = 8, .rank = 1});
  auto fc = cpu.function(spec);
  auto fg = gpu.function(spec);
  Array ones = Array::from(std::vector<float>(3 * 257, 1.f), {3, 257});
  Array good = Array::from(std::vector<int32_t>{0, 5, 256}, {3});
  Array bad = Array::from(std::vector<int32_t>{0, 257, 1}, {3});
  for (int call = 0; call < 5; ++call) {
    if (call == 1 || call == 3) {
      EXPECT_THROW(fc({ones, bad}), ArgumentError);
      EXPECT_THROW(fg({ones, bad}), ArgumentError);
      continue;
    }
    expect_close(fc({ones, good})[0], fg({ones, good})[0], 0.f, 0.f, "mask of call " + std::to_string(call));
  }
}

// Item 6 on the device: the CPU-only defaults switched on process-wide
// change nothing on the GPU.
TEST(GpuSession, IgnoresCpuOnlyPlannerDefaults) {
  SYNK_REQUIRE_GPU();
  CompileOptionsGuard guard;
#if SYNK_HAVE_CUDA
  plan::default_compile_options().fuse_elementwise = true;
  plan::default_compile_options().outputs_external = true;
#endif
  Graph g;
  Tensor x = g.input("x", f32, {batch, 8});
  Tensor v = g.variable("v", {8}, Init::uniform(-1.f, 1.f));
  FunctionSpec spec{.name = "chain", .inputs = {x}, .outputs = {{tanh(x * v) * v + x}, {sum(x)}}, .updates = {}};
  auto [ref, got] = run_both(g, spec, {rnd({5, 8}, -1.f, 1.f, 2)}, {}, 3);
  for (size_t k = 0; k < ref.size(); ++k) expect_close(ref[k], got[k], 1e-5f, 1e-4f, "output " + std::to_string(k));
}

// Item 3 on the device: a child forked after its parent initialised CUDA
// cannot use it; its CudaSession must say that initialisation failed, not
// that there is no device.
TEST(GpuSession, ForkedChildReportsInitialisationFailure) {
  SYNK_REQUIRE_GPU();
#if SYNK_HAVE_CUDA
  Graph g;
  g.variable("w", {2}, Init::zeros());
  CudaSession parent(g);  // CUDA initialised here
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string msg = "constructed";
    try {
      CudaSession child(g);
    } catch (const std::exception& e) {
      msg = e.what();
    }
    [[maybe_unused]] auto w = ::write(fds[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  if (msg == "constructed") GTEST_SKIP() << "this driver lets a forked child use CUDA";
  EXPECT_EQ(msg.find("no CUDA device is visible"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CUDA"), std::string::npos) << msg;
#endif
}

}  // namespace

namespace {

// The CUDA executor's rank memory (device scratch, copies, the scale_add
// kernel, zero) against the CPU's arithmetic, bit for bit: what the runtime's
// training step and variable collectives rely on.
TEST(GpuRankMemory, MatchesCpu) {
  SYNK_REQUIRE_GPU();
  Graph g;
  g.variable("v", {3});
  auto ex = exec::make_executor(g, {.device = exec::Device::cuda});
  synk_test::check_rank_memory(*ex);
}

}  // namespace

namespace {

// A caller's dropout key draws the same masks on the GPU as on the CPU,
// whatever the sessions' ranks and call counts (CallKey).
TEST(GpuKeyedDropout, MatchesCpu) {
  SYNK_REQUIRE_GPU();
  Graph g;
  Tensor x = g.input("x", f32, {batch, 300});
  Tensor y = dropout(x, 0.3f);
  Session cpu(g, {.seed = 9, .rank = 0});
  CudaSession gpu(g, {.seed = 9, .rank = 2});
  Function fc = cpu.function(FunctionSpec{"d", {x}, {{y}}});
  CudaFunction fg = gpu.function(FunctionSpec{"d", {x}, {{y}}});
  const Array X = Array::from(std::vector<float>(5 * 300, 1.f), {5, 300});
  fg({X});  // one more call on the GPU: the key, not the count, decides
  EXPECT_EQ(fg({X}, CallKey{77})[0].to_vector<float>(), fc({X}, CallKey{77})[0].to_vector<float>());
  EXPECT_NE(fg({X}, CallKey{78})[0].to_vector<float>(), fc({X}, CallKey{77})[0].to_vector<float>());
}

}  // namespace
