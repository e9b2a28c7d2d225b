// synk-dispatch — the round trip of an empty function call through the
// runtime: the master publishes the command, every worker wakes, runs
// nothing, reports done, the master collects. This is the fixed cost every
// distributed call pays on top of its compute.
//
//   synk-dispatch --workers 2 --iters 100000 --json dispatch.json
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/synk.hpp>

#include "common/bench_main.hpp"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"synk-dispatch: round-trip latency of an empty distributed function call"};
  int workers = 2, iters = 100000, warmup = 1000;
  std::string device = "cpu", backend = "auto", json_path;
  app.add_option("--workers", workers, "ranks in total")->check(bench::integer(1, 256));
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  auto* backend_opt =
      app.add_option("--backend", backend,
                     "with --device cuda: auto (nccl where built with NCCL and one GPU per rank), nccl, or "
                     "host-staged (ranks may share GPUs)")
          ->check(CLI::IsMember({"auto", "nccl", "host-staged"}));
  app.add_option("--iters", iters, "timed calls")->check(bench::integer(1, 100000000));
  app.add_option("--warmup", warmup, "untimed calls first")->check(bench::integer(0, 100000000));
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  if (!bench::parse(app, argc, argv)) return 0;
  if (backend_opt->count() && device != "cuda") throw synk::ArgumentError("--backend: needs --device cuda");
  const synk::CommBackend comm = backend == "nccl"          ? synk::CommBackend::nccl
                                 : backend == "host-staged" ? synk::CommBackend::host_staged
                                                            : synk::CommBackend::automatic;

  // CUDA ranks: each compiles the empty function on its GPU; the round
  // trip is still the control plane alone (no kernel runs).
  synk::Runtime rt = synk::fork({.workers = workers, .device = device.c_str(), .comm = comm});
  synk::Graph g;
  synk::Tensor v = g.variable("v", {1});
  rt.function({"touch", {}, {{v, synk::Collect::none}}, {}});  // makes g the runtime's graph
  // No inputs, no outputs, no updates: nothing but the dispatch.
  synk::ParallelFunction f = rt.function({"empty", {}, {}, {}}, {});
  rt.distribute();
  for (int i = 0; i < warmup; ++i) f({});
  std::vector<double> us(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f({});
    us[static_cast<size_t>(i)] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  rt.close();
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))]; };
  std::printf("synk-dispatch: workers %d, device %s, %d calls: p50 %.2f us, p99 %.2f us, mean %.2f us\n", workers,
              device.c_str(), iters, pct(0.50), pct(0.99), mean);
  if (!json_path.empty()) {
    nlohmann::json j = {{"workers", workers}, {"device", device}, {"backend", device == "cuda" ? backend : "cpu"},
                        {"p50_us", pct(0.50)}, {"p99_us", pct(0.99)}, {"mean_us", mean}, {"iters", iters}};
    bench::write_json(json_path, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-dispatch", run, argc, argv);
}
