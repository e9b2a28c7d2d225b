// src/comm/cpu_comm.hpp — the CpuGroup (shared-memory collectives) as a
// rank's Comm (comm/comm.hpp): buffers in host memory, no stream (private
// header). Every CPU rank of the runtime talks through one.
//
//   synk::comm::CpuComm comm(group);  // group bound to this rank
//   comm.all_reduce(g, g, n, ElemType::f32, ReduceOp::avg, nullptr);
#pragma once

#include "comm/comm.hpp"

namespace synk::comm {

class CpuComm final : public Comm {
 public:
  // `group` must be bound to this process's rank before the first
  // collective and outlive the comm.
  explicit CpuComm(CpuGroup& group) : g_(group) {}

  int rank() const noexcept override { return g_.rank(); }
  int size() const noexcept override { return g_.size(); }
  int device() const noexcept override { return -1; }
  const char* backend() const noexcept override { return "cpu"; }

  // The stream is ignored: host collectives are complete when they return.
  void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle) override {
    g_.all_reduce(in, out, count, t, op);
  }
  void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root, StreamHandle) override {
    g_.reduce(in, g_.rank() == root ? out : nullptr, count, t, op, root);
  }
  void broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle) override {
    g_.broadcast(buf, count, t, root);
  }
  void all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle) override {
    g_.all_gather(in, out, count, t);
  }
  void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
               StreamHandle) override {
    g_.gatherv(in, out, counts, t, root);
  }
  void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                StreamHandle) override {
    g_.scatterv(in, out, counts, t, root);
  }
  void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle) override {
    g_.gather(in, out, count, t, root);
  }
  void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle) override {
    g_.scatter(in, out, count, t, root);
  }
  void wait() override {}

  bool reduces_peer_buffers() const noexcept override { return true; }
  void all_reduce_peers(void* const* bufs, size_t offset, size_t count, ElemType t, ReduceOp op) override {
    g_.all_reduce_peers(bufs, offset, count, t, op);
  }
  void reduce_scatter_peers(void* const* bufs, size_t offset, size_t count, size_t slice, ElemType t,
                            ReduceOp op) override {
    g_.reduce_scatter_peers(bufs, offset, count, slice, t, op);
  }
  void barrier_peers() override { g_.barrier(); }

 private:
  CpuGroup& g_;
};

}  // namespace synk::comm
