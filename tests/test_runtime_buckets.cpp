// Tests of the gradient all-reduce in buckets during the backward pass
// (RuntimeOptions::bucket_bytes): training gives the same bits with and
// without buckets for 1 to 4 ranks, equal and unequal shares, a rank
// without rows; the timeline shows a bucket's all-reduce inside the
// backward pass; and Function::call_into with ready(), which it rests on,
// hands over each output exactly once, final, before the call ends.
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/core.hpp"  // test_hooks
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

// Three dense layers with dropout: six gradient tensors of different sizes.
using Mlp = synk_test::DropoutMlp;

Array features(int64_t rows) { return synk_test::sine_rows(rows, 6, 0.41f, 1.5f); }
Array labels(int64_t rows) { return synk_test::cyclic_labels(rows, 5, 4); }

using synk_test::bytes_of;

struct Outcome {
  std::vector<std::vector<uint8_t>> losses, params;
};

// Steps over batches of `rows` (29 rows of data), Nesterov momentum.
Outcome train(int n, size_t bucket_bytes, const std::vector<int64_t>& batch_rows, const char* trace = nullptr) {
  Mlp m;
  RuntimeOptions o = synk_test::opts(n, 5);
  o.bucket_bytes = bucket_bytes;
  o.trace = trace;
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                         .loss = m.loss, .params = m.params,
                                         .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
                                           return optim::nesterov(p, gr, {.lr = 0.1f, .momentum = 0.9f});
                                         }});
  rt.distribute();
  Data X = rt.data(features(29)), Y = rt.data(labels(29));
  Outcome r;
  int s = 0;
  for (int64_t rows : batch_rows) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < rows; ++i) idx.push_back((s * 7 + i * 3) % 29);
    r.losses.push_back(bytes_of(step({X, Y}, {.batch = idx}).at(0)));
    ++s;
  }
  for (const Tensor& p : m.params)
    for (int k = 0; k < n; ++k) r.params.push_back(bytes_of(rt.get(p, k)));
  rt.close();
  return r;
}

TEST(RuntimeBuckets, SameBitsAsOneAllReduce) {
  // 12 rows: equal shares for 1-4 ranks; 29 and 7: unequal (weighted sums);
  // 2: some ranks have no rows.
  const std::vector<int64_t> batches{12, 29, 7, 2, 12};
  for (int n : {1, 2, 3, 4}) {
    const Outcome whole = train(n, 0, batches);
    for (size_t bucket : {size_t{1}, size_t{200}, size_t{4096}, size_t{1} << 20}) {
      const Outcome b = train(n, bucket, batches);
      EXPECT_EQ(b.losses, whole.losses) << n << " ranks, buckets of " << bucket << " bytes: losses differ";
      EXPECT_EQ(b.params, whole.params) << n << " ranks, buckets of " << bucket << " bytes: parameters differ";
    }
  }
}

// CPU ranks keep their gradients in shared memory and all-reduce them in
// place (CpuGroup::all_reduce_peers); the path through the group's staging
// gives the same bits.
TEST(RuntimeBuckets, SharedGradientBuffersSameBitsAsStaging) {
  const std::vector<int64_t> batches{12, 29, 7, 2};
  for (int n : {2, 3, 4}) {
    for (size_t bucket : {size_t{0}, size_t{200}}) {
      synk::detail::test_hooks().no_shared_grads = true;
      const Outcome staged = train(n, bucket, batches);
      synk::detail::test_hooks().no_shared_grads = false;
      const Outcome shared = train(n, bucket, batches);
      EXPECT_EQ(shared.losses, staged.losses) << n << " ranks, buckets " << bucket;
      EXPECT_EQ(shared.params, staged.params) << n << " ranks, buckets " << bucket;
    }
  }
}

TEST(RuntimeBuckets, TimelineShowsTheAllReduceInsideBackward) {
  const std::string path = ::testing::TempDir() + "synk_buckets_" + std::to_string(::getpid()) + ".json";
  train(2, 1, {12, 12, 12}, path.c_str());
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "no trace " << path;
  const nlohmann::json t = nlohmann::json::parse(f);
  std::remove(path.c_str());
  // Per rank: a "gradient all-reduce" span that ends before its step's
  // "forward+backward" span ends (a bucket sent while backward went on).
  for (int rank : {0, 1}) {
    std::vector<std::pair<double, double>> compute, reduce;
    for (const auto& e : t.at("traceEvents")) {
      if (e.at("ph") != "X" || e.at("tid").get<int>() != rank) continue;
      const double ts = e.at("ts"), end = ts + e.at("dur").get<double>();
      if (e.at("name") == "forward+backward") compute.emplace_back(ts, end);
      if (e.at("name") == "gradient all-reduce") reduce.emplace_back(ts, end);
    }
    ASSERT_EQ(compute.size(), 3u) << "rank " << rank;
    EXPECT_GE(reduce.size(), 3u * 2) << "rank " << rank << ": several buckets per step";
    int inside = 0;
    for (const auto& [c0, c1] : compute)
      for (const auto& [r0, r1] : reduce) inside += r0 >= c0 && r1 < c1;
    EXPECT_GE(inside, 3) << "rank " << rank << ": no bucket's all-reduce ran inside the backward pass";
  }
}

TEST(SessionReady, EveryOutputOnceFinalAndEarly) {
  Mlp m;
  auto grads = grad(m.loss, m.params);
  FunctionSpec spec{"g", {m.x, m.y}, {{m.loss}}, {}};
  for (const Tensor& gr : grads) spec.outputs.push_back({gr});
  Session s(m.g, {.seed = 3});
  Function f = s.function(spec);
  Session ref(m.g, {.seed = 3});
  Function rf = ref.function(spec);
  const Array X = features(9), Y = labels(9);
  std::vector<Array> out;
  std::vector<void*> ptrs;
  for (const OutputSpec& o : spec.outputs) {
    Shape sh = o.value.shape();
    for (auto& d : sh)
      if (d == synk::batch) d = 9;
    out.emplace_back(o.value.dtype(), sh);
    ptrs.push_back(out.back().raw());
  }
  std::vector<int> order;
  std::vector<std::vector<uint8_t>> at_ready(out.size());
  f.call_into({X.view(), Y.view()}, ptrs, [&](size_t k) {
    order.push_back(static_cast<int>(k));
    at_ready[k] = bytes_of(out[k]);
  });
  ASSERT_EQ(order.size(), out.size());
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t k = 0; k < sorted.size(); ++k) EXPECT_EQ(sorted[k], static_cast<int>(k)) << "every output once";
  // What was handed over is what the call leaves, and what a plain call computes.
  const std::vector<Array> want = rf({X.view(), Y.view()});
  for (size_t k = 0; k < out.size(); ++k) {
    EXPECT_EQ(at_ready[k], bytes_of(out[k])) << "output " << k << " changed after ready()";
    EXPECT_EQ(at_ready[k], bytes_of(want[k])) << "output " << k;
  }
  // Backward reaches the last layer first: its weight gradient (output 5)
  // is handed over before the first layer's (output 1).
  const auto pos = [&](int k) { return std::find(order.begin(), order.end(), k) - order.begin(); };
  EXPECT_LT(pos(5), pos(1));
}

}  // namespace
