// src/rank/rank.hpp — one rank of a runtime: the master's rank 0 and every
// worker alike (private header).
//
// A Rank owns what a rank computes with: its executor (exec/executor.hpp:
// the CPU or one GPU), its comm (comm/comm.hpp), its copy of the distributed
// functions, the Data segments it page-locked, and the view of every peer's
// shared gradient buffer. Its interface is what a rank does; the control
// plane (src/runtime: fork, commands, waits, combining, failures, nodes)
// decides when, and carries the bytes between the ranks:
//
//   Rank r(setup);                  // RankSetup: made by the runtime, the same way on every rank
//   r.attach(graph); r.add_functions(defs);          // the master
//   r.replace(std::move(copy), defs);                // a worker at distribute()
//   if (!r.has_comm()) r.join_comm(bootstrap);      // bytes one rank made (comm::make_bootstrap)
//   ShareResult s = r.run_share(call);              // its rows of a call; a training step all-reduces
//   r.run_var_ops(args, n, out);                    // variable collectives
//
// Why one class: the master and the workers then make, run and end a rank
// by the same code, so a call means the same on every rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "comm/comm.hpp"
#include "comm/make_comm.hpp"
#include "exec/executor.hpp"
#include "synk/runtime.hpp"
#include "wire/wire.hpp"

namespace synk::detail {

// Rows [start, start+count) of `total` for `rank` of `ranks`: as even as
// possible, the remainder to the lowest ranks.
inline void split_rows(int64_t total, int ranks, int rank, int64_t& start, int64_t& count) {
  const int64_t q = total / ranks, rem = total % ranks;
  count = q + (rank < rem ? 1 : 0);
  start = rank * q + std::min<int64_t>(rank, rem);
}

// Deterministic calls (CallDesc::chunks): chunk c of `chunks` is rows
// [chunk_start(c), chunk_start(c + 1)) of the batch, whatever the rank
// count; the chunks are split over the ranks as rows are otherwise.
inline int64_t chunk_start(int64_t total, int64_t chunks, int64_t c) {
  const int64_t q = total / chunks, rem = total % chunks;
  return c * q + std::min<int64_t>(c, rem);
}

// A rank's share of a call of `total` (>= 0) rows: rows [start, start +
// rows) of the batch, and in a deterministic call its chunks [first_chunk,
// first_chunk + n_chunks). The master sizes result buffers by it and every
// rank takes its rows by it.
struct RankShare {
  int64_t start = 0, rows = 0, first_chunk = 0, n_chunks = 0;
};
inline RankShare rank_share(int64_t total, int ranks, int rank, uint32_t chunks) {
  RankShare r;
  if (chunks == 0) {
    split_rows(total, ranks, rank, r.start, r.rows);
    return r;
  }
  split_rows(chunks, ranks, rank, r.first_chunk, r.n_chunks);
  r.start = chunk_start(total, chunks, r.first_chunk);
  r.rows = chunk_start(total, chunks, r.first_chunk + r.n_chunks) - r.start;
  return r;
}

// How a training step's gradients are combined, chosen from the call alone
// (so every rank takes the same path). The flat gradient buffer lives in the
// executor's memory and the rank's comm all-reduces it there, whatever the
// kind of rank:
//   direct  one slice: the gradient function writes straight into the flat
//           buffer; averaged over ranks (equal shares), or weighted by the
//           rank's rows and summed (an uneven batch);
//   sliced  several slices: each slice's gradients added into the flat
//           buffer weighted by its rows, then summed over ranks.
enum class GradPath : uint8_t { direct, sliced };
GradPath grad_path(int64_t total, uint32_t num_slices, int64_t rows);
// The reduction a step's all-reduce uses: avg where every rank's gradient
// is a mean over the same number of rows, sum where they were weighted.
ReduceOp grad_reduce(GradPath path, int64_t total, int ranks, int64_t rows);

// What a rank is made of, fixed when its process starts; the runtime makes
// it by one rule for the master and every worker (runtime/rank_setup.cpp).
struct RankSetup {
  int local = 0;                // the rank on its node (the executor mixes it into dropout streams)
  int rank = 0, ranks = 1;      // global: several nodes number their ranks node by node
  Device device = Device::cpu;  // one GPU per CUDA rank: `gpu` among the visible ones
  int gpu = 0;
  uint64_t seed = 0;
  size_t bucket_bytes = 0;      // RuntimeOptions::bucket_bytes (0: one all-reduce after backward)
  comm::CommSpec comm;          // its comm, made with the executor or joined later (join_comm)
};

// The state a rank's share of a call works on (src/rank/*.cpp): views of
// the Rank's executor, comm and graph, the functions and the scratch of
// calls. Owned by its Rank; nothing outside src/rank touches it.
struct RankState {
  const Graph* graph = nullptr;
  exec::Executor* ex = nullptr;
  comm::Comm* comm = nullptr;  // null until the comm is made (join_comm)
  std::vector<FunctionDef> defs;
  std::vector<int> fns;     // executor index of defs[i]
  std::vector<int> sliced;  // lazily (-1 until made): outputs + update values, no updates
  // defs[i] has rank_sum steps (collectives mid-function): its gradients
  // are not all-reduced in buckets during the backward pass, which would
  // interleave with them.
  std::vector<char> rank_sum;
  int rank = 0, ranks = 1;
  size_t bucket_bytes = 0;
  // Every rank's gradient buffer of this node as mapped here, peer_bytes
  // each (Comm::reduces_peer_buffers); empty: the executor's scratch and the
  // comm's all_reduce.
  std::vector<void*> peer_grads;
  size_t peer_bytes = 0;
  uint64_t peer_gen = 0;
  std::vector<std::vector<uint8_t>> staging;  // per input, for index gathers
  // Data segments page-locked for the input copies (Executor::pin_host),
  // by segment id (null: not pinned, or refused).
  std::unordered_map<uint64_t, const void*> pinned;

  bool ready() const { return ex != nullptr; }
};

class Rank {
 public:
  explicit Rank(RankSetup setup);
  ~Rank();
  Rank(const Rank&) = delete;
  Rank& operator=(const Rank&) = delete;

  const RankSetup& setup() const noexcept { return setup_; }

  // ---- functions ----
  // The master's rank: compiles over the caller's graph, which grows as
  // functions are made and outlives the rank. Once.
  void attach(const Graph& g);
  // A worker at distribute(): its own copy of the (grown) graph and every
  // function, compiled by a new executor; variables keep their values. If
  // a function fails to compile the rank stays as it was.
  void replace(std::unique_ptr<Graph> g, const std::vector<FunctionDef>& defs);
  // Compiles the functions of `all` from index functions() on.
  void add_functions(const std::vector<FunctionDef>& all);
  // Forgets every function from index n on (a distribute() that failed;
  // the executor keeps their compiled forms, unreachable, until the next
  // replace() or the rank's end).
  void drop_functions(size_t n);
  size_t functions() const noexcept { return s_.defs.size(); }
  bool ready() const noexcept { return s_.ready(); }
  const Graph* graph() const noexcept { return s_.graph; }

  // ---- comm ----
  // A comm joined through bootstrap bytes (comm::needs_bootstrap) is made
  // by join_comm, every rank at once; others with the executor.
  bool has_comm() const noexcept { return comm_ != nullptr; }
  void join_comm(std::span<const uint8_t> bootstrap);
  // Aborts and forgets a comm joined through bootstrap bytes (its peers are
  // gone: Runtime::heal), so that join_comm makes a new one with the
  // replacements. Comms made with the executor stay (they run over the
  // CpuGroup, which heal resets).
  void drop_joined_comm(const std::string& why) noexcept;

  // ---- calls ----
  // This rank's share of a call (rows, slices; a training step combines the
  // gradients with every other rank's, then updates).
  ShareResult run_share(const CallDesc& d);
  // Variable collectives (the encoded ops: wire.hpp), the same on every
  // rank; `out` (master only) receives gather/all_gather results, op after op.
  void run_var_ops(const uint8_t* args, size_t n, uint8_t* out);
  // A variable's value (nb bytes, the whole variable) from / to this rank's
  // copy, on the host or the device.
  void read_variable(int32_t var, void* dst, size_t nb);
  void write_variable(int32_t var, const void* src, size_t nb);

  // ---- memory shared with the node's ranks ----
  // Every rank's gradient buffer of this node as mapped here (bytes each);
  // gen: the version they belong to (peer_gen()).
  void map_peer_grads(std::vector<void*> bufs, size_t bytes, uint64_t gen);
  uint64_t peer_gen() const noexcept { return s_.peer_gen; }
  // Unlocks a Data segment the rank page-locked, before it is unmapped.
  void unpin(uint64_t seg) noexcept;

  // Ends the rank at once (the runtime closes): page locks undone, the comm
  // aborted and ended, the executor freed. Never throws.
  void close(const std::string& why) noexcept;

 private:
  void make_comm_if_direct();
  std::unique_ptr<exec::Executor> make_executor(const Graph& g);
  void unpin_all() noexcept;

  RankSetup setup_;
  std::unique_ptr<Graph> graph_;  // a worker's copy (the master's is the caller's)
  std::unique_ptr<exec::Executor> ex_;
  std::unique_ptr<comm::Comm> comm_;  // made once per process; after the executor: destroyed first
  RankState s_;
};

// The share of a call (src/rank/share.cpp) and variable collectives
// (src/rank/var_ops.cpp) on a rank's state.
ShareResult run_share(RankState& L, const CallDesc& d);
void run_var_ops(RankState& L, const uint8_t* args, size_t n, uint8_t* out);
// Page-locks a Data segment once (where the executor does that; a no-op on the CPU).
void pin_segment(RankState& L, uint64_t id, const void* p, size_t bytes);

}  // namespace synk::detail
