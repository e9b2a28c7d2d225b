// test_comm_gpu.cpp — collectives on device buffers: the NCCL communicator
// (src/comm/nccl.hpp) and the host-staged backend (src/comm/host_staged.hpp).
//
// Gpu* suites need a GPU (CTest label `gpu`) and skip, saying why, without
// one. The others check argument and error handling that works on any
// machine with the toolkit. Values are small integers (exact in float), so
// results are compared for equality.
//
// The forked test runs BOTH ranks in child processes and never touches CUDA
// in the parent: a process that has initialised CUDA cannot fork workers
// that use it. Run alone (as ctest does, one test per process) it works;
// after other GPU tests in the same process the children cannot initialise
// CUDA and the test skips, saying so.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "synk/config.hpp"
#include "synk/error.hpp"

#include "comm/host_staged.hpp"  // choose_staging in every build
#if SYNK_HAVE_CUDA
#include "comm/cpu_group.hpp"
#include "cuda/device.hpp"
#include "support/device_array.hpp"
#endif
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif

namespace {

#if SYNK_HAVE_CUDA
using synk::comm::ElemType;
using synk::ReduceOp;
using synk::cuda::DeviceArray;

#define SYNK_REQUIRE_GPU()                                                 \
  do {                                                                     \
    if (synk::cuda::device_count() == 0)                                   \
      GTEST_SKIP() << "no CUDA device (synk::cuda::device_count() == 0)"; \
  } while (0)

std::vector<float> iota_f(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i % 97);
  return v;
}

template <class T> std::vector<T> download(const DeviceArray<T>& d) {
  std::vector<T> h(d.size());
  d.download(h);
  return h;
}

template <class T> DeviceArray<T> upload(const std::vector<T>& h) {
  DeviceArray<T> d(h.size());
  d.upload(h);
  return d;
}

// With one rank every collective returns its input (avg = sum / 1).
void check_one_rank(synk::comm::Comm& c) {
  ASSERT_EQ(c.size(), 1);
  ASSERT_EQ(c.rank(), 0);
  const size_t n = 1001;  // odd, several pieces for a small staging area
  const auto hx = iota_f(n, -40.f);
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min, ReduceOp::prod}) {
    auto x = upload(hx);
    DeviceArray<float> y(n);
    c.all_reduce(x.data(), y.data(), n, ElemType::f32, op, nullptr);
    c.wait();
    EXPECT_EQ(download(y), hx) << synk::comm::redop_name(op);
    c.all_reduce(x.data(), x.data(), n, ElemType::f32, op, nullptr);  // in place
    c.wait();
    EXPECT_EQ(download(x), hx) << "in place " << synk::comm::redop_name(op);
  }
  {
    std::vector<int32_t> hi(n);
    std::iota(hi.begin(), hi.end(), -500);
    auto x = upload(hi);
    DeviceArray<int32_t> y(n);
    c.reduce(x.data(), y.data(), n, ElemType::i32, ReduceOp::sum, 0, nullptr);
    c.wait();
    EXPECT_EQ(download(y), hi);
  }
  {
    auto b = upload(hx);
    c.broadcast(b.data(), n, ElemType::f32, 0, nullptr);
    c.wait();
    EXPECT_EQ(download(b), hx);
  }
  {
    auto x = upload(hx);
    DeviceArray<float> g(n), s(n), ag(n), gv(n), sv(n);
    c.all_gather(x.data(), ag.data(), n, ElemType::f32, nullptr);
    c.gather(x.data(), g.data(), n, ElemType::f32, 0, nullptr);
    c.scatter(x.data(), s.data(), n, ElemType::f32, 0, nullptr);
    const std::vector<size_t> counts{n};
    c.gatherv(x.data(), gv.data(), counts, ElemType::f32, 0, nullptr);
    c.scatterv(x.data(), sv.data(), counts, ElemType::f32, 0, nullptr);
    c.wait();
    EXPECT_EQ(download(ag), hx);
    EXPECT_EQ(download(g), hx);
    EXPECT_EQ(download(s), hx);
    EXPECT_EQ(download(gv), hx);
    EXPECT_EQ(download(sv), hx);
  }
  // Zero elements: nothing moves, nothing fails.
  DeviceArray<float> e(0);
  EXPECT_NO_THROW(c.all_reduce(e.data(), e.data(), 0, ElemType::f32, ReduceOp::sum, nullptr));
  EXPECT_NO_THROW(c.wait());
}
#endif

// ---- without a GPU ----------------------------------------------------------------------

TEST(CommGpu, HostStagedRefusesUnboundGroupAndTinyStaging) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  synk::comm::CpuGroup g({.ranks = 2});
  EXPECT_THROW(synk::comm::HostStagedComm(g, {.device = 0}), synk::ArgumentError);  // not bound
  synk::comm::CpuGroup one({.ranks = 1});
  one.bind(0);
  try {
    synk::comm::HostStagedComm c(one, {.device = 0, .staging_bytes = 8});
    FAIL() << "a staging area of 8 bytes was accepted";
  } catch (const synk::ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("staging_bytes 8"), std::string::npos) << e.what();
  }
#endif
}

// Where cudaHostRegister refuses the staging area (some sandboxes), the
// host-staged comm stages through pageable memory instead of failing, and
// says so once per process, naming rank, GPU and CUDA's error.
TEST(CommHostStaged, RefusedRegistrationFallsBackToPageableStagingSaidOnce) {
  std::atomic<bool> said{false};
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  using synk::comm::Staging;
  EXPECT_EQ(synk::comm::choose_staging(0, "cudaSuccess", 0, 0, said, out), Staging::pinned);
  EXPECT_FALSE(said.load()) << "nothing to say when registration worked";
  EXPECT_EQ(synk::comm::choose_staging(801, "cudaErrorNotSupported", 1, 3, said, out), Staging::pageable);
  EXPECT_TRUE(said.load());
  EXPECT_EQ(synk::comm::choose_staging(801, "cudaErrorNotSupported", 2, 3, said, out), Staging::pageable);
  EXPECT_EQ(synk::comm::choose_staging(1, nullptr, 2, 3, said, out), Staging::pageable);
  std::rewind(out);
  std::string text;
  for (int ch; (ch = std::fgetc(out)) != EOF;) text += static_cast<char>(ch);
  std::fclose(out);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << "said once: " << text;
  EXPECT_NE(text.find("rank 1, GPU 3"), std::string::npos) << text;
  EXPECT_NE(text.find("cudaHostRegister"), std::string::npos) << text;
  EXPECT_NE(text.find("cudaErrorNotSupported"), std::string::npos) << text;
  EXPECT_NE(text.find("pageable"), std::string::npos) << text;
}

TEST(CommGpu, NcclCheckNamesCallFileAndNcclText) {
#if !SYNK_HAVE_NCCL
  GTEST_SKIP() << "synk was built without NCCL";
#else
  auto failing_nccl_call = [] { return 3; };  // ncclInternalError
  try {
    SYNK_NCCL_CHECK(failing_nccl_call());
    FAIL() << "SYNK_NCCL_CHECK did not throw";
  } catch (const synk::BackendError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("failing_nccl_call()"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_comm_gpu.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("GPU"), std::string::npos) << msg;
    EXPECT_NE(msg.find("internal error"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(SYNK_NCCL_CHECK(0));
  EXPECT_GE(synk::comm::nccl_version(), 0);
#endif
}

// gather/scatter take NCCL's own ncclGather/ncclScatter only where the
// libnccl loaded at run time is 2.28 or newer and has both symbols (the GPU
// machine's library may be older than the headers synk was built with);
// else the grouped send/recv of gatherv/scatterv.
TEST(CommNccl, NativeGatherScatterChosenByTheLoadedLibrary) {
#if !SYNK_HAVE_NCCL
  GTEST_SKIP() << "synk was built without NCCL";
#else
  using synk::comm::use_native_gather_scatter;
  EXPECT_TRUE(use_native_gather_scatter(22800, true)) << "2.28.0";
  EXPECT_TRUE(use_native_gather_scatter(22809, true)) << "2.28.9";
  EXPECT_TRUE(use_native_gather_scatter(30000, true)) << "3.0.0";
  EXPECT_FALSE(use_native_gather_scatter(22799, true)) << "2.27.99";
  EXPECT_FALSE(use_native_gather_scatter(22703, true)) << "2.27.3";
  EXPECT_FALSE(use_native_gather_scatter(21805, true)) << "2.18.5";
  EXPECT_FALSE(use_native_gather_scatter(2804, true)) << "2.8.4 (the old version code)";
  EXPECT_FALSE(use_native_gather_scatter(0, true)) << "version unknown";
  EXPECT_FALSE(use_native_gather_scatter(22800, false)) << "a 2.28 library without the symbols";
  // This process: its libnccl decides, and where it is new enough the
  // symbols are found in it (dlsym; no GPU needed).
  const int v = synk::comm::nccl_version();
  EXPECT_EQ(synk::comm::native_gather_scatter(), v >= 22800) << "libnccl " << v;
#endif
}

TEST(CommGpu, NcclCommRefusesBadRank) {
#if !SYNK_HAVE_NCCL
  GTEST_SKIP() << "synk was built without NCCL";
#else
  synk::comm::NcclId id;  // never used: the arguments are refused first
  EXPECT_THROW(synk::comm::NcclComm(id, {.ranks = 2, .rank = 2}), synk::ArgumentError);
  EXPECT_THROW(synk::comm::NcclComm(id, {.ranks = 0, .rank = 0}), synk::ArgumentError);
  EXPECT_THROW(synk::comm::NcclComm(id, {.ranks = 1, .rank = 0, .device = -1}), synk::ArgumentError);
#endif
}

// ---- with a GPU -------------------------------------------------------------------------

TEST(GpuNccl, OneRankCollectivesReturnTheInput) {
#if !SYNK_HAVE_NCCL
  GTEST_SKIP() << "synk was built without NCCL";
#else
  SYNK_REQUIRE_GPU();
  const synk::comm::NcclId id = synk::comm::make_nccl_id();
  synk::comm::NcclComm comm(id, {.ranks = 1, .rank = 0, .device = 0, .timeout = std::chrono::seconds(30)});
  EXPECT_STREQ(comm.backend(), "nccl");
  check_one_rank(comm);
  EXPECT_FALSE(comm.aborted());
  EXPECT_THROW(comm.broadcast(nullptr, 0, ElemType::f32, 1, nullptr), synk::ArgumentError);  // root 1 of 1
  comm.abort("test");
  EXPECT_THROW(comm.wait(), synk::BackendError);  // aborted: every later call throws
#endif
}

TEST(GpuHostStaged, OneRankCollectivesReturnTheInput) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  SYNK_REQUIRE_GPU();
  synk::comm::CpuGroup g({.ranks = 1});
  g.bind(0);
  // 256 bytes of staging: every collective of 1001 floats goes in many pieces.
  synk::comm::HostStagedComm comm(g, {.device = 0, .staging_bytes = 256});
  EXPECT_STREQ(comm.backend(), "host-staged");
  check_one_rank(comm);
#endif
}

// The pageable staging path (what a refused cudaHostRegister leaves) gives
// the same results, in pieces too.
TEST(GpuHostStaged, PageableStagingCollectivesReturnTheInput) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  SYNK_REQUIRE_GPU();
  synk::comm::CpuGroup g({.ranks = 1});
  g.bind(0);
  synk::comm::HostStagedComm comm(g, {.device = 0, .staging_bytes = 256, .pin_staging = false});
  EXPECT_FALSE(comm.pinned());
  check_one_rank(comm);
  // Asked to pin: page-locked, or (a sandbox refusing it) pageable and said
  // on stderr; the collectives work either way.
  synk::comm::HostStagedComm asked(g, {.device = 0, .staging_bytes = 256});
  if (!asked.pinned()) std::printf("note: cudaHostRegister refused here; the pinned path was not run\n");
  check_one_rank(asked);
#endif
}

#if SYNK_HAVE_CUDA
// Runs `body` in a forked child; its exit code: 0 passed, 1 failed (message
// on stderr), 77 CUDA could not be initialised in the child.
pid_t spawn(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  int rc = 0;
  try {
    body();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    rc = msg.find("cudaErrorInitializationError") != std::string::npos ? 77 : 1;
    std::fprintf(stderr, "child %d: %s\n", static_cast<int>(::getpid()), e.what());
  }
  std::fflush(nullptr);
  ::_exit(rc);
}

int wait_code(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

#define CHILD_CHECK(cond)                                                                           \
  do {                                                                                              \
    if (!(cond)) throw std::runtime_error(std::string("check failed: ") + #cond + " at line " +   \
                                          std::to_string(__LINE__));                                \
  } while (0)

// What rank r of 2 does in the forked test (uneven counts: 3 and 5 elements
// per rank for gatherv/scatterv, 1000 for the rest).
void two_rank_checks(synk::comm::CpuGroup& g, int r) {
  g.bind(r);
  synk::comm::HostStagedComm c(g, {.device = 0, .staging_bytes = 1024});  // forces pieces
  const size_t n = 1000;
  std::vector<float> hx(n);
  for (size_t i = 0; i < n; ++i) hx[i] = static_cast<float>(i % 50) + 100.f * static_cast<float>(r);
  auto x = upload(hx);
  DeviceArray<float> y(n);
  c.all_reduce(x.data(), y.data(), n, ElemType::f32, ReduceOp::sum, nullptr);
  c.wait();
  auto hy = download(y);
  for (size_t i = 0; i < n; ++i) CHILD_CHECK(hy[i] == 2.f * static_cast<float>(i % 50) + 100.f);
  c.all_reduce(x.data(), y.data(), n, ElemType::f32, ReduceOp::max, nullptr);
  c.wait();
  hy = download(y);
  for (size_t i = 0; i < n; ++i) CHILD_CHECK(hy[i] == static_cast<float>(i % 50) + 100.f);

  DeviceArray<float> ag(2 * n);
  c.all_gather(x.data(), ag.data(), n, ElemType::f32, nullptr);
  c.wait();
  const auto hag = download(ag);
  for (int p = 0; p < 2; ++p)
    for (size_t i = 0; i < n; ++i)
      CHILD_CHECK(hag[p * n + i] == static_cast<float>(i % 50) + 100.f * static_cast<float>(p));

  auto b = upload(r == 1 ? hx : std::vector<float>(n, -1.f));
  c.broadcast(b.data(), n, ElemType::f32, 1, nullptr);
  c.wait();
  const auto hb = download(b);
  for (size_t i = 0; i < n; ++i) CHILD_CHECK(hb[i] == static_cast<float>(i % 50) + 100.f);

  // gatherv to root 1 of 3 + 5 elements; scatterv back from root 1.
  const std::vector<size_t> counts{3, 5};
  std::vector<int32_t> mine(counts[r]);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = 10 * r + static_cast<int32_t>(i);
  auto dm = upload(mine);
  DeviceArray<int32_t> all(8);
  c.gatherv(dm.data(), all.data(), counts, ElemType::i32, 1, nullptr);
  c.wait();
  if (r == 1) CHILD_CHECK((download(all) == std::vector<int32_t>{0, 1, 2, 10, 11, 12, 13, 14}));
  auto src = upload(std::vector<int32_t>{7, 6, 5, 4, 3, 2, 1, 0});
  DeviceArray<int32_t> part(counts[r]);
  c.scatterv(src.data(), part.data(), counts, ElemType::i32, 1, nullptr);
  c.wait();
  const auto hp = download(part);
  CHILD_CHECK((hp == (r == 0 ? std::vector<int32_t>{7, 6, 5} : std::vector<int32_t>{4, 3, 2, 1, 0})));
}

// A failing rank aborts the group, so its peer stops waiting at once.
void two_rank_body(synk::comm::CpuGroup& g, int r) {
  try {
    two_rank_checks(g, r);
  } catch (const std::exception& e) {
    g.abort(std::string("rank ") + std::to_string(r) + " failed: " + e.what());
    throw;
  }
}
#endif

TEST(GpuHostStaged, TwoForkedRanksOnOneGpu) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  // Probe in a child too: the parent must not initialise CUDA before forking.
  const pid_t prober = ::fork();
  if (prober == 0) ::_exit(synk::cuda::device_count() > 0 ? 0 : 1);
  const int probe = wait_code(prober);
  if (probe != 0)
    GTEST_SKIP() << "no CUDA device usable in a forked child (none present, or CUDA was initialised in "
                    "this process before fork: run this test alone, as ctest does)";
  synk::comm::CpuGroup g({.ranks = 2, .timeout = std::chrono::seconds(20)});
  const pid_t a = spawn([&] { two_rank_body(g, 0); });
  const pid_t b = spawn([&] { two_rank_body(g, 1); });
  const int ca = wait_code(a), cb = wait_code(b);
  if (ca == 77 || cb == 77) GTEST_SKIP() << "CUDA could not be initialised in the forked ranks";
  EXPECT_EQ(ca, 0) << "rank 0 failed (see its message on stderr)";
  EXPECT_EQ(cb, 0) << "rank 1 failed (see its message on stderr)";
#endif
}

}  // namespace
