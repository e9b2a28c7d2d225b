// src/cuda/side_stream.hpp — a stream for work of its own beside a
// caller's stream (a device collective backend's: NCCL's kernels,
// host-staging copies), with the two events that order it against the
// caller's stream without blocking the host (private header; usable only
// where SYNK_HAVE_CUDA is 1, guard with synk/config.hpp).
//
//   side.wait_for(caller);   // work queued on side.get() runs after the caller's so far
//   ... queue the collective on side.get() ...
//   side.hand_back(caller);  // the caller's later work runs after it
//
// Owned and move-less; no CUDA header, so the backends' headers stay
// includable from host-only code.
#pragma once

#include "cuda/stream_handle.hpp"

namespace synk::cuda {

class SideStream {
 public:
  // A non-blocking stream and two timing-free events on the current device.
  // Throws BackendError naming the failed call (nothing is left behind).
  SideStream();
  ~SideStream();  // never throws
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  StreamHandle get() const noexcept { return stream_; }
  // Work queued on this stream from now on runs after what `caller` has queued so far.
  void wait_for(StreamHandle caller);
  // Work queued on `caller` from now on runs after what this stream has
  // queued so far; done_status() then reports on that work.
  void hand_back(StreamHandle caller);
  // cudaEventQuery of the last hand_back(): 0 (cudaSuccess) once its work is
  // done, cudaErrorNotReady while it runs, another CUDA error code if it failed.
  int done_status() const noexcept;

 private:
  void release() noexcept;

  StreamHandle stream_ = nullptr;
  void* ready_ = nullptr;  // cudaEvent_t: the caller reached the side work
  void* done_ = nullptr;   // cudaEvent_t: the side work so far is done
};

}  // namespace synk::cuda
