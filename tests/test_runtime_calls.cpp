// Tests of synk::Runtime's calls: fork and close (how many ranks, nothing
// left behind), calls against a single-process Session for every collect
// mode, batch selection and split into slices, broadcast inputs, Data,
// distribute again, and arguments refused before any worker is touched.
// Workers are forked copies that never return into gtest (they _exit in the
// worker loop); every test closes its runtime, which reaps them.
#include <sched.h>

#include <cmath>
#include <numeric>
#include <string>

#include <gtest/gtest.h>

#include "cuda/context.hpp"
#include "runtime/core.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// ---- fork and close ---------------------------------------------------------------------

TEST(Runtime, ForkCloseLeavesNothing) {
  const int before = memfd_segments();
  for (int n : {1, 2, 3, 4}) {
    Runtime rt = synk::fork(opts(n));
    EXPECT_EQ(rt.size(), n);
    EXPECT_EQ(static_cast<int>(children().size()), n - 1);
    rt.close();
    EXPECT_FALSE(rt.is_open());
    EXPECT_TRUE(children().empty());
    EXPECT_EQ(memfd_segments(), before);
  }
  {
    Runtime rt = synk::fork(opts(3));  // destructor closes
  }
  EXPECT_TRUE(children().empty());
}

TEST(Runtime, RefusesTwiceAndBadCounts) {
  EXPECT_THROW(synk::fork(opts(-1)), ArgumentError);
  EXPECT_THROW(synk::fork(opts(100000)), ArgumentError);
  Runtime rt = synk::fork(opts(2));
  EXPECT_THROW(synk::fork(opts(2)), ArgumentError);
  rt.close();
  Runtime again = synk::fork(opts(2));  // after close it is allowed again
  EXPECT_EQ(again.size(), 2);
}

// workers = 0 means one rank per visible GPU for CUDA ranks (device "cuda",
// or "auto" with a GPU), else one per usable CPU. The GPU count is faked
// (the ranks are made but never compile anything, so no GPU is touched).
TEST(RuntimeRanks, WorkersZeroIsOneRankPerGpu) {
  if (detail::cuda_context_noted())
    GTEST_SKIP() << "an earlier test in this process initialised CUDA, so CUDA ranks are refused here; "
                    "run this test alone (ctest does)";
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  const int cpus = CPU_COUNT(&set);
  struct Reset {
    ~Reset() { detail::test_hooks().fake_gpu_count = -1; }
  } reset;
  auto ranks = [](const char* device, int gpus, int workers = 0, CommBackend comm = CommBackend::automatic) {
    detail::test_hooks().fake_gpu_count = gpus;
    Runtime rt = synk::fork({.workers = workers, .device = device, .comm = comm});
    const int n = rt.size();
    rt.close();
    return n;
  };
  EXPECT_EQ(ranks("cuda", 3), 3);
  EXPECT_EQ(ranks("cuda", 1), 1);
  EXPECT_EQ(ranks("auto", 2), 2);
  EXPECT_EQ(ranks("auto", 0), cpus) << "auto without a GPU: one CPU rank per core";
  EXPECT_EQ(ranks("cpu", 3), cpus) << "cpu ranks ignore the GPUs";
  EXPECT_EQ(ranks("cuda", 1, 3, CommBackend::host_staged), 3) << "an explicit count is kept";
  EXPECT_THROW(ranks("cuda", 1, 2), ArgumentError) << "more ranks than GPUs need host_staged";
  try {
    ranks("cuda", 0);
    ADD_FAILURE() << "device cuda without a GPU was accepted";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

// ---- calls against one process ----------------------------------------------------------

TEST(Runtime, CallsMatchOneProcess) {
  for (int n : {1, 2, 3, 4}) {
    Net m;
    Session ref(*m.g, {.seed = 7});
    FunctionSpec s = m.spec();
    s.updates.clear();
    Function rf = ref.function(s);
    Runtime rt = synk::fork(opts(n));
    ParallelFunction f = rt.function(m.spec());
    rt.distribute();
    Array X = rows_of(7);
    Data D = rt.data(X);
    std::vector<int64_t> idx = {5, 0, 3, 3, 6};
    struct Case { CallOptions o; std::vector<int64_t> rows; };
    std::vector<int64_t> all(7), rng = {1, 2, 3, 4, 5}, three = {2, 4, 6};
    std::iota(all.begin(), all.end(), 0);
    std::vector<Case> cases = {{{}, all}, {{.batch = idx}, idx}, {{.batch = Range{1, 6}}, rng},
                               {{.batch = Range{2, 7}, .num_slices = 2}, {2, 3, 4, 5, 6}},
                               {{.num_slices = 3}, all}};
    std::vector<int64_t> small = {2, 4, 6};
    for (const Case& c : cases) {
      const std::string what = "n=" + std::to_string(n) + " rows=" + std::to_string(c.rows.size());
      auto got = f({D}, c.o);
      auto want = rf({select(X, c.rows)});
      ASSERT_EQ(got.size(), 6u);
      for (size_t i = 0; i < 6; ++i) expect_near(got[i], want[i], 1e-5f, what + " out " + std::to_string(i));
      // Host arrays work the same as Data.
      auto host = f({X}, c.o);
      expect_near(host[0], want[0], 1e-5f, what + " host");
    }
    // Zero-row workers: 3 rows over up to 4 ranks.
    auto got = f({D}, {.batch = small});
    auto want = rf({select(X, small)});
    for (size_t i = 0; i < 6; ++i) expect_near(got[i], want[i], 1e-5f, "small n=" + std::to_string(n));
    rt.close();
    EXPECT_TRUE(children().empty());
  }
}

TEST(Runtime, NoneAndBroadcastInputs) {
  Net m;
  Tensor scale = m.g->input("scale", f32, {});
  Tensor out = m.none * scale;
  Runtime rt = synk::fork(opts(2));
  ParallelFunction f = rt.function({"g", {m.x, scale}, {{out, Collect::none}, {out, Collect::sum}}}, {scale});
  rt.distribute();
  Array X = rows_of(5);
  Session ref(*m.g, {.seed = 7});
  Function rf = ref.function(FunctionSpec{"g", {m.x, scale}, {{out}}});
  Array two = Array::scalar_f32(2.f);
  auto got = f({X, two});
  expect_near(got[0], rf({select(X, {0, 1, 2}), two})[0], 1e-5f, "none = master's 3 rows");
  expect_near(got[1], rf({X, two})[0], 1e-5f, "sum over all");
}

// What each collect mode gives for outputs that do not depend on the rows
// or have no batch dim (graph.hpp's Collect): a piece is one rank's share or
// one slice of it; sum counts a row-independent value once per piece,
// gather stacks one value per piece in rank (then slice) order, none is
// rank 0's first piece.
TEST(Runtime, CollectModesOverPieces) {
  for (int n : {1, 2, 3}) {
    for (int slices : {1, 2}) {
      SCOPED_TRACE("ranks " + std::to_string(n) + ", num_slices " + std::to_string(slices));
      Graph g;
      Tensor x = g.input("x", f32, {batch});
      Tensor W = g.variable("W", {3}, Init::constant(1.5f));
      Tensor rows_sum = synk::sum(x);          // depends on the rows
      Tensor w_sum = synk::sum(W);             // does not: 4.5
      Tensor w2 = W * 2.f;                     // no batch dim: [3]
      Runtime rt = synk::fork(opts(n));
      ParallelFunction f = rt.function({"f", {x},
                                        {{rows_sum, Collect::gather},
                                         {w_sum, Collect::sum},
                                         {w2, Collect::gather},
                                         {rows_sum, Collect::none},
                                         {w_sum, Collect::max},
                                         {rows_sum, Collect::sum}}});
      rt.distribute();
      const int64_t total = 12;  // 12 / n rows per rank, split again into `slices`
      std::vector<float> xv(total);
      std::iota(xv.begin(), xv.end(), 0.f);
      auto got = f({Array::from(xv, {total})}, {.num_slices = slices});
      const int pieces = n * slices;
      const int64_t per_piece = total / pieces;
      std::vector<float> piece_sums;
      for (int p = 0; p < pieces; ++p)
        piece_sums.push_back(static_cast<float>(std::accumulate(xv.begin() + p * per_piece,
                                                                xv.begin() + (p + 1) * per_piece, 0.0)));
      EXPECT_EQ(got[0].shape(), (Shape{pieces}));
      EXPECT_EQ(got[0].to_vector<float>(), piece_sums) << "gather of a scalar: one sum per piece, in order";
      EXPECT_FLOAT_EQ(got[1].scalar(), 4.5f * static_cast<float>(pieces)) << "sum of a row-independent value";
      EXPECT_EQ(got[2].shape(), (Shape{pieces, 3})) << "gather of a [3] output stacks the pieces";
      EXPECT_EQ(got[2].to_vector<float>(), std::vector<float>(static_cast<size_t>(pieces) * 3, 3.f));
      EXPECT_FLOAT_EQ(got[3].scalar(), piece_sums[0]) << "none: rank 0's first piece";
      EXPECT_FLOAT_EQ(got[4].scalar(), 4.5f) << "max of a row-independent value";
      EXPECT_FLOAT_EQ(got[5].scalar(), 66.f) << "sum of a sum over rows: the sum over all rows";
      rt.close();
    }
  }
}

TEST(Runtime, DistributeTwiceKeepsValues) {
  Net m;
  Runtime rt = synk::fork(opts(2));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  Data D = rt.data(rows_of(4));
  f({D});
  Tensor c2 = m.counter * 10.f;
  ParallelFunction g = rt.function({"g", {m.x}, {{mean(c2)}, {mean(m.z)}}});
  EXPECT_THROW(g({D}), ArgumentError);  // not distributed yet
  rt.distribute();
  auto out = g({D});
  EXPECT_FLOAT_EQ(out[0].scalar(), 10.f);  // the counter kept its value everywhere
  f({D});
  EXPECT_EQ(rt.get("counter", 1).to_vector<float>(), (std::vector<float>{2, 2}));
}

// ---- Data -------------------------------------------------------------------------------

TEST(Runtime, DataSetResizeReadBack) {
  Runtime rt = synk::fork(opts(2));
  Data d = rt.data(Array::from(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {3, 2}));
  EXPECT_EQ(d.rows(), 3);
  EXPECT_EQ(d.dtype(), i32);
  d.resize(5);
  EXPECT_EQ(d.shape(), (Shape{5, 2}));
  EXPECT_EQ(d.array().to_vector<int32_t>(), (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 0, 0, 0, 0}));
  d.resize(1);
  EXPECT_EQ(d.array().to_vector<int32_t>(), (std::vector<int32_t>{1, 2}));
  d.set(Array::from(std::vector<float>(1000, 0.5f), {500, 2}));
  EXPECT_EQ(d.dtype(), f32);
  EXPECT_EQ(d.rows(), 500);
  // Workers see the new contents.
  Graph g;
  Tensor x = g.input("x", f32, {batch, 2});
  ParallelFunction f = rt.function({"s", {x}, {{synk::sum(x), Collect::sum}}});
  rt.distribute();
  EXPECT_FLOAT_EQ(f({d})[0].scalar(), 500.f);
  d.set(Array::from(std::vector<float>(8, 2.f), {4, 2}));
  EXPECT_FLOAT_EQ(f({d})[0].scalar(), 16.f);
}

// ---- arguments --------------------------------------------------------------------------

TEST(Runtime, BadArgumentsRefusedAndNextCallWorks) {
  {
    Runtime none;  // never forked
    EXPECT_THROW(none.distribute(), ArgumentError);
    EXPECT_THROW(none.data(rows_of(1)), ArgumentError);
    EXPECT_THROW(ParallelFunction{}({}), ArgumentError);
  }
  Net m;
  Runtime rt = synk::fork(opts(2));
  ParallelFunction f = rt.function(m.spec());
  EXPECT_THROW(f({rows_of(4)}), ArgumentError);  // before distribute
  rt.distribute();
  Data D = rt.data(rows_of(4));
  EXPECT_THROW(f({D, D}), ArgumentError);
  EXPECT_THROW(f({Array::from(std::vector<int32_t>(12, 1), {4, 3})}), TypeError);
  EXPECT_THROW(f({Array::zeros(f32, {4, 5})}), ShapeError);
  EXPECT_THROW(f({D}, {.batch = std::vector<int64_t>{0, 4}}), ArgumentError);
  EXPECT_THROW(f({D}, {.batch = Range{2, 9}}), ArgumentError);
  EXPECT_THROW(f({D}, {.num_slices = 0}), ArgumentError);
  EXPECT_THROW(rt.get("nope"), ArgumentError);
  EXPECT_THROW(rt.get("W", 5), ArgumentError);
  EXPECT_THROW(rt.all_reduce({"x"}), ArgumentError);  // an input, not a variable
  EXPECT_EQ(f({D})[5].rows(), 4);
  rt.close();
  EXPECT_THROW(f({D}), ArgumentError);
  EXPECT_THROW(rt.distribute(), ArgumentError);
}

}  // namespace
