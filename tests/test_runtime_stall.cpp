// Tests of the stall report (RuntimeOptions::stall_after_s): a worker
// stopped in a call is named (rank, pid, phase, stopped) within stall_after
// + 1 s and the call completes once it goes on; a slow map job is named by
// its index; the report reaches the timeline; bad options are refused.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/core.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using Clock = std::chrono::steady_clock;

// Shared with the workers (a MAP_SHARED page made before fork): 1 = the
// next call command stops rank 1 (once).
std::atomic<int>* g_stop_next = nullptr;

void stop_hook(int cmd, int rank, detail::CommandHeader&) {
  if (rank == 1 && cmd == static_cast<int>(detail::Cmd::call) && g_stop_next->exchange(0) == 1) ::raise(SIGSTOP);
}

struct Reports {
  std::mutex mu;
  std::vector<StallReport> got;
  std::vector<Clock::time_point> at;
};

TEST(StallReport, NamesAStoppedWorkerAndTheCallCompletesAfterIt) {
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  g_stop_next = new (page) std::atomic<int>(0);
  detail::test_hooks().on_command = &stop_hook;
  auto reports = std::make_shared<Reports>();
  {
    synk_test::Net m;
    RuntimeOptions o = synk_test::opts(3);
    o.stall_after_s = 0.5;
    o.on_stall = [reports](const StallReport& r) {
      std::lock_guard<std::mutex> lock(reports->mu);
      reports->got.push_back(r);
      reports->at.push_back(Clock::now());
      // The stopped worker goes on: the call must then complete.
      for (const RankActivity& a : r.late)
        if (a.stopped) ::kill(a.pid, SIGCONT);
    };
    Runtime rt = synk::fork(o);
    ParallelFunction f = rt.function(m.spec());
    rt.distribute();
    Array X = synk_test::rows_of(9);
    Session ref(*m.g, {.seed = 7});
    const std::vector<Array> want = ref.function(m.spec())({X});
    g_stop_next->store(1);
    const auto t0 = Clock::now();
    const std::vector<Array> got = f({X});
    // The call's results are right (the updates are per rank: only outputs).
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i + 1 < got.size(); ++i) synk_test::expect_near(got[i], want[i], 1e-5f, "output");
    std::lock_guard<std::mutex> lock(reports->mu);
    ASSERT_FALSE(reports->got.empty()) << "no stall report";
    const StallReport& r = reports->got[0];
    EXPECT_LE(std::chrono::duration<double>(reports->at[0] - t0).count(), 0.5 + 1.0) << r.text;
    EXPECT_GE(r.waited_s, 0.5) << r.text;
    ASSERT_EQ(r.late.size(), 1u) << r.text;
    const RankActivity& late = r.late[0];
    EXPECT_EQ(late.rank, 1);
    EXPECT_TRUE(late.stopped) << r.text;
    EXPECT_NE(late.pid, 0);
    EXPECT_NE(late.pid, ::getpid());
    EXPECT_EQ(late.doing, "the command, not started yet") << r.text;
    EXPECT_EQ(r.what, "function 'f' call #1") << r.text;
    ASSERT_EQ(r.waiting.size(), 2u) << r.text;  // the master and rank 2
    for (const RankActivity& w : r.waiting) EXPECT_FALSE(w.stopped) << r.text;
    EXPECT_NE(r.text.find("rank 1 (pid " + std::to_string(late.pid) + "): stopped in"), std::string::npos) << r.text;
  }
  detail::test_hooks().on_command = nullptr;
  ::munmap(page, 4096);
  g_stop_next = nullptr;
}

TEST(StallReport, NamesTheSlowJobOfAMapAndGoesToTheTimeline) {
  const std::string trace = ::testing::TempDir() + "synk_stall_trace.json";
  auto reports = std::make_shared<Reports>();
  {
    RuntimeOptions o = synk_test::opts(3);
    o.stall_after_s = 0.3;
    o.trace = trace.c_str();
    o.on_stall = [reports](const StallReport& r) {
      std::lock_guard<std::mutex> lock(reports->mu);
      reports->got.push_back(r);
    };
    Runtime rt = synk::fork(o);
    std::vector<int> jobs{0, 1, 2, 3, 4, 5};
    std::vector<int> out = rt.map(
        [](const int& j) {
          if (j == 3) std::this_thread::sleep_for(std::chrono::milliseconds(1600));
          return j * 10;
        },
        jobs);
    EXPECT_EQ(out, (std::vector<int>{0, 10, 20, 30, 40, 50}));
    rt.close();
  }
  std::lock_guard<std::mutex> lock(reports->mu);
  ASSERT_FALSE(reports->got.empty()) << "no stall report";
  // Reported again while it lasts, the slow job named each time.
  EXPECT_GE(reports->got.size(), 2u);
  for (const StallReport& r : reports->got) {
    ASSERT_EQ(r.late.size(), 1u) << r.text;
    EXPECT_EQ(r.late[0].doing, "map jobs") << r.text;
    // The job, or the chunk of jobs the rank took with it.
    EXPECT_LE(r.late[0].detail, 3) << r.text;
    EXPECT_GT(r.late[0].detail_end, 3) << r.text;
    EXPECT_FALSE(r.late[0].stopped) << r.text;
    EXPECT_TRUE(r.text.find("(job 3)") != std::string::npos || r.text.find("(jobs ") != std::string::npos) << r.text;
  }
  EXPECT_EQ(reports->got[1].repeat, 1);
  std::ifstream f(trace);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("\"stall report\""), std::string::npos);
  std::remove(trace.c_str());
}

TEST(StallReport, NothingBetweenCallsAndBadValuesAreRefused) {
  auto reports = std::make_shared<std::atomic<int>>(0);
  {
    synk_test::Net m;
    RuntimeOptions o = synk_test::opts(3);
    o.stall_after_s = 0.1;
    o.on_stall = [reports](const StallReport&) { reports->fetch_add(1); };
    Runtime rt = synk::fork(o);
    ParallelFunction f = rt.function(m.spec());
    rt.distribute();
    Array X = synk_test::rows_of(9);
    // The workers wait for the next command while the program does
    // something else: that is no stall (no call runs).
    for (int i = 0; i < 3; ++i) {
      f({X});
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  EXPECT_EQ(reports->load(), 0);
  for (double bad : {-1.0, std::nan(""), 1e300}) {
    RuntimeOptions o = synk_test::opts(2);
    o.stall_after_s = bad;
    EXPECT_THROW(synk::fork(o), ArgumentError) << bad;
  }
}

}  // namespace

namespace {

// Shared with the workers: while 1, rank 1 sleeps 30 ms before each call.
std::atomic<int>* g_lag = nullptr;

void lag_hook(int cmd, int rank, detail::CommandHeader&) {
  if (rank == 1 && cmd == static_cast<int>(detail::Cmd::call) && g_lag->load() == 1) ::usleep(30000);
}

TEST(StepStats, PerRankPhasesNameTheRankTheOthersWaitFor) {
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  g_lag = new (page) std::atomic<int>(0);
  detail::test_hooks().on_command = &lag_hook;
  {
    synk_test::SmallDense m;
    Runtime rt = synk::fork(synk_test::opts(3));
    ParallelFunction step = m.step(rt);
    rt.distribute();
    Data X = rt.data(Array::from(std::vector<float>(12 * 4, 0.5f), {12, 4}));
    Data Y = rt.data(Array::from(std::vector<float>(12 * 2, 0.1f), {12, 2}));
    StepStats none = rt.stats();
    ASSERT_EQ(none.ranks.size(), 3u);
    EXPECT_EQ(none.slowest_rank, -1);
    for (const RankStepStats& r : none.ranks) EXPECT_EQ(r.steps, 0u);
    g_lag->store(1);
    const int steps = 8;
    for (int i = 0; i < steps; ++i) step({X, Y});
    g_lag->store(0);
    StepStats s = rt.stats();
    ASSERT_EQ(s.ranks.size(), 3u);
    for (const RankStepStats& r : s.ranks) {
      EXPECT_EQ(r.steps, static_cast<uint64_t>(steps)) << "rank " << r.rank;
      for (int p = 0; p < kStepPhases; ++p) {
        const PhaseTimes& t = r.phase[p];
        EXPECT_EQ(t.samples, static_cast<uint64_t>(p == static_cast<int>(StepPhase::idle) ? steps - 1 : steps));
        EXPECT_LE(0, t.p50_ms);
        EXPECT_LE(t.p50_ms, t.p90_ms);
        EXPECT_LE(t.p90_ms, t.max_ms);
      }
    }
    // Rank 1 starts every step 30 ms late: the others wait for it in the
    // all-reduce, and it is named with the phase it spent the time in.
    const auto ar = static_cast<int>(StepPhase::all_reduce);
    EXPECT_GE(s.ranks[0].phase[ar].p50_ms, 20.0) << s.table();
    EXPECT_GE(s.ranks[2].phase[ar].p50_ms, 20.0) << s.table();
    EXPECT_LT(s.ranks[1].phase[ar].p50_ms, 20.0) << s.table();
    EXPECT_EQ(s.slowest_rank, 1) << s.table();
    EXPECT_EQ(s.slowest_phase, StepPhase::idle) << s.table();
    EXPECT_NE(s.table().find("slowest: rank 1, idle"), std::string::npos) << s.table();
  }
  detail::test_hooks().on_command = nullptr;
  ::munmap(page, 4096);
  g_lag = nullptr;
}

}  // namespace
