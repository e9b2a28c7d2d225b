// tests/test_heal.cpp — runtimes that survive a killed worker (docs/faults.md,
// "Jobs that survive a killed worker" and "Training that heals"): map with
// retries, Runtime::heal after a death while idle, in a call and in a
// training step, on CPU ranks and on CUDA ranks (host-staged and NCCL; they
// run in the emulated build, SYNK_EMU_DEVICES=4).
//
// Deaths are made deterministic with marker files (support/heal_helpers.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#include "support/heal_helpers.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// Installed for the whole binary too, so that a fork server kept for CUDA
// ranks (made at the first CUDA fork of the process) has it.
const bool g_hook_installed = [] {
  detail::test_hooks().on_command = &kill_in_call;
  return true;
}();

void use_hook() {
  (void)g_hook_installed;
  detail::test_hooks().on_command = &kill_in_call;
}

int64_t square_or_die(JobContext& ctx, const int& x) {
  if (ctx.rank() != 0 && fire_once()) ::raise(SIGKILL);
  return int64_t{x} * x;
}

int64_t seven_always_dies(JobContext& ctx, const int& x) {
  if (x == 7 && ctx.rank() != 0) ::raise(SIGKILL);
  return int64_t{x} * x;
}

int64_t workers_die(JobContext& ctx, const int& x) {
  if (ctx.rank() != 0) ::raise(SIGKILL);
  ::usleep(2000);
  return x;
}

std::string text_or_die(JobContext& ctx, const int& x) {
  if (ctx.rank() != 0 && fire_once()) ::raise(SIGKILL);
  return std::string(static_cast<size_t>(x % 5 + 1), static_cast<char>('a' + x % 26));
}

int32_t my_rank(JobContext& ctx, const int&) { return ctx.rank(); }

TEST(HealJobs, AWorkerKilledInAMapWithOneRetryGivesEveryResult) {
  set_markers("synk-heal", "map");
  Runtime rt = synk::fork(opts(3));
  const std::vector<int> before = children(detail::fork_server_pid());
  ASSERT_EQ(before.size(), 2u);
  std::vector<int> jobs(300);
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = i;
  arm();
  const std::vector<int64_t> sq = rt.map(&square_or_die, jobs, 1);
  struct stat st{};
  EXPECT_EQ(::stat(g_fired, &st), 0) << "no worker was killed: the test tests nothing";
  ASSERT_EQ(sq.size(), jobs.size());
  for (size_t i = 0; i < sq.size(); ++i) EXPECT_EQ(sq[i], int64_t{jobs[i]} * jobs[i]) << "job " << i;
  // The same number of ranks, all of them fresh processes.
  EXPECT_EQ(rt.size(), 3);
  const std::vector<int> after = children(detail::fork_server_pid());
  ASSERT_EQ(after.size(), 2u);
  for (int p : after) EXPECT_EQ(std::count(before.begin(), before.end(), p), 0) << "worker " << p << " survived";
  // Every rank works on: a map without retries has jobs on every rank.
  std::set<int32_t> ranks;
  for (int i = 0; i < 5 && ranks.size() < 3; ++i)
    for (int32_t r : rt.map(&slow_rank, std::vector<int>(100, 0))) ranks.insert(r);
  EXPECT_EQ(ranks.size(), 3u);

  // Results that travel encoded (strings), folded as they arrive.
  clear_markers();
  arm();
  const size_t total = rt.map_reduce(
      &text_or_die, jobs, size_t{0}, [](size_t a, const std::string& s) { return a + s.size(); }, 1);
  size_t want = 0;
  for (int x : jobs) want += static_cast<size_t>(x % 5 + 1);
  EXPECT_EQ(total, want);
  EXPECT_EQ(::stat(g_fired, &st), 0);
  clear_markers();
  arm();
  const std::vector<std::string> s = rt.map(&text_or_die, jobs, 1);
  EXPECT_EQ(::stat(g_fired, &st), 0);
  ASSERT_EQ(s.size(), jobs.size());
  for (size_t i = 0; i < s.size(); ++i)
    EXPECT_EQ(s[i], std::string(static_cast<size_t>(jobs[i] % 5 + 1), static_cast<char>('a' + jobs[i] % 26)));
  clear_markers();
  rt.close();
  expect_nothing_left();
}

TEST(HealJobs, AJobThatKillsItsWorkerOnEveryTryFailsNamingTheJob) {
  Runtime rt = synk::fork(opts(3));
  std::vector<int> jobs(40);
  for (int i = 0; i < 40; ++i) jobs[static_cast<size_t>(i)] = i;
  try {
    rt.map(&seven_always_dies, jobs, 2);
    FAIL() << "the map succeeded";
  } catch (const WorkerError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("failed after 3 tries"), std::string::npos) << m;
    EXPECT_NE(m.find("job 7 was running on rank"), std::string::npos) << m;
    EXPECT_NE(m.find("in 3 of 3 tries"), std::string::npos) << m;
    EXPECT_NE(m.find("signal 9 (SIGKILL"), std::string::npos) << m;
    EXPECT_GT(e.rank(), 0);
  }
  // The runtime failed as without retries; heal() repairs it.
  EXPECT_THROW(rt.map(&my_rank, jobs), WorkerError);
  rt.heal();
  EXPECT_EQ(rt.size(), 3);
  EXPECT_EQ(rt.map(&seven_always_dies, std::vector<int>{1, 2, 3}), (std::vector<int64_t>{1, 4, 9}));
  // Without retries a death is today's error naming the rank (jobs run in
  // the master too then: every job dies on a worker, and is slow in the
  // master, so that the workers take some).
  try {
    rt.map(&workers_die, jobs);
    FAIL() << "the map succeeded";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
  }
  rt.heal();
  EXPECT_THROW(rt.map(&my_rank, jobs, -1), ArgumentError);
  EXPECT_EQ(rt.map(&my_rank, std::vector<int>{1}, 1).size(), 1u);
  rt.close();
  expect_nothing_left();
}

TEST(Heal, OnAHealthyRuntimeDoesNothing) {
  Net m;
  Runtime rt = synk::fork(opts(3));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  const Array X = Array::from(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3});
  const std::vector<Array> a = f({X});
  const std::vector<int> before = children(detail::fork_server_pid());
  rt.heal();
  EXPECT_EQ(children(detail::fork_server_pid()), before);
  const std::vector<Array> b = f({X});
  EXPECT_EQ(b[1].to_vector<float>(), a[1].to_vector<float>());
  rt.close();
  EXPECT_THROW(rt.heal(), ArgumentError);
  expect_nothing_left();
}

TEST(Heal, AfterASigkillWhileIdleHandlesKeepWorking) {
  Net m;
  Runtime rt = synk::fork(opts(3));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  rt.set(m.W, Array::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}));
  std::vector<float> xv(12 * 3);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = 0.1f * static_cast<float>(i);
  Data DX = rt.data(Array::from(xv, {12, 3}));
  const std::vector<Array> a = f({DX});
  const std::vector<int> kids = children(detail::fork_server_pid());
  ASSERT_EQ(kids.size(), 2u);
  ::kill(kids[0], SIGKILL);
  bool raised = false;
  for (int i = 0; i < 1000 && !raised; ++i) {
    try {
      f({DX});
    } catch (const WorkerError& e) {
      raised = true;
      EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
    }
  }
  ASSERT_TRUE(raised);
  rt.heal();
  EXPECT_EQ(rt.size(), 3);
  // The Data and the function made before, the variables as the master had them.
  const std::vector<Array> b = f({DX});
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(b[i].to_vector<float>(), a[i].to_vector<float>()) << "output " << i;
  EXPECT_EQ(b[5].to_vector<float>(), a[5].to_vector<float>());
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(rt.get(m.W, r).to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6})) << "rank " << r;
  // The counter (an update of every call) went on from the master's value.
  for (int r = 1; r < 3; ++r) EXPECT_EQ(rt.get(m.counter, r).to_vector<float>(), rt.get(m.counter, 0).to_vector<float>());
  DX = Data();
  rt.close();
  expect_nothing_left();
}

// ---- training --------------------------------------------------------------------------

// Trains 6 steps; with `kill_at` >= 0 a worker dies in that step, which
// throws, and the runtime heals. Returns every variable of rank 0 and
// checks that the other ranks hold the same.
VarValues train(const RuntimeOptions& o, int kill_at, int skip) {
  Regression m;
  use_hook();
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(m.spec());
  rt.distribute();
  const std::vector<int> before = children(detail::fork_server_pid());
  for (int i = 0; i < 6; ++i) {
    if (i == skip) continue;
    auto [X, Y] = batch_of(i);
    if (i == kill_at) {
      arm();
      try {
        step({X, Y});
        ADD_FAILURE() << "step " << i << " did not fail";
      } catch (const WorkerError& e) {
        EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
      }
      rt.heal();
      EXPECT_EQ(rt.size(), o.workers);
      continue;  // reported, not retried: the caller decides
    }
    const float loss = step({X, Y})[0].scalar();
    EXPECT_TRUE(std::isfinite(loss));
  }
  const VarValues out = rt.snapshot();
  for (const auto& [name, value] : out)
    for (int r = 1; r < rt.size(); ++r)
      EXPECT_EQ(rt.get(name, r).to_vector<float>(), value.to_vector<float>()) << name << " on rank " << r;
  if (kill_at >= 0) {
    for (int p : children(detail::fork_server_pid()))
      EXPECT_EQ(std::count(before.begin(), before.end(), p), 0) << "worker " << p << " survived the heal";
  }
  rt.close();
  clear_markers();
  return out;
}

void training_heals(const RuntimeOptions& o) {
  set_markers("synk-heal", "train");
  const VarValues healed = train(o, 3, -1);
  const VarValues skipped = train(o, -1, 3);
  ASSERT_EQ(healed.size(), 4u);  // l/W, l/b and their velocities
  ASSERT_EQ(skipped.size(), healed.size());
  for (size_t i = 0; i < healed.size(); ++i) {
    EXPECT_EQ(healed[i].first, skipped[i].first);
    EXPECT_EQ(healed[i].second.to_vector<float>(), skipped[i].second.to_vector<float>()) << healed[i].first;
  }
  // And differs from a run without the skip (the step mattered).
  const VarValues full = train(o, -1, -1);
  EXPECT_NE(full[0].second.to_vector<float>(), healed[0].second.to_vector<float>());
}

TEST(Heal, TrainingAfterAKilledWorkerEqualsARunThatSkippedTheStep) {
  training_heals({.workers = 3, .seed = 5, .spin = std::chrono::microseconds(5),
                  .timeout = std::chrono::seconds(5), .collective_timeout = std::chrono::seconds(5)});
  expect_nothing_left();
}

TEST(GpuHeal, HostStagedTrainingHeals) {
  if (const std::string why = no_cuda_ranks(1); !why.empty()) GTEST_SKIP() << why;
  training_heals({.workers = 3, .device = "cuda", .comm = CommBackend::host_staged, .seed = 5,
                  .timeout = std::chrono::seconds(20), .collective_timeout = std::chrono::seconds(20)});
  EXPECT_TRUE(children(detail::fork_server_pid()).empty());
}

TEST(GpuHeal, NcclTrainingHeals) {
  if (const std::string why = no_cuda_ranks(3); !why.empty()) GTEST_SKIP() << why;
  training_heals({.workers = 3, .device = "cuda", .comm = CommBackend::nccl, .seed = 5,
                  .timeout = std::chrono::seconds(20), .collective_timeout = std::chrono::seconds(20)});
  EXPECT_TRUE(children(detail::fork_server_pid()).empty());
}

TEST(Heal, RefusedWithoutARuntime) {
  Runtime rt;
  EXPECT_THROW(rt.heal(), ArgumentError);
}

}  // namespace
