// The runtime's bad-input matrix (issue 5): wrong shapes, dtypes, ranks,
// size 0, bad index lists, mismatched input lengths, unknown names, calls
// before fork / after close / from a worker, re-entrant and concurrent
// calls, distribute while a call runs; NaN/Inf (propagated, not checked).
// Every case: a clear exception in the master, the workers untouched (a
// per-rank call counter did not move, the worker processes are the same),
// and the next valid call returns the right result.
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include <gtest/gtest.h>

#include "synk/synk.hpp"

namespace {

using namespace synk;

std::vector<int> kids() {
  std::vector<int> out;
  std::ifstream f("/proc/self/task/" + std::to_string(::getpid()) + "/children");
  int p;
  while (f >> p) out.push_back(p);
  return out;
}

struct Fixture {
  Graph g;
  Tensor x, y, s, calls, W;
  Runtime rt;
  ParallelFunction f;  // sum of x*W rows, counts its calls on every rank
  Data X, Y;
  std::vector<int> workers;

  // `publish` receives &rt before fork, so forked workers see it too.
  explicit Fixture(Runtime** publish = nullptr) {
    if (publish) *publish = &rt;
    x = g.input("x", f32, {batch, 3});
    y = g.input("y", f32, {batch});
    s = g.input("s", f32, {});
    W = g.variable("W", {3}, Init::constant(1.f));
    calls = g.variable("calls", {1}, Init::zeros());
    rt = synk::fork({.workers = 3, .seed = 1, .spin = std::chrono::microseconds(5)});
    f = rt.function({"f", {x, y, s}, {{synk::sum(x * W) + synk::sum(y) * s, Collect::sum}}, {{calls, calls + 1.f}}}, {s});
    rt.distribute();
    X = rt.data(Array::from(std::vector<float>(6 * 3, 1.f), {6, 3}));
    Y = rt.data(Array::from(std::vector<float>(6, 2.f), {6}));
    workers = kids();
  }
  float call() { return f({X, Y, Array::scalar_f32(0.5f)})[0].scalar(); }  // 18 + 12 * 0.5 = 24
  std::vector<float> counters() {
    std::vector<float> out;
    for (int r = 0; r < rt.size(); ++r) out.push_back(rt.get(calls, r).to_vector<float>()[0]);
    return out;
  }
};

// Runs `bad`, expects exception E (message containing `text`), then checks
// the workers were untouched and the next valid call works.
template <class E>
void refused(Fixture& fx, const char* what, const std::function<void()>& bad, const std::string& text = "") {
  const std::vector<float> before = fx.counters();
  try {
    bad();
    ADD_FAILURE() << what << ": no exception";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()), "") << what;
    if (!text.empty()) EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << what << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": wrong exception type: " << e.what();
  }
  EXPECT_EQ(fx.counters(), before) << what << ": a rank ran something";
  EXPECT_EQ(kids(), fx.workers) << what;
  EXPECT_FLOAT_EQ(fx.call(), 24.f) << what << ": the next call";
}

TEST(BadInput, ArgumentsOfCalls) {
  Fixture fx;
  ASSERT_FLOAT_EQ(fx.call(), 24.f);
  const Array half = Array::scalar_f32(0.5f);
  Data& X = fx.X;
  Data& Y = fx.Y;
  ParallelFunction& f = fx.f;
  refused<ShapeError>(fx, "wrong shape", [&] { f({Array::zeros(f32, {6, 4}), Y, half}); }, "shape");
  refused<ShapeError>(fx, "wrong rank (ndim)", [&] { f({Array::zeros(f32, {6}), Y, half}); }, "'x'");
  refused<ShapeError>(fx, "broadcast input with a batch dim", [&] { f({X, Y, Array::zeros(f32, {1})}); }, "'s'");
  refused<TypeError>(fx, "wrong dtype", [&] { f({X, Array::from(std::vector<int32_t>(6, 1), {6}), half}); }, "dtype");
  refused<ShapeError>(fx, "mismatched row counts", [&] { f({X, Array::zeros(f32, {5}), half}); }, "rows");
  refused<ArgumentError>(fx, "too few inputs", [&] { f({X, Y}); }, "expected 3 inputs");
  refused<ArgumentError>(fx, "too many inputs", [&] { f({X, Y, half, half}); }, "expected 3 inputs");
  refused<ArgumentError>(fx, "size 0: no rows", [&] { f({Array::zeros(f32, {0, 3}), Array::zeros(f32, {0}), half}); },
                         "no rows");
  refused<ArgumentError>(fx, "size 0: empty index list", [&] { f({X, Y, half}, {.batch = std::vector<int64_t>{}}); },
                         "no rows");
  refused<ArgumentError>(fx, "size 0: empty range", [&] { f({X, Y, half}, {.batch = Range{2, 2}}); }, "no rows");
  refused<ArgumentError>(fx, "index out of range", [&] { f({X, Y, half}, {.batch = std::vector<int64_t>{0, 6}}); },
                         "batch index 6");
  refused<ArgumentError>(fx, "negative index", [&] { f({X, Y, half}, {.batch = std::vector<int64_t>{-1, 2}}); },
                         "batch index -1");
  refused<ArgumentError>(fx, "huge index", [&] {
    f({X, Y, half}, {.batch = std::vector<int64_t>{std::numeric_limits<int64_t>::max()}});
  });
  refused<ArgumentError>(fx, "reversed range", [&] { f({X, Y, half}, {.batch = Range{4, 2}}); }, "outside");
  refused<ArgumentError>(fx, "range past the end", [&] { f({X, Y, half}, {.batch = Range{0, 7}}); }, "outside");
  refused<ArgumentError>(fx, "negative range", [&] { f({X, Y, half}, {.batch = Range{-2, 3}}); }, "outside");
  refused<ArgumentError>(fx, "num_slices 0", [&] { f({X, Y, half}, {.num_slices = 0}); }, "num_slices");
  refused<ArgumentError>(fx, "empty Data", [&] { f({Data(), Y, half}); }, "empty Data");
  refused<ArgumentError>(fx, "host array without data", [&] { f({ArrayView{f32, {6, 3}, nullptr}, Y, half}); }, "no data");
  refused<ArgumentError>(fx, "empty function handle", [&] { ParallelFunction{}({X}); });
}

TEST(BadInput, NamesVariablesAndCollectives) {
  Fixture fx;
  Runtime& rt = fx.rt;
  refused<ArgumentError>(fx, "unknown variable", [&] { rt.get("nope"); }, "'nope'");
  refused<ArgumentError>(fx, "unknown variable in all_reduce", [&] { rt.all_reduce({"W", "nope"}); }, "'nope'");
  refused<ArgumentError>(fx, "an input is not a variable", [&] { rt.broadcast({"x"}); }, "not a shared variable");
  refused<ArgumentError>(fx, "rank out of range", [&] { rt.get("W", 3); }, "out of range");
  refused<ArgumentError>(fx, "negative rank", [&] { rt.set("W", Array::zeros(f32, {3}), -1); }, "out of range");
  refused<ArgumentError>(fx, "root out of range", [&] { rt.reduce({"W"}, ReduceOp::sum, 7); }, "root 7");
  refused<ShapeError>(fx, "set: wrong shape", [&] { rt.set("W", Array::zeros(f32, {4})); }, "shape");
  refused<TypeError>(fx, "set: wrong dtype", [&] { rt.set("W", Array::from(std::vector<int32_t>(3, 1), {3})); });
  refused<ShapeError>(fx, "scatter: wrong shape", [&] { rt.scatter("W", Array::zeros(f32, {2, 3})); }, "shape");
  refused<ArgumentError>(fx, "map: no function", [&] {
    rt.map_raw(nullptr, nullptr, nullptr, 4, 1, nullptr, 4);
  });
  refused<ShapeError>(fx, "restore: wrong shape", [&] { rt.restore({{"W", Array::zeros(f32, {2})}}); });
  refused<ArgumentError>(fx, "Data resize negative", [&] { fx.X.resize(-1); }, "negative");
  refused<ShapeError>(fx, "Data with a negative dim", [&] { rt.data(f32, {-3}); });
  // The variables were not changed by any refused call.
  EXPECT_EQ(rt.get("W", 2).to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

TEST(BadInput, NanAndInfPropagate) {
  // Documented behaviour: values are not checked, they propagate.
  Fixture fx;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> xv(18, 1.f);
  xv[16] = nan;  // a row of the last rank
  EXPECT_TRUE(std::isnan(fx.f({Array::from(xv, {6, 3}), fx.Y, Array::scalar_f32(0.5f)})[0].scalar()));
  xv[16] = inf;
  EXPECT_EQ(fx.f({Array::from(xv, {6, 3}), fx.Y, Array::scalar_f32(0.5f)})[0].scalar(), inf);
  EXPECT_TRUE(std::isnan(fx.f({fx.X, fx.Y, Array::scalar_f32(nan)})[0].scalar()));  // broadcast NaN
  EXPECT_FLOAT_EQ(fx.call(), 24.f);
}

TEST(BadInput, CallsOutsideTheRuntimesLife) {
  {
    Runtime never;
    EXPECT_THROW(never.distribute(), ArgumentError);
    EXPECT_THROW(never.get("W"), ArgumentError);
    EXPECT_THROW(never.all_reduce({"W"}), ArgumentError);
    EXPECT_THROW(never.snapshot(), ArgumentError);
  }
  Fixture fx;
  ParallelFunction f = fx.f;
  fx.rt.close();
  EXPECT_THROW(fx.call(), ArgumentError);
  EXPECT_THROW(fx.rt.distribute(), ArgumentError);
  EXPECT_THROW(fx.rt.get("W"), ArgumentError);
  EXPECT_THROW(fx.X.set(Array::zeros(f32, {2, 3})), ArgumentError);
  EXPECT_THROW(f({fx.X, fx.Y, Array::scalar_f32(1.f)}), ArgumentError);
  // A new runtime works, and the old function stays refused.
  Runtime rt = synk::fork({.workers = 2});
  ParallelFunction g = rt.function({"g", {fx.x}, {{synk::sum(fx.x), Collect::sum}}});
  rt.distribute();
  EXPECT_FLOAT_EQ(g({Array::from(std::vector<float>(6, 1.f), {2, 3})})[0].scalar(), 6.f);
  EXPECT_THROW(f({fx.X, fx.Y, Array::scalar_f32(1.f)}), ArgumentError);
}

// Called from a map job: in a worker, and (for the jobs the master takes) re-entrant.
Runtime* g_rt = nullptr;
pid_t g_master = 0;
int32_t call_from_job(const int32_t&) {
  try {
    g_rt->get("W");
    return 0;  // not refused
  } catch (const ArgumentError& e) {
    const std::string m = e.what();
    // In a worker the runtime object is a copy made inside fork(), before
    // the master's handle was filled in: empty, or refused by pid.
    if (::getpid() != g_master)
      return m.find("worker process") != std::string::npos || m.find("never started") != std::string::npos ? 1 : 2;
    return m.find("another runtime call is running") != std::string::npos ? 3 : 4;
  } catch (...) {
    return 5;
  }
}

TEST(BadInput, CallsFromAWorkerAndReentrantCallsAreRefused) {
  g_master = ::getpid();
  Fixture fx(&g_rt);
  std::vector<int32_t> jobs(60, 0);
  const std::vector<float> before = fx.counters();
  std::vector<int32_t> got = fx.rt.map(&call_from_job, jobs);
  int in_worker = 0, in_master = 0;
  for (int32_t r : got) {
    EXPECT_TRUE(r == 1 || r == 3) << "job result " << r;
    in_worker += r == 1;
    in_master += r == 3;
  }
  EXPECT_EQ(in_worker + in_master, 60);
  EXPECT_EQ(fx.counters(), before);
  EXPECT_EQ(kids(), fx.workers);
  EXPECT_FLOAT_EQ(fx.call(), 24.f);
  g_rt = nullptr;
}

int32_t slow_job(const int32_t& ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

TEST(BadInput, ConcurrentCallsAndDistributeAreRefused) {
  Fixture fx;
  std::atomic<bool> started{false};
  std::thread busy([&] {
    started = true;
    std::vector<int32_t> jobs(30, 20);  // ~0.2 s over 3 ranks
    EXPECT_EQ(fx.rt.map(&slow_job, jobs).size(), 30u);
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  int refusals = 0;
  auto expect_refused = [&](const char* what, const std::function<void()>& fn) {
    try {
      fn();
      ADD_FAILURE() << what << " ran while a call was running";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("another runtime call is running"), std::string::npos) << e.what();
      ++refusals;
    }
  };
  expect_refused("call", [&] { fx.call(); });
  expect_refused("distribute", [&] { fx.rt.distribute(); });
  expect_refused("all_reduce", [&] { fx.rt.all_reduce({"W"}); });
  expect_refused("data", [&] { fx.rt.data(Array::zeros(f32, {2})); });
  expect_refused("function", [&] { fx.rt.function({"h", {fx.x}, {{synk::sum(fx.x)}}}); });
  busy.join();
  EXPECT_EQ(refusals, 5);
  EXPECT_EQ(fx.counters(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(kids(), fx.workers);
  EXPECT_FLOAT_EQ(fx.call(), 24.f);
}

}  // namespace
