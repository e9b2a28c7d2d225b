// examples/checkpoint.cpp — save a training run to a .npz checkpoint and
// resume it, first in this process, then with 2 ranks.
//
// Trains y = 3x + 2 with momentum for 20 steps, saves the parameters and the
// optimizer's velocity (synk::save_checkpoint), then
//   1. a new Session (other seed, so other initial values) loads it and
//      trains 20 more steps: the same values as 40 uninterrupted steps;
//   2. a runtime of 2 ranks loads it (every rank) and trains on.
// numpy reads the file: python3 -c "import numpy as np; print(dict(np.load('ck.npz')))".
// Exit code 0 means all of that held (CTest: example.checkpoint).
#include <synk/synk.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main() {
  const int n = 64;
  std::vector<float> xs(n), ys(n);
  for (int i = 0; i < n; ++i) {
    xs[i] = -1.f + 2.f * static_cast<float>(i) / (n - 1);
    ys[i] = 3.f * xs[i] + 2.f;
  }
  const synk::Array X = synk::Array::from(xs, {n, 1}), Y = synk::Array::from(ys, {n, 1});

  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 1});
  auto y = g.input("y", synk::f32, {synk::batch, 1});
  auto w = g.variable("w", {1, 1}, synk::Init::uniform(-1, 1));
  auto b = g.variable("b", {1});
  auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
  auto optimizer = [](const std::vector<synk::Tensor>& p, const std::vector<synk::Tensor>& gr) {
    return synk::optim::momentum(p, gr, {.lr = 0.1f, .momentum = 0.5f});
  };
  auto updates = optimizer({w, b}, synk::grad(loss, {w, b}));  // + "w/velocity", "b/velocity"
  const std::string path =
      (std::filesystem::temp_directory_path() / ("synk-example-" + std::to_string(::getpid()) + ".npz")).string();

  // 40 steps in one go, saving after 20.
  synk::Session a(g, {.seed = 1});
  auto train_a = a.function({"train", {x, y}, {{loss}}, updates});
  for (int i = 0; i < 20; ++i) train_a({X, Y});
  synk::save_checkpoint(path, a);
  const float w20 = a.get("w").data<float>()[0];
  for (int i = 0; i < 20; ++i) train_a({X, Y});

  // 1. Resume in another Session.
  synk::Session c(g, {.seed = 2});
  auto train_c = c.function({"train", {x, y}, {{loss}}, updates});
  synk::load_checkpoint(path, c);
  for (int i = 0; i < 20; ++i) train_c({X, Y});
  const float wa = a.get("w").data<float>()[0], wc = c.get("w").data<float>()[0];
  std::printf("w after 40 steps: %.6f uninterrupted, %.6f resumed from %s\n", wa, wc, path.c_str());
  bool ok = wa == wc;

  // 2. Resume with 2 ranks: every rank gets the checkpoint's values.
  synk::Runtime rt = synk::fork({.workers = 2, .seed = 3});
  auto step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss,
                             .params = {w, b}, .optimizer = optimizer});
  rt.distribute();
  synk::load_checkpoint(path, rt);
  ok = ok && rt.get("w", 1).data<float>()[0] == w20;
  float l = 0;
  for (int i = 0; i < 20; ++i) l = step({X, Y}).at(0).scalar();
  std::printf("2 ranks, 20 more steps from the checkpoint: loss %.2e, w %.4f (target 3)\n", l,
              rt.get("w").data<float>()[0]);
  ok = ok && l < 1e-3f;
  rt.close();
  std::filesystem::remove(path);
  return ok ? 0 : 1;
}
