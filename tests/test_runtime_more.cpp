// Tests of synk::Runtime beyond plain calls: collectives on shared variables
// (integer data, exact equality), the training step against one process,
// map, and failures (workers killed, exiting, crashing, throwing; SIGTERM to
// the master). Processes forked by the tests report by exit code only.
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <numeric>
#include <thread>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

RuntimeOptions opts(int n) { return {.workers = n, .seed = 3, .spin = std::chrono::microseconds(5)}; }

Array ints(int64_t n, int32_t base) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = base + static_cast<int32_t>(i * 3 % 7) - 2;
  return Array::from(v, {n});
}

TEST(RuntimeCollectives, ExactOnIntegers) {
  for (int n : {1, 2, 3, 4}) {
    for (int64_t size : {0, 1, 7, 13}) {
      Graph g;
      Tensor v = g.variable("v", {size}, Init::zeros(), i32);
      Tensor x = g.input("x", f32, {batch});
      Runtime rt = synk::fork(opts(n));
      rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
      rt.distribute();
      auto reset = [&] {
        for (int r = 0; r < n; ++r) rt.set("v", ints(size, r + 1), r);
      };
      auto expect = [&](int r, const std::vector<int32_t>& want, const char* what) {
        EXPECT_EQ(rt.get(v, r).to_vector<int32_t>(), want) << what << " n=" << n << " size=" << size << " rank " << r;
      };
      auto combine = [&](auto op) {
        std::vector<int32_t> acc = ints(size, 1).to_vector<int32_t>();
        for (int r = 1; r < n; ++r) {
          auto x = ints(size, r + 1).to_vector<int32_t>();
          for (size_t i = 0; i < acc.size(); ++i) acc[i] = op(acc[i], x[i]);
        }
        return acc;
      };
      const auto sum = combine([](int32_t a, int32_t b) { return a + b; });
      const auto mx = combine([](int32_t a, int32_t b) { return std::max(a, b); });
      const auto mn = combine([](int32_t a, int32_t b) { return std::min(a, b); });
      const auto pr = combine([](int32_t a, int32_t b) { return a * b; });
      std::vector<int32_t> avg = sum;
      for (auto& a : avg) a /= n;

      reset();
      rt.all_reduce({"v"}, ReduceOp::sum);
      for (int r = 0; r < n; ++r) expect(r, sum, "all_reduce sum");
      reset();
      rt.all_reduce({v}, ReduceOp::max);
      for (int r = 0; r < n; ++r) expect(r, mx, "all_reduce max");
      reset();
      rt.all_reduce({v}, ReduceOp::min);
      for (int r = 0; r < n; ++r) expect(r, mn, "all_reduce min");
      reset();
      rt.all_reduce({v}, ReduceOp::prod);
      for (int r = 0; r < n; ++r) expect(r, pr, "all_reduce prod");
      reset();
      rt.all_reduce({v}, ReduceOp::avg);
      for (int r = 0; r < n; ++r) expect(r, avg, "all_reduce avg");
      reset();
      rt.reduce({"v"}, ReduceOp::sum, n - 1);
      expect(n - 1, sum, "reduce root");
      if (n > 1) expect(0, ints(size, 1).to_vector<int32_t>(), "reduce non-root unchanged");
      reset();
      rt.broadcast({"v"}, n - 1);
      for (int r = 0; r < n; ++r) expect(r, ints(size, n).to_vector<int32_t>(), "broadcast");
      reset();
      std::vector<int32_t> stacked;
      for (int r = 0; r < n; ++r) {
        auto x = ints(size, r + 1).to_vector<int32_t>();
        stacked.insert(stacked.end(), x.begin(), x.end());
      }
      Array ga = rt.gather("v");
      EXPECT_EQ(ga.shape(), (Shape{n, size}));
      EXPECT_EQ(ga.to_vector<int32_t>(), stacked);
      EXPECT_EQ(rt.all_gather(v).to_vector<int32_t>(), stacked);
      std::vector<int32_t> sc(stacked.rbegin(), stacked.rend());
      rt.scatter("v", Array::from(sc, {n, size}));
      for (int r = 0; r < n; ++r)
        expect(r, std::vector<int32_t>(sc.begin() + r * size, sc.begin() + (r + 1) * size), "scatter");
      rt.set("v", ints(size, 42));
      for (int r = 0; r < n; ++r) expect(r, ints(size, 42).to_vector<int32_t>(), "set all");
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
    Runtime rt = synk::fork(opts(n));
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

int64_t square_job(const int32_t& x) {
  if (x < 0) throw ArgumentError("negative job");
  return static_cast<int64_t>(x) * x;
}

TEST(RuntimeMap, JobsInOrderWithReduce) {
  for (int n : {1, 3}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<int32_t> jobs(100);
    std::iota(jobs.begin(), jobs.end(), 0);
    std::vector<int64_t> out = rt.map(&square_job, jobs);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], int64_t{i} * i);
    int64_t total = rt.map_reduce(&square_job, jobs, int64_t{0}, [](int64_t a, int64_t b) { return a + b; });
    EXPECT_EQ(total, 328350);
  }
}

// ---- failures -----------------------------------------------------------------------

pid_t g_master = 0;
int32_t die_in_worker(const int32_t& how) {
  if (::getpid() != g_master) {
    if (how == 1) ::_exit(3);
    if (how == 2) ::raise(SIGSEGV);
    if (how == 3) throw ArgumentError("job refused in a worker");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return how;
}

double seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(RuntimeFailure, KilledWhileIdle) {
  Graph g;
  Tensor x = g.input("x", f32, {batch});
  Runtime rt = synk::fork(opts(3));
  ParallelFunction f = rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
  rt.distribute();
  // Find rank 2's pid: it is a child of ours.
  std::vector<int32_t> dummy(1);
  Array X = Array::from(std::vector<float>(6, 1.f), {6});
  EXPECT_FLOAT_EQ(f({X})[0].scalar(), 6.f);
  pid_t victim = 0;
  {
    std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
    std::vector<int> kids;
    int p;
    while (ch >> p) kids.push_back(p);
    ASSERT_EQ(kids.size(), 2u);
    victim = kids[1];
  }
  ::kill(victim, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto t0 = std::chrono::steady_clock::now();
  try {
    f({X});
    FAIL() << "no error after a worker was killed";
  } catch (const WorkerError& e) {
    EXPECT_LT(seconds(t0), 1.0);
    EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f({X}), WorkerError);  // sticky
  rt.close();
  std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
  int p;
  EXPECT_FALSE(static_cast<bool>(ch >> p));
}

TEST(RuntimeFailure, ExitCrashAndThrowMidCall) {
  g_master = ::getpid();
  std::vector<int32_t> jobs(20, 0);
  {
    Runtime rt = synk::fork(opts(2));
    jobs[10] = 3;  // throws in a worker: reported, runtime stays usable
    try {
      rt.map(&die_in_worker, jobs);
      // The master may have taken job 10 itself (then nothing fails).
    } catch (const WorkerError& e) {
      EXPECT_EQ(e.rank(), 1);
      EXPECT_NE(std::string(e.what()).find("job refused in a worker"), std::string::npos) << e.what();
    }
    jobs[10] = 0;
    EXPECT_EQ(rt.map(&die_in_worker, jobs).size(), 20u);
  }
  for (int how : {1, 2}) {
    Runtime rt = synk::fork(opts(2));
    std::fill(jobs.begin(), jobs.end(), how);  // every job kills a worker that takes it
    auto t0 = std::chrono::steady_clock::now();
    try {
      rt.map(&die_in_worker, jobs);
      FAIL() << "no error";
    } catch (const WorkerError& e) {
      EXPECT_LT(seconds(t0), 2.0);
      EXPECT_EQ(e.rank(), 1);
      const std::string want = how == 1 ? "exited with code 3" : "signal 11";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

TEST(RuntimeFailure, KilledDuringTrainingSteps) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 64});
  auto l = nn::dense(g, "l", 64, 64);
  Tensor loss = mean(square(l(x)));
  Runtime rt = synk::fork(opts(2));
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {x}, .outputs = {{loss}}, .loss = loss,
                                         .params = l.params(), .optimizer = [](auto& p, auto& gr) {
                                           return optim::sgd(p, gr, {.lr = 0.01f});
                                         }});
  rt.distribute();
  Data X = rt.data(Array::from(std::vector<float>(256 * 64, 0.5f), {256, 64}));
  pid_t victim = 0;
  {
    std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
    ASSERT_TRUE(static_cast<bool>(ch >> victim));
  }
  std::atomic<int64_t> killed_at{0};
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    killed_at = std::chrono::steady_clock::now().time_since_epoch().count();
    ::kill(victim, SIGKILL);
  });
  bool thrown = false;
  auto t0 = std::chrono::steady_clock::now();
  while (!thrown && seconds(t0) < 5) {
    try {
      step({X});
    } catch (const WorkerError& e) {
      thrown = true;
      const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
      EXPECT_LT((now - killed_at.load()) / 1e9, 1.0);
      EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
      EXPECT_EQ(e.rank(), 1) << e.what();
    }
  }
  killer.join();
  EXPECT_TRUE(thrown);
  rt.close();
}

TEST(RuntimeFailure, SigtermToMasterLeavesNothing) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t master = ::fork();
  if (master == 0) {
    ::close(fds[0]);
    int code = 0;
    try {
      Runtime rt = synk::fork(opts(3));
      std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
      int p;
      while (ch >> p) {
        if (::write(fds[1], &p, sizeof p) != sizeof p) code = 2;
      }
      ::close(fds[1]);
      ::pause();
    } catch (...) {
      code = 1;
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  std::vector<int> workers;
  int p;
  // Exactly two pids (the workers inherited the write end, so no EOF comes).
  while (workers.size() < 2 && ::read(fds[0], &p, sizeof p) == sizeof p) workers.push_back(p);
  ::close(fds[0]);
  ASSERT_EQ(workers.size(), 2u);
  ::kill(master, SIGTERM);
  int st = 0;
  ASSERT_EQ(::waitpid(master, &st, 0), master);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
  // The workers die with the master (they are reaped by init, so poll).
  for (int w : workers) {
    bool gone = false;
    for (int i = 0; i < 200 && !gone; ++i) {
      std::ifstream stat("/proc/" + std::to_string(w) + "/stat");
      std::string line;
      gone = !std::getline(stat, line) || line.find(") Z") != std::string::npos;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(gone) << "worker " << w << " outlived its master";
  }
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

// The fork server (runtime/fork_server.hpp), shown on the CPU with a faked
// GPU count: workers are copies of the server, made at each fork() while
// the process is free of CUDA (they see the program as it is then), and
// kept once the master has a CUDA context, so CUDA ranks can be forked
// again after close() (recovery). Runs in a child process: the CUDA mark is
// process-wide and sticky.
int g_seen = 0;       // what the program set before the fork that made the workers' server
pid_t g_forker = 0;   // the master of the runtime under test
int32_t seen_in_worker(const int32_t&) {
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // so every rank takes some jobs
  return ::getpid() == g_forker ? -1 : g_seen;
}

// The workers' view of g_seen (-1: only the master ran jobs).
int worker_view(Runtime& rt) {
  std::vector<int32_t> jobs(64, 0);
  int seen = -1;
  for (int32_t r : rt.map(&seen_in_worker, jobs)) {
    if (r == -1) continue;
    if (seen != -1 && seen != r) return -2;  // workers disagree
    seen = r;
  }
  return seen;
}

int fork_server_scenario() {
  g_forker = ::getpid();
  auto cuda_opts = [] {
    detail::test_hooks().fake_gpu_count = 2;
    return RuntimeOptions{.workers = 2, .device = "cuda", .comm = CommBackend::host_staged,
                          .spin = std::chrono::microseconds(5)};
  };
  // A clean process: each fork() copies the program as it is then.
  g_seen = 1;
  Runtime rt = synk::fork(opts(2));
  if (worker_view(rt) != 1) return 10;
  rt.close();
  if (detail::fork_server_pid() != 0) return 11;  // CPU ranks leave no server behind
  g_seen = 2;
  rt = synk::fork(opts(2));
  if (worker_view(rt) != 2) return 12;
  rt.close();
  // CUDA ranks: the server is kept, and the master then makes its context
  // (here marked by hand, as its CudaSession would).
  g_seen = 3;
  rt = synk::fork(cuda_opts());
  const pid_t server = detail::fork_server_pid();
  if (server == 0) return 13;
  detail::note_cuda_context();
  g_seen = 4;  // set after the context: workers from the kept server never see it
  if (worker_view(rt) != 3) return 14;
  // A worker dies; the run goes on in a new runtime (recovery).
  pid_t victim = 0;
  {
    std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
    int p;
    while (ch >> p)
      if (p != server) victim = p;
  }
  if (victim == 0) return 15;
  ::kill(victim, SIGKILL);
  try {
    for (int i = 0; i < 100; ++i) {
      worker_view(rt);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return 16;  // the death was never reported
  } catch (const WorkerError&) {
  }
  rt.close();
  if (detail::fork_server_pid() != server) return 17;  // kept across close()
  rt = synk::fork(cuda_opts());
  if (rt.size() != 2) return 18;
  if (worker_view(rt) != 3) return 19;  // from the same clean server
  if (detail::fork_server_pid() != server) return 20;
  rt.close();
  // CPU ranks from a CUDA process also come from the kept server.
  rt = synk::fork(opts(2));
  if (worker_view(rt) != 3) return 21;
  rt.close();
  return 0;
}

// A process that initialised CUDA before its first CUDA runtime has no clean
// server: CUDA ranks are refused, saying why; CPU ranks still work.
int no_clean_server_scenario() {
  g_forker = ::getpid();
  detail::note_cuda_context();
  detail::test_hooks().fake_gpu_count = 2;
  try {
    synk::fork({.workers = 2, .device = "cuda", .comm = CommBackend::host_staged});
    return 30;
  } catch (const ArgumentError& e) {
    if (std::string(e.what()).find("already initialised CUDA") == std::string::npos) return 31;
  }
  g_seen = 5;
  Runtime rt = synk::fork(opts(2));
  if (worker_view(rt) != 5) return 32;
  rt.close();
  return 0;
}

int in_child(int (*scenario)()) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = scenario();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "scenario threw: %s\n", e.what());
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(RuntimeForkServer, CudaMasterKeepsACleanServerForLaterForks) {
  if (detail::cuda_context_noted()) GTEST_SKIP() << "this process already initialised CUDA; run the test alone";
  EXPECT_EQ(in_child(&fork_server_scenario), 0) << "see the return codes in fork_server_scenario";
}

TEST(RuntimeForkServer, NoCleanServerRefusesCudaRanks) {
  EXPECT_EQ(in_child(&no_clean_server_scenario), 0) << "see the return codes in no_clean_server_scenario";
}

// The point of the fork server, on a GPU: a CUDA worker dies mid-training,
// and the run goes on in a new runtime with CUDA ranks (two host-staged
// ranks share GPU 0, so one GPU is enough).
TEST(GpuRecovery, CloseForkRestoreWithCudaRanks) {
  if (const std::string why = synk_test::no_cuda_ranks(1); !why.empty()) GTEST_SKIP() << why;
  Graph g;
  Tensor x = g.input("x", f32, {batch, 16});
  auto l = nn::dense(g, "l", 16, 4);
  Tensor loss = mean(square(l(x)));
  const RuntimeOptions o{.workers = 2, .device = "cuda", .comm = CommBackend::host_staged, .seed = 5};
  const TrainSpec spec{.name = "train", .inputs = {x}, .outputs = {{loss}}, .loss = loss, .params = l.params(),
                       .optimizer = [](auto& p, auto& gr) { return optim::nesterov(p, gr); }};
  const Array X = Array::from(std::vector<float>(64 * 16, 0.25f), {64, 16});
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(spec);
  rt.distribute();
  for (int i = 0; i < 3; ++i) step({X});
  pid_t victim = 0;
  {
    std::ifstream ch("/proc/self/task/" + std::to_string(::getpid()) + "/children");
    int p;
    while (ch >> p)
      if (p != detail::fork_server_pid()) victim = p;
  }
  ASSERT_GT(victim, 0);
  ::kill(victim, SIGKILL);
  VarValues saved;
  try {
    for (int i = 0; i < 200; ++i) step({X});
    FAIL() << "the dead worker was not noticed";
  } catch (const WorkerError&) {
    saved = rt.snapshot();
  }
  rt.close();
  rt = synk::fork(o);  // CUDA ranks again, from the kept fork server
  step = rt.train_step(spec);
  rt.distribute();
  rt.restore(saved);
  for (const auto& [name, value] : saved)
    for (int r = 0; r < 2; ++r)
      EXPECT_EQ(rt.get(name, r).to_vector<float>(), value.to_vector<float>()) << name << " on rank " << r;
  const float before = step({X})[0].scalar();
  const float after = step({X})[0].scalar();
  EXPECT_LT(after, before) << "training goes on after the recovery";
  rt.close();
}

}  // namespace
