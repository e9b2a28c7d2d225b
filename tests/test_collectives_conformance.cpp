// tests/test_collectives_conformance.cpp — every collective of the table
// (bench/collectives/table.hpp: one file per collective, the one
// synk-collectives benchmarks) on every comm::Comm of the build, 1, 2 and 3
// forked ranks: the shared-memory CpuComm always; HostStagedComm and
// NcclComm with CUDA (suites Gpu*, label gpu: on a GPU, or on the CUDA
// emulation's devices; they skip without one). Several nodes under mpirun:
// tests/mpi/collectives.cpp.
//
// Every rank runs the table's conformance sweep (bench::coll::check_every:
// every entry x element type x reduce op x root 0 and the last rank, at
// per-rank counts 0, 1, 13, the prime 1009 and 65537, one element more than
// a 256 KiB staging slot of floats) on integer data with exact comparison,
// and exits 0 only if no element of its own output was wrong. Children never
// run gtest asserts; the parent checks every child's exit status and always
// reaps (SIGKILL after a deadline). The parent never touches CUDA.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "comm/cpu_comm.hpp"
#include "comm/cpu_group.hpp"
#include "comm/make_comm.hpp"
#include "cuda_ranks_skip.hpp"
#include "harness.hpp"  // bench/collectives
#include "support/null_comm.hpp"
#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include "comm/host_staged.hpp"
#endif

namespace {

using namespace std::chrono_literals;
using synk::comm::CpuGroup;
namespace coll = bench::coll;

const std::vector<size_t> kCounts{0, 1, 13, 1009, 65537};

// The rank's comm over the group (bound to the rank), and where its buffers live.
struct RankComm {
  std::unique_ptr<coll::DeviceMemory> device;  // null: host memory
  std::unique_ptr<synk::comm::Comm> comm;
};
using MakeComm = std::function<RankComm(CpuGroup&, int rank)>;

// Forks ranks 0..n-1; each binds its rank, makes its comm, runs the sweep and
// exits 0 (no wrong element), 1 (wrong elements or an error: said on
// stderr) or 77 (CUDA could not be initialised in the child). Returns each
// rank's exit code (-1: killed at the deadline or never forked, 128+sig: a signal).
std::vector<int> run_ranks(int n, const MakeComm& make, std::chrono::seconds deadline = 120s) {
  CpuGroup g({.ranks = n, .timeout = std::chrono::seconds(30)});
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      g.abort("fork failed");  // the ranks already started stop waiting
      break;
    }
    if (pid == 0) {
      int rc = 0;
      try {
        g.bind(r);
        RankComm rc_comm = make(g, r);
        const coll::Conformance res = coll::check_every(*rc_comm.comm, kCounts, rc_comm.device.get());
        if (res.wrong) {
          std::fprintf(stderr, "rank %d: %llu wrong elements in %llu calls; first: %s\n", r,
                       static_cast<unsigned long long>(res.wrong), static_cast<unsigned long long>(res.calls),
                       res.first.c_str());
          rc = 1;
        }
      } catch (const std::exception& e) {
        const std::string msg = e.what();
        rc = msg.find("cudaErrorInitializationError") != std::string::npos ? 77 : 1;
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        g.abort("rank " + std::to_string(r) + " failed: " + msg);  // its peers stop waiting at once
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(static_cast<size_t>(n), -1);  // a rank never forked stays -1
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (size_t i = 0; i < pids.size(); ++i) {
    int st = 0;
    while (::waitpid(pids[i], &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        for (pid_t p : pids) ::kill(p, SIGKILL);
        ::waitpid(pids[i], &st, 0);
        st = -1;
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    if (st == -1) continue;
    codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  }
  return codes;
}

void expect_all_passed(const std::vector<int>& codes) {
  for (size_t r = 0; r < codes.size(); ++r)
    EXPECT_EQ(codes[r], 0) << "rank " << r << " of " << codes.size()
                           << (codes[r] == -1 ? ": killed at the deadline (or never forked)" : " (its message is on stderr)");
}

// ---- the table itself ---------------------------------------------------------------------

TEST(CollectiveTable, EveryCollectiveWithNcclTestsBusFactor) {
  // By name; a new file adds its entry (nothing here to change).
  const std::string names = "|" + coll::names("|") + "|";
  for (const char* name : {"all_gather", "all_reduce", "broadcast", "gather", "reduce", "reduce_scatter", "scatter"})
    EXPECT_NE(names.find(std::string("|") + name + "|"), std::string::npos) << name << " in " << names;
  EXPECT_TRUE(std::is_sorted(coll::table().begin(), coll::table().end(),
                             [](const auto* a, const auto* b) { return std::string(a->info.name) < b->info.name; }));
  const auto factor = [](const char* name, int n) { return coll::find(name)->bus_factor(n); };
  EXPECT_DOUBLE_EQ(factor("all_reduce", 4), 1.5);  // 2(n-1)/n
  EXPECT_DOUBLE_EQ(factor("all_gather", 4), 0.75);  // (n-1)/n
  EXPECT_DOUBLE_EQ(factor("gather", 4), 0.75);
  EXPECT_DOUBLE_EQ(factor("scatter", 4), 0.75);
  EXPECT_DOUBLE_EQ(factor("broadcast", 4), 1.0);
  EXPECT_DOUBLE_EQ(factor("reduce", 4), 1.0);
  EXPECT_DOUBLE_EQ(factor("reduce_scatter", 4), 0.75);  // (n-1)/n
  EXPECT_EQ(coll::find("all_to_all"), nullptr);
}


// A comm that moves nothing: every entry counts wrong elements on it (the
// harness starts outputs at a value no rank expects).
TEST(CollectiveTable, ACommThatMovesNothingIsCaughtByEveryEntry) {
  synk_test::NullComm inert(0, 2, -1, "inert");
  coll::Buffers b(coll::conformance_bytes(2, kCounts));
  for (const coll::Collective* c : coll::table()) {
    uint64_t wrong = 0;
    for (int root : {0, 1}) {
      const coll::Shape s{.ranks = 2, .rank = 0, .root = root, .count = 1009};
      wrong += coll::checked_call(*c, inert, s, coll::ElemType::i32, b);
    }
    EXPECT_GT(wrong, 0u) << c->info.name;
  }
  const coll::Conformance all = coll::check_every(inert, kCounts);
  EXPECT_GT(all.wrong, 0u);
  EXPECT_NE(all.first.find("(inert)"), std::string::npos) << all.first;
}

TEST(CollectiveTable, BuffersTooSmallRefused) {
  synk_test::NullComm inert(0, 2, -1, "inert");
  coll::Buffers b(16);
  const coll::Shape s{.ranks = 2, .rank = 0, .count = 5};
  EXPECT_THROW(coll::checked_call(*coll::find("all_reduce"), inert, s, coll::ElemType::f32, b),
               synk::ArgumentError);
}

// ---- the shared-memory comm ---------------------------------------------------------------

class CollectivesConformance : public ::testing::TestWithParam<int> {};

TEST_P(CollectivesConformance, CpuComm) {
  expect_all_passed(run_ranks(GetParam(), [](CpuGroup& g, int) {
    return RankComm{nullptr, std::make_unique<synk::comm::CpuComm>(g)};
  }));
}

INSTANTIATE_TEST_SUITE_P(Ranks, CollectivesConformance, ::testing::Values(1, 2, 3),
                         [](const auto& p) { return std::to_string(p.param); });

// ---- device comms (label gpu) -------------------------------------------------------------

class GpuCollectivesConformance : public ::testing::TestWithParam<int> {};

#if SYNK_HAVE_CUDA
#define CUDA_OR_THROW(call)                                                                          \
  do {                                                                                               \
    if (const cudaError_t e = (call); e != cudaSuccess)                                              \
      throw synk::BackendError(std::string(#call) + ": " + cudaGetErrorName(e) + " " + cudaGetErrorString(e)); \
  } while (0)

// Two device buffers on the current device.
class DeviceBuffers final : public coll::DeviceMemory {
 public:
  explicit DeviceBuffers(size_t bytes) {
    CUDA_OR_THROW(cudaMalloc(&in_, bytes));
    CUDA_OR_THROW(cudaMalloc(&out_, bytes));
  }
  ~DeviceBuffers() override {
    cudaFree(in_);
    cudaFree(out_);
  }
  void* in() override { return in_; }
  void* out() override { return out_; }
  void to_device(void* dst, const void* src, size_t bytes) override {
    CUDA_OR_THROW(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    CUDA_OR_THROW(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  }

 private:
  void* in_ = nullptr;
  void* out_ = nullptr;
};
#endif

TEST_P(GpuCollectivesConformance, HostStagedComm) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  if (const std::string why = synk_test::no_cuda_ranks(1); !why.empty()) GTEST_SKIP() << why;
  const int gpus = synk::detail::cuda_devices();
  const int n = GetParam();
  // Ranks share the GPUs (rank r on r mod gpus); a 4 KiB staging area moves
  // the larger counts in many pieces.
  const auto codes = run_ranks(n, [gpus, n](CpuGroup& g, int r) {
    RankComm rc;
    rc.comm = std::make_unique<synk::comm::HostStagedComm>(
        g, synk::comm::HostStagedOptions{.device = r % gpus, .staging_bytes = 4096});
    rc.device = std::make_unique<DeviceBuffers>(coll::conformance_bytes(n, kCounts));
    return rc;
  });
  for (int c : codes)
    if (c == 77) GTEST_SKIP() << "CUDA could not be initialised in the forked ranks";
  expect_all_passed(codes);
#endif
}

TEST_P(GpuCollectivesConformance, NcclComm) {
#if !SYNK_HAVE_NCCL
  GTEST_SKIP() << "synk was built without NCCL";
#else
  const int n = GetParam();
  if (const std::string why = synk_test::no_cuda_ranks(n); !why.empty()) GTEST_SKIP() << why;
  const auto codes = run_ranks(n, [n](CpuGroup& g, int r) {
    // Through the comm factory, as the runtime's ranks join: rank 0 makes
    // the bootstrap bytes (NCCL's id), the group carries them to the others.
    using synk::comm::CommKind;
    const std::vector<uint8_t> boot = synk::comm::group_bootstrap(CommKind::nccl, g);
    RankComm rc;
    rc.comm = synk::comm::make_comm({.kind = CommKind::nccl,
                                     .group = &g,
                                     .rank = r,
                                     .ranks = n,
                                     .device = r,
                                     .timeout = std::chrono::seconds(60),
                                     .cancelled = [&g] { return g.aborted(); }},
                                    boot);
    CUDA_OR_THROW(cudaSetDevice(r));  // the buffers on the comm's GPU
    rc.device = std::make_unique<DeviceBuffers>(coll::conformance_bytes(n, kCounts));
    return rc;
  });
  for (int c : codes)
    if (c == 77) GTEST_SKIP() << "CUDA could not be initialised in the forked ranks";
  expect_all_passed(codes);
#endif
}

INSTANTIATE_TEST_SUITE_P(Ranks, GpuCollectivesConformance, ::testing::Values(1, 2, 3),
                         [](const auto& p) { return std::to_string(p.param); });

}  // namespace
