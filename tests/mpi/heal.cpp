// tests/mpi/heal.cpp — Runtime::heal across nodes (label `mpi`; docs/faults.md,
// "Training that heals"): run by CTest under `mpirun --oversubscribe -np
// NODES`, every process a node master with --workers ranks of its own.
//
// A worker of one node (the victim) kills itself at the start of a
// training step; every node's program catches the error and calls heal(),
// as the program of every node makes every call. Training then goes on,
// and every rank of every node must hold bitwise the variables of a run
// that skipped that step (same data order), as tests/test_heal.cpp checks
// on one node. The victim node gets at least 2 ranks (a worker to kill),
// so with --workers 1 the nodes differ in size.
//
// The death is made deterministic with marker files of the victim node's
// master (support/heal_helpers.hpp: its pid in the name); only the victim
// node arms them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../cuda_ranks_skip.hpp"
#include "../support/heal_helpers.hpp"
#include "../support/proc_probe.hpp"
#include "../support/runtime_helpers.hpp"
#include "node_args.hpp"
#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

std::vector<int> g_workers_by_node{1};

int launched_index() {
  const char* v = std::getenv("OMPI_COMM_WORLD_RANK");
  return v ? std::atoi(v) : 0;
}

// Node `node`'s ranks in a test whose victim is node `victim`.
int workers_of_node(int node, int victim) {
  const int w = synk_test::workers_of(g_workers_by_node, node);
  return node == victim ? std::max(w, 2) : w;
}
int workers_here(int victim) { return workers_of_node(launched_index(), victim); }

// Trains 6 steps on every node; with `kill_at` >= 0 a worker of node
// `victim` dies in that step, which throws on every node, and every node
// heals. Returns node 0's master's variables as this node sees them (a
// snapshot here, compared with every rank of every node through get()).
// `gpu`: CUDA ranks with that comm (else CPU ranks).
VarValues train(int victim, int kill_at, int skip, std::optional<CommBackend> gpu) {
  Regression m;
  detail::test_hooks().on_command = &kill_in_call;  // before fork: the fork server copies it
  RuntimeOptions o = opts(workers_here(victim), 5);
  o.multi_node = MultiNode::mpi;
  if (gpu) {
    o.device = "cuda";
    o.comm = *gpu;
  }
  o.timeout = std::chrono::seconds(20);
  o.collective_timeout = std::chrono::seconds(20);
  Runtime rt = synk::fork(o);
  const int size = rt.size();
  ParallelFunction step = rt.train_step(m.spec());
  rt.distribute();
  const std::vector<int> before = children(detail::fork_server_pid());
  for (int i = 0; i < 6; ++i) {
    if (i == skip) continue;
    auto [X, Y] = batch_of(i);
    if (i == kill_at) {
      if (rt.node() == victim) arm();
      try {
        step({X, Y});
        ADD_FAILURE() << "step " << i << " did not fail on node " << rt.node();
      } catch (const Error& e) {
        // Every node names the death: its own, or the notice of the victim
        // (NCCL ranks of the other nodes may hear first from their
        // communicator, which the victim node's master aborted).
        const std::string msg = e.what();
        const bool nccl_peer = gpu == CommBackend::nccl && rt.node() != victim &&
                               msg.find("aborted the communicator") != std::string::npos;
        if (!nccl_peer) {
          EXPECT_NE(msg.find("signal 9"), std::string::npos) << "node " << rt.node() << ": " << msg;
          if (rt.node() != victim)
            EXPECT_NE(msg.find("node " + std::to_string(victim)), std::string::npos) << msg;
        }
      }
      if (rt.node() == victim) EXPECT_TRUE(fired()) << "no worker was killed: the test tests nothing";
      rt.heal();
      EXPECT_EQ(rt.size(), size);
      EXPECT_EQ(rt.local_size(), workers_here(victim));
      continue;  // reported, not retried: the caller decides
    }
    const float loss = step({X, Y})[0].scalar();
    EXPECT_TRUE(std::isfinite(loss));
  }
  const VarValues out = rt.snapshot();
  for (const auto& [name, value] : out)
    for (int r = 0; r < size; ++r)
      EXPECT_EQ(rt.get(name, r).to_vector<float>(), value.to_vector<float>())
          << name << " on global rank " << r << ", seen from node " << rt.node();
  if (kill_at >= 0) {
    // Every node replaced all its workers, the victim's and the others'.
    const std::vector<int> after = children(detail::fork_server_pid());
    EXPECT_EQ(after.size(), before.size()) << "node " << rt.node();
    for (int p : after)
      EXPECT_EQ(std::count(before.begin(), before.end(), p), 0)
          << "worker " << p << " of node " << rt.node() << " survived the heal";
  }
  rt.close();
  clear_markers();
  // Nothing of the runtime left on this node (CUDA ranks: the clean fork
  // server stays for the process's later forks).
  EXPECT_TRUE(children(detail::fork_server_pid()).empty()) << "node " << launched_index();
  if (!gpu) EXPECT_EQ(detail::fork_server_pid(), 0) << "node " << launched_index();
  EXPECT_EQ(memfd_segments(), 0) << "node " << launched_index();
  EXPECT_TRUE(dev_shm_synk().empty()) << "node " << launched_index();
  return out;
}

void training_heals(int victim, const char* name, std::optional<CommBackend> gpu = {}) {
  set_markers("synk-nodeheal", name);
  const VarValues healed = train(victim, 3, -1, gpu);
  const VarValues skipped = train(victim, -1, 3, gpu);
  ASSERT_EQ(healed.size(), 4u);  // l/W, l/b and their velocities
  ASSERT_EQ(skipped.size(), healed.size());
  for (size_t i = 0; i < healed.size(); ++i) {
    EXPECT_EQ(healed[i].first, skipped[i].first);
    EXPECT_EQ(healed[i].second.to_vector<float>(), skipped[i].second.to_vector<float>())
        << healed[i].first << " on node " << launched_index();
  }
  // And differs from a run without the skip (the step mattered).
  const VarValues full = train(victim, -1, -1, gpu);
  EXPECT_NE(full[0].second.to_vector<float>(), healed[0].second.to_vector<float>());
}

TEST(NodeHeal, AWorkerOfNode1KilledInTrainingThenEveryNodeHeals) { training_heals(1, "node1"); }

TEST(NodeHeal, AWorkerOfNode0KilledInTrainingThenEveryNodeHeals) { training_heals(0, "node0"); }

// The masters' copies may differ when a failure hits between one node's
// update and another's; heal() gives every rank node 0's master's. Made
// visible here by setting another value on the last node's ranks first.
TEST(NodeHeal, EveryRankGetsTheVariablesOfNode0sMaster) {
  set_markers("synk-nodeheal", "source");
  const int victim = 1;
  Regression m;
  detail::test_hooks().on_command = &kill_in_call;
  RuntimeOptions o = opts(workers_here(victim), 5);
  o.multi_node = MultiNode::mpi;
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(m.spec());
  rt.distribute();
  auto [X, Y] = batch_of(0);
  step({X, Y});
  const VarValues node0 = rt.snapshot();  // the same on every node after a step
  const int last = rt.nodes() - 1;
  for (int r = rt.size() - workers_of_node(last, victim); r < rt.size(); ++r)
    for (const auto& [name, value] : node0) {
      std::vector<float> other = value.to_vector<float>();
      for (float& v : other) v += 1.5f;
      rt.set(name, Array::from(other, value.shape()), r);
    }
  if (rt.node() == victim) arm();
  EXPECT_THROW(step({X, Y}), Error);
  rt.heal();
  for (const auto& [name, value] : node0)
    for (int r = 0; r < rt.size(); ++r)
      EXPECT_EQ(rt.get(name, r).to_vector<float>(), value.to_vector<float>())
          << name << " on global rank " << r << ", seen from node " << rt.node();
  rt.close();
  clear_markers();
}

// A refused call check (nodes making different calls) fails every node at
// the same point and sends no notice; heal() repairs it too, and a death
// after that is again told to the other nodes (not left to their timeout).
TEST(NodeHeal, AfterARefusedCallCheckEveryNodeHealsAndHearsOfTheNextDeath) {
  set_markers("synk-nodeheal", "agreed");
  const int victim = 1;
  Regression m;
  detail::test_hooks().on_command = &kill_in_call;
  RuntimeOptions o = opts(workers_here(victim), 5);
  o.multi_node = MultiNode::mpi;
  o.collective_timeout = std::chrono::seconds(30);  // a notice, not this, must end node 0's wait
  Runtime rt = synk::fork(o);
  ParallelFunction step = rt.train_step(m.spec());
  ParallelFunction f = rt.function({"f", {m.x}, {{synk::sum(m.x), Collect::sum}}});
  ParallelFunction h = rt.function({"h", {m.x}, {{synk::mean(m.x), Collect::avg}}});
  rt.distribute();
  auto [X, Y] = batch_of(0);
  EXPECT_THROW(rt.node() == 0 ? f({X}) : h({X}), ArgumentError);
  rt.heal();
  EXPECT_TRUE(std::isfinite(f({X})[0].scalar()));
  step({X, Y});
  if (rt.node() == victim) arm();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    step({X, Y});
    ADD_FAILURE() << "the step did not fail on node " << rt.node();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << "node " << rt.node() << ": " << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10)) << "node " << rt.node();
  rt.heal();
  step({X, Y});
  rt.close();
  clear_markers();
}

TEST(NodeHeal, OnAHealthyRuntimeDoesNothing) {
  RuntimeOptions o = opts(synk_test::workers_of(g_workers_by_node, launched_index()));
  o.multi_node = MultiNode::mpi;
  Runtime rt = synk::fork(o);
  const std::vector<int> before = children(detail::fork_server_pid());
  rt.heal();
  EXPECT_EQ(children(detail::fork_server_pid()), before);
  rt.close();
  EXPECT_THROW(rt.heal(), ArgumentError);
}

// CUDA ranks across nodes (the emulated build runs them): host-staged
// ranks, whose cross-node part is the renewed link, and NCCL ranks, which
// join a new communicator over every rank of every node. NCCL needs a GPU
// per rank of the machine (SYNK_EMU_DEVICES=4 for 2 nodes of 2 ranks).
TEST(GpuNodeHeal, CudaTrainingHealsAcrossNodes) {
  // Every node decides alike: all run the same parts or all skip.
  if (const std::string why = no_cuda_ranks(1); !why.empty()) GTEST_SKIP() << why;
  // One marker name for both: CUDA workers come from the fork server kept
  // since the first CUDA fork, whose copy of the marker paths is that one.
  training_heals(1, "gpu", CommBackend::host_staged);
  int machine = 0;
  for (int k = 0; k < std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE") ? std::getenv("OMPI_COMM_WORLD_SIZE") : "1"); ++k)
    machine += workers_of_node(k, 1);
  if (detail::cuda_devices() < machine) GTEST_SKIP() << "NCCL: needs " << machine << " GPUs, one per rank";
  training_heals(1, "gpu", CommBackend::nccl);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  g_workers_by_node = synk_test::workers_by_node(argc, argv);
  return RUN_ALL_TESTS();
}
