// src/comm/node_comm.cpp — two-level collectives (see node_comm.hpp).
#include "comm/node_comm.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "synk/error.hpp"

namespace synk::comm {

namespace {

template <class T> void divide(void* buf, size_t n, int by) {
  T* p = static_cast<T*>(buf);
  const T d = static_cast<T>(by);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / d);
}

void divide(void* buf, size_t n, ElemType t, int by) {
  switch (t) {
    case ElemType::f32: return divide<float>(buf, n, by);
    case ElemType::i32: return divide<int32_t>(buf, n, by);
    case ElemType::f64: return divide<double>(buf, n, by);
    case ElemType::i64: return divide<int64_t>(buf, n, by);
  }
}

// The counts with all of `total` at local rank `at` (a move between the
// master and one local rank through a local gatherv / scatterv).
std::vector<size_t> only(int ranks, int at, size_t total) {
  std::vector<size_t> c(static_cast<size_t>(ranks), 0);
  c[static_cast<size_t>(at)] = total;
  return c;
}

}  // namespace

NodeComm::NodeComm(std::unique_ptr<Comm> local, NodeLink* link, NodeLayout layout)
    : owned_(std::move(local)), local_(*owned_), link_(link), layout_(std::move(layout)) {
  if (layout_.node < 0 || layout_.node >= static_cast<int>(layout_.sizes.size()))
    throw ArgumentError("NodeComm: node " + std::to_string(layout_.node) + " outside the layout");
  if (layout_.sizes[static_cast<size_t>(layout_.node)] != local_.size())
    throw ArgumentError("NodeComm: the layout gives node " + std::to_string(layout_.node) + " " +
                        std::to_string(layout_.sizes[static_cast<size_t>(layout_.node)]) +
                        " ranks, its local comm has " + std::to_string(local_.size()));
  if ((link != nullptr) != (local_.rank() == 0))
    throw ArgumentError("NodeComm: the node master (local rank 0), and only it, holds the link");
  base_.resize(layout_.sizes.size());
  for (size_t k = 0; k < layout_.sizes.size(); ++k) {
    base_[k] = world_;
    world_ += layout_.sizes[k];
  }
}

int NodeComm::node_of(int rank) const {
  if (rank < 0 || rank >= world_)
    throw ArgumentError("NodeComm: root " + std::to_string(rank) + " outside [0, " + std::to_string(world_) + ")");
  const auto it = std::upper_bound(base_.begin(), base_.end(), rank);
  return static_cast<int>(it - base_.begin()) - 1;
}

void NodeComm::check_counts(std::span<const size_t> counts, const char* what) const {
  if (counts.size() != static_cast<size_t>(world_))
    throw ArgumentError(std::string("NodeComm ") + what + ": " + std::to_string(counts.size()) + " counts for " +
                        std::to_string(world_) + " ranks");
}

uint8_t* NodeComm::tmp(int which, size_t bytes) {
  std::vector<uint8_t>& v = tmp_[which];
  if (v.size() < bytes) v.resize(bytes);
  return v.data();
}

void NodeComm::all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle s) {
  const ReduceOp step = op == ReduceOp::avg ? ReduceOp::sum : op;
  local_.reduce(in, link_ ? out : nullptr, count, t, step, 0, s);
  if (link_) link_->all_reduce(out, count, t, step, "all_reduce");
  local_.broadcast(out, count, t, 0, s);
  if (op == ReduceOp::avg) divide(out, count, t, world_);
}

void NodeComm::reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root, StreamHandle s) {
  node_of(root);  // checks it
  // Every rank learns the reduction (an all_reduce) and only root keeps it:
  // reductions to one rank are rare (variable reduce), the simple way is enough.
  void* dst = rank() == root ? out : tmp(0, count * elem_size(t));
  all_reduce(in, dst, count, t, op, s);
}

void NodeComm::reduce_scatter(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle s) {
  // One all-reduce of the whole (the node steps and MPI between the masters,
  // as the unsharded step's), then this rank's block: the same bits as the
  // all-reduce whatever MPI's algorithm for the size, at the all-reduce's cost.
  const size_t es = elem_size(t), total = static_cast<size_t>(world_) * count;
  uint8_t* whole = tmp(0, total * es);
  all_reduce(in, whole, total, t, op, s);
  std::memmove(out, whole + static_cast<size_t>(rank()) * count * es, count * es);
}

void NodeComm::broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle s) {
  const int rn = node_of(root);
  const size_t bytes = count * elem_size(t);
  if (layout_.node == rn) {
    local_.broadcast(buf, count, t, root - base_[static_cast<size_t>(rn)], s);
    if (link_) link_->broadcast(buf, bytes, rn, "broadcast");
  } else {
    if (link_) link_->broadcast(buf, bytes, rn, "broadcast");
    local_.broadcast(buf, count, t, 0, s);
  }
}

void NodeComm::all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle s) {
  const size_t esz = elem_size(t);
  uint8_t* o = static_cast<uint8_t*>(out);
  local_.all_gather(in, o + static_cast<size_t>(base_[static_cast<size_t>(layout_.node)]) * count * esz, count, t, s);
  if (link_) {
    std::vector<size_t> counts(layout_.sizes.size());
    for (size_t k = 0; k < counts.size(); ++k) counts[k] = static_cast<size_t>(layout_.sizes[k]) * count;
    link_->all_gatherv(out, counts, t, "all_gather");
  }
  local_.broadcast(out, static_cast<size_t>(world_) * count, t, 0, s);
}

NodeComm::Blocks NodeComm::blocks(std::span<const size_t> counts, int root, const char* what) const {
  check_counts(counts, what);
  Blocks b;
  b.root_node = node_of(root);
  b.root_local = root - base_[static_cast<size_t>(b.root_node)];
  const size_t me = static_cast<size_t>(layout_.node);
  b.mine = counts.subspan(static_cast<size_t>(base_[me]), static_cast<size_t>(layout_.sizes[me]));
  b.node_total.resize(layout_.sizes.size());
  for (size_t k = 0; k < b.node_total.size(); ++k) {
    b.node_total[k] =
        std::accumulate(counts.begin() + base_[k], counts.begin() + base_[k] + layout_.sizes[k], size_t{0});
    b.total += b.node_total[k];
    if (k < me) b.disp += b.node_total[k];
  }
  return b;
}

void NodeComm::gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                       StreamHandle s) {
  const Blocks b = blocks(counts, root, "gatherv");
  const size_t esz = elem_size(t), me = static_cast<size_t>(layout_.node);
  const bool root_node = static_cast<int>(me) == b.root_node;
  // Where the master collects: the whole lands in `out` when the master is
  // the root, else in scratch (the master of the root's node hands it on).
  const bool master_is_root = link_ && rank() == root;
  uint8_t* whole = nullptr;
  if (link_) whole = master_is_root ? static_cast<uint8_t*>(out) : tmp(1, b.total * esz);
  local_.gatherv(in, link_ ? whole + b.disp * esz : nullptr, b.mine, t, 0, s);
  if (link_) link_->gatherv(whole + b.disp * esz, whole, b.node_total, t, b.root_node, "gatherv");
  if (root_node && b.root_local != 0)
    local_.scatterv(whole, rank() == root ? out : nullptr, only(layout_.sizes[me], b.root_local, b.total), t, 0, s);
}

void NodeComm::scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                        StreamHandle s) {
  const Blocks b = blocks(counts, root, "scatterv");
  const size_t esz = elem_size(t), me = static_cast<size_t>(layout_.node);
  const bool root_node = static_cast<int>(me) == b.root_node;
  // The whole, on the root node's master: the root's own input, or moved
  // there from the root.
  const uint8_t* whole = nullptr;
  if (root_node) {
    if (b.root_local == 0) {
      whole = static_cast<const uint8_t*>(in);
    } else {
      uint8_t* w = link_ ? tmp(1, b.total * esz) : nullptr;
      local_.gatherv(rank() == root ? in : nullptr, w, only(layout_.sizes[me], b.root_local, b.total), t, 0, s);
      whole = w;
    }
  }
  uint8_t* block = nullptr;  // this node's block on its master
  if (link_) {
    if (root_node) {
      block = const_cast<uint8_t*>(whole) + b.disp * esz;  // read only: the link leaves it in place
    } else {
      block = tmp(0, b.node_total[me] * esz);
    }
    link_->scatterv(whole, block, b.node_total, t, b.root_node, "scatterv");
  }
  local_.scatterv(block, out, b.mine, t, 0, s);
}

void NodeComm::gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle s) {
  const std::vector<size_t> counts(static_cast<size_t>(world_), count);
  gatherv(in, out, counts, t, root, s);
}

void NodeComm::scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle s) {
  const std::vector<size_t> counts(static_cast<size_t>(world_), count);
  scatterv(in, out, counts, t, root, s);
}

}  // namespace synk::comm
