// bench/collectives/main.cpp — synk-collectives: bandwidth of synk's
// collectives (the table of this folder: table.hpp, one file per
// collective), printed like nccl-tests.
//
//   synk-collectives --op all_reduce --workers 2 --min-bytes 65536 --max-bytes 67108864
//
// The benchmark forks its own worker processes (ranks 1..N-1; this process is
// rank 0) around one synk::comm::CpuGroup. For each size (doubling from
// --min-bytes to --max-bytes) every rank first runs one checked call
// (#wrong = elements that differ from the exact expected value, summed over
// ranks), then --warmup untimed calls, then --iters timed calls, each after a
// barrier; an iteration's time is the slowest rank's, and the row shows the
// median over iterations.
//
// Sizes and bandwidths follow nccl-tests: size is the per-rank buffer for
// all_reduce/broadcast/reduce and the whole (N x per-rank) buffer for
// all_gather/gather/scatter; algbw = size / time; busbw = algbw x factor,
// factor 2(n-1)/n for all_reduce, (n-1)/n for all_gather/gather/scatter, 1
// for broadcast/reduce (each collective's file says its own). This file
// starts the ranks and makes their comms; the harness (harness.hpp) runs
// the table's entries on them.
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "comm/cpu_group.hpp"
#include "comm/make_comm.hpp"
#include "comm/shm.hpp"
#include "common/bench_main.hpp"
#include "harness.hpp"
#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include "common/gpu_info.hpp"
#include "cuda/device.hpp"
#endif
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif

using synk::comm::CpuGroup;
using synk::comm::ElemType;
using synk::ReduceOp;
namespace coll = bench::coll;

namespace {

struct Config {
  std::string op = "all_reduce";
  int workers = 2;
  std::string device = "cpu";
  std::string backend = "auto";  // --device cuda: auto|nccl|host-staged
  int gpus = 0;                   // visible GPUs (--device cuda), probed before fork
  size_t min_bytes = 1024;
  size_t max_bytes = size_t(64) << 20;
  int iters = 20;
  int warmup = 5;
  std::string type = "float";
  std::string redop = "sum";
  int root = 0;
  std::string json;
  bool pin = true;
  size_t slot_bytes = 256 * 1024;
  double spin_us = 20;
  int timeout_ms = 30000;
  size_t stream_min_bytes = size_t(32) << 20;
};

// Under mpirun or srun (several processes): every process is a node of
// --workers ranks, and the collectives span every rank of every node
// (comm/node_comm.hpp: the node's shared memory, MPI between the node
// masters), as in the runtime. One process: a single node, link null.
struct Nodes {
  std::unique_ptr<synk::comm::NodeLink> link;  // this process (local rank 0)
  synk::comm::NodeLayout layout;
  int base = 0, world = 1, count = 1;
  int pin_first = 0;     // several nodes on one machine pin after one another
  bool crowded = false;  // ... or not at all when they outnumber the cores
};
Nodes g_nodes;

// What rank 0 reads back from the others after each size.
struct Shared {
  double* times;     // [rank][iter] seconds
  uint64_t* wrong;   // [rank]
};

const coll::Collective& parse_op(const std::string& s) {
  if (const coll::Collective* c = coll::find(s)) return *c;
  throw synk::ArgumentError("--op " + s + ": expected " + coll::names("|"));
}
ElemType elem_type(const std::string& s) {
  if (s == "int32") return ElemType::i32;
  if (s == "double") return ElemType::f64;
  if (s == "int64") return ElemType::i64;
  return ElemType::f32;
}
ReduceOp parse_redop(const std::string& s) {
  if (s == "sum") return ReduceOp::sum;
  if (s == "avg") return ReduceOp::avg;
  if (s == "max") return ReduceOp::max;
  if (s == "min") return ReduceOp::min;
  if (s == "prod") return ReduceOp::prod;
  throw synk::ArgumentError("--redop " + s + ": expected sum|avg|max|min|prod");
}

#if SYNK_HAVE_CUDA
nlohmann::json g_gpu_json;  // rank 0's GPU, for --json

// Visible GPUs, counted in a child process: CUDA must not be initialised in
// this process before it forks the ranks.
int probe_gpus() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(std::min(synk::cuda::device_count(), 250));
  int st = 0;
  if (pid < 0 || ::waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return 0;
  return WEXITSTATUS(st);
}

// One rank's device side (--device cuda): GPU rank % gpus, made current,
// and the device buffers the table's values go through.
struct GpuRank final : coll::DeviceMemory {
  synk::cuda::DeviceBuffer din, dout;
  bench::GpuInfo info;

  GpuRank(const Config& cfg, int rank, size_t bytes) {
    const int device = rank % cfg.gpus;
    SYNK_CUDA_CHECK(cudaSetDevice(device));
    din = synk::cuda::DeviceBuffer(std::max<size_t>(bytes, 1));
    dout = synk::cuda::DeviceBuffer(std::max<size_t>(bytes, 1));
    info = bench::gpu_info(device);
  }
  void* in() override { return din.data(); }
  void* out() override { return dout.data(); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    SYNK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    SYNK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  }
};
#endif

// The rank's comm, from the comm factory as the runtime's ranks get theirs:
// the node's shared memory (under mpirun the two-level comm, the node
// master holding the MPI link), or with --device cuda NCCL or host-staged
// on the rank's GPU (made current first, GpuRank).
std::unique_ptr<synk::comm::Comm> make_rank_comm(const Config& cfg, CpuGroup& g, int lrank, int rank) {
  using synk::comm::CommKind;
  const CommKind kind = cfg.device != "cuda"     ? CommKind::host
                        : cfg.backend == "nccl" ? CommKind::nccl
                                                : CommKind::host_staged;
  // NCCL's id, made after fork by the group's rank 0.
  const std::vector<uint8_t> boot = synk::comm::group_bootstrap(kind, g);
  return synk::comm::make_comm({.kind = kind,
                                .group = &g,
                                .link = lrank == 0 ? g_nodes.link.get() : nullptr,
                                .layout = g_nodes.layout,
                                .rank = rank,
                                .ranks = g_nodes.world,
                                .device = kind == CommKind::host ? -1 : rank % cfg.gpus,
                                .timeout = std::chrono::milliseconds(cfg.timeout_ms)},
                               boot);
}

// Everything one rank does; rank 0 also prints. Returns the rows (rank 0).
std::vector<coll::Row> run_rank(const Config& cfg, CpuGroup& g, Shared sh, int lrank) {
  const int n = g_nodes.world;           // ranks of every node
  const int rank = g_nodes.base + lrank;  // this rank among them
  const coll::Collective& op = parse_op(cfg.op);
  const ReduceOp rop = parse_redop(cfg.redop);
  const ElemType et = elem_type(cfg.type);
  auto barrier = [&] {
    g.barrier();
    if (g_nodes.count > 1) {
      if (lrank == 0) g_nodes.link->all_gather_bytes({}, nullptr, "barrier");
      g.barrier();
    }
  };
  coll::DeviceMemory* device = nullptr;
#if SYNK_HAVE_CUDA
  std::unique_ptr<GpuRank> gpu;
  if (cfg.device == "cuda") {
    gpu = std::make_unique<GpuRank>(cfg, rank, cfg.max_bytes);
    device = gpu.get();
    if (rank == 0) {
      std::string nccl = "";
#if SYNK_HAVE_NCCL
      const int v = synk::comm::nccl_version();
      nccl = cfg.backend == "nccl" ? ", NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) +
                                         "." + std::to_string(v % 100)
                                   : "";
#endif
      std::printf("# synk-collectives: op %s, %d ranks (rank 0 + %d forked workers), device cuda, backend %s%s, "
                  "%d visible GPUs, rank r on GPU r mod %d, type %s, redop %s, root %d\n"
                  "# GPU 0: %s\n# iters %d, warmup %d; time = median over iters of the slowest rank "
                  "(host-timed, collective issued and waited for)\n",
                  cfg.op.c_str(), n, n - 1, cfg.backend.c_str(), nccl.c_str(), cfg.gpus, cfg.gpus,
                  cfg.type.c_str(), cfg.redop.c_str(), cfg.root, bench::describe(gpu->info).c_str(), cfg.iters,
                  cfg.warmup);
      coll::print_header(stdout);
      std::fflush(nullptr);
      g_gpu_json = bench::to_json(gpu->info);
      g_gpu_json["backend"] = cfg.backend;
    }
  }
#endif
  const std::unique_ptr<synk::comm::Comm> comm = make_rank_comm(cfg, g, lrank, rank);
  synk::comm::Comm& c = *comm;
  // Buffers sized for the largest call; first touch happens here, in the
  // process that uses them.
  coll::Buffers buffers(cfg.max_bytes, device);
  std::vector<coll::Row> rows;

  for (size_t bytes = cfg.min_bytes; bytes <= cfg.max_bytes; bytes *= 2) {
    const coll::Shape s = coll::shape_of(op, bytes, et, n, rank, cfg.root, rop);
    const coll::RankTimes times = coll::time_rank(op, c, s, et, buffers, cfg.warmup, cfg.iters, barrier);
    sh.wrong[lrank] = times.wrong;
    std::copy(times.seconds.begin(), times.seconds.end(), sh.times + lrank * cfg.iters);
    g.barrier();
    if (lrank == 0) {
      std::vector<double> per_iter(cfg.iters, 0.0);
      uint64_t wrong_all = 0;
      for (int r = 0; r < g.size(); ++r) {
        wrong_all += sh.wrong[r];
        for (int it = 0; it < cfg.iters; ++it)
          per_iter[it] = std::max(per_iter[it], sh.times[r * cfg.iters + it]);
      }
      if (g_nodes.count > 1) {
        // The slowest rank of every node, and every node's #wrong.
        std::vector<double> mine = per_iter;
        mine.push_back(static_cast<double>(wrong_all));
        const auto* p = reinterpret_cast<const uint8_t*>(mine.data());
        const std::vector<uint8_t> all =
            g_nodes.link->all_gather_bytes({p, mine.size() * sizeof(double)}, nullptr, "timings");
        const auto* d = reinterpret_cast<const double*>(all.data());
        wrong_all = 0;
        for (int k = 0; k < g_nodes.count; ++k) {
          const double* q = d + static_cast<size_t>(k) * mine.size();
          for (int it = 0; it < cfg.iters; ++it) per_iter[it] = std::max(per_iter[it], q[it]);
          wrong_all += static_cast<uint64_t>(q[cfg.iters]);
        }
      }
      const coll::Row row = coll::make_row(op, n, bytes, bytes / synk::comm::elem_size(et), per_iter, wrong_all);
      coll::print_row(stdout, op, row, cfg.type.c_str(), cfg.redop.c_str());
      std::fflush(stdout);
      rows.push_back(row);
    }
    barrier();  // rank 0 has read this size's results before anyone overwrites them
    if (bytes > cfg.max_bytes / 2) break;  // (avoid overflow on the doubling)
  }
  return rows;
}

void pin_to_cpu(int rank) {
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus <= 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(rank % cpus, &set);
  ::sched_setaffinity(0, sizeof set, &set);  // best effort
}

// The checks that depend on the number of ranks: --workers here, and
// again for the ranks of every node once the nodes have joined (run).
void check_ranks(const Config& cfg, int ranks, const char* what) {
  const std::string of = std::to_string(ranks) + " ranks (" + what + ")";
  if (cfg.root >= ranks)
    throw synk::ArgumentError("--root " + std::to_string(cfg.root) + ": out of range for " + of);
  // Every size must hold whole elements, and a split op at least one per rank.
  const size_t elem = cfg.type == "float" || cfg.type == "int32" ? 4 : 8;
  const size_t smallest = parse_op(cfg.op).info.split ? elem * static_cast<size_t>(ranks) : elem;
  if (cfg.min_bytes % elem != 0)
    throw synk::ArgumentError("--min-bytes " + std::to_string(cfg.min_bytes) + ": must be a multiple of " +
                              std::to_string(elem) + " (one " + cfg.type + ")");
  if (cfg.min_bytes < smallest)
    throw synk::ArgumentError("--min-bytes " + std::to_string(cfg.min_bytes) + ": " + cfg.op + " over " + of +
                              " needs at least " + std::to_string(smallest) + " bytes (one " + cfg.type +
                              " per rank)");
}

int run(const Config& cfg) {
  const int n = cfg.workers;
  if (const synk::comm::Launch l = synk::comm::detect_launch(); l.processes > 1) {
    if (cfg.device != "cpu")
      throw synk::ArgumentError("synk-collectives: several nodes (" + l.how +
                                ") with --device cuda are not supported here; synk-dispatch --allreduce times the "
                                "runtime's collectives over the nodes");
    g_nodes.link = synk::comm::NodeLink::join({.timeout = std::chrono::milliseconds(cfg.timeout_ms),
                                               .spin_ns = static_cast<int64_t>(cfg.spin_us * 1000), .check = {}});
    const int32_t mine = n;
    std::vector<size_t> sizes;
    const std::vector<uint8_t> all = g_nodes.link->all_gather_bytes(
        {reinterpret_cast<const uint8_t*>(&mine), sizeof mine}, &sizes, "worker counts");
    g_nodes.count = g_nodes.link->nodes();
    g_nodes.layout.node = g_nodes.link->node();
    g_nodes.layout.sizes.assign(reinterpret_cast<const int32_t*>(all.data()),
                                reinterpret_cast<const int32_t*>(all.data()) + g_nodes.count);
    g_nodes.world = 0;
    for (int k = 0; k < g_nodes.count; ++k) {
      if (k < g_nodes.layout.node) g_nodes.base += g_nodes.layout.sizes[static_cast<size_t>(k)];
      g_nodes.world += g_nodes.layout.sizes[static_cast<size_t>(k)];
    }
    // As the runtime places several nodes on one machine (runtime.cpp):
    // one after the other, or unpinned when they outnumber the cores.
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    g_nodes.crowded = static_cast<long>(g_nodes.link->host_count()) * n > cpus;
    g_nodes.pin_first = g_nodes.link->host_index() * n;
    if (g_nodes.layout.node != 0 && !std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);
    // The same on every node (each has every node's count): all refuse alike.
    check_ranks(cfg, g_nodes.world, "every node's --workers");
  } else {
    g_nodes.world = n;
  }
  // Nodes crowding one machine's cores: waiting ranks spin briefly (as the runtime's do).
  const double spin_us = g_nodes.crowded ? std::min(cfg.spin_us, 2.0) : cfg.spin_us;
  CpuGroup g({.ranks = n,
              .slot_bytes = cfg.slot_bytes,
              .spin = std::chrono::nanoseconds(static_cast<int64_t>(spin_us * 1000)),
              .timeout = std::chrono::milliseconds(cfg.timeout_ms),
              .stream_min_bytes = cfg.stream_min_bytes});
  auto seg = synk::comm::SharedSegment::create(sizeof(double) * n * cfg.iters + sizeof(uint64_t) * n,
                                               "synk-bench");
  Shared sh{static_cast<double*>(seg.data()),
            reinterpret_cast<uint64_t*>(static_cast<double*>(seg.data()) + n * cfg.iters)};

  if (cfg.device == "cpu") {
    if (g_nodes.count > 1)
      std::printf("# %d nodes x %d ranks (mpirun/srun): node masters joined by MPI, every rank of every node "
                  "in each collective\n",
                  g_nodes.count, n);
    std::printf("# synk-collectives: op %s, %d ranks (per node: rank 0 + %d forked workers), device cpu, type %s, "
                "redop %s, root %d\n# iters %d, warmup %d, staging slot %zu B, spin %.1f us, streaming stores from "
                "%zu B, pinned %s; time = median over iters of the slowest rank\n",
                cfg.op.c_str(), g_nodes.world, n - 1, cfg.type.c_str(), cfg.redop.c_str(), cfg.root, cfg.iters,
                cfg.warmup, g.options().slot_bytes, spin_us, cfg.stream_min_bytes,
                cfg.pin && !g_nodes.crowded ? "yes" : g_nodes.crowded ? "no (nodes outnumber the cores)" : "no");
    std::printf("#%11s %12s %8s %6s %10s %12s %12s %8s\n", "size(B)", "count", "type", "redop", "time(us)",
                "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    std::fflush(nullptr);
  }

  std::vector<pid_t> pids;
  for (int r = 1; r < n; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) {
      g.abort("fork failed");
      break;
    }
    if (pid == 0) {
      int rc = 0;
      try {
        g.bind(r);
        if (cfg.pin && !g_nodes.crowded) pin_to_cpu(g_nodes.pin_first + r);
        run_rank(cfg, g, sh, r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        rc = 1;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  std::vector<coll::Row> rows;
  int rc = 0;
  try {
    g.bind(0);
    if (cfg.pin && !g_nodes.crowded) pin_to_cpu(g_nodes.pin_first);
    rows = run_rank(cfg, g, sh, 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank 0: %s\n", e.what());
    g.abort(std::string("rank 0 failed: ") + e.what());
    rc = 1;
  }
  for (pid_t pid : pids) {
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) rc = 1;
  }
  uint64_t wrong = 0;
  double busbw_sum = 0;
  for (const coll::Row& r : rows) wrong += r.wrong, busbw_sum += r.busbw;
  std::printf("# wrong: %llu\n# avg busbw: %.2f GB/s\n", static_cast<unsigned long long>(wrong),
              rows.empty() ? 0.0 : busbw_sum / rows.size());
  if (!cfg.json.empty() && g_nodes.layout.node == 0) {
    nlohmann::json j{{"op", cfg.op}, {"workers", n}, {"nodes", g_nodes.count}, {"ranks", g_nodes.world},
                     {"device", cfg.device}, {"type", cfg.type},
                     {"redop", cfg.redop}, {"iters", cfg.iters}, {"rows", nlohmann::json::array()}};
#if SYNK_HAVE_CUDA
    if (cfg.device == "cuda") j["gpu"] = g_gpu_json;
#endif
    for (const coll::Row& r : rows)
      j["rows"].push_back({{"bytes", r.bytes}, {"count", r.count}, {"time_us", r.time_us},
                           {"algbw_gbs", r.algbw}, {"busbw_gbs", r.busbw}, {"wrong", r.wrong}});
    bench::write_json(cfg.json, j);
  }
  return rc != 0 ? 1 : (wrong ? 2 : 0);
}

// Parses and checks the command line (every error before any rank starts),
// then runs the benchmark.
int run_main(int argc, char** argv) {
  CLI::App app{"synk-collectives: bandwidth of synk's collectives (nccl-tests style)"};
  Config cfg;
  std::vector<std::string> ops;
  for (const bench::coll::Collective* c : bench::coll::table()) ops.push_back(c->info.name);
  app.add_option("--op", cfg.op, bench::coll::names("|"))->check(CLI::IsMember(ops));
  app.add_option("--workers", cfg.workers, "ranks in total (rank 0 included)")
      ->check(bench::integer(1, CpuGroup::kMaxRanks));
  app.add_option("--device", cfg.device, "cpu|cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--backend", cfg.backend,
                 "with --device cuda: auto (nccl where built with NCCL), nccl (one GPU per rank) or "
                 "host-staged (device -> shared memory -> device; ranks may share GPUs)")
      ->check(CLI::IsMember({"auto", "nccl", "host-staged"}));
  // Sizes: whole elements of --type, at most 1 TiB (every rank holds two
  // buffers of --max-bytes).
  app.add_option("--min-bytes", cfg.min_bytes, "smallest size (a multiple of the --type size)")
      ->check(bench::integer(1, uint64_t{1} << 40));
  app.add_option("--max-bytes", cfg.max_bytes, "largest size (sizes double from min)")
      ->check(bench::integer(1, uint64_t{1} << 40));
  app.add_option("--iters", cfg.iters, "timed calls per size")->check(bench::integer(1, 100000));
  app.add_option("--warmup", cfg.warmup, "untimed calls per size")->check(bench::integer(0, 100000));
  app.add_option("--type", cfg.type, "float|int32|double|int64")
      ->check(CLI::IsMember({"float", "int32", "double", "int64"}));
  app.add_option("--redop", cfg.redop, "sum|avg|max|min|prod")->check(CLI::IsMember({"sum", "avg", "max", "min", "prod"}));
  app.add_option("--root", cfg.root, "root rank of broadcast/reduce/gather/scatter")
      ->check(bench::integer(0, CpuGroup::kMaxRanks - 1));
  app.add_option("--json", cfg.json, "write the results as JSON")->check(bench::writable_file());
  app.add_flag("--pin,!--no-pin", cfg.pin, "pin rank r to CPU r mod #cpus (default on)");
  app.add_option("--slot-bytes", cfg.slot_bytes, "staging per rank per buffer set (rounded up to 4 KiB)")
      ->check(bench::integer(1, uint64_t{1} << 30));
  app.add_option("--spin-us", cfg.spin_us, "spin before sleeping on a futex")->check(bench::number(0, 1e6));
  app.add_option("--timeout-ms", cfg.timeout_ms, "timeout of every wait")->check(bench::integer(1, 86400000));
  app.add_option("--stream-min-bytes", cfg.stream_min_bytes, "write results this large with non-temporal stores")
      ->check(bench::integer(0));
  if (!bench::parse(app, argc, argv)) return 0;

  if (cfg.device == "cuda") {
#if !SYNK_HAVE_CUDA
    throw synk::BackendError("--device cuda: synk was built without CUDA (SYNK_WITH_CUDA=OFF or no toolkit)");
#else
    cfg.gpus = probe_gpus();
    if (cfg.gpus == 0) throw synk::BackendError("--device cuda: no CUDA device is visible");
    if (cfg.backend == "auto") cfg.backend = SYNK_HAVE_NCCL ? "nccl" : "host-staged";
    if (cfg.backend == "nccl" && !SYNK_HAVE_NCCL)
      throw synk::BackendError("--backend nccl: synk was built without NCCL (use --backend host-staged)");
    if (cfg.backend == "nccl" && cfg.workers > cfg.gpus)
      throw synk::ArgumentError("--workers " + std::to_string(cfg.workers) + ": NCCL needs one GPU per rank and " +
                                std::to_string(cfg.gpus) +
                                " are visible; use --backend host-staged to put several ranks on one GPU");
#endif
  } else if (cfg.backend != "auto") {
    throw synk::ArgumentError("--backend " + cfg.backend + " needs --device cuda");
  }
  check_ranks(cfg, cfg.workers, "--workers");
  if (cfg.max_bytes < cfg.min_bytes)
    throw synk::ArgumentError("--max-bytes " + std::to_string(cfg.max_bytes) + ": smaller than --min-bytes " +
                              std::to_string(cfg.min_bytes));
  return run(cfg);
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-collectives", run_main, argc, argv);
}
