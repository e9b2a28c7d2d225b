// Tests of how fork() reads a multi-process launch from the environment
// (RuntimeOptions::multi_node), run in the plain suite, without mpirun: the
// launcher's variables are set by hand in a forked child (so this process's
// environment stays clean). The joined runs themselves are the `mpi` label's
// (tests/mpi/multinode.cpp).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/core.hpp"  // detail::host_place
#include "support/runtime_helpers.hpp"
#include "support/watchdog.hpp"
#include "synk/config.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;


void clear_launch_env() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "SLURM_STEP_ID",
                        "SLURM_NTASKS", "SLURM_PROCID"})
    ::unsetenv(v);
}

TEST(MultiNodeLaunch, LaunchedProcessesReadsTheLaunchers) {
  EXPECT_EQ(synk_test::exit_code_in_child([] {
              clear_launch_env();
              if (launched_processes() != 1) return 1;
              ::setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
              ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
              if (launched_processes() != 3) return 2;
              clear_launch_env();
              ::setenv("PMI_SIZE", "4", 1);
              ::setenv("PMI_RANK", "0", 1);
              if (launched_processes() != 4) return 3;
              clear_launch_env();
              // A Slurm batch script (no job step) is one process, whatever SLURM_NTASKS says.
              ::setenv("SLURM_NTASKS", "8", 1);
              ::setenv("SLURM_PROCID", "0", 1);
              if (launched_processes() != 1) return 4;
              ::setenv("SLURM_STEP_ID", "0", 1);
              if (launched_processes() != 8) return 5;
              clear_launch_env();
              ::setenv("OMPI_COMM_WORLD_SIZE", "two", 1);  // malformed: not a launch
              ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
              if (launched_processes() != 1) return 6;
              return 0;
            }),
            0);
}

TEST(MultiNodeLaunch, OffRunsOneNodeUnderALauncher) {
  EXPECT_EQ(synk_test::exit_code_in_child([] {
              clear_launch_env();
              ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
              ::setenv("OMPI_COMM_WORLD_RANK", "1", 1);
              RuntimeOptions o = synk_test::opts(2);
              o.multi_node = MultiNode::off;
              Runtime rt = synk::fork(o);
              const bool ok = rt.nodes() == 1 && rt.node() == 0 && rt.size() == 2 && rt.local_size() == 2 &&
                              rt.rank() == 0;
              rt.close();
              return ok ? 0 : 1;
            }),
            0);
}

TEST(MultiNodeLaunch, BadMultiNodeValueIsRefused) {
  RuntimeOptions o = synk_test::opts(1);
  o.multi_node = static_cast<MultiNode>(9);
  EXPECT_THROW(synk::fork(o), ArgumentError);
}

#if !SYNK_HAVE_MPI
// A build without MPI runs one node and says so when asked for more.
TEST(MultiNodeLaunch, WithoutMpiALaunchOfSeveralIsAnError) {
  EXPECT_EQ(synk_test::exit_code_in_child([] {
              clear_launch_env();
              ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
              ::setenv("OMPI_COMM_WORLD_RANK", "0", 1);
              try {
                Runtime rt = synk::fork(synk_test::opts(1));
                return 1;
              } catch (const ArgumentError& e) {
                if (std::string(e.what()).find("without MPI") == std::string::npos) return 2;
              }
              RuntimeOptions o = synk_test::opts(1);
              o.multi_node = MultiNode::mpi;
              clear_launch_env();
              try {
                Runtime rt = synk::fork(o);
                return 3;
              } catch (const ArgumentError& e) {
                if (std::string(e.what()).find("without MPI") == std::string::npos) return 4;
              }
              return 0;
            }),
            0);
}
#endif

}  // namespace

// Nodes of different sizes sharing a machine take CPU slots one after the
// other (before: host index x this node's size, so a 2-rank node after a
// 1-rank one started at slot 2 and a later 1-rank node at slot 2 again).
TEST(MultiNodePlacement, NodesOfDifferentSizesOnOneMachineGetDistinctCpuSlots) {
  using synk::detail::NodeGpus;
  const std::vector<NodeGpus> nodes{{.ranks = 1, .host = 0}, {.ranks = 2, .host = 0}, {.ranks = 3, .host = 2},
                                    {.ranks = 1, .host = 0}};
  std::set<int> slots;
  for (int k : {0, 1, 3}) {
    const synk::detail::HostPlace p = synk::detail::host_place(nodes, k);
    EXPECT_EQ(p.ranks, 4) << "node " << k;
    for (int r = 0; r < nodes[static_cast<size_t>(k)].ranks; ++r)
      EXPECT_TRUE(slots.insert(p.first + r).second) << "node " << k << " rank " << r << " shares slot " << p.first + r;
  }
  EXPECT_EQ(slots, (std::set<int>{0, 1, 2, 3}));
  const synk::detail::HostPlace alone = synk::detail::host_place(nodes, 2);
  EXPECT_EQ(alone.first, 0);
  EXPECT_EQ(alone.ranks, 3);
}
