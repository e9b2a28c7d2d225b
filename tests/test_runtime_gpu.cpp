// Tests of synk::Runtime with CUDA ranks (RuntimeOptions::device = "cuda"):
// a 2-rank training step on one GPU through the host-staged backend equals
// the CPU runtime's, and a 1-rank run works. Gpu* suites (CTest label gpu):
// they skip without a device, and in a process that already made a
// CudaSession (a forked rank cannot use its parent's CUDA), so run them as
// ctest does, one test per process.
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cuda_ranks_skip.hpp"
#include "cuda/context.hpp"
#include "runtime/core.hpp"
#include "support/watchdog.hpp"
#include "synk/config.hpp"
#include "synk/cuda_session.hpp"
#include "synk/synk.hpp"
#if SYNK_HAVE_CUDA
#include "cuda/device.hpp"
#endif

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

// Deterministic CUDA ranks: one rank and two host-staged ranks on one GPU
// give the same bits (10 rows: 10 chunks of one row), and stay close to the
// deterministic CPU runtime.
TEST(GpuRuntime, DeterministicOneAndTwoRanksSameBits) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  RuntimeOptions o{.workers = 2, .seed = 3, .deterministic = true};
  auto cpu = train(o, 10);
  o.device = "cuda";
  o.comm = CommBackend::host_staged;
  auto two = train(o, 10);
  o.workers = 1;
  auto one = train(o, 10);
  EXPECT_EQ(two.first, one.first) << "losses";
  EXPECT_EQ(two.second, one.second) << "W";
  expect_close(one.first, cpu.first, "loss");
  expect_close(one.second, cpu.second, "W");
}

TEST(GpuRuntime, HostStagedTwoRanksOneGpuEqualsCpu) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  expect_cuda_equals_cpu(2, CommBackend::host_staged, 10);
}

TEST(GpuRuntime, OneRankAutomaticComm) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  expect_cuda_equals_cpu(1, CommBackend::automatic, 8);
}

// Batch norm's running statistics on CUDA ranks: each rank's, after two
// training steps, equal the CPU runtime's (per-rank statistics, from each
// rank's own rows, updated by the gradient function's state updates).
std::vector<std::vector<float>> bn_stats(RuntimeOptions o) {
  Graph g;
  Tensor x = g.input("x", f32, {batch, 2, 3, 3});
  Tensor y = g.input("y", f32, {batch, 1});
  Tensor gm = g.variable("gm", {2}, Init::constant(1.f)), bt = g.variable("bt", {2});
  Tensor rm = g.variable("rm", {2}), rv = g.variable("rv", {2}, Init::constant(1.f));
  nn::Dense l = nn::dense(g, "l", 18, 1, Init::uniform(-0.3f, 0.3f));
  Tensor loss = mean(square(l(flatten(batch_norm(x, gm, bt, rm, rv))) - y));
  std::vector<Tensor> params = l.params();
  params.push_back(gm);
  params.push_back(bt);
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss,
                                         .params = params, .optimizer = [](auto& p, auto& gr) {
                                           return optim::sgd(p, gr, {.lr = 0.1f});
                                         }});
  rt.distribute();
  const int rows = 10;
  std::vector<float> xv(static_cast<size_t>(rows) * 18), yv(static_cast<size_t>(rows));
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(0.7f * static_cast<float>(i)) + (i >= xv.size() / 2 ? 2.f : 0.f);
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = std::cos(0.3f * static_cast<float>(i));
  Data X = rt.data(Array::from(xv, {rows, 2, 3, 3})), Y = rt.data(Array::from(yv, {rows, 1}));
  step({X, Y});
  step({X, Y});
  std::vector<std::vector<float>> out;
  for (int r = 0; r < o.workers; ++r) {
    out.push_back(rt.get("rm", r).to_vector<float>());
    out.push_back(rt.get("rv", r).to_vector<float>());
  }
  rt.close();
  return out;
}

TEST(GpuRuntime, BatchNormPerRankStatisticsEqualCpu) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  RuntimeOptions o{.workers = 2, .seed = 3};
  auto cpu = bn_stats(o);
  o.device = "cuda";
  o.comm = CommBackend::host_staged;
  auto gpu = bn_stats(o);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) expect_close(gpu[i], cpu[i], i % 2 ? "running_var" : "running_mean");
  // The ranks' rows differ (rank 1's are shifted by 2), so do their statistics.
  EXPECT_GT(std::fabs(cpu[2][0] - cpu[0][0]), 0.1f);
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

// Three layers: six gradients, so buckets of 64 bytes make several.
struct Deep {
  Graph g;
  Tensor x, y, loss;
  std::vector<Tensor> params;
  Deep() {
    x = g.input("x", f32, {batch, 6});
    y = g.input("y", i32, {batch});
    nn::Dense l1 = nn::dense(g, "l1", 6, 40), l2 = nn::dense(g, "l2", 40, 30), l3 = nn::dense(g, "l3", 30, 4);
    loss = mean(softmax_cross_entropy(l3(relu(l2(relu(l1(x))))), y));
    params = {l1.W, l1.b, l2.W, l2.b, l3.W, l3.b};
  }
};

// The bytes of 3 steps' losses and of every parameter on every rank.
std::vector<std::vector<uint8_t>> train_deep(RuntimeOptions o, int rows) {
  Deep m;
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(
      {.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss, .params = m.params,
       .optimizer = [](auto& p, auto& gr) { return optim::nesterov(p, gr, {.lr = 0.1f, .momentum = 0.9f}); }});
  rt.distribute();
  std::vector<float> xv(static_cast<size_t>(rows) * 6);
  std::vector<int32_t> yv(static_cast<size_t>(rows));
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(0.7f * static_cast<float>(i));
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = static_cast<int32_t>((i * 5) % 4);
  Data X = rt.data(Array::from(xv, {rows, 6})), Y = rt.data(Array::from(yv, {rows}));
  auto bytes = [](const Array& a) {
    const auto* p = static_cast<const uint8_t*>(a.raw());
    return std::vector<uint8_t>(p, p + a.nbytes());
  };
  std::vector<std::vector<uint8_t>> out;
  for (int it = 0; it < 3; ++it) out.push_back(bytes(step({X, Y})[0]));
  for (const Tensor& p : m.params)
    for (int r = 0; r < o.workers; ++r) out.push_back(bytes(rt.get(p, r)));
  rt.close();
  return out;
}

// Gradient buckets on CUDA ranks (RuntimeOptions::bucket_bytes): an NCCL
// rank all-reduces each bucket on the comm's side stream while backward
// goes on (the call runs in segments), host-staged ranks between the
// segments; both give the bits of one all-reduce after backward.
TEST(GpuRuntime, BucketsDuringBackwardSameBits) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  std::vector<std::pair<int, CommBackend>> runs{{2, CommBackend::host_staged}};
  if (SYNK_HAVE_NCCL) runs.emplace_back(1, CommBackend::nccl);
  for (auto [workers, comm] : runs) {
    RuntimeOptions o{.workers = workers, .device = "cuda", .comm = comm, .seed = 3};
    o.bucket_bytes = 0;
    const auto whole = train_deep(o, 10);
    for (size_t bucket : {size_t{64}, size_t{1} << 20}) {
      o.bucket_bytes = bucket;
      EXPECT_EQ(train_deep(o, 10), whole) << workers << " rank(s), " << (comm == CommBackend::nccl ? "nccl" : "host-staged")
                                          << ", buckets of " << bucket << " bytes";
    }
  }
}

// The timeline of an NCCL rank (RuntimeOptions::trace): its compute stream
// and its comm's stream get tracks of their own, timed on the GPU
// (cuda::GpuMarks), and with buckets some of a step's all-reduces start on
// the comm's stream before that step's forward+backward ends there.
TEST(GpuRuntime, TraceShowsTheBucketsOnTheCommStreamDuringBackward) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  if (!SYNK_HAVE_NCCL) GTEST_SKIP() << "synk was built without NCCL";
  const std::string path = ::testing::TempDir() + "synk_gpu_trace_" + std::to_string(::getpid()) + ".json";
  std::remove(path.c_str());
  RuntimeOptions o{.workers = 1, .device = "cuda", .comm = CommBackend::nccl, .seed = 3};
  o.bucket_bytes = 64;
  o.trace = path.c_str();
  // Enough rows that the backward of l2 and l1 (kernels over rows x 40
  // elements) outlasts the comm stream's start on the first bucket (l3's
  // gradients): with a handful of rows, backward may end before any stream
  // could begin, on a GPU and under the emulation alike.
  train_deep(o, 4000);  // 3 steps: calls 1..3
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << "no trace " << path;
  const nlohmann::json t = nlohmann::json::parse(f);
  std::map<int, std::string> track;
  for (const auto& e : t.at("traceEvents"))
    if (e.at("ph") == "M" && e.at("name") == "thread_name") track[e.at("tid").get<int>()] = e.at("args").at("name");
  EXPECT_EQ(track[1], "rank 0 GPU compute stream");  // tid lane * ranks + rank
  EXPECT_EQ(track[2], "rank 0 GPU comm stream");
  struct Times {
    double fb_end = -1;
    int updates = 0, reduces = 0;
    double first_reduce = 1e300;
  };
  std::map<uint64_t, Times> calls;
  for (const auto& e : t.at("traceEvents")) {
    if (e.at("ph") != "X" || !e.at("args").contains("call")) continue;
    const int tid = e.at("tid");
    const std::string name = e.at("name");
    const double ts = e.at("ts"), dur = e.at("dur");
    Times& c = calls[e.at("args").at("call").get<uint64_t>()];
    if (tid == 1 && name == "forward+backward") c.fb_end = ts + dur;
    if (tid == 1 && name == "update") ++c.updates;
    if (tid == 2 && name == "gradient all-reduce") {
      ++c.reduces;
      c.first_reduce = std::min(c.first_reduce, ts);
    }
  }
  for (uint64_t call = 1; call <= 3; ++call) {
    const Times& c = calls[call];
    EXPECT_GE(c.fb_end, 0) << "call " << call << ": no forward+backward on the compute stream";
    EXPECT_EQ(c.updates, 1) << "call " << call;
    EXPECT_GE(c.reduces, 2) << "call " << call << ": six gradients in buckets of 64 bytes";
    EXPECT_LT(c.first_reduce, c.fb_end) << "call " << call << ": the first bucket went before backward ended";
  }
  std::remove(path.c_str());
}

// Runs f in a forked child, so that whatever CUDA state it makes (and the
// record of it) stays there; returns what f returned ("" when it passed).
std::string in_child(const std::function<std::string()>& f) { return synk_test::run_watched(0, f).text; }

// Issue 16, item 3: CudaSession::available() asks in a child, so the
// natural `if (CudaSession::available()) fork({.device = "cuda"})` forks
// CUDA ranks from a process without CUDA; and where fork() refuses, it
// says what the CUDA runtime said, not a bare "no device".
TEST(RuntimeCudaOptions, AvailableLeavesTheProcessForkable) {
  if (detail::cuda_context_noted()) GTEST_SKIP() << "this process already used CUDA; run the test alone";
  const std::string r = in_child([]() -> std::string {
    const bool avail = CudaSession::available();
    if (detail::cuda_context_noted()) return "CudaSession::available() initialised CUDA in this process";
    std::string refusal;
    try {
      Runtime rt = synk::fork({.workers = 1, .device = "cuda"});
      if (!avail) return "fork(cuda) worked where CudaSession::available() said no";
      return "";
    } catch (const Error& e) {
      refusal = e.what();
    }
    if (avail) return "CudaSession::available() but fork(cuda) refused: " + refusal;
    if (refusal.find("already") != std::string::npos) return "fork(cuda) refused because of the probe: " + refusal;
#if SYNK_HAVE_CUDA
    // What this process gets when it asks itself (it may, now): where
    // cudaGetDeviceCount failed, the refusal names the error.
    const cuda::DeviceProbe here = cuda::probe_devices();
    if (here.error != 0 && refusal.find(here.name) == std::string::npos)
      return "cudaGetDeviceCount failed with " + here.name + " but fork(cuda) refused with: " + refusal;
#else
    if (refusal.find("without CUDA") == std::string::npos) return "refusal does not say synk has no CUDA: " + refusal;
#endif
    return "";
  });
  EXPECT_EQ(r, "");
}

// Issue 16, item 3: a device query in this process initialises CUDA here,
// so it is recorded, and fork() then refuses CUDA ranks saying why (its
// children would find CUDA unusable and report "no CUDA device").
TEST(RuntimeCudaOptions, DeviceQueryHereRefusesCudaRanksSayingWhy) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  if (detail::cuda_context_noted()) GTEST_SKIP() << "this process already used CUDA; run the test alone";
  const std::string r = in_child([]() -> std::string {
    (void)cuda::device_count();
    if (!detail::cuda_context_noted()) return "cuda::device_count() initialised CUDA unrecorded";
    try {
      Runtime rt = synk::fork({.workers = 1, .device = "cuda"});
      return "fork(cuda) worked after CUDA was initialised in this process";
    } catch (const ArgumentError& e) {
      const std::string msg = e.what();
      if (msg.find("already initialised CUDA") == std::string::npos) return "refusal does not say why: " + msg;
      return "";
    } catch (const Error& e) {
      return std::string("refused, but not for the earlier CUDA use: ") + e.what();
    }
  });
  EXPECT_EQ(r, "");
#endif
}

#if SYNK_HAVE_CUDA
// Whether GPU `ordinal` has an active primary context in this process,
// asked from the driver (loaded by name: the test binary does not link it);
// -1 where that cannot be asked.
int primary_context_active(int ordinal) {
  void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return -1;
  using GetFn = int (*)(int*, int);
  using StateFn = int (*)(int, unsigned*, int*);
  auto get = reinterpret_cast<GetFn>(::dlsym(lib, "cuDeviceGet"));
  auto state = reinterpret_cast<StateFn>(::dlsym(lib, "cuDevicePrimaryCtxGetState"));
  int dev = 0, active = 0;
  unsigned flags = 0;
  const int r = get && state && get(&dev, ordinal) == 0 && state(dev, &flags, &active) == 0 ? active : -1;
  ::dlclose(lib);
  return r;
}

int g_hook_gpus = 1;

// Each worker, before each call: its device is current, and a rank with a
// GPU other than 0 has made no context on GPU 0.
void device_hook(int cmd, int rank, detail::CommandHeader&) {
  if (cmd != static_cast<int>(detail::Cmd::call)) return;
  const int want = rank % g_hook_gpus;
  const int cur = cuda::current_device();
  if (cur != want)
    throw std::runtime_error("rank " + std::to_string(rank) + ": device " + std::to_string(cur) +
                             " is current, not its own " + std::to_string(want));
  if (want != 0 && primary_context_active(0) == 1)
    throw std::runtime_error("rank " + std::to_string(rank) + " on GPU " + std::to_string(want) +
                             " has a context on GPU 0");
}
#endif

// Issue 16, item 2: a rank's device is current from before its first CUDA
// object on, so no scope restores (and makes a context on) GPU 0.
TEST(GpuRuntime, RanksStayOnTheirDevice) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
#if SYNK_HAVE_CUDA
  g_hook_gpus = detail::cuda_devices();
  const CommBackend comm = g_hook_gpus >= 2 && SYNK_HAVE_NCCL ? CommBackend::nccl : CommBackend::host_staged;
  detail::test_hooks().on_command = &device_hook;
  RuntimeOptions o{.workers = 2, .device = "cuda", .comm = comm, .seed = 3};
  EXPECT_NO_THROW(train(o, 10));
  detail::test_hooks().on_command = nullptr;
  if (g_hook_gpus < 2) std::printf("one GPU: only the current device was checked, not GPU 0's contexts\n");
#endif
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
