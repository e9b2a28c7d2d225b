// src/comm/cpu_group.hpp — shared-memory collectives for N forked processes
// (private header; users reach it through synk::Runtime, synk/runtime.hpp,
// whose collectives and training steps move data between ranks through a
// CpuGroup, but for NCCL ranks).
//
// A CpuGroup is created in the parent BEFORE fork() (or, in a process not
// forked from it, such as a worker made by the runtime's fork server, opened
// from the creator's memfd); it holds one memfd segment with a control area
// (a step counter per rank, abort word) and a staging area (two buffer sets
// x N slots x slot_bytes). After fork every process binds its rank once and
// then all ranks call the same collectives in the same order, like MPI:
//
//   synk::comm::CpuGroup g({.ranks = 2});
//   if (pid_t pid = fork(); pid == 0) {           // rank 1
//     g.bind(1);
//     std::vector<float> x(1000, 1.f);
//     g.all_reduce<float>(x, x, synk::ReduceOp::sum);   // x == 2.f
//     _exit(0);
//   }
//   g.bind(0);                                     // rank 0 (master)
//   ... same call ...; waitpid(pid, ...);
//
// How it moves data (why it is fast): buffers are split into pieces that fit
// one staging slot; for each piece a rank copies its contribution into its
// own slot and publishes it by bumping its step counter; peers wait for that
// step and read the slot straight from shared memory. Two buffer sets let a
// rank prepare piece k+1 while its peers still read piece k, and keep the
// staging area (2 x N x slot_bytes) cache-resident, so for large buffers
// only the caller's input and output touch DRAM. all_reduce with 2 ranks (or
// small buffers) reduces the whole piece on every rank after a single sync;
// with more ranks it reduce-scatters (each rank reduces 1/N of the piece
// into shared memory) and then every rank copies the other chunks out.
// Reductions always combine in rank order 0..N-1, so every rank gets
// bitwise identical results, independent of timing.
//
// Waits spin for `spin` (cheap: < 1 us cross-core), then sleep on a futex.
// Every wait ends after `timeout` with synk::BackendError naming the rank,
// the collective and the peer waited for; any error (timeout, abort, ranks
// calling different collectives) marks the group aborted, which wakes all
// waiters, and the group stays unusable: create a new one. The master may
// call abort() itself (e.g. when it sees a worker die).
//
// Reduction semantics: sum/prod of integers wrap around (two's complement);
// avg is sum / N, for integers the wrapped sum divided by N truncated
// toward zero (C++ integer division); max/min of floats follow std::max/min
// (NaNs are not propagated reliably).
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "comm/shm.hpp"
#include "synk/dtype.hpp"
#include "synk/error.hpp"
#include "synk/runtime.hpp"  // ReduceOp

namespace synk::comm {

enum class ElemType : uint8_t { f32 = 0, i32 = 1, f64 = 2, i64 = 3 };
// Collectives combine by the public synk::ReduceOp (synk/runtime.hpp), the
// one reduction-op type of the runtime, comm and its users.

size_t elem_size(ElemType t) noexcept;
const char* elem_name(ElemType t) noexcept;
const char* redop_name(ReduceOp op) noexcept;
ElemType elem_type(DType t);  // f32 -> f32, i32 -> i32

template <class T> constexpr ElemType elem_type_of() {
  if constexpr (std::is_same_v<T, float>) return ElemType::f32;
  else if constexpr (std::is_same_v<T, int32_t>) return ElemType::i32;
  else if constexpr (std::is_same_v<T, double>) return ElemType::f64;
  else if constexpr (std::is_same_v<T, int64_t>) return ElemType::i64;
  else static_assert(sizeof(T) == 0, "CpuGroup: element type must be float, int32_t, double or int64_t");
}

struct CpuGroupOptions {
  int ranks = 1;                       // ranks in total, rank 0 included
  size_t slot_bytes = 256 * 1024;      // staging per rank per buffer set (rounded up to 4 KiB)
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);  // spin before sleeping
  std::chrono::milliseconds timeout = std::chrono::seconds(30);   // every wait
  // all_reduce/reduce with more than 2 ranks reduce the whole piece on every
  // rank (one sync, more reading) up to this many bytes, and reduce-scatter above.
  size_t direct_max_bytes = 32 * 1024;
  // Results of collectives moving at least this many bytes per rank are
  // written with non-temporal stores (they would not stay in cache anyway;
  // skipping the read-for-ownership saves DRAM bandwidth).
  size_t stream_min_bytes = 32 * 1024 * 1024;
};

class CpuGroup {
 public:
  static constexpr int kMaxRanks = 256;

  // In the parent, before fork(). Throws ArgumentError for ranks outside
  // [1, kMaxRanks], BackendError if the segment cannot be created.
  explicit CpuGroup(const CpuGroupOptions& opts);
  // A process that was not forked from the creator (e.g. a worker started by
  // the runtime's fork server): the creator's segment, received as a memfd,
  // with the creator's options. Throws BackendError if the segment is not a
  // group of that size.
  CpuGroup(const CpuGroupOptions& opts, SharedSegment&& seg);
  // The group's memfd, to send to such a process.
  int segment_fd() const noexcept { return seg_.fd(); }
  CpuGroup(CpuGroup&&) noexcept = default;
  CpuGroup& operator=(CpuGroup&&) noexcept = default;
  ~CpuGroup() = default;

  // Once per process after fork(): which rank this process is. Throws
  // ArgumentError if out of range or already bound by another live process.
  void bind(int rank);
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return n_; }
  const CpuGroupOptions& options() const noexcept { return opts_; }

  // ---- collectives (every rank calls; counts are elements) -------------------
  // out may equal in (in place). Every rank gets the reduction of all inputs.
  void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op);
  // Only root's out is written (others may pass nullptr).
  void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root);
  // buf is the source on root and the destination elsewhere.
  void broadcast(void* buf, size_t count, ElemType t, int root);
  // out holds size() * count elements, rank r's input at r * count.
  void all_gather(const void* in, void* out, size_t count, ElemType t);
  // In place over buffers every rank can see: bufs[r] is rank r's buffer as
  // mapped in this process (shared memory). After a barrier (every rank's
  // elements [offset, offset + count) are final), each rank reduces its
  // 1/N of the range straight from every rank's buffer and writes the
  // result into all of them; a second barrier ends it. No staging copies:
  // about half the memory traffic of all_reduce. Combines in rank order
  // 0..N-1 like all_reduce, so the results are the same bits.
  void all_reduce_peers(void* const* bufs, size_t offset, size_t count, ElemType t, ReduceOp op);
  // The same with each rank's result in its own buffer only: of elements
  // [offset, offset + count), rank r reduces those in [r * slice, (r + 1) *
  // slice) from every buffer into bufs[r], in rank order (the same bits as
  // all_reduce_peers). The sharded optimizer's reduce-scatter: each rank
  // reads 1/N of every buffer and writes 1/N of its own.
  void reduce_scatter_peers(void* const* bufs, size_t offset, size_t count, size_t slice, ElemType t, ReduceOp op);
  // Equal counts: root's out holds size() * count elements.
  void gather(const void* in, void* out, size_t count, ElemType t, int root);
  // Per-rank counts, known to every rank (counts.size() == size(), counts[rank()]
  // elements in `in`); root's out holds sum(counts), in rank order.
  void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root);
  // Equal counts: root's in holds size() * count elements; rank r receives
  // elements [r * count, (r+1) * count).
  void scatter(const void* in, void* out, size_t count, ElemType t, int root);
  // Per-rank counts known to every rank; root's in holds sum(counts).
  void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root);
  // Every rank contributes one value; returns all of them in rank order
  // (e.g. to learn the counts for gatherv).
  std::vector<uint64_t> all_gather_u64(uint64_t value);
  void barrier();

  // ---- typed conveniences ------------------------------------------------------
  template <class T> void all_reduce(std::span<const T> in, std::span<T> out, ReduceOp op) {
    check_same(in.size(), out.size(), "all_reduce");
    all_reduce(in.data(), out.data(), in.size(), elem_type_of<T>(), op);
  }
  template <class T> void all_reduce(std::span<T> buf, ReduceOp op) {
    all_reduce(buf.data(), buf.data(), buf.size(), elem_type_of<T>(), op);
  }
  // Concatenation in rank order of what every rank holds (sizes may differ);
  // returned on root, empty elsewhere. counts (optional) receives each rank's size.
  template <class T>
  std::vector<T> gather_concat(std::span<const T> in, int root, std::vector<size_t>* counts = nullptr) {
    std::vector<uint64_t> c64 = all_gather_u64(in.size());
    std::vector<size_t> c(c64.begin(), c64.end());
    size_t total = 0;
    for (size_t x : c) total += x;
    std::vector<T> out(rank_ == root ? total : 0);
    gatherv(in.data(), out.data(), c, elem_type_of<T>(), root);
    if (counts) *counts = std::move(c);
    return out;
  }

  // ---- failure handling --------------------------------------------------------
  // Marks the group aborted and wakes every waiter; their collectives (and all
  // later ones) throw BackendError quoting `reason`. Safe from any rank (or an
  // unbound process), any time; never throws and never allocates, so a
  // SIGCHLD handler may call it. The first reason wins. `blame`: the rank
  // the failure is laid to (-1: this one), e.g. the peer a wait timed out on.
  void abort(std::string_view reason, int blame = -1) noexcept;
  bool aborted() const noexcept;
  std::string abort_reason() const;  // empty if not aborted
  // The rank the first abort blamed; -1 if not aborted (or by an unbound
  // process that named nobody).
  int blamed_rank() const noexcept;
  // Makes an aborted group usable again, as new, for this process (its rank
  // stays bound) and fresh processes binding the other ranks: the abort,
  // every rank's step counter and descriptor, the other ranks' bindings and
  // this process's piece counter are cleared. Only while no other process
  // uses the group (Runtime::heal, once every worker is gone).
  void reset() noexcept;

 private:
  struct Header;
  struct RankCtl;
  struct Desc;
  enum class Coll : uint8_t;

  void init_geometry();  // checks the options; sets slot_bytes_ and spin_ns_
  Header* header() const noexcept;
  RankCtl* ctl(int r) const noexcept;
  std::byte* slot(int set, int r) const noexcept;
  void check_bound(const char* what) const;
  void check_root(int root, const char* what) const;
  static void check_same(size_t a, size_t b, const char* what);

  // One piece of the protocol: every rank publishes step 2g+1 after writing
  // its staging, (optionally) 2g+2 after a second phase.
  void begin_piece(const Desc& d, bool check_flow);
  void publish(uint32_t step) noexcept;
  void wait_peer(int peer, uint32_t step, const Desc& d, bool check_desc);
  void wait_all(uint32_t step, const Desc& d, bool check_desc);
  [[noreturn]] void fail(const Desc& d, const std::string& what, int blame = -1);

  void reduce_impl(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root);

  // Checks and piece geometry shared by gatherv and scatterv: rank p's
  // elements start at displ[p] of the root's buffer; K pieces of at most
  // per_piece elements cover the largest count.
  struct Uneven {
    size_t total = 0, per_piece = 0, K = 0;
    std::vector<size_t> displ;
    size_t piece_len(std::span<const size_t> counts, int p, size_t off) const {
      return std::min(per_piece, counts[p] - std::min(counts[p], off));
    }
  };
  Uneven uneven(const char* what, std::span<const size_t> counts, ElemType t, int root) const;

  CpuGroupOptions opts_;
  int n_ = 0;
  int rank_ = -1;
  size_t slot_bytes_ = 0;
  int64_t spin_ns_ = 0;
  SharedSegment seg_;
  uint32_t piece_ = 0;   // global piece counter g of this process (identical on all ranks)
  uint32_t op_seq_ = 0;  // collectives entered so far (for messages and mismatch checks)
};

}  // namespace synk::comm
