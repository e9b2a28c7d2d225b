// Tests of the deterministic runtime (RuntimeOptions::deterministic): train
// steps with dropout give bitwise-equal parameters and losses for 1 to 4
// ranks and in repeated runs; plain calls' outputs in every collect mode do
// too; small batches (fewer rows than chunks) and batches without scattered
// inputs. CUDA ranks: test_runtime_gpu.cpp (GpuRuntime.Deterministic*).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/core.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

// An MLP with dropout, trained by Nesterov momentum.
struct Mlp {
  Graph g;
  Tensor x, y, loss, logits, correct;
  nn::Dense l1, l2;
  std::vector<Tensor> params;
  Mlp() {
    x = g.input("x", f32, {batch, 5});
    y = g.input("y", i32, {batch});
    l1 = nn::dense(g, "l1", 5, 16, Init::uniform(-0.5f, 0.5f), Init::zeros());
    l2 = nn::dense(g, "l2", 16, 3, Init::uniform(-0.5f, 0.5f), Init::zeros());
    logits = l2(dropout(relu(l1(x)), 0.4f));
    loss = mean(softmax_cross_entropy(logits, y));
    correct = synk::sum(cast(equal(argmax(logits, 1), y), f32));
    params = {l1.W, l1.b, l2.W, l2.b};
  }
};

Array features(int64_t rows) { return synk_test::sine_rows(rows, 5, 0.37f, 2.f); }
Array labels(int64_t rows) { return synk_test::cyclic_labels(rows, 7, 3); }

Tensor reduce_max(Tensor t) { return synk::max(t); }

using synk_test::bytes_of;

struct Outcome {
  std::vector<std::vector<uint8_t>> params;  // rank 0's, by parameter
  std::vector<std::vector<uint8_t>> losses;  // per step
  std::vector<std::vector<uint8_t>> evals;   // the plain call's outputs
  bool ranks_agree = true;                   // every rank holds the same parameters
};

// Trains `steps` steps of `batch` rows (index batches over 29 rows) on `n`
// ranks, then evaluates all rows with a plain call.
Outcome train(int n, int64_t batch_rows, int chunks = 12) {
  const int steps = 3;
  Mlp m;
  RuntimeOptions o = synk_test::opts(n, 11);
  o.deterministic = true;
  o.deterministic_chunks = chunks;
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                         .loss = m.loss, .params = m.params,
                                         .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
                                           return optim::nesterov(p, gr, {.lr = 0.1f, .momentum = 0.9f});
                                         }});
  ParallelFunction eval = rt.function({"eval",
                                       {m.x, m.y},
                                       {{m.loss, Collect::avg},
                                        {m.correct, Collect::sum},
                                        {reduce_max(m.logits), Collect::max},
                                        {m.logits, Collect::gather}}});
  rt.distribute();
  Data X = rt.data(features(29)), Y = rt.data(labels(29));
  Outcome r;
  for (int s = 0; s < steps; ++s) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < batch_rows; ++i) idx.push_back((s * 11 + i * 5) % 29);
    r.losses.push_back(bytes_of(step({X, Y}, {.batch = idx}).at(0)));
  }
  for (const Array& a : eval({X, Y})) r.evals.push_back(bytes_of(a));
  for (const Tensor& p : m.params) {
    r.params.push_back(bytes_of(rt.get(p, 0)));
    for (int k = 1; k < n; ++k) r.ranks_agree &= bytes_of(rt.get(p, k)) == r.params.back();
  }
  return r;
}

void expect_same(const Outcome& a, const Outcome& b, const std::string& what) {
  EXPECT_EQ(a.losses, b.losses) << what << ": losses differ";
  EXPECT_EQ(a.params, b.params) << what << ": parameters differ";
  EXPECT_EQ(a.evals, b.evals) << what << ": the plain call's outputs differ";
}

TEST(RuntimeDeterministic, EveryRankCountGivesTheSameBits) {
  const Outcome one = train(1, 13);  // 13 rows: 12 chunks of 1 or 2 rows
  EXPECT_EQ(one.losses.size(), 3u);
  // 12 chunks: 2, 3 and 4 ranks hold equally many and gather them, 5 ranks
  // do not and sum zero-padded slots.
  for (int n : {2, 3, 4, 5}) {
    const Outcome r = train(n, 13);
    expect_same(one, r, std::to_string(n) + " ranks against 1");
    EXPECT_TRUE(r.ranks_agree) << n << " ranks hold different parameters";
  }
}

TEST(RuntimeDeterministic, RepeatedRunsGiveTheSameBits) {
  expect_same(train(2, 24), train(2, 24), "two runs on 2 ranks");
}

TEST(RuntimeDeterministic, FewerRowsThanChunks) {
  // 5 rows: 5 chunks of one row; 4 ranks get 2, 1, 1, 1 of them.
  const Outcome one = train(1, 5);
  for (int n : {2, 4}) expect_same(one, train(n, 5), std::to_string(n) + " ranks, 5 rows");
  // 3 rows on 4 ranks: the last rank has no chunk and still takes part.
  expect_same(train(1, 3), train(4, 3), "4 ranks, 3 rows");
}

TEST(RuntimeDeterministic, ChunkCountIsAnOption) {
  // 4 chunks: 3 ranks hold 2, 1 and 1 of them, and the bits still agree;
  // another chunk count is another computation.
  const Outcome one = train(1, 13, 4);
  expect_same(one, train(3, 13, 4), "3 ranks, 4 chunks");
  EXPECT_NE(one.params, train(1, 13, 12).params) << "4 and 12 chunks gave the same parameters";
  for (int bad : {0, -1, 4097}) {
    RuntimeOptions o = synk_test::opts(2);
    o.deterministic = true;
    o.deterministic_chunks = bad;
    EXPECT_THROW(synk::fork(o), ArgumentError) << bad;
  }
}

TEST(RuntimeDeterministic, TheChunksMatter) {
  // Dropout keyed per chunk and the chunk order are what make the bits
  // equal: a run without the option on 3 ranks is a different computation
  // (masks keyed by rank), so its parameters differ from the deterministic
  // ones, while the deterministic ones above agree.
  const Outcome det = train(3, 13);
  Mlp m;
  Runtime rt = synk::fork(synk_test::opts(3, 11));
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                         .loss = m.loss, .params = m.params,
                                         .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
                                           return optim::nesterov(p, gr, {.lr = 0.1f, .momentum = 0.9f});
                                         }});
  rt.distribute();
  Data X = rt.data(features(29)), Y = rt.data(labels(29));
  for (int s = 0; s < 3; ++s) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < 13; ++i) idx.push_back((s * 11 + i * 5) % 29);
    step({X, Y}, {.batch = idx});
  }
  EXPECT_NE(bytes_of(rt.get(m.l1.W, 0)), det.params[0]);
}

TEST(RuntimeDeterministic, BroadcastOnlyStep) {
  // No scattered input: every rank computes the whole batch with the same
  // key, so every rank count gives the same step.
  auto run = [](int n) {
    Mlp m;
    RuntimeOptions o = synk_test::opts(n, 5);
    o.deterministic = true;
    Runtime rt = synk::fork(o);
    ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                           .loss = m.loss, .params = m.params,
                                           .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
                                             return optim::sgd(p, gr, {.lr = 0.1f});
                                           },
                                           .broadcast = {m.x, m.y}});
    rt.distribute();
    std::vector<std::vector<uint8_t>> out;
    for (int s = 0; s < 2; ++s) out.push_back(bytes_of(step({features(7), labels(7)}).at(0)));
    out.push_back(bytes_of(rt.get(m.l1.W, 0)));
    out.push_back(bytes_of(rt.get(m.l1.W, n - 1)));
    return out;
  };
  const auto one = run(1);
  EXPECT_EQ(one[2], one[3]);
  EXPECT_EQ(run(3), one);
}

}  // namespace
