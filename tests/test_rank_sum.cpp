// Tests of rank_sum (a collective inside a function) and of batch norm with
// sync = true (SyncBatchNorm) built on it: identity in a lone Session, the
// session's combiner, the sum over a runtime's ranks, N ranks of sync batch
// norm against one process on the whole batch (CPU ranks, and CUDA ranks
// under NCCL and host staging), and the calls a runtime refuses.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "synk/config.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

std::vector<float> wave(size_t n, float f, float shift_from_half = 0.f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = std::sin(f * static_cast<float>(i) + 0.3f) + (i >= n / 2 ? shift_from_half : 0.f);
  return v;
}

void expect_all_near(const std::vector<float>& got, const std::vector<float>& want, float tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << " [" << i << "]";
}

TEST(RankSum, LoneSessionIsTheIdentityAndPassesTheGradient) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3});
  Tensor w = g.variable("w", {3}, Init::uniform(-1, 1));
  Tensor t = rank_sum(sum(x * w, {0}));  // [3]
  Tensor loss = sum(t * t);
  auto gr = grad(loss, {w});
  Session s(g, {.seed = 2});
  auto f = s.function({"f", {x}, {{t}, {gr[0]}}, {}});
  std::vector<float> xv = wave(12, 0.7f);
  auto out = f({Array::from(xv, {4, 3})});
  std::vector<float> wv = s.get("w").to_vector<float>();
  std::vector<float> want(3), dw(3);
  for (size_t c = 0; c < 3; ++c) {
    double acc = 0, xs = 0;
    for (size_t r = 0; r < 4; ++r) acc += xv[r * 3 + c] * wv[c], xs += xv[r * 3 + c];
    want[c] = static_cast<float>(acc);
    dw[c] = static_cast<float>(2 * acc * xs);
  }
  expect_all_near(out[0].to_vector<float>(), want, 1e-5f, "rank_sum");
  expect_all_near(out[1].to_vector<float>(), dw, 1e-4f, "gradient");
}

TEST(RankSum, SessionCombinerIsCalledForwardAndBackward) {
  // A combiner standing for 3 ranks with equal values: every rank_sum
  // triples, forward and in the gradient (rank_sum's gradient is rank_sum).
  Graph g;
  Tensor x = g.input("x", f32, {batch, 2});
  Tensor w = g.variable("w", {2}, Init::constant(1.5f));
  Tensor t = rank_sum(sum(x, {0}) * w);
  auto gr = grad(sum(t), {w});
  int calls = 0;
  SessionOptions o;
  o.rank_sum = [&](const float* in, float* out, size_t n) {
    ++calls;
    for (size_t i = 0; i < n; ++i) out[i] = 3.f * in[i];
  };
  Session s(g, o);
  auto f = s.function({"f", {x}, {{t}, {gr[0]}}, {}});
  auto out = f({Array::from(std::vector<float>{1, 2, 3, 4}, {2, 2})});
  EXPECT_EQ(calls, 2);
  expect_all_near(out[0].to_vector<float>(), {3 * 4 * 1.5f, 3 * 6 * 1.5f}, 1e-5f, "forward");
  expect_all_near(out[1].to_vector<float>(), {3 * 4.f, 3 * 6.f}, 1e-5f, "gradient");
}

TEST(RankSum, ChecksItsOperand) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3});
  EXPECT_THROW(rank_sum(x), ShapeError);  // a batch dim: ranks hold different rows
  EXPECT_THROW(rank_sum(cast(sum(x, {0}), i32)), TypeError);
  EXPECT_THROW(rank_sum(Tensor()), ArgumentError);
  EXPECT_EQ(rank_sum(sum(x, {0})).shape(), (Shape{3}));
}

TEST(RankSum, RuntimeSumsOverEveryRank) {
  for (int n : {1, 2, 3, 4}) {
    Graph g;
    Tensor x = g.input("x", f32, {batch, 3});
    Tensor t = rank_sum(sum(x, {0}));
    Runtime rt = synk::fork(synk_test::opts(n));
    // Every rank's value: the largest and the smallest over the ranks must
    // both be the whole batch's column sums.
    ParallelFunction f = rt.function({"f", {x}, {{t, Collect::max}, {t, Collect::min}}, {}});
    rt.distribute();
    std::vector<float> xv = wave(3 * 13, 0.37f);
    std::vector<float> want(3, 0.f);
    for (size_t i = 0; i < xv.size(); ++i) want[i % 3] += xv[i];
    Data D = rt.data(Array::from(xv, {13, 3}));
    auto out = f({D});
    expect_all_near(out[0].to_vector<float>(), want, 1e-5f, "max over ranks, n=" + std::to_string(n));
    expect_all_near(out[1].to_vector<float>(), want, 1e-5f, "min over ranks, n=" + std::to_string(n));
  }
}

// A sync batch-norm model: a dense layer mixing the input's 18 values into
// [N, 2, 2, 2] (its gradient goes back through the batch statistics, so
// through rank_sum's gradient), batch norm, a dense head, squared error.
struct SyncBn {
  Graph g;
  Tensor x, y, gm, bt, rm, rv, loss, out;
  nn::Dense pre, head;
  std::vector<Tensor> params;
  explicit SyncBn(bool sync) {
    x = g.input("x", f32, {batch, 2, 3, 3});
    y = g.input("y", f32, {batch, 1});
    gm = g.variable("gm", {2}, Init::uniform(0.5f, 1.5f));
    bt = g.variable("bt", {2}, Init::uniform(-0.5f, 0.5f));
    rm = g.variable("rm", {2});
    rv = g.variable("rv", {2}, Init::constant(1.f));
    pre = nn::dense(g, "pre", 18, 8, Init::uniform(-0.4f, 0.4f), Init::uniform(-0.2f, 0.2f));
    head = nn::dense(g, "head", 8, 1, Init::uniform(-0.3f, 0.3f));
    Tensor h = reshape(pre(flatten(x)), {batch, 2, 2, 2});
    out = head(flatten(relu(batch_norm(h, gm, bt, rm, rv, {.sync = sync}))));
    loss = mean(square(out - y));
    params = pre.params();
    for (const Tensor& p : head.params()) params.push_back(p);
    params.push_back(gm);
    params.push_back(bt);
  }
};

constexpr int kRows = 12;  // even over 2, 3 and 4 ranks (a training step needs that)

Array bn_x() { return Array::from(wave(kRows * 18, 0.61f, 2.f), {kRows, 2, 3, 3}); }
Array bn_y() { return Array::from(wave(kRows, 0.29f), {kRows, 1}); }

std::vector<Update> bn_opt(const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
  return optim::momentum(p, gr, {.lr = 0.1f, .momentum = 0.9f});
}

// One process on the whole batch: the reference of every rank count.
std::vector<std::vector<float>> bn_reference(bool sync, int steps) {
  SyncBn m(sync);
  Session s(m.g, {.seed = 3});
  auto f = s.function({"train", {m.x, m.y}, {{m.loss}}, bn_opt(m.params, grad(m.loss, m.params))});
  std::vector<std::vector<float>> r;
  for (int i = 0; i < steps; ++i) r.push_back(f({bn_x(), bn_y()})[0].to_vector<float>());
  for (const char* v : {"gm", "bt", "rm", "rv", "head/W", "head/b", "pre/W", "pre/b"}) r.push_back(s.get(v).to_vector<float>());
  return r;
}

// The same steps on a runtime's ranks: the losses, then each variable on
// every rank (rank 0's first).
std::vector<std::vector<std::vector<float>>> bn_runtime(RuntimeOptions o, int steps) {
  SyncBn m(true);
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss,
                                         .params = m.params, .optimizer = bn_opt});
  rt.distribute();
  Data X = rt.data(bn_x()), Y = rt.data(bn_y());
  std::vector<std::vector<std::vector<float>>> r;
  for (int i = 0; i < steps; ++i) r.push_back({step({X, Y})[0].to_vector<float>()});
  for (const char* v : {"gm", "bt", "rm", "rv", "head/W", "head/b", "pre/W", "pre/b"}) {
    r.emplace_back();
    for (int k = 0; k < o.workers; ++k) r.back().push_back(rt.get(v, k).to_vector<float>());
  }
  rt.close();
  return r;
}

void expect_runtime_equals_reference(const RuntimeOptions& o, const std::string& what) {
  const int steps = 3;
  auto want = bn_reference(true, steps);
  auto got = bn_runtime(o, steps);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const std::string name = i < steps ? "loss of step " + std::to_string(i) : "variable " + std::to_string(i - steps);
    if (i < steps) {
      // The loss is the mean of the ranks' means, weighted by rows: equal
      // to the whole batch's mean.
      expect_all_near(got[i][0], want[i], 2e-5f, what + ": " + name);
      continue;
    }
    for (size_t k = 0; k < got[i].size(); ++k)
      expect_all_near(got[i][k], want[i], 2e-5f, what + ": " + name + " on rank " + std::to_string(k));
  }
}

TEST(SyncBatchNorm, LoneProcessMatchesPerRankBatchNorm) {
  // One rank: the statistics of the batch, as the fused per-rank op.
  auto sync = bn_reference(true, 3), local = bn_reference(false, 3);
  ASSERT_EQ(sync.size(), local.size());
  for (size_t i = 0; i < sync.size(); ++i) expect_all_near(sync[i], local[i], 2e-5f, "entry " + std::to_string(i));
}

TEST(SyncBatchNorm, RanksEqualOneProcessOnTheWholeBatch) {
  // The rows are rank-dependent (the second half shifted by 2): per-rank
  // statistics would differ from the whole batch's, synchronized ones must
  // not, and the layer before batch norm gets its gradient through the
  // statistics of every rank. Default buckets: the training step takes its
  // one-all-reduce path for such functions.
  for (int n : {2, 3, 4}) expect_runtime_equals_reference(synk_test::opts(n, 3), "ranks " + std::to_string(n));
}

TEST(SyncBatchNorm, PerRankStatisticsDifferWhereSyncOnesAgree) {
  // The check above can fail: without sync, 2 ranks' running means differ
  // from each other (rank 1's rows are shifted).
  SyncBn m(false);
  Runtime rt = synk::fork(synk_test::opts(2, 3));
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss,
                                         .params = m.params, .optimizer = bn_opt});
  rt.distribute();
  step({rt.data(bn_x()), rt.data(bn_y())});
  EXPECT_GT(std::fabs(rt.get("rm", 0).to_vector<float>()[0] - rt.get("rm", 1).to_vector<float>()[0]), 0.01f);
}

TEST(SyncBatchNorm, RuntimeRefusesCallsThatWouldPairCollectivesWrongly) {
  SyncBn m(true);
  RuntimeOptions o = synk_test::opts(3, 3);
  for (int mode = 0; mode < 4; ++mode) {
    o.deterministic = mode == 2;
    Runtime rt = synk::fork(o);
    ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss,
                                           .params = m.params, .optimizer = bn_opt});
    rt.distribute();
    Data X = rt.data(bn_x()), Y = rt.data(bn_y());
    try {
      if (mode == 0) step({X, Y}, {.num_slices = 2});
      if (mode == 1) step({X, Y}, {.batch = Range{0, 2}});  // 2 rows, 3 ranks
      if (mode == 2) step({X, Y});
      if (mode == 3) step({X, Y}, {.batch = Range{0, 11}});  // 11 rows, 3 ranks
      ADD_FAILURE() << "mode " << mode << " accepted";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("rank_sum"), std::string::npos) << e.what();
    }
    // Refused before anything ran: the runtime goes on.
    if (mode != 2) EXPECT_NO_THROW(step({X, Y}));
    rt.close();
  }
}

// ---- CUDA ranks (run under the CUDA emulation here) ----------------------------

TEST(GpuSyncBatchNorm, HostStagedRanksEqualOneProcess) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  RuntimeOptions o = synk_test::opts(2, 3);
  o.device = "cuda";
  o.comm = CommBackend::host_staged;
  expect_runtime_equals_reference(o, "host-staged, 2 ranks");
}

TEST(GpuSyncBatchNorm, NcclRanksEqualOneProcess) {
  if (std::string why = synk_test::no_cuda_ranks(2); !why.empty()) GTEST_SKIP() << why;
  if (!SYNK_HAVE_NCCL) GTEST_SKIP() << "synk was built without NCCL";
  RuntimeOptions o = synk_test::opts(2, 3);
  o.device = "cuda";
  o.comm = CommBackend::nccl;
  expect_runtime_equals_reference(o, "NCCL, 2 ranks");
}

}  // namespace
