// Tests of close() and of what outlives a runtime (issue 25): close() from a
// second thread during every kind of call waits for the call and then
// closes, close() from a job the master runs is refused (and a Runtime
// destroyed there closes when the call ends), never a crash, a hang, a
// leaked process or segment; a Data, DataRef or function handle of a
// closed runtime is refused by the next one instead of meaning its arrays;
// close() releases the shared gradient buffers while handles live; a forged
// DataRef cannot overflow the row check; the trace path is fixed at fork().
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/core.hpp"  // detail::test_hooks
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// Every worker command but stop takes 150 ms: a call is surely running when
// the second thread closes 30 ms after starting it.
void slow_command(int cmd, int, detail::CommandHeader&) {
  if (cmd != static_cast<int>(detail::Cmd::stop)) std::this_thread::sleep_for(std::chrono::milliseconds(150));
}

struct SlowWorkers {
  SlowWorkers() { detail::test_hooks().on_command = &slow_command; }
  ~SlowWorkers() { detail::test_hooks().on_command = nullptr; }
};

int32_t sleep_job(const int32_t& ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

using Model = synk_test::SmallDense;

Array filled(Shape s, float v) {
  Array a = Array::zeros(f32, s);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = v + 0.01f * static_cast<float>(i % 7);
  return a;
}

// A fresh runtime works: a training step gives a finite loss on 3 ranks.
void expect_new_runtime_works() {
  Runtime rt = synk::fork(opts(3));
  Model m;
  ParallelFunction step = rt.train_step(m.train());
  rt.distribute();
  const float l = step({filled({12, 4}, 0.5f), filled({12, 2}, 0.1f)}).at(0).scalar();
  EXPECT_TRUE(std::isfinite(l));
  rt.close();
}

// ---- close() from a second thread during every kind of call ------------------------

struct Kind {
  const char* name;
  std::function<void(Runtime&, Model&, ParallelFunction&, ParallelFunction&, Data&)> call;
};

TEST(RuntimeClose, FromASecondThreadDuringEveryKindOfCallWaitsForTheCall) {
  const int segs_before = memfd_segments();
  const std::vector<Kind> kinds = {
      {"function", [](Runtime&, Model&, ParallelFunction& f, ParallelFunction&, Data& X) { f({X}); }},
      {"train step",
       [](Runtime&, Model&, ParallelFunction&, ParallelFunction& step, Data& X) {
         step({X, Array(filled({24, 2}, 0.1f))});
       }},
      {"all_reduce", [](Runtime& rt, Model&, ParallelFunction&, ParallelFunction&, Data&) { rt.all_reduce({"l/W"}); }},
      {"gather", [](Runtime& rt, Model&, ParallelFunction&, ParallelFunction&, Data&) { rt.gather("l/b"); }},
      {"map",
       [](Runtime& rt, Model&, ParallelFunction&, ParallelFunction&, Data&) {
         EXPECT_EQ(rt.map(&sleep_job, std::vector<int32_t>(12, 30)).size(), 12u);
       }},
      {"argsort",
       [](Runtime& rt, Model&, ParallelFunction&, ParallelFunction&, Data& X) {
         EXPECT_EQ(rt.argsort(X, 1).size(), 24u);
       }},
      {"Future::get",
       [](Runtime& rt, Model&, ParallelFunction&, ParallelFunction&, Data&) {
         std::vector<Future<int32_t>> fs = rt.map_async(&sleep_job, std::vector<int32_t>(12, 30));
         EXPECT_EQ(fs.back().get(), 30);
       }},
      {"distribute",
       [](Runtime& rt, Model& m, ParallelFunction&, ParallelFunction&, Data&) {
         rt.function({"h", {m.x}, {{synk::sum(m.x), Collect::sum}}});
         rt.distribute();
       }},
  };
  for (const Kind& k : kinds) {
    SCOPED_TRACE(k.name);
    {
      SlowWorkers slow;
      Runtime rt = synk::fork(opts(3));
      Model m;
      ParallelFunction f = rt.function({"f", {m.x}, {{synk::sum(m.x), Collect::sum}}});
      ParallelFunction step = rt.train_step(m.train());
      rt.distribute();
      Data X = rt.data(filled({24, 4}, 0.5f));
      std::atomic<bool> started{false}, closed{false};
      std::string close_error;
      std::thread closer([&] {
        while (!started) std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        try {
          rt.close();
        } catch (const std::exception& e) {
          close_error = e.what();
        }
        closed = true;
      });
      started = true;
      try {
        k.call(rt, m, f, step, X);  // runs to its end: close() waits for it
      } catch (const std::exception& e) {
        ADD_FAILURE() << "the call failed: " << e.what();
      }
      closer.join();
      EXPECT_TRUE(closed);
      EXPECT_EQ(close_error, "");
      EXPECT_FALSE(rt.is_open());
      EXPECT_TRUE(children().empty()) << "a worker is left";
      // The handles are refused now.
      EXPECT_THROW(f({X}), ArgumentError);
      EXPECT_THROW(rt.all_reduce({"l/W"}), ArgumentError);
    }
    EXPECT_EQ(memfd_segments(), segs_before) << "a segment is left";
  }
  expect_new_runtime_works();
}

// Futures not yet collected when close() runs: jobs that finished keep their
// results, jobs that never ran say so; nothing crashes.
TEST(RuntimeClose, FuturesNotCollectedSurviveClose) {
  std::vector<Future<int32_t>> fs;
  {
    Runtime rt = synk::fork(opts(3));
    fs = rt.map_async(&sleep_job, std::vector<int32_t>(40, 20));
    fs[0].wait();
    rt.close();
  }
  int done = 0, never = 0;
  for (auto& f : fs) {
    try {
      EXPECT_EQ(f.get(), 20);
      ++done;
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("never ran"), std::string::npos) << e.what();
      ++never;
    }
  }
  EXPECT_GE(done, 1);
  EXPECT_EQ(done + never, 40);
  EXPECT_TRUE(children().empty());
  expect_new_runtime_works();
}

// ---- close() from a job -------------------------------------------------------------

Runtime* g_rt = nullptr;
pid_t g_master = 0;

// 0: close() returned (not refused); 1: refused in a worker; 3: refused in
// the master as a call of the same thread; 4/5: another error.
int32_t close_from_job(const int32_t&) {
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // so that the master takes jobs too
  try {
    g_rt->close();
    return ::getpid() == g_master ? 0 : 1;  // a worker's copy is empty: nothing to close there
  } catch (const ArgumentError& e) {
    const std::string m = e.what();
    if (::getpid() != g_master) return 1;
    return m.find("inside a runtime call of the same thread") != std::string::npos ? 3 : 4;
  } catch (...) {
    return 5;
  }
}

TEST(RuntimeClose, FromAJobIsRefusedAndTheRuntimeStaysUsable) {
  g_master = ::getpid();
  // g_rt is set before fork(), so a worker's copy points at an empty Runtime.
  Runtime rt;
  g_rt = &rt;
  rt = synk::fork(opts(3));
  const std::vector<int32_t> jobs(60, 0);
  auto check = [](const std::vector<int32_t>& got) {
    int in_master = 0;
    for (int32_t r : got) {
      EXPECT_TRUE(r == 1 || r == 3) << "job result " << r;
      in_master += r == 3;
    }
    EXPECT_GE(in_master, 1);  // the master takes jobs too
  };
  check(rt.map(&close_from_job, jobs));
  check(rt.map_reduce_ordered(&close_from_job, jobs, std::vector<int32_t>{}, [](std::vector<int32_t> acc, int32_t r) {
    acc.push_back(r);
    return acc;
  }));
  std::vector<Future<int32_t>> fs = rt.map_async(&close_from_job, jobs);
  std::vector<int32_t> got;
  for (auto& f : fs) got.push_back(f.get());  // the master runs queued jobs while it waits
  check(got);
  EXPECT_TRUE(rt.is_open());
  EXPECT_EQ(rt.map(&sleep_job, std::vector<int32_t>(6, 1)).size(), 6u);
  g_rt = nullptr;
  rt.close();
  EXPECT_TRUE(children().empty());
}

// A job the master runs destroys the Runtime (move-assigns an empty one):
// the destructor cannot throw, so the runtime closes when the map ends.
std::atomic<int> g_destroyed{0};
int32_t destroy_from_job(const int32_t& ms) {
  if (::getpid() == g_master && g_destroyed.fetch_add(1) == 0) *g_rt = Runtime();
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

TEST(RuntimeClose, RuntimeDestroyedInsideItsOwnCallClosesWhenTheCallEnds) {
  g_master = ::getpid();
  const int segs_before = memfd_segments();
  Runtime rt = synk::fork(opts(3));
  g_rt = &rt;
  g_destroyed = 0;
  const std::vector<int32_t> got = rt.map(&destroy_from_job, std::vector<int32_t>(30, 5));
  EXPECT_EQ(got.size(), 30u);
  EXPECT_GE(g_destroyed.load(), 1);
  EXPECT_FALSE(rt.is_open());
  EXPECT_TRUE(children().empty());
  EXPECT_EQ(memfd_segments(), segs_before);
  g_rt = nullptr;
  expect_new_runtime_works();
}

// ---- what outlives a runtime ------------------------------------------------------------

int32_t write_ones(JobContext& ctx, const DataRef& d) {
  for (float& v : ctx.rows<float>(d)) v = 1.f;
  return 0;
}

TEST(RuntimeClose, DataAndDataRefOfAClosedRuntimeAreRefusedByTheNext) {
  Data old;
  DataRef old_ref;
  {
    Runtime rt = synk::fork(opts(2));
    old = rt.data(filled({8, 4}, 0.f));
    old_ref = old.ref();
    rt.close();
  }
  // The closed runtime's Data stays readable.
  EXPECT_EQ(old.array().numel(), 32);
  Runtime rt = synk::fork(opts(2));
  Model m;
  ParallelFunction f = rt.function({"f", {m.x}, {{synk::sum(m.x), Collect::sum}}});
  rt.distribute();
  // Made in the same order as the old one: before the fix, its segment id
  // was the old Data's, and the old DataRef named it.
  Data fresh = rt.data(filled({8, 4}, 0.f));
  try {
    f({old});
    ADD_FAILURE() << "a Data of the closed runtime was taken";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8, 4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rt.argsort(old), ArgumentError);
  EXPECT_THROW(rt.sort(old), ArgumentError);
  EXPECT_THROW(old.ref(), ArgumentError);
  try {
    rt.map(&write_ones, std::vector<DataRef>(4, old_ref));
    ADD_FAILURE() << "a job wrote through a DataRef of the closed runtime";
  } catch (const WorkerError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("destroyed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("closed"), std::string::npos) << msg;
  }
  const Array after = fresh.array();
  for (int64_t i = 0; i < after.numel(); ++i) EXPECT_NE(after.data<float>()[i], 1.f) << "element " << i;
  EXPECT_FLOAT_EQ(f({fresh})[0].scalar(), f({filled({8, 4}, 0.f)})[0].scalar());
}

TEST(RuntimeClose, DataRefOfADestroyedDataIsNamedAsSuch) {
  Runtime rt = synk::fork(opts(2));
  DataRef ref;
  {
    Data d = rt.data(filled({4, 4}, 0.f));
    ref = d.ref();
  }
  try {
    rt.map(&write_ones, std::vector<DataRef>(6, ref));
    ADD_FAILURE() << "a job wrote through a DataRef of a destroyed Data";
  } catch (const WorkerError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("was destroyed"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("corrupt command"), std::string::npos) << msg;
  }
  EXPECT_EQ(rt.map(&sleep_job, std::vector<int32_t>(3, 1)).size(), 3u);
}

// The last handle of a Data goes in a second thread while the master runs
// jobs that look segments up (and the runtime publishes result space): the
// release waits for the call (under TSan, a data race before).
TEST(RuntimeClose, DataDroppedInASecondThreadDuringACall) {
  Runtime rt = synk::fork(opts(3));
  Data target = rt.data(filled({64, 4}, 0.f));
  std::vector<Data> doomed;
  for (int i = 0; i < 40; ++i) doomed.push_back(rt.data(filled({4, 4}, 0.f)));
  std::atomic<bool> go{false};
  std::thread dropper([&] {
    while (!go) std::this_thread::yield();
    while (!doomed.empty()) {
      doomed.pop_back();
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  go = true;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(rt.map(&write_ones, std::vector<DataRef>(16, target.ref())).size(), 16u);
  dropper.join();
  const Array t = target.array();
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], 1.f);
  EXPECT_EQ(rt.map(&sleep_job, std::vector<int32_t>(3, 1)).size(), 3u);
}

// A DataRef whose rows * row_elems * 4 wraps around 64 bits.
struct Forged {
  DataRef d;
  int64_t first;
};
int32_t read_forged(JobContext& ctx, const Forged& f) {
  try {
    volatile float v = ctx.rows<float>(f.d, f.first, 1)[0];
    (void)v;
    return 1;  // read past the segment (if it did not crash)
  } catch (const ArgumentError&) {
    return 0;
  }
}

TEST(RuntimeClose, ForgedDataRefCannotOverflowTheRowCheck) {
  Runtime rt = synk::fork(opts(2));
  Data d = rt.data(filled({4, 2}, 0.f));
  Forged f{d.ref(), 0};
  // rows * 8 * 4 = 2^67 + 32 wraps to 32 bytes, the size of the Data.
  f.d.rows = (int64_t{1} << 62) + 1;
  f.d.row_elems = 8;
  f.first = int64_t{1} << 40;
  const std::vector<int32_t> got = rt.map(&read_forged, std::vector<Forged>(8, f));
  for (int32_t r : got) EXPECT_EQ(r, 0);
  f.d.rows = -1;
  for (int32_t r : rt.map(&read_forged, std::vector<Forged>(2, f))) EXPECT_EQ(r, 0);
}

// close() releases the gradient buffers of training steps even while a
// function handle keeps the runtime's core; the handle is refused after.
TEST(RuntimeClose, ReleasesEverythingWhileHandlesLive) {
  const int segs_before = memfd_segments();
  Model m;
  ParallelFunction step;
  {
    Runtime rt = synk::fork(opts(3));
    step = rt.train_step(m.train());
    rt.distribute();
    step({filled({12, 4}, 0.5f), filled({12, 2}, 0.1f)});
    rt.close();
    EXPECT_EQ(memfd_segments(), segs_before) << "close() kept segments while a handle lives";
    try {
      step({filled({12, 4}, 0.5f), filled({12, 2}, 0.1f)});
      ADD_FAILURE() << "a handle of a closed runtime ran";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(memfd_segments(), segs_before);
}

// ---- the timeline's path -----------------------------------------------------------------

struct Cwd {
  std::string old;
  Cwd() {
    char b[4096];
    old = ::getcwd(b, sizeof b) ? b : "/";
  }
  ~Cwd() { EXPECT_EQ(::chdir(old.c_str()), 0); }
};

std::string make_dir(const char* tag) {
  std::string d = ::testing::TempDir() + "synk_close_" + tag + "_" + std::to_string(::getpid());
  ::mkdir(d.c_str(), 0700);
  return d;
}

TEST(RuntimeClose, RelativeTracePathIsWhereForkWasCalled) {
  Cwd keep;
  const std::string a = make_dir("a"), b = make_dir("b");
  ASSERT_EQ(::chdir(a.c_str()), 0);
  Runtime rt = synk::fork({.workers = 2, .spin = std::chrono::microseconds(5), .trace = "t.json"});
  rt.map(&sleep_job, std::vector<int32_t>(4, 1));
  ASSERT_EQ(::chdir(b.c_str()), 0);
  rt.close();
  EXPECT_TRUE(std::ifstream(a + "/t.json").good()) << "no trace where fork() was called";
  EXPECT_FALSE(std::ifstream(b + "/t.json").good()) << "the trace went to the directory current at close()";
  std::remove((a + "/t.json").c_str());
  ::rmdir(a.c_str());
  ::rmdir(b.c_str());
}

TEST(RuntimeClose, TraceThatCannotBeWrittenAtCloseIsReportedToTheCaller) {
  const std::string dir = make_dir("gone");
  const std::string path = dir + "/t.json";
  Runtime rt = synk::fork({.workers = 2, .spin = std::chrono::microseconds(5), .trace = path.c_str()});
  rt.map(&sleep_job, std::vector<int32_t>(4, 1));
  ASSERT_EQ(::rmdir(dir.c_str()), 0);  // the file can no longer be made
  try {
    rt.close();
    ADD_FAILURE() << "close() said nothing of the trace it could not write";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_FALSE(rt.is_open());
  EXPECT_TRUE(children().empty());
  EXPECT_NO_THROW(rt.close());  // reported once
}

}  // namespace
