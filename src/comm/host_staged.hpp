// src/comm/host_staged.hpp — collectives on device buffers through host
// memory and the shared-memory CPU collectives (private header; the comm
// exists only where SYNK_HAVE_CUDA is 1, guard with synk/config.hpp; the
// staging choice, choose_staging, in every build).
//
// Why: NCCL cannot put two ranks on one GPU, and may be missing. This
// backend lets any number of GPU workers (e.g. several on the one GPU of a
// small machine) run the same collectives: each rank copies its device data
// into its own page-locked staging area (cudaHostRegister'ed, so the copies
// are real asynchronous DMA on a copy stream), the CpuGroup combines the
// staging areas of all ranks through shared memory, and the result is
// copied back to the device. Where cudaHostRegister is refused (some
// sandboxes and containers) the area stays pageable: correct, slower, said
// once per process on stderr (choose_staging).
//
//   synk::comm::CpuGroup group({.ranks = n});          // before fork()
//   ... fork; in every rank: group.bind(rank);
//   synk::comm::HostStagedComm comm(group, {.device = 0});
//   comm.all_reduce(d_grad, d_grad, count, ElemType::f32, ReduceOp::avg, stream);
//   comm.wait();
//
// Buffers larger than the staging area go through it in pieces; before the
// host touches the staging area it waits for the copy stream, so each call
// blocks the host until its last device-to-host copy has landed, while the
// final host-to-device copies are only ordered before later work on the
// caller's stream (wait() blocks for them). Errors of the CPU collectives
// (timeouts, an aborted group) come back as BackendError naming rank, GPU
// and collective; the CpuGroup is then unusable (its rules).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>

#include "comm/comm.hpp"
#include "comm/shm.hpp"
#include "cuda/side_stream.hpp"
#include "synk/config.hpp"

namespace synk::comm {

// How a rank's staging area is used once cudaHostRegister answered
// `register_status` (0: it page-locked the area; `error_name` is CUDA's name
// for anything else). Refused, the area stays pageable: the copies are then
// synchronous for the host and go through the driver's own pinned buffers,
// correct but slower, so the run goes on instead of failing. The first
// refusal that finds `said` false writes one line on `out` naming rank, GPU
// and the error, and sets it (HostStagedComm passes one flag per process
// and stderr). No CUDA here: built and tested on any machine.
enum class Staging { pinned, pageable };
Staging choose_staging(int register_status, const char* error_name, int rank, int device, std::atomic<bool>& said,
                       std::FILE* out);

}  // namespace synk::comm

#if SYNK_HAVE_CUDA

namespace synk::comm {

struct HostStagedOptions {
  int device = 0;                          // CUDA device ordinal of this rank
  size_t staging_bytes = size_t{8} << 20;  // page-locked staging area of this rank
  // false: leave the staging area pageable without asking (the path taken
  // where cudaHostRegister is refused; tests run it on any GPU).
  bool pin_staging = true;
};

class HostStagedComm final : public Comm {
 public:
  // `group` must be bound to this process's rank and outlive the comm.
  // Makes opts.device current for this process. Throws ArgumentError if the
  // group is unbound or the staging area is too small for one element per
  // rank and piece, BackendError if CUDA fails.
  HostStagedComm(CpuGroup& group, const HostStagedOptions& opts);
  // Over any host-memory comm (e.g. the two-level comm of a multi-node
  // job, comm/node_comm.hpp), which it owns.
  HostStagedComm(std::unique_ptr<Comm> host, const HostStagedOptions& opts);
  ~HostStagedComm() override;  // waits for the copy stream; never throws
  HostStagedComm(const HostStagedComm&) = delete;
  HostStagedComm& operator=(const HostStagedComm&) = delete;

  int rank() const noexcept override { return host_.rank(); }
  int size() const noexcept override { return host_.size(); }
  int device() const noexcept override { return opts_.device; }
  const char* backend() const noexcept override { return "host-staged"; }

  void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) override;
  void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root,
              StreamHandle stream) override;
  void broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle stream) override;
  void all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle stream) override;
  void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
               StreamHandle stream) override;
  void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                StreamHandle stream) override;
  void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) override;
  void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) override;

  // Blocks until the copies of every call so far are done.
  void wait() override;

  StreamHandle copy_stream() const noexcept { return copy_->get(); }
  // Whether the staging area is page-locked (choose_staging).
  bool pinned() const noexcept { return registered_; }

 private:
  // Orders the copy stream after `stream`'s work so far.
  void begin(const char* coll, StreamHandle stream);
  // Makes `stream` wait for the copy stream's work so far.
  void end(StreamHandle stream);
  // Waits for the copy stream before the host reads or writes the staging area.
  void host_ready();
  // Runs a CPU collective, rethrowing its failure with rank, GPU and collective.
  template <class F> void cpu(const char* coll, F&& f);
  void d2h(void* host, const void* dev, size_t bytes);
  void h2d(void* dev, const void* host, size_t bytes);
  void check_root(int root, const char* coll) const;
  void check_counts(std::span<const size_t> counts, const char* coll) const;

  std::unique_ptr<Comm> owned_;
  Comm& host_;
  HostStagedOptions opts_;
  SharedSegment staging_;  // this rank's (private use) page-aligned staging area
  bool registered_ = false;
  std::optional<cuda::SideStream> copy_;  // the copies; made once the device is current
};

}  // namespace synk::comm

#endif  // SYNK_HAVE_CUDA
