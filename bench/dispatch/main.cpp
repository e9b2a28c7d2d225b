// synk-dispatch — the round trip of an empty function call through the
// runtime: the master publishes the command, every worker wakes, runs
// nothing, reports done, the master collects. This is the fixed cost every
// distributed call pays on top of its compute.
//
//   synk-dispatch --workers 2 --iters 100000 --json dispatch.json
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <numeric>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/synk.hpp>

#include "common/bench_main.hpp"

namespace {

double pct(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// The floor under any dispatch: one flag bounced between two processes on
// two CPUs through shared memory, spinning on both sides (what a command and
// its "done" cost at the least). p50 in us; NaN with fewer than two CPUs.
double raw_round_trip_p50(int iters) {
  cpu_set_t old;
  if (::sched_getaffinity(0, sizeof old, &old) != 0 || CPU_COUNT(&old) < 2) return NAN;
  int cpu[2] = {-1, -1};
  for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; ++c)
    if (CPU_ISSET(c, &old)) cpu[k++] = c;
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return NAN;
  auto* ping = new (page) std::atomic<uint32_t>(0);
  auto* pong = new (static_cast<char*>(page) + 128) std::atomic<uint32_t>(0);  // another cache line
  const uint32_t total = static_cast<uint32_t>(iters) + 1000;
  auto pin = [](int c) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c, &one);
    ::sched_setaffinity(0, sizeof one, &one);
  };
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    pin(cpu[1]);
    for (uint32_t i = 1; i <= total; ++i) {
      while (ping->load(std::memory_order_acquire) != i) {
      }
      pong->store(i, std::memory_order_release);
    }
    ::_exit(0);
  }
  pin(cpu[0]);
  std::vector<double> us;
  us.reserve(static_cast<size_t>(iters));
  for (uint32_t i = 1; i <= total; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ping->store(i, std::memory_order_release);
    while (pong->load(std::memory_order_acquire) != i) {
    }
    if (i > 1000) us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  ::waitpid(child, nullptr, 0);
  ::sched_setaffinity(0, sizeof old, &old);
  ::munmap(page, 4096);
  return pct(us, 0.5);
}

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
  int64_t allreduce_bytes = 0;
  app.add_option("--allreduce", allreduce_bytes,
                 "time Runtime::all_reduce (sum) of a float variable of this many bytes instead of an empty call "
                 "(with busbw); under mpirun, over every rank of every node")
      ->check(bench::integer(0, int64_t{1} << 32));
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  double stall_after = 10;
  app.add_option("--stall-after", stall_after,
                 "RuntimeOptions::stall_after_s (0: the stall watcher off; to compare its cost)")
      ->check(bench::number(0, 1e6));
  if (!bench::parse(app, argc, argv)) return 0;
  if (backend_opt->count() && device != "cuda") throw synk::ArgumentError("--backend: needs --device cuda");
  const synk::CommBackend comm = backend == "nccl"          ? synk::CommBackend::nccl
                                 : backend == "host-staged" ? synk::CommBackend::host_staged
                                                            : synk::CommBackend::automatic;

  // CUDA ranks: each compiles the empty function on its GPU; the round
  // trip is still the control plane alone (no kernel runs).
  synk::RuntimeOptions ro{.workers = workers, .device = device.c_str(), .comm = comm};
  ro.stall_after_s = stall_after;
  synk::Runtime rt = synk::fork(ro);
  synk::Graph g;
  synk::Tensor v = g.variable("v", {std::max<int64_t>(1, allreduce_bytes / 4)});
  rt.function({"touch", {}, {{v, synk::Collect::none}}, {}});  // makes g the runtime's graph
  // No inputs, no outputs, no updates: nothing but the dispatch.
  synk::ParallelFunction f = rt.function({"empty", {}, {}, {}}, {});
  rt.distribute();
  // Several nodes (under mpirun): node 0 prints and writes the JSON.
  const int nodes = rt.nodes(), ranks = rt.size();
  workers = rt.local_size();
  if (rt.node() != 0) {
    json_path.clear();
    if (!std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);
  }
  auto op = [&] {
    if (allreduce_bytes > 0) rt.all_reduce({v}, synk::ReduceOp::sum);
    else f({});
  };
  for (int i = 0; i < warmup; ++i) op();
  std::vector<double> us(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    op();
    us[static_cast<size_t>(i)] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  rt.close();
  const double mean = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  const double p50 = pct(us, 0.50), p99 = pct(us, 0.99);
  if (allreduce_bytes > 0) {
    // nccl-tests' bus bandwidth: algbw x 2(n-1)/n for an all-reduce.
    const double algbw = static_cast<double>(allreduce_bytes) / (p50 * 1e3);
    const double busbw = algbw * 2.0 * (ranks - 1) / ranks;
    std::printf("synk-dispatch: all_reduce of %lld bytes over %d ranks (%d nodes x %d workers): p50 %.2f us, "
                "mean %.2f us, algbw %.3f GB/s, busbw %.3f GB/s\n",
                static_cast<long long>(allreduce_bytes), ranks, nodes, workers, p50, mean, algbw, busbw);
    if (!json_path.empty())
      bench::write_json(json_path, {{"op", "all_reduce"}, {"bytes", allreduce_bytes}, {"nodes", nodes},
                                    {"ranks", ranks}, {"workers", workers}, {"p50_us", p50}, {"mean_us", mean},
                                    {"algbw_gbs", algbw}, {"busbw_gbs", busbw}, {"iters", iters}});
    return 0;
  }
  const double raw = raw_round_trip_p50(std::min(iters, 100000));
  std::printf("synk-dispatch: workers %d, device %s, %d calls: p50 %.2f us, p99 %.2f us, mean %.2f us; "
              "raw cross-CPU round trip p50 %.3f us (dispatch p50 = %.1f x raw)\n",
              workers, device.c_str(), iters, p50, p99, mean, raw, p50 / raw);
  if (!json_path.empty()) {
    nlohmann::json j = {{"workers", workers}, {"nodes", nodes}, {"ranks", ranks}, {"device", device},
                        {"stall_after_s", stall_after},
                        {"backend", device == "cuda" ? backend : "cpu"},
                        {"p50_us", p50}, {"p99_us", p99}, {"mean_us", mean}, {"iters", iters},
                        {"raw_round_trip_p50_us", std::isnan(raw) ? nlohmann::json() : nlohmann::json(raw)}};
    bench::write_json(json_path, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-dispatch", run, argc, argv);
}
