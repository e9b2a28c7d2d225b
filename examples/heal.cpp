// examples/heal.cpp — a run that survives killed workers, with no checkpoint.
//
//   1. A map with one retry: a job kills its worker (SIGKILL, as the kernel's
//      OOM killer would); the runtime replaces the worker and the map still
//      returns every result. Then the same with futures: map_async with one
//      retry, every future's get() right.
//   2. Training y = 3x + 2 with momentum on 3 ranks: a worker is killed
//      between two steps; the next step reports it (WorkerError), heal()
//      forks a replacement that gets the master's parameters and velocities,
//      and training goes on to the same fit.
// Exit code 0 means all of that held (CTest: example.heal).
#include <synk/synk.hpp>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

char g_once[128];  // a file the first dying job creates: one death only

long cube(synk::JobContext& ctx, const int& x) {
  if (x == 13 && ctx.rank() != 0) {
    const int fd = ::open(g_once, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::close(fd);
      ::raise(SIGKILL);  // this worker dies holding job 13
    }
  }
  return long{x} * x * x;
}

}  // namespace

int main() {
  std::snprintf(g_once, sizeof g_once, "/tmp/synk-example-heal-%d", static_cast<int>(::getpid()));
  synk::Runtime rt = synk::fork({.workers = 3, .seed = 1});

  // 1. map with a retry.
  std::vector<int> jobs(100);
  for (int i = 0; i < 100; ++i) jobs[static_cast<size_t>(i)] = i;
  const std::vector<long> cubes = rt.map(&cube, jobs, /*retries=*/1);
  std::remove(g_once);
  for (int i = 0; i < 100; ++i)
    if (cubes[static_cast<size_t>(i)] != long{i} * i * i) {
      std::fprintf(stderr, "job %d: wrong result %ld\n", i, cubes[static_cast<size_t>(i)]);
      return 1;
    }
  std::printf("map: 100 results right on %d ranks after a killed worker\n", rt.size());

  // 1b. futures with a retry: the next call (here the first get()) heals.
  std::vector<synk::Future<long>> fs = rt.map_async(&cube, jobs, /*retries=*/1);
  for (int i = 0; i < 100; ++i)
    if (fs[static_cast<size_t>(i)].get() != long{i} * i * i) {
      std::fprintf(stderr, "future %d: wrong result %ld\n", i, fs[static_cast<size_t>(i)].get());
      return 1;
    }
  if (!std::filesystem::exists(g_once)) {
    std::fprintf(stderr, "map_async: no worker was killed\n");
    return 1;
  }
  std::remove(g_once);
  std::printf("map_async: 100 futures right on %d ranks after a killed worker\n", rt.size());

  // 2. training that heals.
  const int n = 96;
  std::vector<float> xs(n), ys(n);
  for (int i = 0; i < n; ++i) {
    xs[static_cast<size_t>(i)] = -1.f + 2.f * static_cast<float>(i) / (n - 1);
    ys[static_cast<size_t>(i)] = 3.f * xs[static_cast<size_t>(i)] + 2.f;
  }
  const synk::Array X = synk::Array::from(xs, {n, 1}), Y = synk::Array::from(ys, {n, 1});
  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 1});
  auto y = g.input("y", synk::f32, {synk::batch, 1});
  auto w = g.variable("w", {1, 1}, synk::Init::uniform(-1, 1));
  auto b = g.variable("b", {1});
  auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
  auto step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss, .params = {w, b},
                             .optimizer = [](const std::vector<synk::Tensor>& p, const std::vector<synk::Tensor>& gr) {
                               return synk::optim::momentum(p, gr, {.lr = 0.1f, .momentum = 0.5f});
                             }});
  rt.distribute();
  synk::Data DX = rt.data(X), DY = rt.data(Y);
  int failed_steps = 0;
  float last = 0;
  for (int i = 0; i < 120; ++i) {
    if (i == 40) {
      // A worker dies (here: killed from outside, as an OOM killer would).
      // Its pid: a child of this process (any of its threads may be the
      // parent the kernel lists).
      pid_t victim = 0;
      for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
        FILE* f = std::fopen((t.path() / "children").c_str(), "r");
        if (!f) continue;
        int p = 0;
        while (std::fscanf(f, "%d", &p) == 1) victim = p;
        std::fclose(f);
      }
      if (victim > 0) ::kill(victim, SIGKILL);
      ::usleep(50'000);
    }
    try {
      last = step({DX, DY})[0].scalar();
    } catch (const synk::WorkerError& e) {
      // The step is reported, not retried: the parameters are as before it.
      std::printf("step %d failed: %s\n", i, e.what());
      ++failed_steps;
      rt.heal();
    }
  }
  const float wv = rt.get("w").data<float>()[0], bv = rt.get("b").data<float>()[0];
  std::printf("%d failed step(s), healed; loss %.2e, w = %.4f, b = %.4f on %d ranks\n", failed_steps, last, wv, bv,
              rt.size());
  bool same = true;
  for (int r = 1; r < rt.size(); ++r) same = same && rt.get("w", r).data<float>()[0] == wv;
  if (failed_steps != 1 || !same || std::fabs(wv - 3.f) > 1e-2f || std::fabs(bv - 2.f) > 1e-2f || rt.size() != 3) {
    std::fprintf(stderr, "the run did not heal as expected\n");
    return 1;
  }
  return 0;
}
