// Tests of synk::Runtime's updates and training steps: updates applied on
// every rank that ran, sliced updates against one process, and train_step
// against the same step on the full batch in a single-process Session.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "runtime/core.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

TEST(Runtime, UpdatesAppliedOnEveryRankThatRan) {
  Net m;
  Runtime rt = synk::fork(opts(3));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  Data D = rt.data(rows_of(2));  // ranks 0 and 1 get a row, rank 2 none
  f({D});
  f({D});
  EXPECT_EQ(rt.get("counter", 0).to_vector<float>(), (std::vector<float>{2, 2}));
  EXPECT_EQ(rt.get("counter", 1).to_vector<float>(), (std::vector<float>{2, 2}));
  EXPECT_EQ(rt.get(m.counter, 2).to_vector<float>(), (std::vector<float>{0, 0}));
}

TEST(Runtime, SlicedUpdatesAverage) {
  // SGD on a mean loss: the update is linear in the gradient, so slices
  // averaged by rows give exactly the full-batch step.
  for (int n : {1, 2, 3}) {
    Net m;
    Tensor loss = mean(synk::square(m.z));
    auto gs = grad(loss, {m.W});
    auto ups = optim::sgd({m.W}, gs, {.lr = 0.1f});
    Session ref(*m.g, {.seed = 7});
    Function rf = ref.function(FunctionSpec{"t", {m.x}, {{loss}}, ups});
    Runtime rt = synk::fork(opts(n));
    ParallelFunction f = rt.function({"t", {m.x}, {{loss}}, ups});
    rt.distribute();
    Array X = rows_of(9);
    // Every rank takes all rows (broadcast-like) is not what we test; instead
    // each rank updates from its own rows. With n == 1 and slices this equals
    // the full-batch step.
    if (n == 1) {
      f({X}, {.num_slices = 4});
      rf({X});
      expect_near(rt.get("W"), ref.get("W"), 1e-5f, "sliced sgd");
    } else {
      int64_t s0, r0;
      f({X}, {.num_slices = 2});
      for (int r = 0; r < n; ++r) {
        Session one(*m.g, {.seed = 7});
        Function of = one.function(FunctionSpec{"t", {m.x}, {{loss}}, ups});
        std::vector<int64_t> idx;
        s0 = 0; r0 = 0;
        const int64_t q = 9 / n, rem = 9 % n;
        r0 = q + (r < rem);
        s0 = r * q + std::min<int64_t>(r, rem);
        for (int64_t i = 0; i < r0; ++i) idx.push_back(s0 + i);
        of({select(X, idx)});
        expect_near(rt.get("W", r), one.get("W"), 1e-5f, "rank " + std::to_string(r));
      }
    }
  }
}

TEST(RuntimeTrain, StepEqualsFullBatchStep) {
  for (int n : {1, 2, 3, 4}) {
    auto opt = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
      return optim::momentum(p, gr, {.lr = 0.05f, .momentum = 0.9f});
    };
    struct M {
      Graph g;
      Tensor x, y, loss;
      nn::Dense l;
      M() {
        x = g.input("x", f32, {batch, 4});
        y = g.input("y", f32, {batch, 2});
        l = nn::dense(g, "l", 4, 2, Init::uniform(-0.5f, 0.5f), Init::uniform(-0.1f, 0.1f));
        loss = mean(square(l(x) - y));
      }
    };
    M a, b;  // same variables (same ids, same seed)
    Session ref(b.g, {.seed = 3});
    Function rf = ref.function(FunctionSpec{"ref", {b.x, b.y}, {{b.loss}}, opt(b.l.params(), grad(b.loss, b.l.params()))});
    Tensor x = a.x, y = a.y, loss = a.loss;
    auto l = a.l;
    Runtime rt = synk::fork(opts(n, 3));  // seed 3, as ref
    ParallelFunction step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss,
                                           .params = l.params(), .optimizer = opt});
    rt.distribute();
    std::vector<float> xv(11 * 4), yv(11 * 2);
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(static_cast<float>(i));
    for (size_t i = 0; i < yv.size(); ++i) yv[i] = std::cos(static_cast<float>(i));
    Array X = Array::from(xv, {11, 4}), Y = Array::from(yv, {11, 2});
    Data DX = rt.data(X), DY = rt.data(Y);
    for (int it = 0; it < 3; ++it) {
      float got = step({DX, DY}, {.num_slices = it == 2 ? 2 : 1})[0].scalar();
      float want = rf({X, Y})[0].scalar();
      EXPECT_NEAR(got, want, 1e-5f) << "n=" << n << " step " << it;
    }
    for (int r = 0; r < n; ++r) {
      auto a = rt.get("l/W", r).to_vector<float>(), b = ref.get("l/W").to_vector<float>();
      for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f) << "n=" << n << " rank " << r;
    }
  }
}

// Which way a training step's gradients go, and how the ranks combine
// them, is decided by the call alone (runtime/core.hpp, GradPath): the same
// on every kind of rank, since every comm all-reduces in the executor's
// memory. Every rank must pick the same reduction, or the sum of weighted
// gradients and the average of means would be mixed.
TEST(RuntimeTrain, GradPathIsNamedByTheCall) {
  using detail::GradPath;
  using detail::grad_path;
  using detail::grad_reduce;
  EXPECT_EQ(grad_path(8, 1, 4), GradPath::direct) << "8 rows on 2 ranks, one slice";
  EXPECT_EQ(grad_reduce(GradPath::direct, 8, 2, 4), ReduceOp::avg) << "equal means are averaged";
  EXPECT_EQ(grad_path(7, 1, 4), GradPath::direct) << "uneven, one slice";
  EXPECT_EQ(grad_reduce(GradPath::direct, 7, 2, 4), ReduceOp::sum) << "uneven: weighted by rows, summed";
  EXPECT_EQ(grad_reduce(GradPath::direct, 7, 2, 3), ReduceOp::sum) << "uneven, the other rank";
  EXPECT_EQ(grad_path(8, 2, 4), GradPath::sliced) << "two slices";
  EXPECT_EQ(grad_reduce(GradPath::sliced, 8, 2, 4), ReduceOp::sum) << "slices are weighted, then summed";
  EXPECT_EQ(grad_path(-1, 1, 0), GradPath::direct) << "inputs broadcast only";
  EXPECT_EQ(grad_reduce(GradPath::direct, -1, 2, 0), ReduceOp::avg) << "every rank ran the whole batch";
  EXPECT_EQ(grad_path(1, 1, 0), GradPath::direct);
  EXPECT_EQ(grad_reduce(GradPath::direct, 1, 2, 0), ReduceOp::sum) << "a rank with no rows adds zeros";
  EXPECT_EQ(grad_reduce(GradPath::direct, 1, 2, 1), ReduceOp::sum) << "and the rank with the row agrees";
  EXPECT_EQ(grad_reduce(GradPath::direct, 0, 2, 0), ReduceOp::sum) << "an empty batch";
  EXPECT_EQ(grad_path(8, 4, 4), GradPath::sliced);
  EXPECT_EQ(grad_path(8, 4, 1), GradPath::direct) << "one row: one slice whatever num_slices";
}

}  // namespace
