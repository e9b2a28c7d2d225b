// test_cuda_ranks.cpp — what CUDA ranks are made of, on the CPU: which GPU
// each rank of each node takes (rank_gpu), the nodes' joint NCCL decision
// and GPU check (plan_node_gpus), and that the paths that initialise CUDA
// in the calling process record it first, so that a later fork() refuses
// CUDA ranks saying why (no GPU needed: the record comes before the CUDA
// call, which fails here).
//
// The multi-node side of the same decisions under mpirun is in
// tests/mpi/multinode.cpp (MultiNode.CudaNodesOfDifferentSizes).
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda/context.hpp"
#include "runtime/core.hpp"
#include "support/watchdog.hpp"
#include "synk/synk.hpp"
#if SYNK_HAVE_CUDA
#include "common/gpu_info.hpp"
#endif

using namespace synk;
using detail::NodeGpus;

namespace {

// Every rank's GPU for nodes of `sizes` ranks, all on one machine with `gpus`
// GPUs, as each node computes it.
std::vector<int> machine_gpus(const std::vector<int>& sizes, int gpus) {
  std::vector<NodeGpus> nodes;
  for (int n : sizes) nodes.push_back({.ranks = n, .gpus = gpus, .host = 0, .devices = 0});
  std::vector<int> out;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int first = detail::plan_node_gpus(nodes, static_cast<int>(k), CommBackend::host_staged).gpu_first;
    for (int r = 0; r < sizes[k]; ++r) out.push_back(detail::rank_gpu(first, r, gpus));
  }
  return out;
}

TEST(CudaRankGpu, OneNodeTakesGpusInRankOrder) {
  for (int r = 0; r < 4; ++r) EXPECT_EQ(detail::rank_gpu(0, r, 4), r);
  // Host-staged ranks beyond the GPUs share them in turn.
  EXPECT_EQ(detail::rank_gpu(0, 4, 4), 0);
  EXPECT_EQ(detail::rank_gpu(0, 5, 4), 1);
  EXPECT_EQ(detail::rank_gpu(0, 2, 1), 0);
}

// Two nodes on one machine used to put their local rank r on the same GPU
// (rank % gpus), which NCCL refuses: each rank of the machine now has its own.
TEST(CudaRankGpu, NodesSharingAMachineTakeDifferentGpus) {
  EXPECT_EQ(machine_gpus({2, 2}, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(machine_gpus({1, 2}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(machine_gpus({2, 1, 1}, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(machine_gpus({1, 1, 1, 1, 1, 1, 1, 1}, 8), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  // More ranks than GPUs (host-staged): spread in turn, none left idle.
  const std::vector<int> crowded = machine_gpus({2, 2}, 3);
  EXPECT_EQ(crowded, (std::vector<int>{0, 1, 2, 0}));
}

// Nodes on different machines, or seeing different devices of one machine
// (CUDA_VISIBLE_DEVICES per node), count their GPUs alone.
TEST(CudaRankGpu, NodesWithGpusOfTheirOwnStartAtZero) {
  const std::vector<NodeGpus> two_hosts{{.ranks = 2, .gpus = 2, .host = 0}, {.ranks = 2, .gpus = 2, .host = 1}};
  // automatic, not nccl: the CPU-only (sanitizer) builds refuse comm = nccl.
  EXPECT_EQ(detail::plan_node_gpus(two_hosts, 1, CommBackend::automatic).gpu_first, 0);
  const std::vector<NodeGpus> split{{.ranks = 1, .gpus = 1, .host = 0, .devices = 11},
                                    {.ranks = 1, .gpus = 1, .host = 0, .devices = 12}};
  EXPECT_EQ(detail::plan_node_gpus(split, 1, CommBackend::automatic).gpu_first, 0);
  // Mixed: nodes 0 and 2 share host 0, node 1 is alone on host 1.
  const std::vector<NodeGpus> mixed{{.ranks = 2, .gpus = 4, .host = 0},
                                    {.ranks = 3, .gpus = 4, .host = 1},
                                    {.ranks = 2, .gpus = 4, .host = 0}};
  EXPECT_EQ(detail::plan_node_gpus(mixed, 0, CommBackend::automatic).gpu_first, 0);
  EXPECT_EQ(detail::plan_node_gpus(mixed, 1, CommBackend::automatic).gpu_first, 0);
  EXPECT_EQ(detail::plan_node_gpus(mixed, 2, CommBackend::automatic).gpu_first, 2);
}

// The NCCL decision is the job's: nodes of 1 and 2 ranks decide alike (a
// node of one rank alone would not use NCCL under automatic).
TEST(CudaNodesPlan, NcclDecidedForTheJobNotTheNode) {
  const std::vector<NodeGpus> nodes{{.ranks = 1, .gpus = 4, .host = 0}, {.ranks = 2, .gpus = 4, .host = 0}};
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(detail::plan_node_gpus(nodes, k, CommBackend::automatic).comm == comm::CommKind::nccl, SYNK_HAVE_NCCL != 0) << "node " << k;
    EXPECT_EQ(detail::plan_node_gpus(nodes, k, CommBackend::host_staged).comm, comm::CommKind::host_staged) << "node " << k;
  }
  const std::vector<NodeGpus> ones{{.ranks = 1, .gpus = 1, .host = 0}, {.ranks = 1, .gpus = 1, .host = 1}};
  EXPECT_EQ(detail::plan_node_gpus(ones, 0, CommBackend::automatic).comm == comm::CommKind::nccl, SYNK_HAVE_NCCL != 0)
      << "two one-rank nodes: two ranks in the job";
}

// NCCL needs a GPU per rank of a machine, over all its nodes: refused alike
// on every node, naming the nodes; host_staged may share.
TEST(CudaNodesPlan, TooFewGpusForTheMachinesRanksAreRefused) {
  const std::vector<NodeGpus> nodes{{.ranks = 1, .gpus = 2, .host = 0},
                                    {.ranks = 1, .gpus = 2, .host = 1},
                                    {.ranks = 2, .gpus = 2, .host = 0}};
  std::set<std::string> messages;
  for (CommBackend comm : {CommBackend::automatic, CommBackend::nccl}) {
    for (int k = 0; k < 3; ++k) {
      try {
        detail::plan_node_gpus(nodes, k, comm);
        ADD_FAILURE() << "node " << k << ": 3 ranks on a 2-GPU machine accepted for NCCL";
      } catch (const ArgumentError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("node(s) 0, 2"), std::string::npos) << m;
        EXPECT_NE(m.find("2 GPU(s)"), std::string::npos) << m;
        EXPECT_NE(m.find("3 CUDA ranks"), std::string::npos) << m;
        EXPECT_NE(m.find("host_staged"), std::string::npos) << m;
        messages.insert(m);
      }
    }
  }
  EXPECT_EQ(messages.size(), 1u) << "every node refuses in the same words";
  EXPECT_NO_THROW(detail::plan_node_gpus(nodes, 2, CommBackend::host_staged));
  EXPECT_EQ(detail::plan_node_gpus(nodes, 2, CommBackend::host_staged).gpu_first, 1);
}

// ---- CUDA initialised in this process is recorded before the CUDA call -------------------


// After the CUDA work `touch` did (successful or not), fork() refuses CUDA
// ranks saying why: this process has no fork server from before it.
int refused_after(void (*touch)()) {
  if (detail::cuda_context_noted()) return 10;
  try {
    touch();
  } catch (const Error&) {
    // No GPU here: the CUDA call fails, after the record.
  }
  if (!detail::cuda_context_noted()) return 11;
  detail::test_hooks().fake_gpu_count = 2;
  try {
    Runtime rt = synk::fork({.workers = 2, .device = "cuda", .comm = CommBackend::host_staged});
    rt.close();
    return 12;
  } catch (const ArgumentError& e) {
    if (std::string(e.what()).find("already initialised CUDA") == std::string::npos) return 13;
  }
  return 0;
}

#define SKIP_IF_CUDA_NOTED()                                                                          \
  do {                                                                                               \
    if (detail::cuda_context_noted())                                                                \
      GTEST_SKIP() << "an earlier test in this process initialised CUDA; run this test alone (ctest does)"; \
  } while (0)

TEST(CudaContextRecord, UseRankDeviceRecordsBeforeCudaSetDevice) {
  if (!SYNK_HAVE_CUDA) GTEST_SKIP() << "synk was built without CUDA";
  SKIP_IF_CUDA_NOTED();
  EXPECT_EQ(synk_test::exit_code_in_child([] { return refused_after([] { detail::use_rank_device(0, 0); }); }), 0)
      << "10: noted before; 11: not noted after use_rank_device; 12: fork accepted; 13: other message";
}

TEST(CudaContextRecord, BenchGpuInfoRecordsBeforeItsFirstCudaCall) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  SKIP_IF_CUDA_NOTED();
  EXPECT_EQ(synk_test::exit_code_in_child([] { return refused_after([] { (void)bench::gpu_info(0); }); }), 0)
      << "10: noted before; 11: not noted after gpu_info; 12: fork accepted; 13: other message";
#endif
}

}  // namespace
