// src/comm/comm.hpp — the one interface of collectives a rank runs
// (private header), implemented by CpuComm (comm/cpu_comm.hpp: the
// shared-memory CpuGroup on host memory), NcclComm (comm/nccl.hpp) and
// HostStagedComm (comm/host_staged.hpp: device buffers through the CpuGroup).
//
// Why one interface: the runtime drives every rank's collectives the same
// way, whatever moves the bytes, so its logic (variable collectives, the
// training step's all-reduce) is one code path that the CPU suite covers
// for every kind of rank. A rank's buffers live in its executor's memory
// (exec::Executor: host memory on a CPU rank, device memory on a CUDA rank),
// and the rank's comm works on exactly that memory.
//
// Every rank calls the same collectives in the same order with the same
// counts (like MPI). A collective is ordered after the work already queued
// on `stream` (the rank's compute stream; nullptr on the CPU and for the
// legacy default stream), and work queued on `stream` afterwards sees its
// result; wait() blocks the host until everything issued so far is complete
// (and raises what failed). On host memory a collective is complete when it
// returns.
//
// This header includes no CUDA header (a StreamHandle is a cudaStream_t
// named without it: cuda/stream_handle.hpp), so host-only code (the
// runtime, the benchmarks) uses it in every build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "comm/cpu_group.hpp"  // ElemType (ReduceOp: synk/runtime.hpp)
#include "synk/error.hpp"
#include "cuda/marks.hpp"       // GpuMarks, StreamHandle

namespace synk::comm {

// The device layer's stream handle and GPU timing marks (cuda/marks.hpp),
// named here as the comms take them.
using cuda::GpuMarks;
using cuda::StreamHandle;

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  virtual int device() const noexcept = 0;           // CUDA ordinal; -1 on host memory
  virtual const char* backend() const noexcept = 0;  // "cpu", "nccl" or "host-staged"

  // out may equal in. Every rank gets the reduction of all inputs (avg = sum / size()).
  virtual void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) = 0;
  // Only root's out is written (others may pass nullptr); out may equal in.
  virtual void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root,
                      StreamHandle stream) = 0;
  // buf is the source on root and the destination elsewhere.
  virtual void broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle stream) = 0;
  // out holds size() * count elements, rank r's input at r * count.
  virtual void all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle stream) = 0;
  // Per-rank counts known to every rank (counts.size() == size()); root's
  // out holds sum(counts) elements in rank order.
  virtual void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                       StreamHandle stream) = 0;
  // Per-rank counts known to every rank; root's in holds sum(counts).
  virtual void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                        StreamHandle stream) = 0;
  // Equal counts (root's buffer holds size() * count elements; others pass nullptr).
  virtual void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) = 0;
  virtual void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) = 0;

  // in holds size() * count elements; rank r's out (count elements) gets the
  // reduction of every rank's elements [r * count, (r + 1) * count) (avg =
  // sum / size()); out may be in + rank() * count (NCCL's in-place form).
  // Each element is reduced exactly as all_reduce reduces it on the same
  // comm, so a rank's slice holds the same bits as the same slice of an
  // all-reduce (the sharded optimizer relies on it). The default is one
  // rooted reduce per rank's block (reduce sums like all_reduce on every
  // comm here); a native one is a speed-up.
  virtual void reduce_scatter(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) {
    const size_t es = elem_size(t);
    for (int q = 0; q < size(); ++q)
      reduce(static_cast<const std::byte*>(in) + static_cast<size_t>(q) * count * es, q == rank() ? out : nullptr, count, t,
             op, q, stream);
  }

  // Overlap with the caller's later work (the training step's gradient
  // buckets during backward). From begin_overlap(stream) to end_overlap(),
  // a collective is still ordered after the work queued on `stream` before
  // it, but work queued on `stream` after it is not ordered after it, so
  // the two run side by side; the caller leaves the collectives' buffers
  // alone until end_overlap(), which orders the stream's later work after
  // every one of them (wait() ends an overlap first). Backends whose
  // collectives are complete when they return (host memory, host staging)
  // have nothing to defer: the defaults do nothing.
  virtual void begin_overlap(StreamHandle stream) { (void)stream; }
  virtual void end_overlap() {}

  // Marks each later collective on the comm's own stream (GpuMarks::
  // comm_begin/comm_end) until set_marks(nullptr). Backends without a
  // stream of their own ignore it: their collectives are on the host track.
  virtual void set_marks(GpuMarks* marks) { (void)marks; }

  // Ranks of one machine whose buffers are all mapped in every rank's
  // process (shared memory) can reduce them in place, without copies: a comm
  // that can (CpuComm) says so here, and all_reduce_peers then reduces
  // elements [offset, offset + count) of every rank's buffer (bufs, by
  // rank) into each of them. Comms over device memory or other machines
  // cannot: the rank uses all_reduce on a buffer of its own instead.
  virtual bool reduces_peer_buffers() const noexcept { return false; }
  virtual void all_reduce_peers(void* const* bufs, size_t offset, size_t count, ElemType t, ReduceOp op) {
    (void)bufs, (void)offset, (void)count, (void)t, (void)op;
    throw BackendError(std::string("rank ") + std::to_string(rank()) + ": all_reduce_peers on a " + backend() +
                       " comm, which cannot reduce buffers mapped from its peers");
  }

  // The reduce-scatter of peer buffers (see all_reduce_peers): of elements
  // [offset, offset + count), rank r reduces those in its slice [r * slice,
  // (r + 1) * slice) from every rank's buffer into its own buffer only, as
  // all_reduce_peers would reduce them; the others of its buffer are left
  // as they were. Every rank calls it with the same arguments.
  virtual void reduce_scatter_peers(void* const* bufs, size_t offset, size_t count, size_t slice, ElemType t,
                                    ReduceOp op) {
    (void)bufs, (void)offset, (void)count, (void)slice, (void)t, (void)op;
    throw BackendError(std::string("rank ") + std::to_string(rank()) + ": reduce_scatter_peers on a " + backend() +
                       " comm, which cannot reduce buffers mapped from its peers");
  }

  // Returns once every rank of the peer buffers (reduces_peer_buffers) has
  // called it: between two, a rank reads what its peers wrote into their
  // buffers before the first (the sharded optimizer's all-gather of the
  // updated slices straight into each rank's parameters).
  virtual void barrier_peers() {
    throw BackendError(std::string("rank ") + std::to_string(rank()) + ": barrier_peers on a " + backend() +
                       " comm, which has no buffers mapped from its peers");
  }

  // Blocks until every collective issued so far has completed; throws
  // BackendError naming rank, device and collective if one failed or timed out.
  virtual void wait() = 0;
  // Ends this rank's part in the communicator at once (a closing or failed
  // runtime); later collectives throw. Never throws. A comm over the
  // CpuGroup has nothing of its own to end: the group's abort() does it.
  virtual void abort(const std::string& reason) noexcept { (void)reason; }
};

}  // namespace synk::comm
