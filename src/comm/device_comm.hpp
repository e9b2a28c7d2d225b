// src/comm/device_comm.hpp — the small interface of collectives on device
// buffers (private header), implemented by NcclComm (comm/nccl.hpp) and
// HostStagedComm (comm/host_staged.hpp).
//
// Why an interface: GPU workers use NCCL where each has its own GPU, and
// the host-staged backend where several share one GPU or NCCL is missing;
// the runtime and synk-collectives pick one and drive both the same way.
//
// Every rank calls the same collectives in the same order with the same
// counts (like MPI). Buffers are device pointers on the backend's device.
// A collective is ordered after the work already queued on `stream` (the
// caller's compute stream; nullptr is the legacy default stream), and work
// queued on `stream` afterwards sees its result; wait() blocks the host
// until everything issued so far is complete (and raises what failed).
//
// This header includes no CUDA header (cudaStream_t is `CUstream_st*`), so
// host-only code such as the benchmarks can use it; it exists only where
// SYNK_HAVE_CUDA is 1.
#pragma once

#include <cstddef>
#include <span>

#include "comm/cpu_group.hpp"  // ElemType (ReduceOp: synk/runtime.hpp)

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace synk::comm {

using StreamHandle = CUstream_st*;

class DeviceComm {
 public:
  virtual ~DeviceComm() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  virtual int device() const noexcept = 0;
  virtual const char* backend() const noexcept = 0;  // "nccl" or "host-staged"

  // out may equal in. Every rank gets the reduction of all inputs (avg = sum / size()).
  virtual void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) = 0;
  // Only root's out is written (others may pass nullptr).
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
  // Equal counts (root's buffer holds size() * count elements).
  virtual void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) = 0;
  virtual void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) = 0;

  // Blocks until every collective issued so far has completed; throws
  // BackendError naming rank, GPU and collective if one failed or timed out.
  virtual void wait() = 0;
};

}  // namespace synk::comm
