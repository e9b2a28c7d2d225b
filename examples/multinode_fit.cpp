// examples/multinode_fit.cpp — a data-parallel fit that runs unchanged on
// one machine and on several (docs/multinode.md): alone it is one node
// with a rank per core; under `mpirun -np N` (or `srun`) every process
// becomes a node master with its own ranks, MPI joins them, and each
// global batch is split over every rank of every node.
//
//   build/bin/multinode_fit
//   mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 build/bin/multinode_fit
//
// Fits y = 3x + 2 by momentum SGD; exits 1 if the fit is off.
#include <synk/synk.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  try {
    // First, as on one node. Under a launcher every process gets here and
    // becomes its node's master (multi_node = automatic; a cluster job may
    // ask for MultiNode::mpi to refuse running without MPI).
    synk::Runtime rt = synk::fork({.workers = 2, .seed = 1});
    const int n = 20000;  // every node makes (or loads) the same data
    std::vector<float> xs(n), ys(n);
    for (int i = 0; i < n; ++i) {
      xs[i] = -1.f + 2.f * static_cast<float>((i * 379) % n) / (n - 1);
      ys[i] = 3.f * xs[i] + 2.f;
    }
    synk::Graph g;
    auto x = g.input("x", synk::f32, {synk::batch, 1});
    auto y = g.input("y", synk::f32, {synk::batch, 1});
    auto w = g.variable("w", {1, 1});
    auto b = g.variable("b", {1});
    auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
    auto step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}},
                               .loss = loss, .params = {w, b},
                               .optimizer = [](const auto& p, const auto& gr) {
                                 return synk::optim::momentum(p, gr, {.lr = 0.1f, .momentum = 0.9f});
                               }});
    rt.distribute();
    synk::Data X = rt.data(synk::Array::from(xs, {n, 1}));  // this node's copy
    synk::Data Y = rt.data(synk::Array::from(ys, {n, 1}));
    float l = 0;
    for (int epoch = 0; epoch < 10; ++epoch) {
      for (int64_t start = 0; start < n; start += 1000)  // global batch: 1000 rows over rt.size() ranks
        l = step({X, Y}, {.batch = synk::Range{start, start + 1000}}).at(0).scalar();
      if (rt.node() == 0) std::printf("epoch %d  loss %.6f\n", epoch, l);  // once, not once per node
    }
    const float wv = rt.get("w").to_vector<float>()[0], bv = rt.get("b").to_vector<float>()[0];
    const bool ok = std::fabs(wv - 3.f) < 1e-2f && std::fabs(bv - 2.f) < 1e-2f;
    if (rt.node() == 0)
      std::printf("%d ranks on %d node(s), %d on node 0: w %.4f, b %.4f: fit %s\n", rt.size(), rt.nodes(),
                  rt.local_size(), wv, bv, ok ? "ok" : "off");
    rt.close();
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multinode_fit: %s\n", e.what());  // each node reports its own view
    return 1;                                               // non-zero: mpirun/srun end the other nodes
  }
}
