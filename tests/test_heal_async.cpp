// tests/test_heal_async.cpp — async jobs that survive a killed worker
// (docs/faults.md, "Async jobs with retries"): apply_async / map_async with
// a retry count, a worker killed (SIGKILL from inside a job) while jobs are
// outstanding; a job that kills its worker on every try; retries 0 as
// before and mixed with retried jobs in one stream; a future never got,
// get() from another thread, heal() and close() with retried jobs
// outstanding.
//
// Deaths are made deterministic with marker files (support/heal_helpers.hpp):
// a job kills its own process when the test's "arm" file exists and it is
// the first to create the "fired" file.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/fork_server.hpp"
#include "support/heal_helpers.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// Waits (10 s at most) until a job has killed its worker.
bool wait_fired() {
  for (int i = 0; i < 10000 && !fired(); ++i) ::usleep(1000);
  return fired();
}

// Waits (10 s at most) until a job has killed its worker and the runtime
// noticed: the watcher marks the runtime failed, then stops (and reaps) the
// other workers. No runtime call: one would heal the runtime.
bool wait_failed() {
  if (!wait_fired()) return false;
  for (int i = 0; i < 10000 && !children(detail::fork_server_pid()).empty(); ++i) ::usleep(1000);
  return children(detail::fork_server_pid()).empty();
}

bool armed() {
  struct stat st{};
  return ::stat(g_arm, &st) == 0;
}

// Jobs from `first` on wait (10 s at most) until the test arms the
// markers, then the first worker to ask dies: jobs before `first` finish
// before any death, jobs from there on are outstanding when it happens.
void die_from(int first, JobContext& ctx, int x) {
  if (x < first || ctx.rank() == 0) return;
  for (int i = 0; i < 10000 && !armed(); ++i) ::usleep(1000);
  if (fire_once()) ::raise(SIGKILL);
}

int64_t square_or_die(JobContext& ctx, const int& x) {
  die_from(60, ctx, x);
  ::usleep(300);
  return int64_t{x} * x;
}

// A result longer than a slot (it travels through the rank's result
// space), naming the job's index as the job sees it.
std::string text_or_die(JobContext& ctx, const int& x) {
  die_from(20, ctx, x % 1000);
  ::usleep(300);
  return "job " + std::to_string(ctx.job()) + " of value " + std::to_string(x) + std::string(80, '.');
}

// A job that counts its runs in row JobContext::job() of a Data (at its
// end: a job whose worker is killed before has not counted).
struct CountJob {
  DataRef runs;
  int32_t x;
  int32_t die_from;  // die_from(die_from, ...)
};
int64_t count_or_die(JobContext& ctx, const CountJob& j) {
  die_from(j.die_from, ctx, j.x);
  ::usleep(200);
  ctx.rows<int32_t>(j.runs, static_cast<int64_t>(ctx.job()), 1)[0] += 1;
  return int64_t{j.x} * j.x;
}

// Every job ran once or twice, at most `twice` of them twice.
void expect_runs(const Data& runs, int twice_at_most) {
  const std::vector<int32_t> n = runs.array().to_vector<int32_t>();
  int twice = 0;
  for (size_t i = 0; i < n.size(); ++i) {
    EXPECT_TRUE(n[i] == 1 || n[i] == 2) << "job " << i << " ran " << n[i] << " times";
    twice += n[i] == 2;
  }
  EXPECT_LE(twice, twice_at_most);
}

// The last job kills its worker (once): by then most jobs have finished.
uint64_t index_or_die(JobContext& ctx, const int& x) {
  die_from(299, ctx, x);
  ::usleep(100);
  return ctx.job();
}

int64_t seven_always_dies(JobContext& ctx, const int& x) {
  if (x == 7 && ctx.rank() != 0) ::raise(SIGKILL);
  ::usleep(300);
  return int64_t{x} * x;
}

// Still running when another worker dies: waits for the death, then
// long enough for the runtime to stop this worker too.
int32_t wait_for_the_death(const int32_t& x) {
  if (wait_fired()) ::sleep(5);
  return x;
}

// The first worker to run one once the test armed the markers dies; the
// master's waits for that death (so that a worker takes some of the jobs,
// however slow it is to start).
int32_t die_once(JobContext& ctx, const int32_t& x) {
  if (ctx.rank() == 0) {
    (void)wait_fired();
  } else {
    for (int i = 0; i < 10000 && !armed(); ++i) ::usleep(1000);
    if (fire_once()) ::raise(SIGKILL);
  }
  return x + 1000;
}

int32_t refuse(const int32_t&) { throw std::runtime_error("job refused"); }

int64_t square_slowly(const int& x) {
  ::usleep(300);
  return int64_t{x} * x;
}

// Every rank takes jobs of a map again.
void expect_every_rank_works(Runtime& rt) {
  std::set<int32_t> ranks;
  for (int i = 0; i < 5 && ranks.size() < 3; ++i)
    for (int32_t r : rt.map(&slow_rank, std::vector<int>(100, 0))) ranks.insert(r);
  EXPECT_EQ(ranks.size(), 3u);
}

TEST(HealAsync, AWorkerKilledWhileAsyncJobsAreOutstandingWithOneRetryGivesEveryResult) {
  set_markers("synk-heal-async", "outstanding");
  Runtime rt = synk::fork(opts(3));
  const std::vector<int> before = children(detail::fork_server_pid());
  ASSERT_EQ(before.size(), 2u);
  std::vector<int> jobs(300);
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = i;
  std::vector<Future<int64_t>> fs = rt.map_async(&square_or_die, jobs, 1);
  // Jobs that finished before the death keep their results.
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]) << "job " << i;
  arm();
  ASSERT_TRUE(wait_fired()) << "no worker was killed: the test tests nothing";
  for (size_t i = 0; i < fs.size(); ++i) EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]) << "job " << i;
  EXPECT_EQ(fs[299].get(), 299 * 299) << "get() again";
  // The same number of ranks, all of them fresh processes.
  EXPECT_EQ(rt.size(), 3);
  const std::vector<int> after = children(detail::fork_server_pid());
  ASSERT_EQ(after.size(), 2u);
  for (int p : after) EXPECT_EQ(std::count(before.begin(), before.end(), p), 0) << "worker " << p << " survived";
  expect_every_rank_works(rt);

  // Results in the ranks' result spaces, apply_async one by one; a job's
  // index (JobContext::job()) is the same in its second try.
  clear_markers();
  rt.join();  // a new stream: jobs numbered from 0
  std::vector<Future<std::string>> ts;
  for (int i = 0; i < 100; ++i) ts.push_back(rt.apply_async(&text_or_die, i + 1000 * (i % 3), 1));
  auto text = [](int i) {
    return "job " + std::to_string(i) + " of value " + std::to_string(i + 1000 * (i % 3)) + std::string(80, '.');
  };
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ts[static_cast<size_t>(i)].get(), text(i));
  arm();
  ASSERT_TRUE(wait_fired());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ts[static_cast<size_t>(i)].get(), text(i));
  EXPECT_EQ(rt.size(), 3);
  expect_every_rank_works(rt);

  // Jobs with retries run on the workers only (the master, which get()
  // would otherwise let run queued jobs, must not die in one).
  for (Future<int32_t>& f : rt.map_async(&slow_rank, std::vector<int>(50, 0), 1)) EXPECT_NE(f.get(), 0);
  clear_markers();
  rt.close();
  expect_nothing_left();
}

TEST(HealAsync, AJobThatKillsItsWorkerOnEveryTryFailsItsFutureNamingTheJob) {
  Runtime rt = synk::fork(opts(3));
  std::vector<int> jobs(40);
  for (int i = 0; i < 40; ++i) jobs[static_cast<size_t>(i)] = i;
  std::vector<Future<int64_t>> fs = rt.map_async(&seven_always_dies, jobs, 2);
  try {
    fs[7].get();
    FAIL() << "job 7 gave a result";
  } catch (const WorkerError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("Runtime::map_async failed after 3 tries"), std::string::npos) << m;
    EXPECT_NE(m.find("job 7 was running on rank"), std::string::npos) << m;
    EXPECT_NE(m.find("in 3 of 3 tries"), std::string::npos) << m;
    EXPECT_NE(m.find("signal 9 (SIGKILL"), std::string::npos) << m;
    EXPECT_GT(e.rank(), 0);
  }
  // The others: a result if they finished before the last try failed,
  // else they end naming job 7; either way at once (nothing waits).
  for (size_t i = 0; i < fs.size(); ++i) {
    if (i == 7) continue;
    try {
      EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]) << "job " << i;
    } catch (const WorkerError& e) {
      EXPECT_NE(std::string(e.what()).find("was not run again: job 7 (Runtime::map_async) failed after 3 tries"),
                std::string::npos)
          << e.what();
    }
  }
  // The runtime is left failed, as map leaves it; heal() repairs it.
  EXPECT_THROW(rt.map(&slow_rank, jobs), WorkerError);
  rt.heal();
  EXPECT_EQ(rt.size(), 3);
  EXPECT_EQ(rt.apply_async(&seven_always_dies, 3, 2).get(), 9);

  // join() (as any other call) gives the culprit's error.
  rt.join();
  Future<int64_t> poison = rt.apply_async(&seven_always_dies, 7, 1);
  try {
    rt.join();
    FAIL() << "join() succeeded";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("Runtime::apply_async failed after 2 tries: job 0 was running on rank"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(poison.get(), WorkerError);
  rt.heal();
  EXPECT_THROW(rt.apply_async(&seven_always_dies, 1, -1), ArgumentError);
  // A job's own exception is its error, never retried: no worker replaced.
  const std::vector<int> kids = children(detail::fork_server_pid());
  try {
    rt.apply_async(&refuse, int32_t{1}, 3).get();
    FAIL() << "the job gave a result";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("job refused"), std::string::npos) << e.what();
  }
  rt.join();
  EXPECT_EQ(children(detail::fork_server_pid()), kids);
  rt.close();
  expect_nothing_left();
}

TEST(HealAsync, RetriesZeroKeepsTodaysErrorAlsoNextToRetriedJobs) {
  set_markers("synk-heal-async", "zero");
  Runtime rt = synk::fork(opts(3));
  // Only retries 0: the failure as before, and the runtime stays failed.
  // (Armed once every job is queued: without retries, a death between two
  // of map_async's jobs makes map_async itself throw.)
  std::vector<Future<int32_t>> fs = rt.map_async(&die_once, std::vector<int32_t>(20, 1));
  arm();
  bool died = false;
  for (auto& f : fs) {
    try {
      EXPECT_EQ(f.get(), 1001);
    } catch (const WorkerError& e) {
      died = true;
      EXPECT_NE(std::string(e.what()).find("signal 9 (SIGKILL"), std::string::npos) << e.what();
      break;
    }
  }
  EXPECT_TRUE(died);
  EXPECT_THROW(rt.map(&slow_rank, std::vector<int>(3, 0)), WorkerError);
  rt.heal();

  // Mixed: a job with retries 0 running when a retried job kills its
  // worker throws the failure; the retried jobs give their results, and
  // the runtime is whole.
  clear_markers();
  arm();
  Future<int32_t> plain = rt.apply_async(&wait_for_the_death, int32_t{5});
  std::vector<Future<int32_t>> retried = rt.map_async(&die_once, std::vector<int32_t>{1, 2, 3, 4}, 1);
  Future<int32_t> queued = rt.apply_async(&die_once, int32_t{9});  // retries 0 too
  for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(retried[static_cast<size_t>(i)].get(), i + 1001);
  EXPECT_TRUE(fired());
  try {
    plain.get();
    FAIL() << "the job that was running when its rank was lost gave a result";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("apply_async failed: worker rank"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("signal 9 (SIGKILL"), std::string::npos) << e.what();
  }
  try {
    EXPECT_EQ(queued.get(), 1009) << "finished before the death";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("apply_async failed: worker rank"), std::string::npos) << e.what();
  }
  EXPECT_EQ(rt.size(), 3);
  expect_every_rank_works(rt);
  clear_markers();
  rt.close();
  expect_nothing_left();
}

TEST(HealAsync, AFutureNeverGotAndAGetFromAnotherThreadHealTheRuntime) {
  set_markers("synk-heal-async", "thread");
  Runtime rt = synk::fork(opts(3));
  std::vector<int> jobs(200);
  for (int i = 0; i < 200; ++i) jobs[static_cast<size_t>(i)] = i;
  arm();
  std::vector<Future<int64_t>> fs = rt.map_async(&square_or_die, jobs, 1);
  ASSERT_TRUE(wait_fired());
  // Another thread's get() heals the runtime (this one makes no call meanwhile).
  int64_t got = -1;
  std::thread t([&] { got = fs[150].get(); });
  t.join();
  EXPECT_EQ(got, 150 * 150);
  // Futures 0..99 are never got: their jobs are retried all the same, and
  // the next call (join) waits for them.
  rt.join();
  for (size_t i = 100; i < fs.size(); ++i) {
    EXPECT_TRUE(fs[i].ready()) << "job " << i;
    EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]) << "job " << i;
  }
  EXPECT_EQ(rt.size(), 3);

  // Runtime::heal() keeps retried jobs: the next get() queues them again.
  clear_markers();
  arm();
  fs = rt.map_async(&square_or_die, jobs, 1);
  ASSERT_TRUE(wait_fired());
  ASSERT_TRUE(wait_failed());
  rt.heal();
  for (size_t i = 0; i < fs.size(); ++i) EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]) << "job " << i;
  clear_markers();
  rt.close();
  expect_nothing_left();
}

TEST(HealAsync, CloseWithOutstandingRetriedJobsNeitherHangsNorLeavesAnything) {
  set_markers("synk-heal-async", "close");
  std::vector<int> jobs(300);
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = i;
  // A healthy runtime: jobs no rank took never run.
  {
    Runtime rt = synk::fork(opts(3));
    std::vector<Future<int64_t>> fs = rt.map_async(&square_slowly, jobs, 2);
    rt.close();
    int never = 0;
    for (size_t i = 0; i < fs.size(); ++i) {
      try {
        EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]);
      } catch (const ArgumentError& e) {
        ++never;
        EXPECT_NE(std::string(e.what()).find("never ran"), std::string::npos) << e.what();
      }
    }
    EXPECT_GT(never, 0);
  }
  expect_nothing_left();
  // A failed runtime: close() does not heal it; unfinished jobs end.
  {
    Runtime rt = synk::fork(opts(3));
    arm();
    std::vector<Future<int64_t>> fs = rt.map_async(&square_or_die, jobs, 2);
    ASSERT_TRUE(wait_failed());
    rt.close();
    int ended = 0;
    for (size_t i = 0; i < fs.size(); ++i) {
      try {
        EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]);
      } catch (const Error&) {
        ++ended;
      }
    }
    EXPECT_GT(ended, 0);
  }
  expect_nothing_left();
  // Jobs kept by heal() and never queued again.
  {
    clear_markers();
    Runtime rt = synk::fork(opts(3));
    arm();
    std::vector<Future<int64_t>> fs = rt.map_async(&square_or_die, jobs, 2);
    ASSERT_TRUE(wait_failed());
    rt.heal();
    rt.close();
    for (size_t i = 0; i < fs.size(); ++i) {
      try {
        EXPECT_EQ(fs[i].get(), int64_t{jobs[i]} * jobs[i]);
      } catch (const ArgumentError& e) {
        EXPECT_NE(std::string(e.what()).find("never ran"), std::string::npos) << e.what();
      }
    }
  }
  clear_markers();
  expect_nothing_left();
}

TEST(HealAsync, JobsFinishedBeforeTheDeathAreNotRunAgain) {
  set_markers("synk-heal-async", "once");
  Runtime rt = synk::fork(opts(3));
  Data runs = rt.zeros(i32, {300});
  std::vector<CountJob> jobs(300);
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = {runs.ref(), i, 150};
  std::vector<Future<int64_t>> fs = rt.map_async(&count_or_die, jobs, 1);
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(fs[i].get(), int64_t(i * i));
  arm();
  for (size_t i = 0; i < fs.size(); ++i) EXPECT_EQ(fs[i].get(), int64_t(i * i)) << "job " << i;
  EXPECT_TRUE(fired());
  // Jobs finished before the death ran once (the master keeps their
  // results); of the others, only those whose worker was stopped after it
  // counted, before the job's state said done (one per worker), ran twice.
  expect_runs(runs, 2);

  // The same for a map with retries.
  clear_markers();
  Data runs2 = rt.zeros(i32, {300});
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = {runs2.ref(), i, 299};
  arm();
  const std::vector<int64_t> sq = rt.map(&count_or_die, jobs, 1);
  EXPECT_TRUE(fired());
  for (size_t i = 0; i < sq.size(); ++i) EXPECT_EQ(sq[i], int64_t(i * i)) << "job " << i;
  // A map runs again the jobs whose results the master had not folded yet
  // (a few: it folds as they arrive), never those it had.
  expect_runs(runs2, 150);
  clear_markers();
  runs = Data();
  runs2 = Data();
  rt.close();
  expect_nothing_left();
}

// map's retries (test_heal.cpp) keep job indices too: a job that runs
// again sees the index of its first try.
TEST(HealJobs, AJobRunAgainSeesItsOwnIndex) {
  set_markers("synk-heal-async", "index");
  Runtime rt = synk::fork(opts(3));
  std::vector<int> jobs(300);
  for (int i = 0; i < 300; ++i) jobs[static_cast<size_t>(i)] = i;
  arm();
  const std::vector<uint64_t> idx = rt.map(&index_or_die, jobs, 1);
  EXPECT_TRUE(fired());
  for (uint64_t i = 0; i < idx.size(); ++i) EXPECT_EQ(idx[i], i);
  clear_markers();
  rt.close();
  expect_nothing_left();
}

}  // namespace
