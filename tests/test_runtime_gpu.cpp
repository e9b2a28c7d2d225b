// Tests of synk::Runtime with CUDA ranks (RuntimeOptions::device = "cuda"):
// a 2-rank training step on one GPU through the host-staged backend equals
// the CPU runtime's, and a 1-rank run works. Gpu* suites (CTest label gpu):
// they skip without a device, and in a process that already made a
// CudaSession (a forked rank cannot use its parent's CUDA), so run them as
// ctest does, one test per process.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "runtime/core.hpp"
#include "synk/config.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

struct Model {
  Graph g;
  Tensor x, y, loss;
  nn::Dense l;
  Model() {
    x = g.input("x", f32, {batch, 6});
    y = g.input("y", f32, {batch, 3});
    l = nn::dense(g, "l", 6, 3);
    loss = mean(square(l(x) - y));
  }
};

// Losses of 3 steps and the final weights; W and b are set explicitly so
// that both backends start from the same values.
std::pair<std::vector<float>, std::vector<float>> train(RuntimeOptions o, int rows) {
  Model m;
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(
      {.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss, .params = m.l.params(),
       .optimizer = [](auto& p, auto& gr) { return optim::sgd(p, gr, {.lr = 0.1f}); }});
  rt.distribute();
  std::vector<float> w(18), b(3), xv(static_cast<size_t>(rows) * 6), yv(static_cast<size_t>(rows) * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * std::sin(static_cast<float>(i) + 1.f);
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.05f * static_cast<float>(i);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(0.7f * static_cast<float>(i));
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = std::cos(0.3f * static_cast<float>(i));
  rt.set("l/W", Array::from(w, {6, 3}));
  rt.set("l/b", Array::from(b, {3}));
  Data X = rt.data(Array::from(xv, {rows, 6})), Y = rt.data(Array::from(yv, {rows, 3}));
  std::vector<float> losses;
  for (int it = 0; it < 3; ++it) losses.push_back(step({X, Y})[0].scalar());
  std::vector<float> W = rt.get("l/W", o.workers - 1).to_vector<float>();
  rt.close();
  return {losses, W};
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f + 1e-4f * std::fabs(b[i])) << what << " " << i;
}

// Trains with `workers` CPU ranks, then with CUDA ranks over `comm`: the
// same losses and final weights. The CPU runtime goes first (it makes no
// CUDA context).
void expect_cuda_equals_cpu(int workers, CommBackend comm, int rows) {
  RuntimeOptions o{.workers = workers, .seed = 3};
  auto cpu = train(o, rows);
  o.device = "cuda";
  o.comm = comm;
  auto gpu = train(o, rows);
  expect_close(gpu.first, cpu.first, "loss");
  expect_close(gpu.second, cpu.second, "W");
}

TEST(GpuRuntime, HostStagedTwoRanksOneGpuEqualsCpu) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  expect_cuda_equals_cpu(2, CommBackend::host_staged, 10);
}

TEST(GpuRuntime, OneRankAutomaticComm) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  expect_cuda_equals_cpu(1, CommBackend::automatic, 8);
}

// The NCCL path with one rank (any machine with a GPU): gradients stay on
// the device, NCCL averages them, the update reads them there.
TEST(GpuRuntime, NcclOneRankEqualsCpu) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  if (!SYNK_HAVE_NCCL) GTEST_SKIP() << "synk was built without NCCL";
  expect_cuda_equals_cpu(1, CommBackend::nccl, 8);
}

// One rank per GPU through NCCL, where the machine has two or more.
TEST(GpuRuntime, NcclTwoRanksEqualsCpu) {
  if (std::string why = synk_test::no_cuda_ranks(2); !why.empty()) GTEST_SKIP() << why;
  if (!SYNK_HAVE_NCCL) GTEST_SKIP() << "synk was built without NCCL";
  expect_cuda_equals_cpu(2, CommBackend::nccl, 10);
}

// Checked without a device: these are refused before anything is forked.
TEST(RuntimeCudaOptions, RefusedWhereTheyCannotWork) {
  EXPECT_THROW(synk::fork({.workers = 1, .device = "tpu"}), ArgumentError);
  if (detail::cuda_context_noted()) return;
  const int gpus = detail::cuda_devices();
  if (gpus == 0) {
    EXPECT_THROW(synk::fork({.workers = 1, .device = "cuda"}), BackendError);
    // "auto" without a GPU is the CPU runtime.
    Runtime rt = synk::fork({.workers = 1, .device = "auto"});
    EXPECT_EQ(rt.size(), 1);
  } else {
    EXPECT_THROW(synk::fork({.workers = gpus + 1, .device = "cuda"}), ArgumentError);
    EXPECT_THROW(synk::fork({.workers = gpus + 1, .device = "cuda", .comm = CommBackend::nccl}), ArgumentError);
    if (!SYNK_HAVE_NCCL)
      EXPECT_THROW(synk::fork({.workers = 1, .device = "cuda", .comm = CommBackend::nccl}), ArgumentError);
  }
}

}  // namespace
