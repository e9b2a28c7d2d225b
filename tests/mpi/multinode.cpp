// tests/mpi/multinode.cpp — the runtime over several "nodes" (label `mpi`):
// run by CTest under `mpirun --oversubscribe -np NODES` on one machine,
// every process a node master with --workers ranks of its own
// (tests/CMakeLists.txt starts 2 and 3 nodes of 1 and 2 ranks).
//
// Every node runs every test; expectations are computed from the global
// layout (size(), rank(), nodes()), so a rank count or order that is off
// shows as a wrong value, and every node checks the results it got itself
// (all nodes must get the same). The single-node reference of the training
// test runs on node 0 only, after the multi-node runtime closed.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>

#include <gtest/gtest.h>

#include "../support/runtime_helpers.hpp"
#include "node_args.hpp"
#include "runtime/core.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

// --workers W (every node) or W0,W1,... (node k has Wk ranks).
std::vector<int> g_workers_by_node{1};
int g_workers = 1;  // this node's

int launched_nodes() {
  const char* v = std::getenv("OMPI_COMM_WORLD_SIZE");
  return v ? std::atoi(v) : 1;
}
int launched_index() {
  const char* v = std::getenv("OMPI_COMM_WORLD_RANK");
  return v ? std::atoi(v) : 0;
}
int workers_of(int node) { return synk_test::workers_of(g_workers_by_node, node); }

RuntimeOptions mopts(int workers = g_workers) {
  RuntimeOptions o = opts(workers);
  o.multi_node = MultiNode::mpi;
  return o;
}

TEST(MultiNode, Layout) {
  Runtime rt = synk::fork(mopts());
  EXPECT_EQ(rt.nodes(), launched_nodes());
  EXPECT_EQ(rt.node(), launched_index());
  EXPECT_EQ(rt.local_size(), g_workers);
  int world = 0, before = 0;
  for (int k = 0; k < rt.nodes(); ++k) {
    if (k < rt.node()) before += workers_of(k);
    world += workers_of(k);
  }
  EXPECT_EQ(rt.size(), world);
  EXPECT_EQ(rt.rank(), before);
  rt.close();
}

TEST(MultiNode, CollectivesExactOnIntegers) {
  for (int64_t size : {1, 7, 1001}) {
    Graph g;
    Tensor v = g.variable("v", {size}, Init::zeros(), i32);
    Tensor x = g.input("x", f32, {batch});
    Runtime rt = synk::fork(mopts());
    const int n = rt.size();
    rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
    rt.distribute();
    auto reset = [&] {
      for (int r = 0; r < n; ++r) rt.set("v", ints(size, r + 1), r);
    };
    auto expect = [&](int r, const std::vector<int32_t>& want, const char* what) {
      EXPECT_EQ(rt.get(v, r).to_vector<int32_t>(), want)
          << what << " ranks=" << n << " size=" << size << " rank " << r << " seen from node " << rt.node();
    };
    auto combine = [&](auto op) { return fold_ints(n, size, op); };
    const auto sum = combine([](int32_t a, int32_t b) { return a + b; });
    const auto mx = combine([](int32_t a, int32_t b) { return std::max(a, b); });
    const auto mn = combine([](int32_t a, int32_t b) { return std::min(a, b); });
    std::vector<int32_t> avg = sum;
    for (auto& a : avg) a /= n;
    reset();
    rt.all_reduce({"v"}, ReduceOp::sum);
    for (int r = 0; r < n; ++r) expect(r, sum, "all_reduce sum");
    reset();
    rt.all_reduce({v}, ReduceOp::max);
    for (int r = 0; r < n; ++r) expect(r, mx, "all_reduce max");
    reset();
    rt.all_reduce({v}, ReduceOp::min);
    for (int r = 0; r < n; ++r) expect(r, mn, "all_reduce min");
    reset();
    rt.all_reduce({v}, ReduceOp::avg);
    for (int r = 0; r < n; ++r) expect(r, avg, "all_reduce avg");
    for (int root : {0, n - 1, n / 2}) {
      reset();
      rt.reduce({"v"}, ReduceOp::sum, root);
      expect(root, sum, "reduce root");
      reset();
      rt.broadcast({"v"}, root);
      for (int r = 0; r < n; ++r) expect(r, ints(size, root + 1).to_vector<int32_t>(), "broadcast");
    }
    reset();
    std::vector<int32_t> stacked;
    for (int r = 0; r < n; ++r) {
      auto y = ints(size, r + 1).to_vector<int32_t>();
      stacked.insert(stacked.end(), y.begin(), y.end());
    }
    EXPECT_EQ(rt.gather(v).to_vector<int32_t>(), stacked) << "gather";
    EXPECT_EQ(rt.gather(v).shape(), (Shape{n, size}));
    EXPECT_EQ(rt.all_gather(v).to_vector<int32_t>(), stacked) << "all_gather";
    std::vector<int32_t> to_scatter(stacked.rbegin(), stacked.rend());
    rt.scatter(v, Array::from(to_scatter, {n, size}).view());
    for (int r = 0; r < n; ++r)
      expect(r, std::vector<int32_t>(to_scatter.begin() + r * size, to_scatter.begin() + (r + 1) * size), "scatter");
    rt.close();
  }
}

TEST(MultiNode, CallsInEveryCollectMode) {
  Net m;
  Runtime rt = synk::fork(mopts());
  const int n = rt.size();
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  Session ref(*m.g, {.seed = 7});
  Function rf = ref.function(FunctionSpec{"f", {m.x}, {{m.avg}, {m.sum}, {m.max}, {m.min}, {m.prod}, {m.z}}});
  for (int64_t rows : {int64_t{1}, int64_t{n}, int64_t{2 * n + 1}, int64_t{37}}) {
    Array X = rows_of(rows);
    Data D = rt.data(X);
    std::vector<Array> got = f({D});
    std::vector<Array> want = rf({X});
    const std::string what = std::to_string(rows) + " rows over " + std::to_string(n) + " ranks, node " +
                             std::to_string(rt.node());
    expect_near(got[0], want[0], 1e-5f, "avg " + what);
    expect_near(got[1], want[1], 1e-5f, "sum " + what);
    expect_near(got[2], want[2], 1e-6f, "max " + what);
    expect_near(got[3], want[3], 1e-6f, "min " + what);
    expect_near(got[4], want[4], 1e-4f, "prod " + what);
    expect_near(got[5], want[5], 1e-6f, "gather " + what);
    // A batch of indices picks the same rows on every node.
    std::vector<int64_t> idx;
    for (int64_t i = rows - 1; i >= 0; i -= 2) idx.push_back(i);
    got = f({D}, {.batch = idx});
    expect_near(got[5], rf({select(X, idx)})[5], 1e-6f, "gather of indices " + what);
  }
  // Global rank 0 had rows in all 8 calls and applied the update each time;
  // the last rank had none in the 1-row calls.
  EXPECT_EQ(rt.get("counter", 0).to_vector<float>()[0], 8.f);
  if (n > 1) EXPECT_LE(rt.get("counter", n - 1).to_vector<float>()[0], 6.f);
  rt.close();
}

// Training steps over N nodes x W ranks equal those of one node with N x W ranks.
std::vector<float> train(Runtime& rt, int steps) {
  Net m;
  Tensor y = m.g->input("y", f32, {batch, 2});
  Tensor loss = mean(synk::square(m.z - y));
  ParallelFunction step = rt.train_step({.name = "train",
                                         .inputs = {m.x, y},
                                         .outputs = {{loss}},
                                         .loss = loss,
                                         .params = {m.W},
                                         .optimizer = [](auto& p, auto& g) { return optim::sgd(p, g, {.lr = 0.05f}); }});
  rt.distribute();
  Array X = rows_of(29);
  std::vector<float> yv(29 * 2);
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = static_cast<float>(i % 5) * 0.3f - 0.5f;
  Data Dx = rt.data(X), Dy = rt.data(Array::from(yv, {29, 2}));
  std::vector<float> out;
  for (int s = 0; s < steps; ++s) out.push_back(step({Dx, Dy}, {.batch = Range{s % 3, 29}}).at(0).scalar());
  const std::vector<float> w0 = rt.get("W").to_vector<float>();
  // Every rank holds the same parameters.
  for (int r = 1; r < rt.size(); ++r) EXPECT_EQ(rt.get("W", r).to_vector<float>(), w0) << "rank " << r;
  out.insert(out.end(), w0.begin(), w0.end());
  rt.close();  // before the graph goes
  return out;
}

TEST(MultiNode, TrainStepsEqualOneNode) {
  Runtime rt = synk::fork(mopts());
  const int world = rt.size(), node = rt.node();
  const std::vector<float> multi = train(rt, 6);
  if (node != 0) return;
  RuntimeOptions one = opts(world);
  one.multi_node = MultiNode::off;
  Runtime single = synk::fork(one);
  const std::vector<float> ref = train(single, 6);
  ASSERT_EQ(multi.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(multi[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << i;
}

TEST(MultiNode, DeterministicMatchesOneNode) {
  RuntimeOptions o = mopts();
  o.deterministic = true;
  Runtime rt = synk::fork(o);
  const int world = rt.size(), node = rt.node();
  const std::vector<float> multi = train(rt, 4);
  if (node != 0) return;
  RuntimeOptions one = opts(1);
  one.multi_node = MultiNode::off;
  one.deterministic = true;
  Runtime single = synk::fork(one);
  const std::vector<float> ref = train(single, 4);
  EXPECT_EQ(multi, ref) << "deterministic mode: bitwise the same over " << world << " ranks of several nodes as on 1 rank";
}

// The sharded optimizer (TrainSpec::shard_optimizer) over several nodes:
// the gradients reduce-scattered through the node steps and MPI, each rank
// updating its slice: the same bits as the unsharded step on the same
// nodes, for adam and momentum, with and without buckets, and the state
// read whole by its name.
std::vector<std::vector<float>> train_sharded(bool shard, bool adam, size_t bucket_bytes) {
  RuntimeOptions o = mopts();
  o.bucket_bytes = bucket_bytes;  // 0: one reduce-scatter after backward (NodeComm::reduce_scatter)
  Runtime rt = synk::fork(o);
  // 146 parameters: every rank of up to 8 has a slice of its own (16-element aligned).
  Graph g;
  Tensor x = g.input("x", f32, {batch, 3}), y = g.input("y", f32, {batch, 2});
  nn::Dense l1 = nn::dense(g, "l1", 3, 24, Init::uniform(-0.5f, 0.5f), Init::uniform(-0.1f, 0.1f));
  nn::Dense l2 = nn::dense(g, "l2", 24, 2, Init::uniform(-0.5f, 0.5f), Init::uniform(-0.1f, 0.1f));
  Tensor loss = mean(synk::square(l2(tanh(l1(x))) - y));
  ParallelFunction step = rt.train_step(
      {.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss, .params = {l1.W, l1.b, l2.W, l2.b},
       .optimizer = [adam](auto& p, auto& g) {
         return adam ? optim::adam(p, g, {.lr = 0.05f}) : optim::momentum(p, g, {.lr = 0.05f, .momentum = 0.9f});
       },
       .shard_optimizer = shard});
  rt.distribute();
  Array X = rows_of(29);
  std::vector<float> yv(29 * 2);
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = static_cast<float>(i % 5) * 0.3f - 0.5f;
  Data Dx = rt.data(X), Dy = rt.data(Array::from(yv, {29, 2}));
  std::vector<std::vector<float>> out(1);
  for (int s = 0; s < 5; ++s) out[0].push_back(step({Dx, Dy}, {.batch = Range{s % 3, 29}}).at(0).scalar());
  for (int r = 0; r < rt.size(); ++r)
    for (const Tensor& p : {l1.W, l1.b, l2.W, l2.b}) out.push_back(rt.get(p, r).to_vector<float>());
  for (const Tensor& p : {l1.W, l1.b, l2.W, l2.b})
    for (const char* slot : {"m", "v", "velocity"})
      if (adam != (std::string(slot) == "velocity")) out.push_back(rt.get(p.name() + "/" + slot).to_vector<float>());
  rt.close();  // before the graph goes
  return out;
}

TEST(MultiNode, ShardedOptimizerSameBitsAsUnsharded) {
  for (bool adam : {true, false})
    for (size_t bucket : {size_t{0}, size_t{256}})
      EXPECT_EQ(train_sharded(true, adam, bucket), train_sharded(false, adam, bucket))
          << (adam ? "adam" : "momentum") << ", buckets of " << bucket << " bytes";
}

TEST(MultiNode, MapOverEveryRank) {
  Runtime rt = synk::fork(mopts());
  std::vector<int> jobs(101);
  std::iota(jobs.begin(), jobs.end(), 0);
  std::vector<int64_t> got = rt.map([](int j) { return int64_t{j} * j - 3; }, jobs);
  ASSERT_EQ(got.size(), jobs.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], int64_t(i) * int64_t(i) - 3) << i;
  // Variable-size results, folded in job order.
  std::vector<std::string> words{"a", "bb", "ccc", "dddd", "eeeee", "f", "gg"};
  std::string joined = rt.map_reduce_ordered([](const std::string& s) { return s + "|"; }, words, std::string(),
                                             [](std::string acc, std::string s) { return acc + s; });
  EXPECT_EQ(joined, "a|bb|ccc|dddd|eeeee|f|gg|");
  // argsort runs on each node (its jobs fill the node's shared arrays) and
  // every node gets the whole order.
  std::vector<float> v(5000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 1013) * 0.5f;
  Data D = rt.data(Array::from(v, {static_cast<int64_t>(v.size())}));
  std::vector<int64_t> want(v.size());
  std::iota(want.begin(), want.end(), 0);
  std::stable_sort(want.begin(), want.end(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
  EXPECT_EQ(rt.argsort(D), want);
  rt.close();
}

// A timeline per node: node 0 writes the given file, node k "<name>.node<k>.json",
// each naming its tracks by global rank.
TEST(MultiNode, TimelinePerNode) {
  const std::string dir = ::testing::TempDir();
  const std::string given = dir + "synk_mpi_trace.json";
  RuntimeOptions o = mopts();
  o.trace = given.c_str();
  Runtime rt = synk::fork(o);
  const int node = rt.node(), base = rt.rank(), local = rt.local_size();
  Net m;
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  f({rows_of(7)});
  rt.close();
  const std::string mine = node == 0 ? given : dir + "synk_mpi_trace.node" + std::to_string(node) + ".json";
  std::ifstream in(mine);
  ASSERT_TRUE(in.good()) << "node " << node << ": no timeline " << mine;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (int r = 0; r < local; ++r)
    EXPECT_NE(text.find("\"rank " + std::to_string(base + r)), std::string::npos) << "node " << node << " rank " << base + r;
  EXPECT_NE(text.find("node " + std::to_string(node) + " of"), std::string::npos);
}

// CUDA ranks on nodes of different sizes (node k: 1 + k % 2 ranks, whatever
// --workers says), all on this machine, with its GPU count faked (the ranks
// compile nothing, so no GPU is touched). With a GPU per rank of the
// machine the nodes join: the fork stamp holds the comm asked for, and the
// job decides NCCL, not each node (alone, a node of one rank would not use
// it under automatic, one of two would). With one GPU fewer every node
// refuses NCCL alike (automatic or asked for), naming the nodes; host_staged
// ranks may share the GPUs.
TEST(MultiNode, CudaNodesOfDifferentSizes) {
  struct Reset {
    ~Reset() { detail::test_hooks().fake_gpu_count = -1; }
  } reset;
  const int mine = 1 + launched_index() % 2;
  int machine = 0;
  for (int k = 0; k < launched_nodes(); ++k) machine += 1 + k % 2;
  auto cuda = [&](int gpus, CommBackend comm) {
    detail::test_hooks().fake_gpu_count = gpus;
    RuntimeOptions o = mopts(mine);
    o.device = "cuda";
    o.comm = comm;
    return o;
  };
  for (CommBackend comm : {CommBackend::automatic, CommBackend::nccl, CommBackend::host_staged}) {
    Runtime rt = synk::fork(cuda(machine, comm));
    EXPECT_EQ(rt.local_size(), mine);
    EXPECT_EQ(rt.size(), machine);
    rt.close();
  }
  if (machine - 1 < 2) return;  // one node alone: nothing to share
  for (CommBackend comm : {CommBackend::automatic, CommBackend::nccl}) {
    try {
      Runtime rt = synk::fork(cuda(machine - 1, comm));
      rt.close();
      ADD_FAILURE() << "node " << launched_index() << ": " << machine << " NCCL ranks on " << machine - 1
                    << " GPUs of one machine accepted";
    } catch (const ArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA ranks there together"), std::string::npos) << e.what();
    }
  }
  Runtime rt = synk::fork(cuda(machine - 1, CommBackend::host_staged));
  EXPECT_EQ(rt.size(), machine);
  rt.close();
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  g_workers_by_node = workers_by_node(argc, argv);
  g_workers = workers_of(launched_index());
  return RUN_ALL_TESTS();
}
