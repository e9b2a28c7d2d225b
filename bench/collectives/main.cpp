// bench/collectives/main.cpp — synk-collectives: bandwidth of the CPU
// shared-memory collectives, printed like nccl-tests.
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
// for broadcast/reduce.
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "comm/cpu_comm.hpp"
#include "comm/cpu_group.hpp"
#include "comm/node_comm.hpp"
#include "common/bench_main.hpp"
#include "comm/shm.hpp"
#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include <memory>

#include "comm/host_staged.hpp"
#include "common/gpu_info.hpp"
#include "cuda/device.hpp"
#endif
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif

using synk::comm::CpuGroup;
using synk::comm::ElemType;
using synk::ReduceOp;

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

struct Row {
  size_t bytes = 0, count = 0;
  double time_us = 0, algbw = 0, busbw = 0;
  uint64_t wrong = 0;
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

enum class Op { all_reduce, broadcast, reduce, all_gather, gather, scatter };

Op parse_op(const std::string& s) {
  if (s == "all_reduce") return Op::all_reduce;
  if (s == "broadcast") return Op::broadcast;
  if (s == "reduce") return Op::reduce;
  if (s == "all_gather") return Op::all_gather;
  if (s == "gather") return Op::gather;
  if (s == "scatter") return Op::scatter;
  throw synk::ArgumentError("--op " + s + ": expected all_reduce|broadcast|reduce|all_gather|gather|scatter");
}
ReduceOp parse_redop(const std::string& s) {
  if (s == "sum") return ReduceOp::sum;
  if (s == "avg") return ReduceOp::avg;
  if (s == "max") return ReduceOp::max;
  if (s == "min") return ReduceOp::min;
  if (s == "prod") return ReduceOp::prod;
  throw synk::ArgumentError("--redop " + s + ": expected sum|avg|max|min|prod");
}

double bus_factor(Op op, int n) {
  switch (op) {
    case Op::all_reduce: return 2.0 * (n - 1) / n;
    case Op::all_gather:
    case Op::gather:
    case Op::scatter: return double(n - 1) / n;
    case Op::broadcast:
    case Op::reduce: return 1.0;
  }
  return 1.0;
}

// The total buffer is split over ranks for these.
bool split_op(Op op) { return op == Op::all_gather || op == Op::gather || op == Op::scatter; }

// Exactly representable test values; prod keeps magnitudes at 1 or 2.
template <class T> T value(int rank, size_t i, ReduceOp op) {
  if (op == ReduceOp::prod) return static_cast<T>(((i + rank) % 5 == 0) ? 2 : ((i + rank) % 7 == 0 ? -1 : 1));
  return static_cast<T>(static_cast<long>((i * 7 + rank * 3) % 61) - 30);
}
template <class T> T combine(T a, T b, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return a + b;
    case ReduceOp::prod: return a * b;
    case ReduceOp::max: return std::max(a, b);
    case ReduceOp::min: return std::min(a, b);
  }
  return a;
}
// Exact, except a floating-point avg: NCCL computes it as a sum of
// pre-scaled values (x * 1/n), which may differ from sum / n in the last bit.
template <class T> bool differs(T got, T want, ReduceOp op) {
  if constexpr (std::is_floating_point_v<T>) {
    if (op == ReduceOp::avg) return !(std::fabs(got - want) <= T(1e-6) * std::max(T(1), std::fabs(want)));
  }
  return got != want;
}
template <class T> T reduced(int n, size_t i, ReduceOp op) {
  T acc = value<T>(0, i, op);
  for (int r = 1; r < n; ++r) acc = combine(acc, value<T>(r, i, op), op);
  return op == ReduceOp::avg ? static_cast<T>(acc / static_cast<T>(n)) : acc;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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

// One rank's device side (--device cuda): GPU rank % gpus, its communicator
// (NCCL or host-staged) and device buffers the test values go through.
template <class T> struct GpuRank {
  std::unique_ptr<synk::comm::Comm> comm;
  synk::cuda::DeviceBuffer din, dout;
  bench::GpuInfo info;

  GpuRank(const Config& cfg, CpuGroup& g, int rank, size_t elems) {
    const int device = rank % cfg.gpus;
    SYNK_CUDA_CHECK(cudaSetDevice(device));
    if (cfg.backend == "nccl") {
#if SYNK_HAVE_NCCL
      // Rank 0 makes the id after fork; it reaches the others through the CpuGroup.
      synk::comm::NcclId id;
      if (rank == 0) id = synk::comm::make_nccl_id();
      g.broadcast(&id, sizeof id / sizeof(int32_t), ElemType::i32, 0);
      comm = std::make_unique<synk::comm::NcclComm>(
          id, synk::comm::NcclCommOptions{.ranks = g.size(), .rank = rank, .device = device,
                                          .timeout = std::chrono::milliseconds(cfg.timeout_ms)});
#endif
    } else {
      comm = std::make_unique<synk::comm::HostStagedComm>(g, synk::comm::HostStagedOptions{.device = device});
    }
    din = synk::cuda::DeviceBuffer(std::max<size_t>(elems, 1) * sizeof(T));
    dout = synk::cuda::DeviceBuffer(std::max<size_t>(elems, 1) * sizeof(T));
    info = bench::gpu_info(device);
  }
  void upload(const synk::cuda::DeviceBuffer& dst, const T* src, size_t n) {
    if (n) SYNK_CUDA_CHECK(cudaMemcpy(dst.data(), src, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void download(T* dst, const synk::cuda::DeviceBuffer& src, size_t n) {
    if (n) SYNK_CUDA_CHECK(cudaMemcpy(dst, src.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  // Issues the collective on the legacy default stream and waits for it.
  void call(Op op, size_t per_rank, ElemType et, ReduceOp rop, int root) {
    void* i = din.data();
    void* o = dout.data();
    switch (op) {
      case Op::all_reduce: comm->all_reduce(i, o, per_rank, et, rop, nullptr); break;
      case Op::reduce: comm->reduce(i, o, per_rank, et, rop, root, nullptr); break;
      case Op::broadcast: comm->broadcast(o, per_rank, et, root, nullptr); break;
      case Op::all_gather: comm->all_gather(i, o, per_rank, et, nullptr); break;
      case Op::gather: comm->gather(i, o, per_rank, et, root, nullptr); break;
      case Op::scatter: comm->scatter(i, o, per_rank, et, root, nullptr); break;
    }
    comm->wait();
  }
};
#endif

// Everything one rank does; rank 0 also prints. Returns the rows (rank 0).
template <class T>
std::vector<Row> run_rank(const Config& cfg, CpuGroup& g, Shared sh, int lrank) {
  const int n = g_nodes.world;           // ranks of every node
  const int rank = g_nodes.base + lrank;  // this rank among them
  // Several nodes: the two-level comm; the node master holds the MPI link.
  std::unique_ptr<synk::comm::Comm> nodes;
  if (g_nodes.count > 1)
    nodes = std::make_unique<synk::comm::NodeComm>(std::make_unique<synk::comm::CpuComm>(g),
                                                   lrank == 0 ? g_nodes.link.get() : nullptr, g_nodes.layout);
  auto barrier = [&] {
    g.barrier();
    if (nodes) {
      if (lrank == 0) g_nodes.link->all_gather_bytes({}, nullptr, "barrier");
      g.barrier();
    }
  };
  const Op op = parse_op(cfg.op);
  const ReduceOp rop = parse_redop(cfg.redop);
  const ElemType et = synk::comm::elem_type_of<T>();
  const int root = cfg.root;
  const size_t max_total = cfg.max_bytes / sizeof(T);
  // Buffers sized for the largest call; first touch happens here, in the
  // process that uses them.
  std::vector<T> in(std::max<size_t>(max_total, 1)), out(std::max<size_t>(max_total, 1));
  std::vector<Row> rows;
#if SYNK_HAVE_CUDA
  std::unique_ptr<GpuRank<T>> gpu;
  if (cfg.device == "cuda") {
    gpu = std::make_unique<GpuRank<T>>(cfg, g, rank, max_total);
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
      std::printf("#%11s %12s %8s %6s %10s %12s %12s %8s\n", "size(B)", "count", "type", "redop", "time(us)",
                  "algbw(GB/s)", "busbw(GB/s)", "#wrong");
      std::fflush(nullptr);
      g_gpu_json = bench::to_json(gpu->info);
      g_gpu_json["backend"] = cfg.backend;
    }
  }
#endif

  for (size_t bytes = cfg.min_bytes; bytes <= cfg.max_bytes; bytes *= 2) {
    const size_t total = bytes / sizeof(T);                 // the count column
    const size_t per_rank = split_op(op) ? total / n : total;
    auto call = [&] {
#if SYNK_HAVE_CUDA
      if (gpu) return gpu->call(op, per_rank, et, rop, root);
#endif
      if (nodes) {
        synk::comm::Comm& c = *nodes;
        switch (op) {
          case Op::all_reduce: c.all_reduce(in.data(), out.data(), per_rank, et, rop, nullptr); break;
          case Op::reduce: c.reduce(in.data(), out.data(), per_rank, et, rop, root, nullptr); break;
          case Op::broadcast: c.broadcast(out.data(), per_rank, et, root, nullptr); break;
          case Op::all_gather: c.all_gather(in.data(), out.data(), per_rank, et, nullptr); break;
          case Op::gather: c.gather(in.data(), out.data(), per_rank, et, root, nullptr); break;
          case Op::scatter: c.scatter(in.data(), out.data(), per_rank, et, root, nullptr); break;
        }
        return;
      }
      switch (op) {
        case Op::all_reduce: g.all_reduce(in.data(), out.data(), per_rank, et, rop); break;
        case Op::reduce: g.reduce(in.data(), out.data(), per_rank, et, rop, root); break;
        case Op::broadcast: g.broadcast(out.data(), per_rank, et, root); break;
        case Op::all_gather: g.all_gather(in.data(), out.data(), per_rank, et); break;
        case Op::gather: g.gather(in.data(), out.data(), per_rank, et, root); break;
        case Op::scatter: g.scatter(in.data(), out.data(), per_rank, et, root); break;
      }
    };
    // ---- checked call ----
    const size_t in_len = (op == Op::scatter && rank == root) ? per_rank * n : per_rank;
    for (size_t i = 0; i < in_len; ++i) in[i] = value<T>(op == Op::scatter ? 0 : rank, i, rop);
    if (op == Op::broadcast)
      for (size_t i = 0; i < per_rank; ++i) out[i] = rank == root ? value<T>(root, i, rop) : T(-99);
#if SYNK_HAVE_CUDA
    const size_t out_len = (op == Op::all_gather || op == Op::gather) ? per_rank * n : per_rank;
    if (gpu) {
      gpu->upload(gpu->din, in.data(), in_len);
      if (op == Op::broadcast) gpu->upload(gpu->dout, out.data(), per_rank);
    }
#endif
    call();
#if SYNK_HAVE_CUDA
    if (gpu) gpu->download(out.data(), gpu->dout, out_len);
#endif
    uint64_t wrong = 0;
    switch (op) {
      case Op::all_reduce:
        for (size_t i = 0; i < per_rank; ++i) wrong += differs(out[i], reduced<T>(n, i, rop), rop);
        break;
      case Op::reduce:
        if (rank == root)
          for (size_t i = 0; i < per_rank; ++i) wrong += differs(out[i], reduced<T>(n, i, rop), rop);
        break;
      case Op::broadcast:
        for (size_t i = 0; i < per_rank; ++i) wrong += out[i] != value<T>(root, i, rop);
        break;
      case Op::all_gather:
      case Op::gather:
        if (op == Op::all_gather || rank == root)
          for (int r = 0; r < n; ++r)
            for (size_t i = 0; i < per_rank; ++i) wrong += out[r * per_rank + i] != value<T>(r, i, rop);
        break;
      case Op::scatter:
        for (size_t i = 0; i < per_rank; ++i) wrong += out[i] != value<T>(0, rank * per_rank + i, rop);
        break;
    }
    sh.wrong[lrank] = wrong;
    // ---- timed calls ----
    for (int w = 0; w < cfg.warmup; ++w) call();
    for (int it = 0; it < cfg.iters; ++it) {
      barrier();
      const double t0 = now_s();
      call();
      sh.times[lrank * cfg.iters + it] = now_s() - t0;
    }
    g.barrier();
    if (lrank == 0) {
      std::vector<double> per_iter(cfg.iters, 0.0);
      uint64_t wrong_all = 0;
      for (int r = 0; r < g.size(); ++r) {
        wrong_all += sh.wrong[r];
        for (int it = 0; it < cfg.iters; ++it)
          per_iter[it] = std::max(per_iter[it], sh.times[r * cfg.iters + it]);
      }
      if (nodes) {
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
      std::sort(per_iter.begin(), per_iter.end());
      const double t = cfg.iters % 2 ? per_iter[cfg.iters / 2]
                                     : 0.5 * (per_iter[cfg.iters / 2 - 1] + per_iter[cfg.iters / 2]);
      Row row;
      row.bytes = bytes;
      row.count = total;
      row.time_us = t * 1e6;
      row.algbw = t > 0 ? bytes / t / 1e9 : 0;
      row.busbw = row.algbw * bus_factor(op, n);
      row.wrong = wrong_all;
      std::printf("%12zu %12zu %8s %6s %10.2f %12.2f %12.2f %8llu\n", row.bytes, row.count,
                  cfg.type.c_str(), op == Op::all_reduce || op == Op::reduce ? cfg.redop.c_str() : "none",
                  row.time_us, row.algbw, row.busbw, static_cast<unsigned long long>(row.wrong));
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
  const size_t smallest = split_op(parse_op(cfg.op)) ? elem * static_cast<size_t>(ranks) : elem;
  if (cfg.min_bytes % elem != 0)
    throw synk::ArgumentError("--min-bytes " + std::to_string(cfg.min_bytes) + ": must be a multiple of " +
                              std::to_string(elem) + " (one " + cfg.type + ")");
  if (cfg.min_bytes < smallest)
    throw synk::ArgumentError("--min-bytes " + std::to_string(cfg.min_bytes) + ": " + cfg.op + " over " + of +
                              " needs at least " + std::to_string(smallest) + " bytes (one " + cfg.type +
                              " per rank)");
}

template <class T> int run(const Config& cfg) {
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
        run_rank<T>(cfg, g, sh, r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        rc = 1;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  std::vector<Row> rows;
  int rc = 0;
  try {
    g.bind(0);
    if (cfg.pin && !g_nodes.crowded) pin_to_cpu(g_nodes.pin_first);
    rows = run_rank<T>(cfg, g, sh, 0);
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
  for (const Row& r : rows) wrong += r.wrong, busbw_sum += r.busbw;
  std::printf("# wrong: %llu\n# avg busbw: %.2f GB/s\n", static_cast<unsigned long long>(wrong),
              rows.empty() ? 0.0 : busbw_sum / rows.size());
  if (!cfg.json.empty() && g_nodes.layout.node == 0) {
    nlohmann::json j{{"op", cfg.op}, {"workers", n}, {"nodes", g_nodes.count}, {"ranks", g_nodes.world},
                     {"device", cfg.device}, {"type", cfg.type},
                     {"redop", cfg.redop}, {"iters", cfg.iters}, {"rows", nlohmann::json::array()}};
#if SYNK_HAVE_CUDA
    if (cfg.device == "cuda") j["gpu"] = g_gpu_json;
#endif
    for (const Row& r : rows)
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
  app.add_option("--op", cfg.op, "all_reduce|broadcast|reduce|all_gather|gather|scatter")
      ->check(CLI::IsMember({"all_reduce", "broadcast", "reduce", "all_gather", "gather", "scatter"}));
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
  if (cfg.type == "float") return run<float>(cfg);
  if (cfg.type == "int32") return run<int32_t>(cfg);
  if (cfg.type == "double") return run<double>(cfg);
  return run<int64_t>(cfg);
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-collectives", run_main, argc, argv);
}
