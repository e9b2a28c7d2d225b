// Fault tests of the runtime (issue 5): the fault matrix (every worker fault
// in every phase, signals to the master; bench/stress/fault_matrix.hpp runs
// each case in a forked harness that reports by exit code and a record),
// and isolation: private segments and workers that validate every command
// they read (corrupted through the runtime's test hook). Hang cases use a
// 1 s timeout; times are recorded, bounded only loosely. Single faults
// outside the matrix and recovery after a crashed worker (snapshot, close,
// fork again, restore, train on) are in tests/test_runtime_failures.cpp.
#include <dirent.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>

#include <gtest/gtest.h>

#include "../bench/stress/fault_matrix.hpp"
#include "cuda_ranks_skip.hpp"

namespace {

using namespace synk;
namespace sf = synk_faults;

// ---- the matrix ---------------------------------------------------------------------------

class FaultMatrix : public ::testing::TestWithParam<sf::Case> {};

// Sanitizer builds reserve terabytes of shadow address space, so the
// address-space limit that injects the out-of-memory fault cannot work there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerBuild = true;
#else
constexpr bool kSanitizerBuild = false;
#endif

void check_case(const sf::Case& c, const sf::Settings& s) {
  const sf::Outcome o = sf::run_case(c, s);
  std::printf("  %-36s %8.4f s  %s\n", c.name().c_str(), o.seconds, o.message.c_str());
  EXPECT_TRUE(o.ok) << c.name() << ": " << o.why << "\n  message: " << o.message;
  EXPECT_FALSE(o.hang) << c.name();
  EXPECT_EQ(o.leaked_procs, 0) << c.name();
  EXPECT_EQ(o.leaked_segs, 0) << c.name();
  EXPECT_LE(o.seconds, s.timeout_ms / 1000.0 + 5.0) << c.name();  // timeout + margin; never a tight bound
}

TEST_P(FaultMatrix, RaisesCleanlyAndLeavesNothing) {
  const sf::Case c = GetParam();
  if (kSanitizerBuild && c.fault == sf::Fault::oom)
    GTEST_SKIP() << "out-of-memory injection limits the address space (RLIMIT_AS), which ASan/TSan "
                    "shadow memory does not fit in; covered by the normal build";
  check_case(c, {.timeout_ms = 1000});
}

// The GPU variants (CTest label gpu): the same cases with CUDA ranks. The
// timeout is longer because a CUDA rank's first distribute makes its
// context and loads the kernels.
class GpuFaultMatrix : public ::testing::TestWithParam<sf::Case> {};

// Three ranks sharing the visible GPU(s) through the host-staged backend.
TEST_P(GpuFaultMatrix, HostStaged) {
  if (std::string why = synk_test::no_cuda_ranks(1); !why.empty()) GTEST_SKIP() << why;
  if (kSanitizerBuild && GetParam().fault == sf::Fault::oom) GTEST_SKIP() << "RLIMIT_AS vs sanitizer shadow memory";
  check_case(GetParam(), {.timeout_ms = 5000, .device = "cuda", .comm = CommBackend::host_staged});
}

// Three ranks on three GPUs through NCCL: a rank that dies leaves its peers
// in an NCCL wait, which the aborted CpuGroup cancels.
TEST_P(GpuFaultMatrix, Nccl) {
  if (!SYNK_HAVE_NCCL) GTEST_SKIP() << "synk was built without NCCL";
  if (std::string why = synk_test::no_cuda_ranks(3); !why.empty()) GTEST_SKIP() << why;
  if (kSanitizerBuild && GetParam().fault == sf::Fault::oom) GTEST_SKIP() << "RLIMIT_AS vs sanitizer shadow memory";
  check_case(GetParam(), {.timeout_ms = 5000, .device = "cuda", .comm = CommBackend::nccl});
}

std::string case_id(const ::testing::TestParamInfo<sf::Case>& info) {
  std::string s = info.param.name();
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(AllCases, FaultMatrix, ::testing::ValuesIn(sf::matrix()), case_id);
INSTANTIATE_TEST_SUITE_P(AllCases, GpuFaultMatrix, ::testing::ValuesIn(sf::matrix()), case_id);

// ---- isolation --------------------------------------------------------------------------------

TEST(FaultIsolation, SegmentsArePrivateAndUnnamed) {
  const auto shm_before = sf::dev_shm_synk();
  Runtime rt = synk::fork({.workers = 2});
  Data d = rt.data(Array::zeros(f32, {16}));
  int seen = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  ASSERT_NE(dir, nullptr);
  while (dirent* e = ::readdir(dir)) {
    char buf[256];
    const std::string p = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t k = ::readlink(p.c_str(), buf, sizeof buf - 1);
    if (k <= 0 || std::string(buf, static_cast<size_t>(k)).find("memfd:synk") == std::string::npos) continue;
    struct stat st{};
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0077, 0u) << buf << " is accessible to others";
    EXPECT_EQ(st.st_uid, ::getuid());
    ++seen;
  }
  ::closedir(dir);
  EXPECT_GE(seen, 3);  // control block, collectives, data
  EXPECT_EQ(sf::dev_shm_synk(), shm_before);  // nothing named that another user could pre-create
}

// A worker-side corruption, chosen by the master through a shared page.
std::atomic<int>* g_corrupt = nullptr;
void corrupt_hook(int cmd, int rank, detail::CommandHeader& h) {
  if (rank != 1 || cmd != static_cast<int>(detail::Cmd::call) || !g_corrupt) return;
  switch (g_corrupt->load()) {
    case 1: h.args_bytes = uint64_t{1} << 40; break;           // beyond the segment
    case 2: h.args_id = 999999; break;                          // unknown segment
    case 3: h.kind = 77; break;                                 // unknown command
    case 4: h.result_id[1] = 424242; break;                     // unknown result buffer
    case 5: h.args_bytes = 3; break;                            // truncated arguments
    default: break;
  }
}

TEST(FaultIsolation, CorruptCommandsGiveCleanErrors) {
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  g_corrupt = new (page) std::atomic<int>(0);
  detail::test_hooks().on_command = &corrupt_hook;
  {
    Graph g;
    Tensor x = g.input("x", f32, {batch, 2});
    Runtime rt = synk::fork({.workers = 2, .spin = std::chrono::microseconds(5)});
    ParallelFunction f = rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
    rt.distribute();
    Data X = rt.data(Array::from(std::vector<float>(8, 1.f), {4, 2}));
    EXPECT_EQ(f({X})[0].scalar(), 8.f);
    const std::vector<int> kids = sf::children();
    for (int mode = 1; mode <= 5; ++mode) {
      g_corrupt->store(mode);
      try {
        f({X});
        ADD_FAILURE() << "mode " << mode << ": no error";
      } catch (const WorkerError& e) {
        const std::string m = e.what();
        EXPECT_EQ(e.rank(), 1) << m;
        EXPECT_TRUE(m.find("corrupt") != std::string::npos || m.find("truncated") != std::string::npos)
            << "mode " << mode << ": " << m;
      }
      g_corrupt->store(0);
      EXPECT_EQ(f({X})[0].scalar(), 8.f) << "after mode " << mode;  // the worker survived
    }
    EXPECT_EQ(sf::children(), kids);
  }
  detail::test_hooks().on_command = nullptr;
  ::munmap(page, 4096);
  g_corrupt = nullptr;
}

TEST(FaultIsolation, DecodeRefusesEveryCorruptField) {
  // A valid call encoding; then every byte of it, one at a time, set to
  // values that break sizes and offsets: decoding either still works or
  // throws FormatError; it never reads outside the buffer (ASan checks).
  std::vector<float> host(6 * 3, 1.f);
  detail::CallDesc d;
  d.fn = 0;
  d.n_outputs = 1;
  d.total = 3;
  d.batch = Batch::Kind::indices;
  d.collects = {Collect::sum};
  d.call_no = 1;
  d.name = "f";
  std::vector<detail::CallInput> in(1);
  in[0].scattered = true;
  in[0].view = {f32, {6, 3}, host.data()};
  const std::vector<int64_t> idx = {5, 0, 2};
  const std::vector<uint8_t> good = detail::encode_call(d, in, idx);
  auto no_segments = [](uint64_t id) -> std::span<const uint8_t> {
    throw FormatError("unknown segment " + std::to_string(id));
  };
  ASSERT_NO_THROW(detail::decode_call(good.data(), good.size(), no_segments));
  int refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t v : {uint8_t{0xff}, uint8_t{0x80}, uint8_t{0x07}}) {
      std::vector<uint8_t> bad = good;
      bad[i] = v;
      try {
        detail::decode_call(bad.data(), bad.size(), no_segments);
      } catch (const FormatError&) {
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 20);
  for (size_t cut = 0; cut < good.size(); cut += 7)
    EXPECT_THROW(detail::decode_call(good.data(), cut, no_segments), FormatError) << cut;
  // An index outside the input's rows.
  const std::vector<int64_t> far = {5, 0, 6};
  const std::vector<uint8_t> oob = detail::encode_call(d, in, far);
  EXPECT_THROW(detail::decode_call(oob.data(), oob.size(), no_segments), FormatError);
}

}  // namespace
