// tests/mpi/collectives.cpp — the collective table's conformance sweep
// (bench/collectives/harness.hpp: every collective x element type x reduce
// op x root x odd count, exact) over several "nodes" (label `mpi`): run by
// CTest under `mpirun --oversubscribe -np NODES`, every process a node
// master that forks --workers - 1 local ranks (W, or W0,W1,... per node)
// and makes every rank's comm the runtime's two-level NodeComm (the node's
// CpuComm, MPI between the masters). Single-node comms:
// tests/test_collectives_conformance.cpp.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "comm/cpu_comm.hpp"
#include "comm/cpu_group.hpp"
#include "comm/node_comm.hpp"
#include "comm/node_link.hpp"
#include "harness.hpp"  // bench/collectives
#include "node_args.hpp"

namespace {

namespace coll = bench::coll;
using synk::comm::CpuGroup;

std::vector<int> g_workers_by_node{1};

const std::vector<size_t> kCounts{0, 1, 13, 1009, 65537};

TEST(MpiCollectives, EveryCollectiveOfTheTableOnEveryRankOfEveryNode) {
  auto link = synk::comm::NodeLink::join({.timeout = std::chrono::seconds(60), .spin_ns = 20'000, .check = {}});
  const int node = link->node(), nodes = link->nodes();
  synk::comm::NodeLayout layout;
  layout.node = node;
  for (int k = 0; k < nodes; ++k)
    layout.sizes.push_back(synk_test::workers_of(g_workers_by_node, k));
  const int local = layout.sizes[static_cast<size_t>(node)];
  CpuGroup g({.ranks = local, .timeout = std::chrono::seconds(60)});

  // This node's local ranks 1.. (workers never touch MPI): exit 0 iff none
  // of their own output elements was wrong.
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int r = 1; r < local; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 1;
      try {
        g.bind(r);
        synk::comm::NodeComm comm(std::make_unique<synk::comm::CpuComm>(g), nullptr, layout);
        const coll::Conformance res = coll::check_every(comm, kCounts);
        if (res.wrong) std::fprintf(stderr, "node %d local rank %d: %s\n", node, r, res.first.c_str());
        rc = res.wrong ? 1 : 0;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "node %d local rank %d: %s\n", node, r, e.what());
        g.abort(e.what());
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  coll::Conformance mine;
  std::string error;
  try {
    g.bind(0);
    synk::comm::NodeComm comm(std::make_unique<synk::comm::CpuComm>(g), link.get(), layout);
    mine = coll::check_every(comm, kCounts);
  } catch (const std::exception& e) {
    error = e.what();
    g.abort(error);
  }
  int failed_workers = 0;
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    failed_workers += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  ASSERT_EQ(error, "") << "node " << node;
  EXPECT_EQ(failed_workers, 0) << "node " << node << ": workers that found wrong elements or failed (stderr)";
  EXPECT_EQ(mine.wrong, 0u) << "node " << node << ": " << mine.first;
  EXPECT_GT(mine.calls, 100u);
  // Every node learns every node's verdict, so all fail alike.
  const int32_t bad = (failed_workers > 0 || mine.wrong > 0) ? 1 : 0;
  const std::vector<uint8_t> all =
      link->all_gather_bytes({reinterpret_cast<const uint8_t*>(&bad), sizeof bad}, nullptr, "verdicts");
  for (int k = 0; k < nodes; ++k) {
    int32_t v = 0;
    std::memcpy(&v, all.data() + sizeof(int32_t) * static_cast<size_t>(k), sizeof v);
    EXPECT_EQ(v, 0) << "node " << k << " found wrong elements";
  }
}

// A collective every node posted but some gave up on (their runtime
// failed while waiting): MPI may still complete it, writing into the
// caller's buffer, so renew() (Runtime::heal across nodes) finishes it
// before it returns. The last node posts a broadcast and gives up at once
// (its root has not posted yet), the root posts it 100 ms later and gives
// up at once too (32 MiB cannot have moved yet: MPI moves it in pieces,
// inside MPI calls); the others wait for it. When renew() returns, every
// node's buffer holds the root's values.
TEST(MpiLink, RenewFinishesACollectiveEveryNodePostedAndSomeGaveUp) {
  bool give_up = false;
  auto link = synk::comm::NodeLink::join({.timeout = std::chrono::seconds(60), .spin_ns = 20'000, .check = [&] {
                                            if (give_up) throw std::runtime_error("this node gave up");
                                          }});
  const int node = link->node(), nodes = link->nodes();
  if (nodes < 2) GTEST_SKIP() << "needs two nodes";
  const size_t count = size_t{8} << 20;  // 32 MiB
  std::vector<int32_t> buf(count);
  for (size_t i = 0; i < count; ++i) buf[i] = node == 0 ? static_cast<int32_t>(i * 7 + 3) : -1;
  if (node == 0 || node == nodes - 1) {
    if (node == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    give_up = true;
    EXPECT_THROW(link->broadcast(buf.data(), count * sizeof(int32_t), 0, "a broadcast given up"), std::runtime_error);
    give_up = false;
    EXPECT_EQ(link->abandoned(), 1u);
  } else {
    link->broadcast(buf.data(), count * sizeof(int32_t), 0, "a broadcast");
    EXPECT_EQ(link->abandoned(), 0u);
  }
  link->renew("the test's renewal");
  EXPECT_EQ(link->abandoned(), 0u);
  EXPECT_EQ(link->stranded(), 0u);
  size_t wrong = 0;
  for (size_t i = 0; i < count; ++i) wrong += buf[i] != static_cast<int32_t>(i * 7 + 3);
  EXPECT_EQ(wrong, 0u) << "node " << node << ": elements the broadcast had not written when renew() returned";
  // The renewed link carries collectives.
  int32_t one = 1;
  link->all_reduce(&one, 1, synk::comm::ElemType::i32, synk::ReduceOp::sum, "after renewal");
  EXPECT_EQ(one, nodes);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  g_workers_by_node = synk_test::workers_by_node(argc, argv);
  for (int& w : g_workers_by_node) w = std::max(1, w);
  return RUN_ALL_TESTS();
}
