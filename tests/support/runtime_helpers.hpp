// tests/support/runtime_helpers.hpp — what the runtime tests share: options
// for a small runtime, a model whose outputs use every collect mode, row
// data and comparisons against a one-process Session. Header only; the
// /proc leak probe is proc_probe.hpp.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "synk/synk.hpp"

namespace synk_test {

// `n` ranks, a fixed seed, a short spin (the tests oversubscribe the cores).
inline synk::RuntimeOptions opts(int n, uint64_t seed = 7) {
  return {.workers = n, .seed = seed, .spin = std::chrono::microseconds(5)};
}

// A small model whose outputs exercise every collect mode.
struct Net {
  std::unique_ptr<synk::Graph> g = std::make_unique<synk::Graph>();
  synk::Tensor x, W, counter, z, avg, sum, max, min, prod, rows, none;
  Net() {
    using namespace synk;
    x = g->input("x", f32, {batch, 3});
    W = g->variable("W", {3, 2}, Init::uniform(-1, 1));
    counter = g->variable("counter", {2}, Init::zeros());
    z = matmul(x, W);                  // [batch, 2]
    avg = mean(z);
    sum = synk::sum(z, {0});           // [2]
    max = synk::max(z);
    min = -synk::max(-z);
    prod = exp(synk::sum(z) * 0.1f);   // product over shares = exp(0.1 * total)
    none = synk::sum(z);
  }
  synk::FunctionSpec spec() {
    using synk::Collect;
    return {"f", {x}, {{avg, Collect::avg}, {sum, Collect::sum}, {max, Collect::max}, {min, Collect::min},
                       {prod, Collect::prod}, {z, Collect::gather}},
            {{counter, counter + 1.f}}};
  }
};

// A one-layer dense model (4 -> 2, squared error) and its training step
// (sgd, lr 0.1): the smallest model with a train step, for tests of what a
// runtime does around calls (timeline, close, failures).
struct SmallDense {
  synk::Graph g;
  synk::Tensor x, y, loss;
  synk::nn::Dense l;
  SmallDense() {
    using namespace synk;
    x = g.input("x", f32, {batch, 4});
    y = g.input("y", f32, {batch, 2});
    l = nn::dense(g, "l", 4, 2, Init::uniform(-0.5f, 0.5f), Init::zeros());
    loss = mean(square(l(x) - y));
  }
  synk::TrainSpec train() {
    return {.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss, .params = l.params(),
            .optimizer = [](const std::vector<synk::Tensor>& p, const std::vector<synk::Tensor>& gr) {
              return synk::optim::sgd(p, gr, {.lr = 0.1f});
            }};
  }
  synk::ParallelFunction step(synk::Runtime& rt) { return rt.train_step(train()); }
};

// `n` rows of 3 floats, all different.
inline synk::Array rows_of(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n * 3));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 37) % 11) * 0.25f - 1.f;
  return synk::Array::from(v, {n, 3});
}

// Three dense layers (6 -> 40 -> 30 -> 4) with dropout before the last
// (unless `drop` is false), softmax cross-entropy over 4 classes: six
// gradient tensors of different sizes (1634 parameters), for the training
// tests of buckets and of the sharded optimizer. `hidden_bias` initialises
// the first two layers' biases.
struct DropoutMlp {
  synk::Graph g;
  synk::Tensor x, y, loss;
  synk::nn::Dense l1, l2, l3;
  std::vector<synk::Tensor> params;
  explicit DropoutMlp(synk::Init hidden_bias = synk::Init::zeros(), bool drop = true) {
    using namespace synk;
    x = g.input("x", f32, {batch, 6});
    y = g.input("y", i32, {batch});
    l1 = nn::dense(g, "l1", 6, 40, Init::uniform(-0.5f, 0.5f), hidden_bias);
    l2 = nn::dense(g, "l2", 40, 30, Init::uniform(-0.5f, 0.5f), hidden_bias);
    l3 = nn::dense(g, "l3", 30, 4, Init::uniform(-0.5f, 0.5f), Init::zeros());
    Tensor h = relu(l2(relu(l1(x))));
    loss = mean(softmax_cross_entropy(l3(drop ? dropout(h, 0.3f) : h), y));
    params = {l1.W, l1.b, l2.W, l2.b, l3.W, l3.b};
  }
};

// `rows` x `cols` floats amp * sin(freq * i): training features that differ
// in every element, the same in every process.
inline synk::Array sine_rows(int64_t rows, int64_t cols, float freq, float amp) {
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(freq * static_cast<float>(i)) * amp;
  return synk::Array::from(v, {rows, cols});
}

// `rows` int32 labels (i * step) % classes.
inline synk::Array cyclic_labels(int64_t rows, int32_t step, int32_t classes) {
  std::vector<int32_t> v(static_cast<size_t>(rows));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>((i * static_cast<size_t>(step)) % classes);
  return synk::Array::from(v, {rows});
}

// An array's bytes, for bitwise comparisons.
inline std::vector<uint8_t> bytes_of(const synk::Array& a) {
  const auto* p = static_cast<const uint8_t*>(a.raw());
  return {p, p + a.nbytes()};
}

// Rows `idx` of `a`, in that order.
inline synk::Array select(const synk::Array& a, const std::vector<int64_t>& idx) {
  synk::Shape s = a.shape();
  s[0] = static_cast<int64_t>(idx.size());
  synk::Array out(a.dtype(), s);
  const size_t rb = a.nbytes() / static_cast<size_t>(a.rows());
  for (size_t i = 0; i < idx.size(); ++i)
    std::memcpy(static_cast<char*>(out.raw()) + i * rb, static_cast<const char*>(a.raw()) + idx[i] * rb, rb);
  return out;
}

// `n` int32 values, different for each `base` (rank r's are ints(n, r + 1)
// in the collective tests: exact results to compare with).
inline synk::Array ints(int64_t n, int32_t base) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = base + static_cast<int32_t>(i * 3 % 7) - 2;
  return synk::Array::from(v, {n});
}

// ints(size, 1) op ints(size, 2) op ... op ints(size, ranks), element by
// element in rank order: what a reduction over `ranks` ranks must give.
template <class Op> std::vector<int32_t> fold_ints(int ranks, int64_t size, Op op) {
  std::vector<int32_t> acc = ints(size, 1).to_vector<int32_t>();
  for (int r = 1; r < ranks; ++r) {
    const std::vector<int32_t> x = ints(size, r + 1).to_vector<int32_t>();
    for (size_t i = 0; i < acc.size(); ++i) acc[i] = op(acc[i], x[i]);
  }
  return acc;
}

// Same shape, and every element within tol * (1 + |b|).
inline void expect_near(const synk::Array& a, const synk::Array& b, float tol, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], vb[i], tol * (1 + std::fabs(vb[i]))) << what << " [" << i << "]";
}

// Seconds since t0.
inline double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace synk_test
