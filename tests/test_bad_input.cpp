// The runtime's bad-input matrix (issue 5): wrong shapes, dtypes, ranks,
// size 0, bad index lists, mismatched input lengths, unknown names, calls
// before fork / after close / from a worker, re-entrant and concurrent
// calls, distribute while a call runs; NaN/Inf (propagated, not checked).
// Every case: a clear exception in the master, the workers untouched (a
// per-rank call counter did not move, the worker processes are the same),
// and the next valid call returns the right result.
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/core.hpp"
#include "support/proc_probe.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

// The worker processes (children of this process; tests/support/proc_probe.hpp).
std::vector<int> kids() { return synk_test::children(); }

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
  refused<ShapeError>(fx, "restore: wrong shape", [&] { rt.restore({{"W", Array::zeros(f32, {2})}}); });
  refused<ArgumentError>(fx, "Data resize negative", [&] { fx.X.resize(-1); }, "negative");
  refused<ShapeError>(fx, "Data with a negative dim", [&] { rt.data(f32, {-3}); });
  // The variables were not changed by any refused call.
  EXPECT_EQ(rt.get("W", 2).to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

// Every public Runtime method (and fork's options) with each kind of bad
// argument it can get: refused in the master, the workers untouched, the
// next call right (docs/faults.md, "Bad input").
TEST(BadInput, EveryRuntimeMethod) {
  Fixture fx;
  Runtime& rt = fx.rt;
  Graph& g = fx.g;
  const Tensor x = fx.x;
  // fork: options are checked before anything (here a runtime is open too).
  auto fork_with = [&](auto&& edit) {
    return [edit] {
      RuntimeOptions o{.workers = 2};
      edit(o);
      synk::fork(o);
    };
  };
  refused<ArgumentError>(fx, "fork: workers -1", fork_with([](RuntimeOptions& o) { o.workers = -1; }), "workers");
  refused<ArgumentError>(fx, "fork: workers 100000", fork_with([](RuntimeOptions& o) { o.workers = 100000; }), "workers");
  refused<ArgumentError>(fx, "fork: device 'gpu'", fork_with([](RuntimeOptions& o) { o.device = "gpu"; }), "'gpu'");
  refused<ArgumentError>(fx, "fork: comm 7",
                         fork_with([](RuntimeOptions& o) { o.comm = static_cast<CommBackend>(7); }), "comm 7");
  refused<ArgumentError>(fx, "fork: timeout 0",
                         fork_with([](RuntimeOptions& o) { o.timeout = std::chrono::milliseconds(0); }), "timeout");
  refused<ArgumentError>(fx, "fork: collective_timeout -1",
                         fork_with([](RuntimeOptions& o) { o.collective_timeout = std::chrono::milliseconds(-1); }),
                         "collective_timeout");
  refused<ArgumentError>(fx, "fork: close_timeout -1",
                         fork_with([](RuntimeOptions& o) { o.close_timeout = std::chrono::milliseconds(-1); }),
                         "close_timeout");
  refused<ArgumentError>(fx, "fork: spin -1",
                         fork_with([](RuntimeOptions& o) { o.spin = std::chrono::nanoseconds(-1); }), "spin");
  refused<ArgumentError>(fx, "fork: a second open runtime", fork_with([](RuntimeOptions&) {}), "already open");

  // function
  refused<ArgumentError>(fx, "function: collect mode 9",
                         [&] { rt.function({"bad", {x}, {{synk::sum(x), static_cast<Collect>(9)}}}); },
                         "not a synk::Collect");
  for (Collect c : {Collect::avg, Collect::sum, Collect::max, Collect::min, Collect::prod, Collect::none})
    refused<ArgumentError>(fx, "function: an output with a batch dim, not gathered",
                           [&] { rt.function({"rows", {x}, {{x * 2.f, c}}}); }, "Collect::gather");
  refused<ArgumentError>(fx, "function: input listed twice", [&] { rt.function({"twice", {x, x}, {{synk::sum(x)}}}); },
                         "listed twice");
  refused<ArgumentError>(fx, "function: broadcast tensor not an input",
                         [&] { rt.function({"b", {x}, {{synk::sum(x)}}}, {fx.s}); }, "not one of its inputs");
  refused<ArgumentError>(fx, "function: scattered input without a batch dim",
                         [&] { rt.function({"s", {fx.s}, {{fx.s * 2.f}}}); }, "broadcast");
  refused<ArgumentError>(fx, "function: missing input", [&] { rt.function({"m", {x}, {{synk::sum(fx.y)}}}); },
                         "'y'");
  Graph other;
  const Tensor ox = other.input("ox", f32, {batch});
  refused<ArgumentError>(fx, "function: another graph", [&] { rt.function({"o", {ox}, {{synk::sum(ox)}}}); },
                         "one Graph");

  // train_step
  auto sgd = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) { return optim::sgd(p, gr); };
  const Tensor loss = mean(x * fx.W);
  auto step = [&](Tensor l, std::vector<Tensor> params, std::vector<OutputSpec> outs = {}, bool opt = true) {
    return [&rt, x, l, params, outs, opt, sgd] {
      TrainSpec t{.name = "t", .inputs = {x}, .outputs = outs, .loss = l, .params = params};
      if (opt) t.optimizer = sgd;
      rt.train_step(t);
    };
  };
  refused<ArgumentError>(fx, "train_step: no loss", step(Tensor{}, {fx.W}), "no loss");
  refused<ArgumentError>(fx, "train_step: loss not a scalar", step(x * fx.W, {fx.W}), "scalar");
  refused<ArgumentError>(fx, "train_step: no params", step(loss, {}), "params");
  refused<ArgumentError>(fx, "train_step: a param is an input", step(loss, {x}), "variables");
  refused<ArgumentError>(fx, "train_step: no optimizer", step(loss, {fx.W}, {}, false), "optimizer");
  refused<ArgumentError>(fx, "train_step: an output with a batch dim, not gathered",
                         step(loss, {fx.W}, {{x * fx.W, Collect::avg}}), "Collect::gather");

  // data
  refused<TypeError>(fx, "data: dtype 9", [&] { rt.data(static_cast<DType>(9), {2}); }, "dtype 9");
  refused<ArgumentError>(fx, "data: no data", [&] { rt.data(ArrayView{f32, {4}, nullptr}); }, "no data");
  refused<ShapeError>(fx, "data: too large", [&] { rt.data(f32, {int64_t{1} << 40, int64_t{1} << 40}); }, "too large");
  refused<TypeError>(fx, "Data::set: dtype 9", [&] {
    float v[2] = {1, 2};
    fx.X.set(ArrayView{static_cast<DType>(9), {2}, v});
  });

  // variable collectives
  refused<ArgumentError>(fx, "broadcast: root -1", [&] { rt.broadcast({"W"}, -1); }, "root -1");
  refused<ArgumentError>(fx, "broadcast: listed twice", [&] { rt.broadcast({"W", fx.W}); }, "listed twice");
  refused<ArgumentError>(fx, "all_reduce: op 17", [&] { rt.all_reduce({"W"}, static_cast<ReduceOp>(17)); },
                         "not a synk::ReduceOp");
  refused<ArgumentError>(fx, "all_reduce: listed twice", [&] { rt.all_reduce({fx.W, fx.W}, ReduceOp::sum); },
                         "listed twice");
  refused<ArgumentError>(fx, "reduce: op 5", [&] { rt.reduce({"W"}, static_cast<ReduceOp>(5), 1); },
                         "not a synk::ReduceOp");
  refused<ArgumentError>(fx, "reduce: listed twice", [&] { rt.reduce({"W", "calls", "W"}, ReduceOp::max, 1); },
                         "listed twice");
  refused<ArgumentError>(fx, "reduce: root 3", [&] { rt.reduce({"W"}, ReduceOp::sum, 3); }, "root 3");
  refused<ArgumentError>(fx, "gather: unknown variable", [&] { rt.gather("nope"); }, "'nope'");
  refused<ArgumentError>(fx, "all_gather: not a variable", [&] { rt.all_gather(x); }, "not a shared variable");
  refused<ArgumentError>(fx, "gather: a tensor of another graph", [&] { rt.gather(ox); }, "graph");
  refused<TypeError>(fx, "scatter: wrong dtype", [&] { rt.scatter("W", Array::zeros(i32, {3, 3})); }, "dtype");
  refused<ArgumentError>(fx, "scatter: unknown variable", [&] { rt.scatter("nope", Array::zeros(f32, {3, 3})); });
  refused<ArgumentError>(fx, "set: no data", [&] { rt.set("W", ArrayView{f32, {3}, nullptr}); }, "no data");
  refused<ArgumentError>(fx, "set: rank 3", [&] { rt.set("W", Array::zeros(f32, {3}), 3); }, "out of range");
  refused<ArgumentError>(fx, "get: rank -1", [&] { rt.get("W", -1); }, "out of range");
  const Tensor late = g.variable("late", {1});
  refused<ArgumentError>(fx, "get: a variable made after distribute", [&] { rt.get(late); }, "distribute");

  // plain jobs (jobs.hpp)
  refused<ArgumentError>(fx, "run_jobs: no function", [&] {
    const uint64_t offsets[2] = {0, 4};
    const uint8_t job[4] = {};
    rt.run_jobs(nullptr, 0, job, offsets, 1, 4, false, {}, "map");
  }, "no function");
  refused<ArgumentError>(fx, "argsort: empty Data", [&] { rt.argsort(Data()); }, "empty Data");
  refused<ArgumentError>(fx, "argsort: column out of range", [&] { rt.argsort(fx.X, 3); }, "column 3");
  refused<ArgumentError>(fx, "argsort: negative column", [&] { rt.argsort(fx.X, -1); }, "column -1");
  refused<ArgumentError>(fx, "sort: column out of range", [&] { rt.sort(fx.X, 7); }, "column 7");
  refused<ShapeError>(fx, "argsort: a scalar Data", [&] { rt.argsort(rt.data(f32, {})); }, "[rows]");
  refused<ArgumentError>(fx, "Future::get: an empty future", [&] { Future<int>().get(); }, "empty Future");

  // restore
  refused<ArgumentError>(fx, "restore: unknown name", [&] { rt.restore({{"nope", Array::zeros(f32, {3})}}); }, "'nope'");
  refused<ShapeError>(fx, "restore: wrong dtype", [&] { rt.restore({{"W", Array::zeros(i32, {3})}}); }, "i32");
  refused<ArgumentError>(fx, "restore: listed twice", [&] {
    rt.restore({{"W", Array::zeros(f32, {3})}, {"W", Array::zeros(f32, {3})}});
  }, "listed twice");

  // After all of these, distribute and a new function work, and no variable changed.
  ParallelFunction h = rt.function({"h", {x}, {{synk::sum(x), Collect::sum}}});
  rt.distribute();
  EXPECT_FLOAT_EQ(h({fx.X})[0].scalar(), 18.f);
  EXPECT_EQ(rt.get("W", 1).to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_FLOAT_EQ(fx.call(), 24.f);
}

// A variable listed twice was reduced twice (ranks holding 1, 2, 3 gave 18
// for a sum, not 6): refused, values untouched, the single-listed call right.
TEST(BadInput, CollectivesRefuseDuplicates) {
  Fixture fx;
  Runtime& rt = fx.rt;
  for (int r = 0; r < 3; ++r) rt.set("W", Array::from(std::vector<float>(3, static_cast<float>(r + 1)), {3}), r);
  EXPECT_THROW(rt.all_reduce({fx.W, "W"}, ReduceOp::sum), ArgumentError);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(rt.get("W", r).to_vector<float>(), std::vector<float>(3, static_cast<float>(r + 1))) << "rank " << r;
  rt.all_reduce({fx.W}, ReduceOp::sum);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rt.get("W", r).to_vector<float>(), std::vector<float>(3, 6.f)) << "rank " << r;
}

// A function the workers cannot take used to make every later distribute()
// fail. Refused when made (a bad Collect); and when a distribute does fail
// on a worker, the functions made since the last good one are dropped, the
// earlier ones keep working, and the next distribute works.
// Set in a MAP_SHARED page made before fork, so the workers see the switch.
std::atomic<int>* g_fail_compile = nullptr;
void throw_on_rank2(int rank) {
  if (rank == 2 && g_fail_compile && g_fail_compile->load() != 0) throw std::runtime_error("injected compile failure");
}

TEST(BadInput, FailedDistributeDoesNotPoisonTheNext) {
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  g_fail_compile = new (page) std::atomic<int>(0);
  detail::test_hooks().before_compile = &throw_on_rank2;
  Fixture fx;
  Runtime& rt = fx.rt;
  EXPECT_THROW(rt.function({"bad", {fx.x}, {{synk::sum(fx.x), static_cast<Collect>(9)}}}), ArgumentError);
  ParallelFunction ok1 = rt.function({"ok1", {fx.x}, {{synk::sum(fx.x), Collect::sum}}});
  rt.distribute();
  EXPECT_FLOAT_EQ(ok1({fx.X})[0].scalar(), 18.f);

  ParallelFunction lost = rt.function({"lost", {fx.x}, {{synk::max(fx.x), Collect::max}}});
  g_fail_compile->store(1);
  try {
    rt.distribute();
    ADD_FAILURE() << "distribute did not fail";
  } catch (const WorkerError& e) {
    EXPECT_EQ(e.rank(), 2);
    EXPECT_NE(std::string(e.what()).find("injected compile failure"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dropped ('lost')"), std::string::npos) << e.what();
  }
  g_fail_compile->store(0);
  try {
    lost({fx.X});
    ADD_FAILURE() << "a dropped function ran";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("dropped"), std::string::npos) << e.what();
  }
  EXPECT_FLOAT_EQ(fx.call(), 24.f);
  EXPECT_FLOAT_EQ(ok1({fx.X})[0].scalar(), 18.f);
  ParallelFunction again = rt.function({"again", {fx.x}, {{synk::max(fx.x), Collect::max}}});
  rt.distribute();
  EXPECT_FLOAT_EQ(again({fx.X})[0].scalar(), 1.f);
  EXPECT_THROW(lost({fx.X}), ArgumentError);  // still dropped: its index is not reused
  EXPECT_EQ(fx.counters(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(kids(), fx.workers);
  fx.rt.close();
  detail::test_hooks().before_compile = nullptr;
  g_fail_compile = nullptr;
  ::munmap(page, 4096);
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
