// examples/data_parallel.cpp — the same fit as linear_regression.cpp, but
// data-parallel: two ranks (this process and one forked worker) each take
// half of every batch, the gradients are averaged in one all-reduce, and
// every rank applies the same update. Exit code 0 means it converged and
// the ranks' weights agree, so CTest runs it (example.data_parallel).
#include <synk/synk.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  try {
    // Fork first: before this process starts threads or builds anything.
    synk::Runtime rt = synk::fork({.workers = 2, .seed = 1});

    const int n = 1000;
    std::vector<float> xs(n), ys(n);
    for (int i = 0; i < n; ++i) {
      // Points in a scrambled order, so every batch spans the whole line.
      xs[i] = -1.f + 2.f * static_cast<float>((i * 379) % n) / (n - 1);
      ys[i] = 3.f * xs[i] + 2.f;
    }

    synk::Graph g;
    auto x = g.input("x", synk::f32, {synk::batch, 1});
    auto y = g.input("y", synk::f32, {synk::batch, 1});
    auto w = g.variable("w", {1, 1});
    auto b = g.variable("b", {1});
    auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
    auto step = rt.train_step({.name = "train",
                               .inputs = {x, y},
                               .outputs = {{loss}},
                               .loss = loss,
                               .params = {w, b},
                               .optimizer = [](const auto& p, const auto& gr) {
                                 return synk::optim::momentum(p, gr, {.lr = 0.1f, .momentum = 0.9f});
                               }});
    rt.distribute();  // the worker compiles the same graph

    // Shared memory that both ranks read their rows from.
    synk::Data X = rt.data(synk::Array::from(xs, {n, 1}));
    synk::Data Y = rt.data(synk::Array::from(ys, {n, 1}));

    float l = 0;
    for (int epoch = 0; epoch < 40; ++epoch) {
      for (int64_t start = 0; start < n; start += 100)  // batches of 100 rows, 50 per rank
        l = step({X, Y}, {.batch = synk::Range{start, start + 100}}).at(0).scalar();
      if (epoch % 10 == 0) std::printf("epoch %2d  loss %.6f\n", epoch, l);
    }
    // Every rank applied the same averaged update: their weights agree.
    synk::Array all_w = rt.gather(w);  // [ranks, 1, 1]
    const float w0 = all_w.data<float>()[0], w1 = all_w.data<float>()[1];
    const float b0 = rt.get(b, 0).data<float>()[0];
    std::printf("fitted y = %.4f x + %.4f on %d ranks (rank 1 has w = %.4f), loss %.2e\n", w0, b0,
                rt.size(), w1, l);
    rt.close();
    return (std::fabs(w0 - 3.f) < 1e-2f && std::fabs(b0 - 2.f) < 1e-2f && w0 == w1) ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "data_parallel: %s\n", e.what());
    return 1;
  }
}
