// tests/test_rank.cpp — the rank (src/rank) and the comm factory
// (comm/make_comm.hpp) alone, in one process: a CPU rank over a one-rank
// shared-memory group. The runtime suites drive ranks through every call;
// these pin what a rank itself promises (a failed distribute leaves it as it
// was, variables survive a new graph, one comm per process) and the
// factory's refusals.
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/cpu_group.hpp"
#include "comm/make_comm.hpp"
#include "rank/rank.hpp"
#include "synk/config.hpp"
#include "synk/ops.hpp"
#include "support/null_comm.hpp"
#include "synk/serialize.hpp"

using namespace synk;

namespace {

struct OneRank {
  comm::CpuGroup group{comm::CpuGroupOptions{.ranks = 1}};
  OneRank() { group.bind(0); }
  detail::RankSetup setup() {
    detail::RankSetup s;
    s.comm = comm::CommSpec{.kind = comm::CommKind::host, .group = &group};
    return s;
  }
};

std::vector<float> read(detail::Rank& r, int32_t var, size_t n) {
  std::vector<float> v(n);
  r.read_variable(var, v.data(), n * sizeof(float));
  return v;
}

// A worker's copy of the graph and functions, as distribute() sends them.
std::unique_ptr<Graph> copy_of(const Graph& g, const std::vector<FunctionDef>& defs, std::vector<FunctionDef>& out) {
  auto c = std::make_unique<Graph>();
  const std::vector<uint8_t> b = serialize(g, defs);
  out = deserialize(b.data(), b.size(), *c);
  return c;
}

TEST(Rank, ReplaceKeepsVariablesAndAFailedOneLeavesTheRankAsItWas) {
  OneRank o;
  Graph g;
  Tensor w = g.variable("w", {3});
  const FunctionDef f = make_function_def({.name = "f", .inputs = {}, .outputs = {{sum(w)}}});
  detail::Rank r(o.setup());
  r.attach(g);
  r.add_functions({f});
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.has_comm());  // a host comm needs no bootstrap: made with the executor
  const std::vector<float> v{1, 2, 3};
  r.write_variable(w.id(), v.data(), sizeof(float) * 3);

  // A distribute whose second function cannot be compiled: refused, and the
  // rank keeps its graph, its one function and its variable.
  std::vector<FunctionDef> defs;
  FunctionDef bad = f;
  bad.outputs = {12345};
  auto copy = copy_of(g, {f}, defs);
  defs.push_back(bad);
  const Graph* before = r.graph();
  EXPECT_ANY_THROW(r.replace(std::move(copy), defs));
  EXPECT_EQ(r.graph(), before);
  EXPECT_EQ(r.functions(), 1u);
  EXPECT_EQ(read(r, w.id(), 3), v);

  // A good one: a new graph, the variable's value carried over.
  copy = copy_of(g, {f}, defs);
  r.replace(std::move(copy), defs);
  EXPECT_NE(r.graph(), before);
  EXPECT_EQ(r.functions(), 1u);
  EXPECT_EQ(read(r, w.id(), 3), v);

  // One comm per process: a second join is a corrupt command.
  EXPECT_THROW(r.join_comm({}), FormatError);
  r.close("test");
  EXPECT_FALSE(r.ready());
}

TEST(Rank, FunctionsBeforeTheGraphAreRefused) {
  OneRank o;
  detail::Rank r(o.setup());
  EXPECT_FALSE(r.ready());
  EXPECT_FALSE(r.has_comm());
  EXPECT_THROW(r.add_functions({}), BackendError);
  EXPECT_THROW(r.join_comm({}), FormatError);  // before distribute
}

TEST(MakeComm, HostCommReducesPeerBuffersAndRefusesBadBootstrap) {
  OneRank o;
  const comm::CommSpec s{.kind = comm::CommKind::host, .group = &o.group};
  EXPECT_FALSE(comm::needs_bootstrap(comm::CommKind::host));
  EXPECT_FALSE(comm::needs_bootstrap(comm::CommKind::host_staged));
  EXPECT_TRUE(comm::make_bootstrap(comm::CommKind::host).empty());
  EXPECT_TRUE(comm::group_bootstrap(comm::CommKind::host, o.group).empty());
  auto c = comm::make_comm(s);
  EXPECT_STREQ(c->backend(), "cpu");
  EXPECT_TRUE(c->reduces_peer_buffers());
  // Its in-place reduction over peers' buffers (one rank: itself).
  std::vector<float> buf{1, 2, 3, 4};
  void* const bufs[] = {buf.data()};
  c->all_reduce_peers(bufs, 1, 2, comm::ElemType::f32, ReduceOp::sum);
  EXPECT_EQ(buf, (std::vector<float>{1, 2, 3, 4}));
  // Bootstrap bytes to a comm that takes none: refused, naming the sizes.
  const std::vector<uint8_t> junk(16);
  try {
    comm::make_comm(s, junk);
    ADD_FAILURE() << "bootstrap bytes accepted";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("16 bootstrap bytes for a host comm"), std::string::npos) << e.what();
  }
  // A host comm needs the node's group.
  EXPECT_THROW(comm::make_comm(comm::CommSpec{.kind = comm::CommKind::host}), BackendError);
}

TEST(MakeComm, KindsTheBuildLacksAreRefused) {
#if SYNK_HAVE_NCCL
  EXPECT_TRUE(comm::needs_bootstrap(comm::CommKind::nccl));
  EXPECT_EQ(comm::bootstrap_bytes(comm::CommKind::nccl), 128u);
  // Bootstrap bytes of the wrong size never reach NCCL.
  EXPECT_THROW(comm::make_comm(comm::CommSpec{.kind = comm::CommKind::nccl}, std::vector<uint8_t>(5)), ArgumentError);
#else
  EXPECT_FALSE(comm::needs_bootstrap(comm::CommKind::nccl));
  try {
    comm::make_comm(comm::CommSpec{.kind = comm::CommKind::nccl});
    ADD_FAILURE() << "an nccl comm in a build without NCCL";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("without NCCL"), std::string::npos) << e.what();
  }
#endif
#if !SYNK_HAVE_CUDA
  EXPECT_THROW(comm::make_comm(comm::CommSpec{.kind = comm::CommKind::host_staged}), BackendError);
#endif
}


// A comm over memory its peers cannot map: the default all_reduce_peers
// refuses, naming the rank and the comm.
TEST(MakeComm, CommsThatCannotReducePeerBuffersSaySo) {
  synk_test::NullComm c(3, 4, 0, "test-device");
  EXPECT_FALSE(c.reduces_peer_buffers());
  try {
    c.all_reduce_peers(nullptr, 0, 1, comm::ElemType::f32, ReduceOp::sum);
    ADD_FAILURE() << "all_reduce_peers on a device comm";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 3: all_reduce_peers on a test-device comm"), std::string::npos)
        << e.what();
  }
}

}  // namespace
