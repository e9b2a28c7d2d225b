// Tests of synk::Runtime when processes fail: workers killed, exiting,
// crashing or throwing (idle, mid-call, mid-training), SIGTERM to the
// master; recovery (snapshot, close, fork again, restore, train on, also
// with CUDA ranks); and the fork server that makes recovery possible with
// CUDA ranks. Processes forked by the tests report by exit code only. The
// full fault matrix is tests/test_faults.cpp.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "cuda/context.hpp"
#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "support/watchdog.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// ---- worker deaths and signals ----------------------------------------------------------

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
    const std::vector<int> kids = children();
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
      for (int p : children()) {
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
      gone = !alive(w);  // gone, or a zombie
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(gone) << "worker " << w << " outlived its master";
  }
}

// ---- recovery ---------------------------------------------------------------------------

struct Regression {
  Graph g;
  Tensor x, y, loss;
  nn::Dense l;
  Regression() {
    x = g.input("x", f32, {batch, 4});
    y = g.input("y", f32, {batch, 1});
    l = nn::dense(g, "l", 4, 1, Init::uniform(-0.5f, 0.5f), Init::zeros());
    loss = mean(square(l(x) - y));
  }
  TrainSpec spec() {
    return {.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss, .params = l.params(),
            // With state (velocity): made again after the restart, it reuses
            // the same variables, which restore() fills.
            .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
              return optim::nesterov(p, gr, {.lr = 0.02f, .momentum = 0.9f});
            }};
  }
};

TEST(FaultRecovery, TrainingSurvivesAKilledWorker) {
  const RuntimeOptions o{.workers = 3, .seed = 5, .spin = std::chrono::microseconds(5),
                         .timeout = std::chrono::seconds(5), .collective_timeout = std::chrono::seconds(5)};
  Regression m;
  std::vector<float> xv(64 * 4), yv(64);
  for (size_t i = 0; i < 64; ++i) {
    float t = 0;
    for (size_t k = 0; k < 4; ++k) {
      xv[i * 4 + k] = std::sin(static_cast<float>(i * 4 + k));
      t += xv[i * 4 + k] * static_cast<float>(k + 1) * 0.5f;
    }
    yv[i] = t;
  }
  const Array X = Array::from(xv, {64, 4}), Y = Array::from(yv, {64, 1});

  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(m.spec());
  rt.distribute();
  Data DX = rt.data(X), DY = rt.data(Y);
  std::vector<float> losses;
  for (int i = 0; i < 20; ++i) losses.push_back(step({DX, DY})[0].scalar());
  EXPECT_LT(losses.back(), losses.front());

  // A worker dies; the next step raises.
  const std::vector<int> kids = children(detail::fork_server_pid());
  ASSERT_EQ(kids.size(), 2u);
  ::kill(kids[1], SIGKILL);
  bool raised = false;
  for (int i = 0; i < 1000 && !raised; ++i) {
    try {
      losses.push_back(step({DX, DY})[0].scalar());
    } catch (const WorkerError& e) {
      raised = true;
      EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
    }
  }
  ASSERT_TRUE(raised);
  const float before = losses.back();

  // The master's copy survives the failure: snapshot it, start again.
  const VarValues saved = rt.snapshot();
  ASSERT_EQ(saved.size(), 4u);  // l/W, l/b and their velocities
  rt.close();
  DX = Data();
  DY = Data();
  rt = synk::fork(o);
  step = rt.train_step(m.spec());  // the same spec in the same graph
  rt.distribute();
  rt.restore(saved);
  for (const auto& [name, value] : saved)
    for (int r = 0; r < rt.size(); ++r)
      EXPECT_EQ(rt.get(name, r).to_vector<float>(), value.to_vector<float>()) << name << " on rank " << r;
  DX = rt.data(X);
  DY = rt.data(Y);
  const float first = step({DX, DY})[0].scalar();
  EXPECT_LE(first, before * 1.0001f + 1e-6f) << "training restarted from scratch instead of the saved values";
  float last = first;
  for (int i = 0; i < 20; ++i) last = step({DX, DY})[0].scalar();
  EXPECT_LT(last, first);
  // Parameters stay equal on every rank.
  for (int r = 1; r < rt.size(); ++r)
    EXPECT_EQ(rt.get("l/W", r).to_vector<float>(), rt.get("l/W", 0).to_vector<float>());

  // restore() checks everything before touching anything.
  VarValues bad = saved;
  bad.front().second = Array::zeros(f32, {7});
  EXPECT_THROW(rt.restore(bad), ShapeError);
  EXPECT_THROW(rt.restore({{"no such variable", Array::zeros(f32, {1})}}), ArgumentError);
  rt.close();
  EXPECT_THROW(rt.snapshot(), ArgumentError);
  EXPECT_TRUE(children(detail::fork_server_pid()).empty());
}

// ---- the fork server --------------------------------------------------------------------

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
    for (int p : children(server)) victim = p;
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


TEST(RuntimeForkServer, CudaMasterKeepsACleanServerForLaterForks) {
  if (detail::cuda_context_noted()) GTEST_SKIP() << "this process already initialised CUDA; run the test alone";
  EXPECT_EQ(synk_test::exit_code_in_child(&fork_server_scenario), 0) << "see the return codes in fork_server_scenario";
}

TEST(RuntimeForkServer, NoCleanServerRefusesCudaRanks) {
  EXPECT_EQ(synk_test::exit_code_in_child(&no_clean_server_scenario), 0) << "see the return codes in no_clean_server_scenario";
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
    for (int p : children(detail::fork_server_pid())) victim = p;
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
