// src/comm/node_comm.hpp — collectives over the ranks of every node of a
// multi-node job, in two levels (private header): the node's own host comm
// (the shared-memory group) and, between node masters, the NodeLink (MPI).
//
//   all_reduce  the node reduces to its master (local rank 0), the masters
//               all-reduce over MPI, the node broadcasts from its master;
//   broadcast   the root's node broadcasts locally, its master to the other
//               masters, they to their nodes;
//   gather(v)   the node gathers to its master, the masters to the root's
//               master, which hands the whole to the root if it is not the
//               master; scatter(v) the reverse; all_gather: the node's block
//               in place, the masters exchange blocks, each node broadcasts.
//
// Ranks are global and node-major: node k's ranks are base[k] ..
// base[k] + sizes[k] - 1; rank() and size() are global, and so are roots
// and counts. Only node masters hold a NodeLink (workers never touch MPI),
// and every collective is one local step or two around the master's MPI
// step, so a node's local ranks call the same local collectives in the same
// order. Exactness: integers are exact (sum and prod wrap); every rank of
// every node gets the same bits (the local group reduces in rank order, the
// link gives every node the same bits); floats are summed per node first,
// so a sum may differ in the last bits from the single-node order.
// avg is sum / size() on every rank, as in the CpuGroup.
//
// Host memory only: CUDA ranks use it under HostStagedComm.
#pragma once

#include <memory>
#include <vector>

#include "comm/comm.hpp"
#include "comm/node_link.hpp"

namespace synk::comm {

struct NodeLayout {
  int node = 0;
  std::vector<int> sizes;  // ranks of each node
};

class NodeComm final : public Comm {
 public:
  // `local` is this node's host comm (rank = local rank); `link` is
  // non-null exactly on the node master (local rank 0) and outlives it.
  NodeComm(std::unique_ptr<Comm> local, NodeLink* link, NodeLayout layout);

  int rank() const noexcept override { return base_[static_cast<size_t>(layout_.node)] + local_.rank(); }
  int size() const noexcept override { return world_; }
  int device() const noexcept override { return -1; }
  const char* backend() const noexcept override { return "cpu+mpi"; }

  void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle) override;
  void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root, StreamHandle) override;
  void broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle) override;
  void reduce_scatter(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle) override;
  void all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle) override;
  void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
               StreamHandle) override;
  void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                StreamHandle) override;
  void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle) override;
  void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle) override;
  void wait() override { local_.wait(); }
  void abort(const std::string& reason) noexcept override { local_.abort(reason); }

 private:
  int node_of(int rank) const;
  void check_counts(std::span<const size_t> counts, const char* what) const;
  // gatherv/scatterv geometry from per-rank counts: the root's node and
  // local rank, this node's counts, every node's total, the whole's size
  // and this node's displacement in it (elements).
  struct Blocks {
    int root_node = 0, root_local = 0;
    std::span<const size_t> mine;
    std::vector<size_t> node_total;
    size_t total = 0, disp = 0;
  };
  Blocks blocks(std::span<const size_t> counts, int root, const char* what) const;
  uint8_t* tmp(int which, size_t bytes);

  std::unique_ptr<Comm> owned_;
  Comm& local_;
  NodeLink* link_;
  NodeLayout layout_;
  std::vector<int> base_;
  int world_ = 0;
  std::vector<uint8_t> tmp_[2];
};

}  // namespace synk::comm
