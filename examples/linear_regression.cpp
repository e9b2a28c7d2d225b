// examples/linear_regression.cpp — the smallest complete synk program: fit
// y = 3x + 2 by gradient descent and print the loss as it falls.
//
// It shows the whole flow: build a graph (inputs, shared variables, ops),
// take gradients, turn them into optimizer updates, compile a function in a
// Session and call it on host arrays. Exit code 0 means it converged, so
// CTest runs it as a test (example.linear_regression).
#include <synk/synk.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // 64 points on [-1, 1] of the line y = 3x + 2.
  const int n = 64;
  std::vector<float> xs(n), ys(n);
  for (int i = 0; i < n; ++i) {
    xs[i] = -1.f + 2.f * static_cast<float>(i) / (n - 1);
    ys[i] = 3.f * xs[i] + 2.f;
  }
  synk::Array X = synk::Array::from(xs, {n, 1});
  synk::Array Y = synk::Array::from(ys, {n, 1});

  // Model: pred = x w + b, squared error, plain SGD.
  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 1});
  auto y = g.input("y", synk::f32, {synk::batch, 1});
  auto w = g.variable("w", {1, 1});  // zeros
  auto b = g.variable("b", {1});
  auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
  auto updates = synk::optim::sgd({w, b}, synk::grad(loss, {w, b}), {.lr = 0.5f});

  synk::Session session(g, {.seed = 1});
  auto train = session.function({"train", {x, y}, {{loss}}, updates});

  std::printf("%6s  %12s\n", "step", "loss");
  float l = 0.f;
  for (int step = 0; step <= 100; ++step) {
    l = train({X, Y})[0].scalar();  // loss before this step's update
    if (step % 10 == 0) std::printf("%6d  %12.6g\n", step, l);
  }
  const float fw = session.get("w").data<float>()[0];
  const float fb = session.get("b").data<float>()[0];
  std::printf("fitted y = %.4f x + %.4f (true: y = 3x + 2)\n", fw, fb);

  const bool ok = std::fabs(fw - 3.f) < 1e-3f && std::fabs(fb - 2.f) < 1e-3f && l < 1e-5f;
  if (!ok) std::printf("did not converge\n");
  return ok ? 0 : 1;
}
